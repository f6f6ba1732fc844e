"""One batch of the message_states agent, as a pure fold: observations in; changed
message states and touched window partials out.

The agent stores what comes out in a fixed order (partials first, states last);
`Batch` itself does no I/O: it reads stored states and partials through the two
functions it is given, so tests can replay batches after simulated crashes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from processors.funnel.state import MessageState, Observation, merge
from processors.funnel.windows import Counts, Partial, WindowKey, changes, contributions, is_final

Slot = tuple[int, WindowKey]  # (source partition, window): the key of a Partial


@dataclass
class Batch:
    stored_state: Callable[[str], MessageState]
    stored_partial: Callable[[Slot], Partial]
    final_after: timedelta
    now: datetime  # the wall-clock time of the batch: windows final by then take no changes
    changed: dict[str, MessageState] = field(default_factory=dict)  # umid -> its new state
    touched: dict[Slot, Partial] = field(default_factory=dict)
    late_changes: int = 0  # changes dropped: their window was final
    _contributions: dict[str, dict[WindowKey, Counts]] = field(default_factory=dict)

    def add(self, umid: str, observation: Observation, partition: int, offset: int) -> list[Slot]:
        """Take the observation at `offset` of `partition`; returns the partials it touched.

        A partial is touched even when it holds this event's change already (a
        redelivery after a crash): it is then sent again, in case it was stored but
        not sent before the crash.
        """
        before = self.changed[umid] if umid in self.changed else self.stored_state(umid)
        after = merge(before, observation)
        if after == before:
            return []  # a duplicate, or nothing new: no change anywhere
        self.changed[umid] = after
        contributed = self._contributions.get(umid) or contributions(before)
        self._contributions[umid] = contributions(after)
        slots = []
        for key, change in changes(contributed, self._contributions[umid]).items():
            if is_final(key, self.now, self.final_after):
                self.late_changes += 1
                continue
            slot = (partition, key)
            partial = self.touched[slot] if slot in self.touched else self.stored_partial(slot)
            self.touched[slot] = partial.apply(change, offset)
            slots.append(slot)
        return slots


def slot_id(slot: Slot) -> str:
    """The key of a partial in the `partials` table."""
    return f"{slot[0]}|{slot[1].encode()}"
