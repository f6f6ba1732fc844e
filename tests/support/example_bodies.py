"""Example webhook bodies for tests, and small mutations to derive variants from them.

`derive("status_sent.json", put("payload.status.state", "READ"), drop("description"))`
is a fresh deep copy of the example with those changes. Importable from any test
(pytest puts `tests/support/` on the path: `pythonpath` in pyproject.toml).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import orjson

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "examples"
EXAMPLE_PATHS = sorted(EXAMPLES_DIR.rglob("*.json"))
EXAMPLE_NAMES = [path.relative_to(EXAMPLES_DIR).as_posix() for path in EXAMPLE_PATHS]

Body = Any
Mutation = Callable[[Body], Any]


@cache
def _load_example(name: str) -> Body:
    return orjson.loads((EXAMPLES_DIR / name).read_bytes())


def example(name: str) -> Body:
    """A fresh deep copy of example `name` (path below tests/fixtures/examples/)."""
    return copy.deepcopy(_load_example(name))


def derive(name: str, *mutations: Mutation) -> Body:
    """Example `name`, deep-copied, with each mutation applied in turn."""
    body = example(name)
    for mutate in mutations:
        mutate(body)
    return body


def _parent(body: Body, path: str) -> tuple[Any, Any]:
    """The container holding the last key of the dotted `path`, and that key (a list's
    items by index: "a.0.b")."""
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node, int(leaf) if isinstance(node, list) else leaf


def put(path: str, value: Any) -> Mutation:
    """Set the dotted `path` (e.g. "payload.status.state") to `value`."""

    def mutate(body: Body) -> None:
        node, leaf = _parent(body, path)
        node[leaf] = value

    return mutate


def drop(path: str) -> Mutation:
    """Remove the dotted `path`; it must exist, so that a typo cannot make a test vacuous."""

    def mutate(body: Body) -> None:
        node, leaf = _parent(body, path)
        del node[leaf]

    return mutate


def expected_raw_key(body: Body) -> bytes:
    """The raw topic's key of an example body, by the contract's rule, written out
    independently of `ingest.envelope`: a message's umid; a template's or a phone
    number's id (one subject's events keep their order on one partition); else eventId."""
    details = body.get("eventDetails", {})
    if body.get("namespace") == "ChatApps":
        key = body["payload"]["umid"]
    elif "templateId" in details:
        key = details["templateId"]
    elif "displayPhoneNumber" in details:
        key = details["displayPhoneNumber"]
    else:
        key = body["eventId"]
    return str(key).encode()
