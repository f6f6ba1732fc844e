"""The ingester's OpenAPI document: `schemas/openapi.json`, served at `GET /openapi.json`.

The file is the source, edited by hand, except its `components.schemas` entries
named `webhooks.<name>`: those are schemas/webhooks/<name>.schema.json with each
`$ref` pointing inside the document, so that a tool reading only this one file
(schemathesis, a client generator) knows the event shapes. `python -m
ingest.openapi` rewrites them from schemas/webhooks/; a test fails while they differ.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import orjson

import schemas

DOCUMENT_PATH = schemas.SCHEMA_DIR / "openapi.json"
WEBHOOK_COMPONENT_PREFIX = "webhooks."
_COMPONENT_REF = "#/components/schemas/"


@cache
def document_bytes() -> bytes:
    """The document byte for byte, read once per process."""
    return DOCUMENT_PATH.read_bytes()


def document() -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(document_bytes())
    return result


def webhook_components() -> dict[str, Any]:
    """`webhooks.<name>` -> schemas/webhooks/<name>.schema.json, its `$ref`s made local."""
    components: dict[str, Any] = {}
    for name in schemas.schema_files():
        if not name.startswith("webhooks/"):
            continue
        short = name.removeprefix("webhooks/")
        schema = {k: v for k, v in schemas.load(name).items() if k not in ("$schema", "$id")}
        components[WEBHOOK_COMPONENT_PREFIX + short] = _local_refs(schema, short)
    return components


def _local_refs(node: Any, current: str) -> Any:
    if isinstance(node, dict):
        return {
            key: _local_ref(value, current)
            if key == "$ref" and isinstance(value, str)
            else _local_refs(value, current)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_local_refs(item, current) for item in node]
    return node


def _local_ref(ref: str, current: str) -> str:
    # `#/$defs/x` (same file), `common.schema.json#/$defs/x`, `chatapps_envelope.schema.json`
    target, _, pointer = ref.partition("#")
    name = target.removesuffix(schemas.SUFFIX) if target else current
    if "/" in name:
        raise ValueError(f"webhook schema {current}: $ref {ref!r} leaves schemas/webhooks/")
    return f"{_COMPONENT_REF}{WEBHOOK_COMPONENT_PREFIX}{name}{pointer}"


def main() -> None:
    """Rewrite the `webhooks.*` components of schemas/openapi.json from schemas/webhooks/."""
    document = json.loads(DOCUMENT_PATH.read_text())
    components: dict[str, Any] = document["components"]["schemas"]
    for name in [n for n in components if n.startswith(WEBHOOK_COMPONENT_PREFIX)]:
        del components[name]
    components.update(webhook_components())
    DOCUMENT_PATH.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
