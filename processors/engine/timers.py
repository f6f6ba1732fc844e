"""When a job's timers run, and running them safely (Kafka Streams' punctuators).

- A `WallClockTimer` runs every `every_seconds` of the wall clock, over every opened
  partition, each batch saying whether its partition has been read to its end.
- A `StreamTimer` runs on a partition once that partition's stream time (of the
  timer's source) has moved `every_seconds` past its last run there, or past the first
  stream time this worker saw there. Its next due points commit with the round's
  transaction and are dropped with an aborted one, as the stream times they follow.

Each run works on forks of the round's batches: one that raises leaves no trace in the
round (its sends and writes are dropped), is logged and counted, and runs again at its
next time; the worker goes on, as it does past a poison record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

from processors.engine.job import Countable, PartitionBatch, StreamTimer, Timer, WallClockTimer
from wapipe.logs import get_logger

log = get_logger(__name__)

# (partition, source topic, its sources read to their end) -> a batch without records over
# the round's views
BatchOf = Callable[[int, str, frozenset[str]], PartitionBatch]
Run = Callable[[Mapping[int, PartitionBatch]], None]


class Timers:
    def __init__(self, job: str, timers: tuple[Timer, ...], default_source: str,
                 errors: Countable) -> None:  # fmt: skip
        self.job, self.timers, self.errors = job, timers, errors
        self.default_source = default_source
        self._wall_due = [time.monotonic() + timer.every_seconds for timer in timers]
        # (timer, partition) -> the stream time it is next due at; pending: this round's
        self._stream_due: dict[tuple[int, int], int] = {}
        self._pending: dict[tuple[int, int], int] = {}

    def run(
        self, partitions: Iterable[int], stream_time: Callable[[str, int], int | None],
        read_to_end: Callable[[], Mapping[int, frozenset[str]]], batch_of: BatchOf,
    ) -> None:  # fmt: skip
        """Run the timers due on the opened `partitions`; `stream_time(topic, partition)`."""
        now = time.monotonic()
        opened = list(partitions)
        for index, timer in enumerate(self.timers):
            if isinstance(timer, WallClockTimer):
                if self._wall_due[index] > now:
                    continue
                self._wall_due[index] = now + timer.every_seconds
                done = read_to_end()
                batches = {p: batch_of(p, self.default_source, done.get(p, frozenset()))
                           for p in opened}  # fmt: skip
                self._safely(index, batches, _at_wall_time(timer))
            else:
                source = timer.source or self.default_source
                due = self._stream_due_on(index, timer, opened, source, stream_time)
                if due:
                    batches = {p: batch_of(p, source, frozenset()) for p in due}
                    self._safely(index, batches, timer.run)

    def committed(self) -> None:
        self._stream_due.update(self._pending)
        self._pending.clear()

    def aborted(self) -> None:
        self._pending.clear()

    def forget(self, partitions: frozenset[int]) -> None:
        """Partitions gone from this worker: their next owner starts their timers afresh."""
        self._stream_due = {key: at for key, at in self._stream_due.items()
                            if key[1] not in partitions}  # fmt: skip

    def _stream_due_on(
        self, index: int, timer: StreamTimer, partitions: list[int], source: str,
        stream_time: Callable[[str, int], int | None],
    ) -> list[int]:  # fmt: skip
        due = []
        interval = round(timer.every_seconds * 1000)
        for partition in partitions:
            at = stream_time(source, partition)
            if at is None:
                continue
            next_at = self._stream_due.get((index, partition))
            if next_at is None or at >= next_at:
                if next_at is not None:
                    due.append(partition)
                self._pending[(index, partition)] = at + interval
        return due

    def _safely(self, index: int, batches: Mapping[int, PartitionBatch], run: Run) -> None:
        """`run` over forks of `batches`, merged into them if it returns."""
        forks = {partition: batch.fork([]) for partition, batch in batches.items()}
        try:
            run(forks)
        except Exception as error:
            self.errors.inc()
            log.error("timer failed; its work is dropped and it runs again at its next time",
                      job=self.job, timer=index, error=repr(error), exc_info=True)  # fmt: skip
            return
        for partition, fork in forks.items():
            fork.merge_into(batches[partition])


def _at_wall_time(timer: WallClockTimer) -> Run:
    def run(batches: Mapping[int, PartitionBatch]) -> None:
        timer.run(batches, datetime.now(UTC))

    return run
