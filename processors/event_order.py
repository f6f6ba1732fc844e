"""Event-time order for the jobs whose state follows the latest event (templates,
phones): a state holds the time of the latest event applied and the ids of the
events applied at that time. An event older than that is stale news and one
already applied is a duplicate; neither changes anything, so retries, replays after
a crash and late old events leave the state and its alerts as they were.

An event's identity is its id *and* its content (`identity`): 8x8 reuses event ids
for different events, which must both count; a retry differs only in when we
received it, so that is left out.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class Applied:
    """The latest event time applied to a state, and the ids of its events."""

    at: str | None = None
    event_ids: tuple[str, ...] = ()

    def refuses(self, arrival: Arrival | None) -> str | None:
        """Why an event changes nothing ("stale": older than this, or without a time;
        "duplicate"), or None when it is news."""
        if arrival is None or (self.at is not None and arrival.at < self.at):
            return "stale"
        if arrival.at == self.at and arrival.identity in self.event_ids:
            return "duplicate"
        return None

    def plus(self, arrival: Arrival) -> Applied:
        """This with the event taken (one `refuses` let through)."""
        if arrival.at == self.at:
            return Applied(arrival.at, (*self.event_ids, arrival.identity))
        return Applied(arrival.at, (arrival.identity,))


NOTHING = Applied()  # the state before its first event


@dataclass(frozen=True)
class Arrival:
    """An event's time and identity; `occurrence` names it in its alerts' ids."""

    at: str
    identity: str

    @property
    def occurrence(self) -> str:
        return f"{self.at}|{self.identity}"


def arrival(event: Any) -> Arrival | None:
    """The time (event time, else receive time) and identity of a normalized record;
    None without a time (normalize always gives a receive time: be total anyway)."""
    at = event.occurred_at or event.received_at
    return None if at is None else Arrival(at, identity(event))


def identity(event: Any) -> str:
    """`<eventId>|<digest of the content>` of a normalized record, receive time excluded."""
    content = {name: value for name, value in asdict(event).items() if name != "received_at"}
    digest = hashlib.blake2b(orjson.dumps(content, option=orjson.OPT_SORT_KEYS), digest_size=8)
    return f"{event.event_id}|{digest.hexdigest()}"
