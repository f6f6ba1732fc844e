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

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
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
from processors.funnel.windows import (
    Change,
    Counts,
    Horizon,
    Step,
    WindowKey,
    decode_id,
    earliest_start,
    summed_changes,
)
from processors.limits.rules import ReachSteps, add_steps, reach_intervals, step_changes, steps
from processors.normalize import canonical

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
    retention: timedelta  # how far back of stream time the states remember
    changed: dict[str, Conversation] = field(default_factory=dict)  # pair key -> its new state
    # pair key -> the events that changed it, each with its record's stream time
    observed: dict[str, list[tuple[Event, datetime | None]]] = field(default_factory=dict)
    horizon: str = ""  # the latest horizon: events older than it were stale (refused)
    stale: int = 0
    _horizon_of: tuple[datetime | None, str] = (None, "")  # (stream time, its horizon)

    def add(self, pair: str, event: Event, stream_time: datetime | None = None) -> None:
        """Merge `event`, whose record came at `stream_time`: refused as stale when older
        than `retention` before it (the states forgot that far back)."""
        if stream_time is not None:
            if stream_time != self._horizon_of[0]:  # formatting a time costs: once per time
                oldest = canonical.format_timestamp(stream_time - self.retention)
                self._horizon_of = (stream_time, oldest)
            horizon = self._horizon_of[1]
            self.horizon = max(self.horizon, horizon)
            if event_time(event) < horizon:
                self.stale += 1
                return
        before = self.changed.get(pair) or self.stored.get(pair) or Conversation()
        after = _merged(before, event)
        if after != before:
            self.changed[pair] = after
            self.observed.setdefault(pair, []).append((event, stream_time))

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
        self, final_after: timedelta, horizon: Horizon[WindowKey] | None = None
    ) -> tuple[dict[WindowKey, Counts], int]:
        """The batch's change to each funnel window's outside-window counts, and how many
        changes were dropped because their window was final at their record's stream
        time; with a `horizon`, also its sums (the funnel's rate alerts')."""
        return summed_changes((self._change(pair, after) for pair, after in self.changed.items()),
                              final_after, horizon)  # fmt: skip

    def _change(self, pair: str, after: Conversation) -> Change[WindowKey]:
        observed = self.observed[pair]
        before = outside_window_contributions(self.stored.get(pair) or Conversation())
        earliest = earliest_start((event_time(event) for event, _ in observed), before)
        return Change(before, outside_window_contributions(after), observed[0][1],
                      observed[-1][1], earliest, partial(self._steps, pair))  # fmt: skip

    def _steps(self, pair: str) -> Iterator[Step[WindowKey]]:
        """The pair's outside-window change event by event, each with its stream time."""
        state = self.stored.get(pair) or Conversation()
        contributed = outside_window_contributions(state)
        for event, at in self.observed[pair]:
            state = _merged(state, event)
            after = outside_window_contributions(state)
            yield contributed, after, at
            contributed = after

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


def _merged(state: Conversation, event: Event) -> Conversation:
    if "inbound" in event:
        return merge_inbound(state, event["inbound"])
    return merge_outbound(state, event["umid"], OutboundObservation(**event["receipt"]))


def _reach(state: Conversation) -> ReachSteps:
    return steps(reach_intervals(contact_times(state)))
