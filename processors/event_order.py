"""Event-time order for the jobs whose state follows the latest event (templates,
phones): a state holds the time of the latest event applied and the ids of the
events applied at that time. An event older than that is stale news and one
already applied is a duplicate; neither changes anything, so retries, replays after
a crash and late old events leave the state and its alerts as they were.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Applied:
    """The latest event time applied to a state, and the ids of its events."""

    at: str | None = None
    event_ids: tuple[str, ...] = ()

    def refuses(self, at: str, event_id: str) -> str | None:
        """Why an event at `at` with id `event_id` changes nothing ("stale",
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
