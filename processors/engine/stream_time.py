"""Stream time: how far in event time a job has got, per source partition.

A source partition's stream time is the highest record timestamp (the event time the
writer stamped: normalize stamps each typed record with its event's time) of the
records the job has processed from it; it never goes back. It is what Kafka Streams
calls a partition's time. A watermark in Flink is the same idea with an allowance for
disorder; here that allowance is each rule's own grace period (a window takes changes
until stream time passes its end plus the grace), so stream time stays a plain maximum.

Each source partition keeps its own: a job's sources are often different hops (the
funnel's receipts, and the deltas other partitions' receipts made), whose times need
not agree, so a hop decides with its own source's stream time, never another's. The
engine keeps a worker's partitions within a bounded drift of each other
(`alignment`), so that what a job re-keys to another topic stays nearly in order.

Rules decide with it, never with the wall clock: a replay of the same records in the
same order gives the same stream times, so the same decisions (docs/design.md, Time).

It is committed with the partition's input offset, in the offset's metadata (as Kafka
Streams does: its `TopicPartitionMetadata`, a version byte and the partition time),
so it commits in the batch's
transaction through `send_offsets_to_transaction`: after a crash, a restore or a
rebalance the worker resumes from the committed stream time, which is never ahead of
the committed outputs. A batch's advance is pending until its transaction commits,
and dropped when it aborts.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Message, TopicPartition

from processors.engine.job import running_stream_times

_PREFIX = "wapipe.st1:"  # the metadata's format and version: a later format gets a new one

Partition = tuple[str, int]  # (topic, partition)


def encode(stream_time_ms: int | None) -> str:
    """The offset metadata holding a partition's stream time ("" when not known yet)."""
    return "" if stream_time_ms is None else f"{_PREFIX}{stream_time_ms}"


def decode(metadata: str | None) -> int | None:
    """The stream time an offset's metadata holds; None when it holds none, or one of a
    format this version does not know (the stream time then starts over from the records,
    as for a partition never committed: it only ever moves forward again)."""
    if not metadata or not metadata.startswith(_PREFIX):
        return None
    digits = metadata[len(_PREFIX) :]
    return int(digits) if digits.isdigit() else None


class StreamTimes:
    """The worker's stream times: committed ones, and the advance of the batch in hand."""

    def __init__(self) -> None:
        self._committed: dict[Partition, int] = {}
        self._pending: dict[Partition, int] = {}

    def load(self, committed: Iterable[TopicPartition]) -> None:
        """Take the stream times of newly assigned (or rewound) partitions from their
        committed offsets' metadata."""
        for tp in committed:
            at = decode(tp.metadata)
            key = (tp.topic, tp.partition)
            self._pending.pop(key, None)
            if at is None:
                self._committed.pop(key, None)
            else:
                self._committed[key] = at

    def advance(self, topic: str, partition: int, records: Iterable[Message]) -> None:
        """The batch's records of one source partition have been read: its stream time
        becomes the highest of theirs and its own."""
        latest = self.of_source(topic, partition)
        times = running_stream_times(latest, records)
        if times and times[-1] is not None:
            self._pending[(topic, partition)] = times[-1]

    def of_source(self, topic: str, partition: int) -> int | None:
        """One source partition's stream time, with the batch in hand (epoch ms)."""
        key = (topic, partition)
        return self._pending.get(key, self._committed.get(key))

    def of_partition(self, partition: int) -> dict[str, int]:
        """topic -> its stream time, for the job's source partitions numbered `partition`."""
        times = {topic: at for (topic, number), at in self._committed.items()
                 if number == partition}  # fmt: skip
        times.update((topic, at) for (topic, number), at in self._pending.items()
                     if number == partition)  # fmt: skip
        return times

    def offset(self, topic: str, partition: int, offset: int) -> TopicPartition:
        """The offset to commit for a source partition, its stream time in the metadata."""
        return TopicPartition(topic, partition, offset,
                              metadata=encode(self.of_source(topic, partition)))  # fmt: skip

    def committed(self) -> None:
        """The batch's transaction committed: its advance is the committed stream time."""
        self._committed.update(self._pending)
        self._pending.clear()

    def aborted(self) -> None:
        """The batch's transaction aborted: its records will be read again."""
        self._pending.clear()

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Partitions revoked or lost: their next owner loads what was committed."""
        for key in partitions:
            self._committed.pop(key, None)
            self._pending.pop(key, None)
