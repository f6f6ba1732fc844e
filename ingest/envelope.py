"""What the ingester reads of a webhook body: its event type, its record key, its shape.

The ingester keeps every JSON object it is sent; it only looks inside to pick
the Kafka key (so that a retry of the same event lands on the same partition)
and to label its metrics and headers. Parsing proper is the normalizer's job.
"""

from __future__ import annotations

import hashlib
from typing import Any

import schemas

# The webhook schema is the one list of event types we know.
KNOWN_EVENT_TYPES = schemas.known_event_types()
UNKNOWN_EVENT_TYPE = "unknown"
# An id longer than this is no id of 8x8's (those are UUIDs and the like) and goes into the
# key as its hash: the spool frames a key in 16 bits, and Kafka limits key and value
# together, so a 200 KB "umid" made the request fail with a 500 (and could flip the
# publisher to spooling for everyone).
MAX_KEY_BYTES = 512
_EVENT_TYPE_HEADER_CHARS = 200

# Where the key's id may sit, the first present wins: a message event's umid; the
# subject of a template event (every template event type carries `templateId`) or of
# a phone-number event, as normalize keys their topics; an account event's id; then,
# most specific first, LINE's flat inbound shape, other envelopes, bare ids.
_ID_PATHS: tuple[tuple[str, ...], ...] = (
    ("payload", "umid"),
    ("eventDetails", "templateId"),
    ("eventDetails", "displayPhoneNumber"),
    ("eventId",),
    ("inboundMessage", "umid"),
    ("umid",),
    ("payload", "messageId"),
    ("messageId",),
    ("payload", "id"),
    ("id",),
)


def event_type_label(body: dict[str, Any]) -> str:
    """The body's `eventType` if we know it, else `unknown` (keeps metric labels bounded)."""
    event_type = body.get("eventType")
    if isinstance(event_type, str) and event_type in KNOWN_EVENT_TYPES:
        return event_type
    return UNKNOWN_EVENT_TYPE


def record_key(body: dict[str, Any], raw: bytes) -> bytes:
    """The raw topic's key: `payload.umid`, the subject of a template or phone-number
    event, `eventId`, another id, else a hash of the body.

    One subject's events share a key, hence a partition, so they reach normalize,
    and through it the templates and phones jobs, in the order they were posted
    (keyed by `eventId` they spread over the partitions and came out in any order).
    A retry repeats the body byte for byte, so it lands on its first attempt's
    partition whatever the rule, and normalize's dedupe (per partition) sees it;
    even the hash fallback does. An id over `MAX_KEY_BYTES` becomes
    `sha256:<hex of the id>`, the same for every event that carries it.
    """
    for path in _ID_PATHS:
        value = _lookup(body, path)
        if isinstance(value, str) and value:
            return _bounded(value.encode())
        if isinstance(value, int) and not isinstance(value, bool):
            return _bounded(str(value).encode())
    return _hashed(raw)


def event_type_header(body: dict[str, Any]) -> bytes:
    """The body's `eventType` as sent, for the raw record's header: a scalar's text, at most
    200 characters. Not the text of a list or object: str() of one nested 1,000 deep (JSON
    allows it) raised RecursionError, a 500."""
    value = body.get("eventType", "")
    if isinstance(value, dict | list):
        return b""
    return str(value)[:_EVENT_TYPE_HEADER_CHARS].encode()


def is_recognised(body: dict[str, Any]) -> bool:
    """True when the body matches the schema of a known event type."""
    return bool(schemas.validator("webhooks/webhook").is_valid(body))


def _bounded(key: bytes) -> bytes:
    return key if len(key) <= MAX_KEY_BYTES else _hashed(key)


def _hashed(data: bytes) -> bytes:
    return b"sha256:" + hashlib.sha256(data).hexdigest().encode()


def _lookup(body: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = body
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node
