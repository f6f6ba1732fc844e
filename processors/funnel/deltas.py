"""The records of `<prefix>.funnel.deltas`, keyed by the window's sub-account:
- a hop's change to a window, `{<kind>: <window id>, "counts": {...}}`. Kinds: `window`
  (a funnel window's total), `billing` (a billing window's), `alert` (a sub-account's
  window as the rate alerts count it). The funnel's merge hop and the conversations
  job write them; the funnel's deltas hop sums them;
- a hop's progress, `{"progress": "<hop>|<partition>", "at": <epoch ms>}`, sent to every
  partition (`Progress`): that hop's partition has sent every `alert` delta it judged
  at a stream time up to `at`.

The deltas hop decides a window's rate alerts once every hop's partition it has heard
from has progressed past the window's end plus the alerts' delay
(`rate_alerts.RateThresholds.decides_at`): the minimum of their progress, as Flink's
operators take the minimum of their inputs' watermarks. Each hop judges its changes
record by record at its own stream time (`windows.Horizon`), so the deltas counted are
those the events give, however far apart the hops and partitions ran (a replay at full
speed, a job down for an hour). The deltas' own stream time decides nothing: the
conversations job stamps its deltas with their window's start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson

from processors.engine.job import PartitionBatch
from processors.engine.state.view import TableView
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


# The progress of a hop partition that has read nothing: it holds every decision back
# until it has had nothing to read for IDLE_AFTER, then it is idle and holds nothing.
HOLDING, IDLE = -1, -2
IDLE_AFTER = timedelta(seconds=60)


class Progress:
    """A hop's progress, sent to the deltas' every partition by a wall-clock timer: per
    partition, the lowest stream time of the hop's sources there (those with one),
    down to the last point at which a window's alerts are decided (`to_decision`): only
    those matter to the deltas hop, so a partition sends one record per window at most.

    A source partition read to its end has a stream time that stands still while no
    traffic comes; it then counts as moved on by the wall-clock time it has stood still
    (so a window's alerts come when traffic stops, as they would have with more of it),
    never as the wall clock itself: a partition days behind, read to its end for a
    moment (a replay waiting on the job upstream), would let the others' windows be
    decided before its own deltas for them were sent. The wall clock decides when
    progress is sent, and, for an idle source only, how far it goes; never which
    deltas a window counts."""

    def __init__(
        self, hop: str, sources: tuple[str, ...], deltas: str, to_decision: Callable[[int], int]
    ) -> None:
        self.hop, self.sources, self.deltas = hop, sources, deltas
        self.to_decision = to_decision
        # (partition, source) -> its stream time, and since when it stands still read to its end
        self._standing_still: dict[tuple[int, str], tuple[int, datetime]] = {}
        self._sent: dict[int, int] = {}  # partition -> the progress last sent
        self._empty_since: dict[int, datetime] = {}  # partition -> read to its end, empty, since

    def send(self, batches: Mapping[int, PartitionBatch], now: datetime) -> None:
        for partition, batch in batches.items():
            times = [self._moved_on(partition, source, at, source in batch.read_to_end, now)
                     for source in self.sources
                     if (at := batch.source_times.get(source)) is not None]  # fmt: skip
            if times:
                at = self.to_decision(min(times))
            elif self._idle(partition, batch, now):
                at = IDLE
            else:
                at = HOLDING
            last = self._sent.get(partition)
            if at == last or (last is not None and 0 <= at < last):
                continue  # progress sent never goes back (a stood-still partition's did)
            self._sent[partition] = at
            value = orjson.dumps({"progress": f"{self.hop}|{partition}", "at": at})
            batch.broadcast(self.deltas, self.hop.encode(), value, timestamp_ms=max(at, 0))

    def forget(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        self._standing_still = {key: still for key, still in self._standing_still.items()
                                if key[0] not in gone}  # fmt: skip
        for partition in gone:
            self._sent.pop(partition, None)
            self._empty_since.pop(partition, None)

    def _idle(self, partition: int, batch: PartitionBatch, now: datetime) -> bool:
        """Whether a partition that has read nothing has had nothing to read for
        `IDLE_AFTER` (Flink's idleness timeout): till then it holds the others back, for a
        partition empty at first is often one the job upstream has not written to yet (a
        replay's first seconds)."""
        if not batch.caught_up:
            self._empty_since.pop(partition, None)
            return False
        since = self._empty_since.setdefault(partition, now)
        return now - since >= IDLE_AFTER

    def _moved_on(self, partition: int, source: str, at: int, read_to_end: bool,
                  now: datetime) -> int:  # fmt: skip
        """The source partition's stream time, moved on by the time it has stood still
        read to its end."""
        key = (partition, source)
        still = self._standing_still.get(key)
        if not read_to_end:
            self._standing_still.pop(key, None)
        elif still is None or still[0] != at:
            self._standing_still[key] = (at, now)
        else:
            return at + int((now - still[1]).total_seconds() * 1000)
        return at


def progressed_to(progress: TableView, records: Iterable[Mapping[str, Any]]) -> int | None:
    """Take the batch's progress records into the `progress` table (hop partition -> the
    highest progress it sent, as text); the lowest progress of all the hops' partitions
    it has heard from but the idle ones (None before any)."""
    for record in records:
        key, at = str(record["progress"]).encode(), int(record["at"])
        found = progress.get(key)
        stored = None if found is None else int(found)
        merged = at if stored is None else merge_progress(stored, at)
        if merged != stored:
            progress.put(key, str(merged).encode())
    lowest = None
    for _, value in progress.items():
        at = int(value)
        if at != IDLE:
            lowest = at if lowest is None else min(lowest, at)
    return lowest


def merge_progress(stored: int, at: int) -> int:
    """A hop partition's progress: a stream time only ever moves forward; holding turns
    idle once nothing came for long, and either becomes a stream time with the first
    record; a partition reassigned, nothing read yet, does not hold again."""
    if at >= 0:
        return max(stored, at)
    return IDLE if at == IDLE and stored == HOLDING else stored
