"""Checking records against the topic schemas: shared by the schema tests of every
topic (tests/schemas/test_*_schemas.py)."""

from __future__ import annotations

from typing import Any

import orjson
from example_bodies import Mutation, drop, put

import schemas


def topic_validator(suffix: str) -> Any:
    return schemas.validator(f"topics/{suffix}")


def errors(check: Any, value: Any) -> list[tuple[tuple[str | int, ...], str]]:
    return [(tuple(error.instance_path), error.message) for error in check.iter_errors(value)]


def wire(value: dict[str, object]) -> dict[str, Any]:
    """The record as it goes on the topic: through orjson and back."""
    result: dict[str, Any] = orjson.loads(orjson.dumps(value))
    return result


def assert_valid(suffix: str, value: dict[str, object]) -> dict[str, Any]:
    """`value` on the wire, checked against topic `suffix`'s schema; returns the wire form."""
    record = wire(value)
    check = topic_validator(suffix)
    assert check.is_valid(record), errors(check, record)
    return record


def properties_without_description(node: Any, path: str = "") -> list[str]:
    """The paths of every property (also in $defs and allOf's `then`, at any depth) that has
    no description. An `if` is a condition on the record, not a property definition."""
    missing: list[str] = []
    if isinstance(node, dict):
        for name, child in node.get("properties", {}).items():
            if not str(child.get("description", "")).strip():
                missing.append(f"{path}/{name}")
        for name, child in node.items():
            if name != "if":
                missing += properties_without_description(child, f"{path}/{name}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            missing += properties_without_description(child, f"{path}/{index}")
    return missing


def set_at(path: str, value: Any) -> Mutation:
    """Set the value at `path` ('a/0/c': list items by index) of a record."""
    return put(path.replace("/", "."), value)


def remove_at(path: str) -> Mutation:
    """Remove `path` ('a/0/c') of a record; it must exist."""
    return drop(path.replace("/", "."))
