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

    def refuses(self, at: str, event_id: str) -> str | None:
        """Why an event at `at` with identity `event_id` changes nothing ("stale",
        "duplicate"), or None when it is news."""
        if self.at is not None and at < self.at:
            return "stale"
        if at == self.at and event_id in self.event_ids:
            return "duplicate"
        return None

    def plus(self, at: str, event_id: str) -> Applied:
        """This with the event taken (one `refuses` let through)."""
        if at == self.at:
            return Applied(at, (*self.event_ids, event_id))
        return Applied(at, (event_id,))


NOTHING = Applied()  # the state before its first event


def identity(event: Any) -> str:
    """`<eventId>|<digest of the content>` of a normalized record, receive time excluded."""
    content = {name: value for name, value in asdict(event).items() if name != "received_at"}
    digest = hashlib.blake2b(orjson.dumps(content, option=orjson.OPT_SORT_KEYS), digest_size=8)
    return f"{event.event_id}|{digest.hexdigest()}"
