"""One partition batch of the funnel, as two pure folds (no I/O: the job reads and
writes the tables around them, and tests replay them freely).

- `MessageFold`: observations in, each with the stream time at its record; the changed
  message states, and the batch's changes to the windows out, summed per window (one
  delta per window and batch). A message's change changes each window it contributes
  to by `after - before` of its contributions (`windows.changes`), before and after the
  whole batch, each change judged final or not at its record's stream time.
- `TotalsFold`: window deltas in; each touched window's new total. And the rate
  alerts' deltas into the sub-accounts' windows until their decision (`decide`: the
  alerts, once).

Why plain sums are exact: a delta is sent in the transaction of the batch that made
it, with that batch's input offsets, so each exists once or not at all; a total is
the sum of every delta of its window, written in the transaction that read them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial

from processors.alerts import Alert
from processors.funnel.billing import BillingKey, billed_as, billing_contributions
from processors.funnel.rate_alerts import RateThresholds, rate_alerts
from processors.funnel.state import MessageState, Observation, merge
from processors.funnel.windows import (
    Change,
    Counts,
    Horizon,
    K,
    Step,
    WindowKey,
    add_counts,
    contributions,
    earliest_start,
    summed_changes,
)


@dataclass
class MessageFold:
    stored: Mapping[str, MessageState]  # umid -> its state before the batch (those stored)
    final_after: timedelta  # windows final this long after their end take no changes
    changed: dict[str, MessageState] = field(default_factory=dict)  # umid -> its new state
    # umid -> the observations that changed it, each with its record's stream time
    observed: dict[str, list[tuple[Observation, datetime | None]]] = field(default_factory=dict)

    def add(self, umid: str, observation: Observation, stream_time: datetime | None = None) -> None:
        """Merge `observation`, whose record came at `stream_time` (None: no window is
        final for it)."""
        before = self.changed.get(umid) or self.stored.get(umid) or MessageState(umid=umid)
        after = merge(before, observation)
        if after != before:  # else a duplicate, or nothing new: no change anywhere
            self.changed[umid] = after
            self.observed.setdefault(umid, []).append((observation, stream_time))

    def window_deltas(
        self, horizon: Horizon[WindowKey] | None = None
    ) -> tuple[dict[WindowKey, Counts], int]:
        """The batch's change to each funnel window, and how many changes were dropped
        because their window was final; with a `horizon`, also its sums (the rate
        alerts')."""
        return self._deltas(contributions, horizon=horizon)

    def billing_deltas(self) -> tuple[dict[BillingKey, Counts], int]:
        """The batch's change to each billing window, and how many were dropped (final).
        Most receipts (a `sent`, a `read`) change nothing a bill depends on: those
        messages are passed over before their contributions are built."""
        return self._deltas(billing_contributions, billed_as)

    def _deltas(
        self, contribute: Callable[[MessageState], dict[K, Counts]],
        relevant: Callable[[MessageState], object] | None = None,
        horizon: Horizon[K] | None = None,
    ) -> tuple[dict[K, Counts], int]:  # fmt: skip
        """A message's changes over the batch add up to `contribute(last) -
        contribute(first)` (each step's `after - before` telescopes), so each changed
        message is compared once, its receipts of the batch merged first: a message's
        sent, delivered and read often come together. `relevant(state)`: what the
        contributions depend on, when it is cheaper to compare than they are to build."""
        compared = []
        for umid, after in self.changed.items():
            before = self.stored.get(umid)
            if relevant is not None and before is not None and relevant(before) == relevant(after):
                continue
            observed = self.observed[umid]
            contributed = contribute(before) if before is not None else {}
            earliest = earliest_start((observation.at for observation, _ in observed), contributed)
            compared.append(Change(contributed, contribute(after), observed[0][1],
                                   observed[-1][1], earliest,
                                   partial(self._steps, umid, contribute)))  # fmt: skip
        return summed_changes(compared, self.final_after, horizon)

    def _steps(
        self, umid: str, contribute: Callable[[MessageState], dict[K, Counts]]
    ) -> Iterator[Step[K]]:
        """The message's change record by record: (before, after, that record's stream time)."""
        state = self.stored.get(umid)
        contributed = contribute(state) if state is not None else {}
        state = state or MessageState(umid=umid)
        for observation, at in self.observed[umid]:
            state = merge(state, observation)
            after = contribute(state)
            yield contributed, after, at
            contributed = after


@dataclass(frozen=True)
class SubAccountWindow:
    """A sub-account's window of the rate alerts' size: its total over countries and
    template categories as the alerts see it (the deltas that came before the window
    was decided), whether its alerts have been decided, and those sent."""

    counts: Counts
    alerted: tuple[str, ...] = ()
    decided: bool = False


@dataclass
class TotalsFold:
    windows: Mapping[str, Counts]  # window id -> its stored total
    subaccounts: Mapping[str, SubAccountWindow]  # sub-account window id -> its stored one
    limits: RateThresholds
    totals: dict[str, Counts] = field(default_factory=dict)  # touched window id -> new total
    touched_subaccounts: dict[str, SubAccountWindow] = field(default_factory=dict)
    late_for_alerts: int = 0  # deltas that came after their sub-account window was decided

    def add(self, key: WindowKey, delta: Mapping[str, int]) -> None:
        """Add a window's delta to its total."""
        window_id = key.encode()
        self.totals[window_id] = add_counts(self._total(window_id), delta)

    def add_for_alerts(self, whole_id: str, delta: Mapping[str, int]) -> None:
        """Add a delta for the rate alerts to a sub-account's window, unless the window is
        decided. Its changes are those made up to the window's end plus the alerts' delay
        (`windows.Horizon`, judged where they were made); it comes late only from a
        partition more than the drift behind (`decides_at`)."""
        current = self._subaccount(whole_id)
        if current.decided:
            self.late_for_alerts += 1
        else:
            self.touched_subaccounts[whole_id] = replace(
                current, counts=add_counts(current.counts, delta))  # fmt: skip

    def changed_totals(self) -> dict[str, Counts]:
        """The touched windows whose total changed: one whose deltas cancel out (a message
        moving in as another moves out) would repeat its last record."""
        return {window_id: total for window_id, total in self.totals.items()
                if total != self.windows.get(window_id, {})}  # fmt: skip

    def _total(self, window_id: str) -> Counts:
        found = self.totals.get(window_id)
        return found if found is not None else dict(self.windows.get(window_id, {}))

    def _subaccount(self, whole: str) -> SubAccountWindow:
        found = self.touched_subaccounts.get(whole)
        return found if found is not None else self.subaccounts.get(whole, SubAccountWindow({}))


def decide(
    key: WindowKey, window: SubAccountWindow, limits: RateThresholds
) -> tuple[SubAccountWindow, list[Alert]]:
    """A sub-account's window (`subaccount_key`) decided: the rate alerts its counts call
    for (those not sent before), and the window marked decided."""
    new = [alert for alert in rate_alerts(key, window.counts, limits)
           if alert.alert_id not in window.alerted]  # fmt: skip
    alerted = (*window.alerted, *(alert.alert_id for alert in new))
    return SubAccountWindow(window.counts, alerted, decided=True), new
