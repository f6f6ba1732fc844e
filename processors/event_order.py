"""An event's place in event time and its identity, for the jobs whose state is folded
from a subject's events in event-time order (templates, phones: `processors.history`).

An event's place is its event time (occurredAt, else receivedAt) and, among events of
the same time, its identity: its id *and* its content (`identity`). 8x8 reuses event
ids for different events, which must both count; a retry differs only in when we
received it, so that is left out, and a retry is the same event (a duplicate).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Any

import orjson


@dataclass(frozen=True)
class Arrival:
    """An event's time and identity; `occurrence` names it in its alerts' ids."""

    at: str
    identity: str

    @property
    def key(self) -> tuple[str, str]:
        """Its place in the order of a subject's events: time, then identity."""
        return (self.at, self.identity)

    @property
    def occurrence(self) -> str:
        return f"{self.at}|{self.identity}"


def arrival(event: Any) -> Arrival | None:
    """The time (event time, else receive time) and identity of a normalized record;
    None without a time (normalize always gives a receive time: be total anyway)."""
    at = event_time(event)
    return None if at is None else Arrival(at, identity(event))


def event_time(event: Any) -> str | None:
    """A normalized record's event time, else its receive time."""
    at: str | None = event.occurred_at or event.received_at
    return at


def identity(event: Any) -> str:
    """`<eventId>|<digest of the content>` of a normalized record, receive time excluded."""
    # Not dataclasses.asdict: its deep copy was most of a template event's cost.
    content = {name: getattr(event, name) for name in _content_fields(type(event))}
    digest = hashlib.blake2b(orjson.dumps(content, option=orjson.OPT_SORT_KEYS), digest_size=8)
    return f"{event.event_id}|{digest.hexdigest()}"


_CONTENT_FIELDS: dict[type, tuple[str, ...]] = {}


def _content_fields(record_type: type) -> tuple[str, ...]:
    """The fields of a record type but its receive time, computed once."""
    names = _CONTENT_FIELDS.get(record_type)
    if names is None:
        names = _CONTENT_FIELDS[record_type] = tuple(
            field.name for field in fields(record_type) if field.name != "received_at"
        )
    return names
