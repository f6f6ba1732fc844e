"""Stream-time alignment: a worker reads its source partitions in step, none more than
a bounded drift ahead in stream time of the slowest one still being read (what Flink
calls watermark alignment; Kafka Streams picks the record with the lowest timestamp
among a task's partitions for the same reason).

Why: a job re-keys records to another topic (the funnel's replies and deltas, the
conversations' pair events, the limits' senders). That topic's partition interleaves
what the job read from all of its source partitions, in the order it read them. Read
at full speed (a replay, a backlog after downtime), one source partition can run days
ahead of another, and the re-keyed topic then carries events days out of order: a
rule deciding with that topic's stream time would drop the late ones (a window final,
a retention horizon passed). Held within the drift, the re-keyed topics are never
further out of order than the drift (and what arrived late live), far below the rules'
grace periods.

Partitions read to their end (idle: no traffic, or a topic fed later) hold nobody
back: stream time moves only with records, so waiting on them would stop the job.
The drift holds within a worker; with several workers of a job at full speed, their
partitions' times are not aligned with each other's (docs/design.md, Time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

Partition = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class Clock:
    """A source partition as alignment sees it."""

    stream_time_ms: int | None  # None before its first record
    reading: bool  # it has records not yet read


def ahead(clocks: Mapping[Partition, Clock], max_drift_ms: int) -> set[Partition]:
    """The partitions to hold back: those more than `max_drift_ms` ahead of the slowest
    partition still reading. One still reading that has no stream time yet (nothing read)
    is the slowest of all: every partition with a stream time waits for its first read."""
    reading = [clock.stream_time_ms for clock in clocks.values() if clock.reading]
    if not reading:
        return set()
    known = [at for at in reading if at is not None]
    if len(known) < len(reading):
        return {partition for partition, clock in clocks.items()
                if clock.stream_time_ms is not None}  # fmt: skip
    limit = min(known) + max_drift_ms
    return {partition for partition, clock in clocks.items()
            if clock.stream_time_ms is not None and clock.stream_time_ms > limit}  # fmt: skip
