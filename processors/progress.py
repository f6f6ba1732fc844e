"""How far each source partition of a worker has got: its consumer lag, the watchdog
that ends a worker whose partition stopped moving, and the check that its events
reach the agent without a hole.

Both read the broker's end offset of every assigned partition (faust learns an end
offset only from records it fetched, so a partition whose records never reached the
stream would show no lag at all) and faust's committed offset (the broker's log
start when nothing was committed yet: then every record of the partition is behind).

Offsets alone cannot tell a lost record from an offset that holds none: a
transactional producer's commit marker takes an offset that no consumer ever
receives, so a partition ending in one stays "behind" by one forever. Before the
watchdog's verdict counts, `has_records` reads the partition from its committed
offset to see whether anything is really there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from wapipe.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Progress:
    """One source partition: the next offset to commit, the partition's end, and the
    next offset the Kafka client will hand to faust (None when faust is not fetching
    the partition)."""

    committed: int
    end: int
    position: int | None = None

    @property
    def lag(self) -> int:
        """Records not yet processed and committed."""
        return max(0, self.end - self.committed)

    @property
    def waiting(self) -> bool:
        """Being fetched, but no record past the committed offset handed to faust yet.

        The Kafka client hands over one partition's fetched records at a time, up to a
        megabyte of them: under a backlog a partition can wait behind the others for
        a minute. While the worker commits those others, that is backpressure, not a
        stall (`StallWatchdog`)."""
        return self.position is not None and self.position <= self.committed


async def source_progress(app: Any) -> dict[Any, Progress]:
    """The progress of every assigned partition the worker acknowledges and commits
    (not the tables' changelogs). Asks the broker; raises if it does not answer."""
    consumer = app.consumer
    partitions = [tp for tp in consumer.assignment() if app.topics.acks_enabled_for(tp.topic)]
    if not partitions:
        return {}
    ends = await consumer.highwaters(*partitions)
    # faust's own bookkeeping (faust-streaming is pinned exactly): updated on every
    # commit, and by the seek to the committed offsets after each rebalance.
    committed = {tp: consumer._committed_offset.get(tp) for tp in partitions}
    unknown = [tp for tp, offset in committed.items() if offset is None]
    starts = await consumer.earliest_offsets(*unknown) if unknown else {}
    progress = {
        tp: Progress(committed=committed[tp] or starts.get(tp) or 0, end=ends.get(tp) or 0)
        for tp in partitions
    }
    # The client's position matters only where records wait, and only on partitions
    # faust asks the client for (not paused, nor held back while their stream's
    # buffer is full).
    fetched = consumer._active_partitions or set()
    for tp, partition in progress.items():
        if partition.lag and tp in fetched:
            progress[tp] = replace(partition, position=await consumer.position(tp))
    return progress


class StallWatchdog:
    """Finds partitions that have had records to process, and no commit, for too long.

    A healthy worker commits each partition it is behind on within seconds (every
    batch is acknowledged as a whole, faust commits every few seconds). A partition
    that stays behind with its committed offset frozen has lost events between
    faust's fetcher and our agent that no later event revealed (`Continuity` catches
    the others): they are never acknowledged, so faust stops committing that
    partition or never starts. Only a restart, which replays from the committed
    offset, brings them back; the outputs are idempotent (README, "Exact under
    crashes"), so the worker exits for its supervisor to restart it.

    Time spent rebalancing or restoring tables does not count: the caller `reset`s
    the watchdog then. Nor does time a partition spends `waiting` for the Kafka
    client to hand its records over while the worker commits other partitions: it
    is busy with their backlog, and the clock starts when faust has the records.
    """

    def __init__(self, stall_seconds: float) -> None:
        self.stall_seconds = stall_seconds
        # partition -> (the committed offset last seen, when it was first seen behind
        # with that committed offset)
        self.since: dict[Any, tuple[int, float]] = {}
        # partition -> its committed offset at the previous check
        self.committed: dict[Any, int] = {}
        # partition -> (committed, end) at which it held no record to process (see `excuse`)
        self.excused: dict[Any, tuple[int, int]] = {}

    def stalled(self, progress: Mapping[Any, Progress], now: float) -> list[Any]:
        """The partitions behind their end whose committed offset has not moved for
        `stall_seconds`, given their progress at monotonic time `now`."""
        offsets = {tp: partition.committed for tp, partition in progress.items()}
        busy = any(self.committed.get(tp, offset) != offset for tp, offset in offsets.items())
        self.committed = offsets
        since: dict[Any, tuple[int, float]] = {}
        for tp, partition in progress.items():
            if (
                partition.lag == 0
                or (partition.waiting and busy)
                or self.excused.get(tp) == (partition.committed, partition.end)
            ):
                continue
            committed, first = self.since.get(tp, (partition.committed, now))
            since[tp] = (partition.committed, first if committed == partition.committed else now)
        self.since = since
        return [tp for tp, (_, first) in since.items() if now - first >= self.stall_seconds]

    async def confirmed_stalls(
        self, progress: Mapping[Any, Progress], now: float, bootstrap: str, job: str
    ) -> dict[Any, Progress]:
        """`stalled`, less the partitions that hold no record to process when read
        (those are excused), and those the broker does not let us read now."""
        confirmed = {}
        for tp in self.stalled(progress, now):
            partition = progress[tp]
            try:
                holds_records = await has_records(bootstrap, tp, partition)
            except Exception as exc:  # no verdict without the broker: ask again next time
                log.warning("could not read a stalled-looking partition", job=job,
                            topic=tp.topic, partition=tp.partition, error=repr(exc))  # fmt: skip
                continue
            if holds_records:
                confirmed[tp] = partition
            else:
                log.info("partition behind its end by markers only: not stalled", job=job,
                         topic=tp.topic, partition=tp.partition,
                         committed=partition.committed, end=partition.end)  # fmt: skip
                self.excuse(tp, partition)
        return confirmed

    def excuse(self, tp: Any, partition: Progress) -> None:
        """`tp` at `partition` holds no record after its committed offset (only markers):
        not stalled until its committed or end offset moves."""
        self.excused[tp] = (partition.committed, partition.end)
        self.since.pop(tp, None)

    def reset(self) -> None:
        self.since, self.committed = {}, {}


class Continuity:
    """Checks that each source partition's events reach an agent without a hole.

    Around a rebalance faust can lose an event between its fetcher and the agent: it
    starts handing a newly assigned partition's records to the agents before it has
    sought the partition to its committed offset; in the loss traced in the
    scale-out test such a record was cleared from the agent's queue and never
    fetched again. faust's commit then moves past a hole of exactly one offset
    (`Consumer._new_offset` compares the first acknowledged offset with the committed
    one as if that were the last processed one, not the next), so the event is lost
    silently; a longer hole stalls the partition instead.

    The event after a hole reveals it before its batch is handled and acknowledged:
    `holes` names each partition whose events skip offsets, as the range skipped.
    """

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.generation: int | None = None
        self.expected: dict[Any, int] = {}  # partition -> the next offset its events should have

    def holes(self, events: list[Any]) -> dict[Any, Progress]:
        """The partitions whose `events` skip offsets: (next offset expected, offset got)."""
        generation = self.consumer.app.consumer_generation_id
        if generation != self.generation:  # a rebalance: faust seeks to the committed offsets
            self.generation, self.expected = generation, {}
        holes: dict[Any, Progress] = {}
        for event in events:
            tp, offset = event.message.tp, event.message.offset
            expected = self.expected.get(tp)
            if expected is None:  # the first event since the rebalance
                expected = self.consumer._committed_offset.get(tp)
            if expected is not None and offset < expected:
                continue  # a repeat: harmless
            if expected is not None and offset > expected:
                holes.setdefault(tp, Progress(committed=expected, end=offset))
            self.expected[tp] = offset + 1
        return holes


async def has_records(bootstrap: str, tp: Any, partition: Progress, timeout_s: float = 5) -> bool:
    """Whether a consumer of its own finds a record of `tp` at or after the committed
    offset and before the end: False when only markers fill that range (or the broker
    does not answer within `timeout_s`: the next check asks again)."""
    source = TopicPartition(tp.topic, tp.partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([source])
        consumer.seek(source, partition.committed)
        batches = await consumer.getmany(source, timeout_ms=int(timeout_s * 1000))
        return any(record.offset < partition.end for record in batches.get(source, []))
    finally:
        await consumer.stop()
