"""The records of `<prefix>.funnel.deltas`: a hop's change to a window, keyed by the
window's sub-account, `{<kind>: <window id>, "counts": {...}}`. Kinds: `window` (a funnel
window's total), `billing` (a billing window's), `alert` (a sub-account's window as
the rate alerts count it). The funnel's merge hop and the conversations job write them;
the funnel's deltas hop sums them.

The deltas hop decides the rate alerts when its stream time has passed a window's end
by the alerts' delay and the drift (`rate_alerts.RateThresholds.decides_at`). That
stream time follows the funnel's merge hop, whose sources the funnel reads in step
(alignment): its deltas are stamped with its stream time. The conversations job's are
stamped with their window's start: that job runs at its own pace (a replay may take it
hours ahead of the funnel), and its records must not move the funnel's clock (they can
no more than to a window's start, long before that window's decision).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

import orjson

from processors.engine.job import PartitionBatch
from processors.normalize import canonical


class DeltaWindow(Protocol):
    @property
    def sub_account_id(self) -> str: ...

    @property
    def start(self) -> str: ...

    def encode(self) -> str: ...


def send_deltas(
    batch: PartitionBatch, topic: str,
    kinds: Mapping[str, Iterable[tuple[DeltaWindow, Mapping[str, int]]]],
    *, at_window_start: bool = False,
) -> None:  # fmt: skip
    """Send each kind's (window, delta) pairs of the batch, stamped with its stream time
    (the funnel's), or with each window's start (`at_window_start`: the conversations')."""
    stamp = None
    for kind, deltas in kinds.items():
        for window, counts in deltas:
            if at_window_start:
                stamp = canonical.timestamp_ms(window.start)
            batch.send(topic, window.sub_account_id.encode(),
                       orjson.dumps({kind: window.encode(), "counts": counts}),
                       timestamp_ms=stamp)  # fmt: skip
