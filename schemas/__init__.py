"""JSON Schemas: the contract of every webhook body and every topic's records.

The `*.schema.json` files beside this module are the single source of truth;
code validates against them through `validator()`, compiled once per process
(jsonschema-rs, a Rust validator). Each file carries an `$id` under
`BASE_URI` and may `$ref` the others by relative path.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson

SCHEMA_DIR = Path(__file__).resolve().parent
BASE_URI = "https://wapipe.dev/schemas/"
SUFFIX = ".schema.json"


def schema_files() -> dict[str, Path]:
    """Every schema file, by name: its path below this folder without the suffix."""
    return {
        path.relative_to(SCHEMA_DIR).as_posix().removesuffix(SUFFIX): path
        for path in sorted(SCHEMA_DIR.rglob(f"*{SUFFIX}"))
    }


@cache
def load(name: str) -> dict[str, Any]:
    """The schema document `name` (e.g. `webhooks/webhook`) as a dict."""
    path = schema_files().get(name)
    if path is None:
        raise KeyError(f"no schema named {name!r} under {SCHEMA_DIR}")
    document: dict[str, Any] = orjson.loads(path.read_bytes())
    expected_id = BASE_URI + name + SUFFIX
    if document.get("$id") != expected_id:
        raise ValueError(f"{path}: $id must be {expected_id!r}")
    return document


@cache
def _registry() -> jsonschema_rs.Registry:
    return jsonschema_rs.Registry([(load(name)["$id"], load(name)) for name in schema_files()])


@cache
def validator(name: str) -> jsonschema_rs.Validator:
    """A compiled validator for schema `name`, resolving `$ref`s to the other files."""
    return jsonschema_rs.validator_for(load(name), registry=_registry())


def known_event_types() -> frozenset[str]:
    """The event types whose shape we know: the webhook schema's `eventType` values."""
    values: list[str] = load("webhooks/webhook")["properties"]["eventType"]["enum"]
    return frozenset(values)
