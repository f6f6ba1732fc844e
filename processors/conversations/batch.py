"""One partition batch of the conversations job's pair hop, as a pure fold (no I/O: the
job reads and writes the table around it, and tests replay it freely).

Events in (a customer's inbound message, or a receipt of a message sent to them), each
merged into its pair's `Conversation`; out: the pairs' changed service-window records,
the batch's changes to the funnel windows' outside-window counts (one delta per
window, as the funnel's own `MessageFold`), the changes to the customers' reach for
the messaging limits (one per sub-account), and the states to store, pruned. Changes
are taken across merges only, never across a prune (`rules.prune` says why).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from processors.conversations.rules import (
    Conversation,
    OutboundObservation,
    contact_times,
    merge_inbound,
    merge_outbound,
    outside_window_contributions,
    prune,
    service_window_value,
)
from processors.funnel.windows import Counts, WindowKey, decode_id, summed_changes
from processors.limits.rules import ReachSteps, add_steps, reach_intervals, step_changes, steps

Event = dict[str, Any]  # a record of conversations.events: {"inbound": at} or {"umid", "receipt"}


def inbound_event(at: str) -> Event:
    return {"inbound": at}


def receipt_event(umid: str, observation: OutboundObservation) -> Event:
    return {"umid": umid, "receipt": asdict(observation)}


def event_time(event: Event) -> str:
    return str(event["inbound"] if "inbound" in event else event["receipt"]["at"])


@dataclass
class PairFold:
    stored: Mapping[str, Conversation]  # pair key -> its state before the batch (those stored)
    horizon: str  # events older than this are stale: refused (the states forgot that far back)
    changed: dict[str, Conversation] = field(default_factory=dict)  # pair key -> its new state
    stale: int = 0

    def add(self, pair: str, event: Event) -> None:
        if event_time(event) < self.horizon:
            self.stale += 1
            return
        before = self.changed.get(pair) or self.stored.get(pair) or Conversation()
        if "inbound" in event:
            after = merge_inbound(before, event["inbound"])
        else:
            after = merge_outbound(before, event["umid"], OutboundObservation(**event["receipt"]))
        if after != before:
            self.changed[pair] = after

    def service_windows(self) -> dict[str, dict[str, object]]:
        """pair key -> its `whatsapp.service_windows` record, for the pairs whose record
        the batch changed (receipts alone never change one)."""
        records = {}
        for pair, after in self.changed.items():
            sub_account, customer = decode_id(pair)
            record = service_window_value(sub_account, customer, after)
            before = self.stored.get(pair) or Conversation()
            if record != service_window_value(sub_account, customer, before):
                records[pair] = record
        return records

    def window_deltas(
        self, now: datetime, final_after: timedelta
    ) -> tuple[dict[WindowKey, Counts], int]:
        """The batch's change to each funnel window's outside-window counts, and how many
        changes were dropped because their window was final."""
        return summed_changes(
            ((outside_window_contributions(self.stored.get(pair) or Conversation()),
              outside_window_contributions(after)) for pair, after in self.changed.items()),
            now, final_after,
        )  # fmt: skip

    def reach_deltas(self) -> dict[str, ReachSteps]:
        """sub-account -> the batch's change to its customers' reach (processors/limits):
        each changed pair's reach intervals, after - before, summed per sub-account."""
        deltas: dict[str, ReachSteps] = {}
        for pair, after in self.changed.items():
            before = self.stored.get(pair) or Conversation()
            change = step_changes(_reach(before), _reach(after))
            if change:
                sub_account = decode_id(pair)[0]
                deltas[sub_account] = add_steps(deltas.get(sub_account, {}), change)
        return {sub_account: steps for sub_account, steps in deltas.items() if steps}

    def to_store(self) -> dict[str, Conversation]:
        """The changed states as the table keeps them: without what ended before the horizon."""
        return {pair: prune(state, self.horizon) for pair, state in self.changed.items()}


def _reach(state: Conversation) -> ReachSteps:
    return steps(reach_intervals(contact_times(state)))
