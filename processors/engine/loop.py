"""The batch loop: one worker of one job, exactly once through Kafka transactions.

Each round:
1. consume up to `batch_size` records (or what came within `batch_seconds`);
2. hand each source partition's records to the job with views of that partition's
   tables (`PartitionBatch`); run the job's timers that are due;
3. in one transaction: produce every output and one changelog record per changed
   key, send the input offsets with the consumer's group metadata, commit;
4. only then apply the writes to RocksDB, each table partition in one write batch
   with its new checkpoint (`state.store`).

Hence outputs, changelogs and input offsets commit together or not at all, and a
store never holds a write its changelog lacks. A crash anywhere before the commit
leaves nothing a read_committed reader sees, and the restart processes the same
records again from the committed offsets; a crash after it leaves a store behind its
changelog, which restoring from the checkpoint mends. A worker whose partitions
moved on while it was stopped (a zombie) cannot commit: the group coordinator
refuses offsets of an old generation, and a restarted worker with the same
`transactional.id` fences the old one at `init_transactions`.

A job's tables are partitioned as its sources: partition p of every table goes with
partition p of every source, and within a round the records of all of them see
(and write) the same view of it. A job with tables and several sources must have
its sources co-partitioned, so it gets the `range` assignor, which gives partition
p of every topic of equal partition count to the same worker (eager rebalances:
every partition is revoked and assigned again, its stores reopened from their
checkpoints); every other job gets `cooperative-sticky`.

Rebalances happen only inside `consume`, between batches, when no transaction is
open. A newly assigned partition is paused until its stores are restored: first the
input's committed offsets are read with `require_stable` (read_committed does so),
which waits until a predecessor's transaction on them has ended, so that the
changelog's end read next holds everything that predecessor committed. Those offsets
also carry each source partition's committed stream time (`stream_time`), which the
partition resumes from. A long restore goes on a slice per round, so the loop keeps
calling `consume` (the group would otherwise drop a worker silent for
max.poll.interval.ms, as Quix Streams avoids by polling while it recovers).

Timers (`job.StreamTimer`, `job.WallClockTimer`) run after the round's records, each
in views of its own: one that raises is logged and counted, its work dropped, and
the worker goes on (it runs again at its next time). Counters a job counts through
`PartitionBatch.count`, and the engine's, count committed work only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import confluent_kafka
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from prometheus_client import CollectorRegistry

from processors.engine import kafka
from processors.engine.alignment import Clock, ahead
from processors.engine.job import Job, PartitionBatch, origin, running_stream_times
from processors.engine.metrics import EngineMetrics, Heartbeat, WebServer
from processors.engine.state.restore import CheckpointAhead, RestoreError, restore
from processors.engine.state.store import Store, StoreOptions
from processors.engine.state.view import TableView
from processors.engine.stream_time import StreamTimes
from processors.engine.timers import Timers
from processors.engine.transaction import (
    FENCED,
    RETRY_SECONDS,
    StuckThreads,
    Transactions,
    retrying,
)
from wapipe.logs import get_logger

log = get_logger(__name__)

Views = dict[int, dict[str, TableView]]  # partition -> table -> this round's view of it

_GAUGE_SECONDS = 2.0
_MEMORY_SECONDS = 10.0
_READ_PAST_SECONDS = 1.0  # `Worker._commit_read_past`
_BY_KEY = (None,)  # an output's partition: its key decides


@dataclass(frozen=True)
class EngineConfig:
    kafka: kafka.KafkaOptions
    state_dir: Path  # one directory per table partition below it
    changelogs: Mapping[str, str]  # table name -> its changelog topic
    store: StoreOptions
    batch_size: int = 500
    batch_seconds: float = 0.05
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # The broker refusing this many batches in a row ends the worker (exit non-zero).
    max_failed_batches: int = 5
    # How long the restore and the commit calls may wait for the broker.
    broker_timeout_seconds: float = 60.0
    # Restoring goes on for at most this long per round, then the loop consumes again
    # (far below max.poll.interval.ms, after which the group would drop the worker).
    restore_slice_seconds: float = 10.0
    # A source partition more than this far ahead in stream time of the slowest one
    # still being read waits for it (`alignment`); None: no alignment.
    max_drift_ms: int | None = 600_000


class EngineError(Exception):
    """The worker cannot go on (the message says why); its supervisor restarts it."""


class _Aborted(Exception):
    """A batch's transaction was aborted: its records are processed again."""


class _StartedOver(Exception):
    """The producer failed fatally and the worker started over from the committed offsets
    (`Worker._start_over`): nothing to rewind."""


class Worker:
    """One worker of `job`: `run()` until `stop()` (a signal handler may call it)."""

    def __init__(self, job: Job, config: EngineConfig, registry: CollectorRegistry) -> None:
        missing = {table.name for table in job.tables} - set(config.changelogs)
        if missing:
            raise ValueError(f"{job.name}: no changelog topic for the tables {sorted(missing)}")
        self.job, self.config = job, config
        self.metrics = EngineMetrics(registry, job.name)
        self.heartbeat = Heartbeat(limit=max(30.0, 3 * config.broker_timeout_seconds))
        self.web = WebServer(config.web_host, config.web_port, registry,
                             self.heartbeat.alive, self._ready)  # fmt: skip
        # Several sources with tables: co-partitioned, so the eager `range` assignor.
        self._copartitioned = bool(job.tables) and len(job.sources) > 1
        self.consumer = kafka.consumer(config.kafka, cooperative=not self._copartitioned)
        self.transactions = Transactions(config.kafka, config.broker_timeout_seconds,
                                         self.heartbeat.beat, lambda: self._stopping)  # fmt: skip
        self.restorer = kafka.restore_consumer(config.kafka)
        # partition -> table -> its store; {} for a partition of a job without tables: the
        # partitions opened (restored, their stream times loaded) and being processed.
        self.stores: dict[int, dict[str, Store]] = {}
        self.stream_times = StreamTimes()
        self._to_restore: list[TopicPartition] = []
        self._assigned: set[tuple[str, int]] = set()
        self._held: set[tuple[str, int]] = set()  # paused by alignment (`_align`)
        self._partition_counts: dict[str, int] = {}  # topic -> its partitions (broadcasts)
        self._offsets: dict[tuple[str, int], int] = {}  # the source partitions' committed offsets
        self._stopping = False
        self._polled = False
        self._failed_batches = 0
        self.timers = Timers(job.name, job.timers, job.sources[0], self.metrics.timer_errors)
        self._gauges_due = self._memory_due = self._read_past_due = 0.0

    # --- running ------------------------------------------------------------------------------
    def run(self) -> None:
        self.web.start()
        try:
            self.transactions.init()
            if self._copartitioned:
                self._check_copartitioned()
            self.consumer.subscribe(list(self.job.sources), on_assign=self._on_assign,
                                    on_revoke=self._on_revoke, on_lost=self._on_lost)  # fmt: skip
            log.info("worker started", job=self.job.name, sources=self.job.sources,
                     transactional_id=self.config.kafka.transactional_id)  # fmt: skip
            while not self._stopping:
                self._round()
        finally:
            self._close()

    def _check_copartitioned(self) -> None:
        metadata = self.consumer.list_topics(timeout=self.config.broker_timeout_seconds)
        counts = {topic: len(metadata.topics[topic].partitions) for topic in self.job.sources
                  if topic in metadata.topics and metadata.topics[topic].error is None}  # fmt: skip
        if len(set(counts.values())) > 1:
            raise EngineError(f"{self.job.name} reads its sources co-partitioned (partition p "
                              f"of each with its tables' partition p), but their partition "
                              f"counts differ: {counts}")  # fmt: skip

    def stop(self) -> None:
        """Finish the batch in hand, commit it, leave the group, close the stores."""
        self._stopping = True

    def _round(self) -> None:
        self.heartbeat.beat()
        if self._to_restore:
            self._restore()
        messages = self.consumer.consume(self.config.batch_size, self.config.batch_seconds)
        self._polled = True
        started = time.perf_counter()
        groups = self._by_partition(messages)
        before = {key: self.stream_times.of_source(*key) for key in groups}
        for (topic, partition), polled in groups.items():
            self.stream_times.advance(topic, partition, polled)
        views: Views = {}
        batches = [self._process(topic, partition, records, self._views(views, partition),
                                 before[(topic, partition)])
                   for (topic, partition), records in groups.items()]  # fmt: skip
        batches += self._run_timers(views)
        if groups or any(batch.outputs for batch in batches) or _written(views):
            offsets = [self.stream_times.offset(topic, partition, origin(records[-1])[2] + 1)
                       for (topic, partition), records in groups.items()]  # fmt: skip
            try:
                checkpoints = self._commit(batches, views, offsets)
            except _Aborted:
                self._forget_batch()
                self._rewind(groups)
            except _StartedOver:
                self._forget_batch()
            else:
                self._committed(batches, views, checkpoints)
                self._offsets.update(((tp.topic, tp.partition), tp.offset) for tp in offsets)
                records = sum(map(len, groups.values()))
                self.metrics.records.inc(records)
                self.metrics.batch_records.observe(records)
                self.metrics.batch_duration.observe(time.perf_counter() - started)
        else:  # nothing read, sent or written: a timer that ran did nothing to commit
            self._committed(batches, views, {})
            self._commit_read_past()
        self._align()
        self._update_gauges()

    def _committed(
        self, batches: list[PartitionBatch], views: Views,
        checkpoints: Mapping[tuple[str, int], int],
    ) -> None:  # fmt: skip
        """The round's transaction committed: store its writes, take its stream times and
        timers' due points, count its counts."""
        self._store(views, checkpoints)
        self.stream_times.committed()
        self.timers.committed()
        for batch in batches:
            for counter, amount in batch.counts:
                counter.inc(amount)

    def _forget_batch(self) -> None:
        """The round's work is dropped (aborted, or nothing to commit): its stream times
        and its timers' due points with it."""
        self.stream_times.aborted()
        self.timers.aborted()

    def _by_partition(self, messages: list[Message]) -> dict[tuple[str, int], list[Message]]:
        groups: dict[tuple[str, int], list[Message]] = {}
        early: dict[tuple[str, int], int] = {}  # partition -> the first offset fetched too early
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise EngineError(f"the consumer failed: {error}")
                log.warning("consumer error", job=self.job.name, error=str(error))
                continue
            topic, partition, offset = origin(message)
            key = (topic, partition)
            if key not in self._assigned:  # fetched before a rebalance took it: not ours
                continue
            if partition not in self.stores:  # fetched before it was paused to restore
                early[key] = min(offset, early.get(key, offset))
                continue
            group = groups.get(key)
            if group is None:
                groups[key] = [message]
            else:
                group.append(message)
        for (topic, partition), offset in early.items():
            # Seen once when a partition came back in the rebalance's own consume call:
            # read them again once the partition is restored (it stays paused till then).
            log.info("records fetched before their partition was restored: read again after",
                     job=self.job.name, topic=topic, partition=partition,
                     offset=offset)  # fmt: skip
            self.consumer.seek(TopicPartition(topic, partition, offset))
        return groups

    # --- the job ------------------------------------------------------------------------------
    def _views(self, views: Views, partition: int) -> dict[str, TableView]:
        """The round's views of `partition`'s tables, shared by all its sources' records."""
        found = views.get(partition)
        if found is None:
            stores = self.stores.get(partition)
            if stores is None:  # paused until opened
                raise EngineError(f"records of partition {partition} before its restore")
            found = {name: TableView(store) for name, store in stores.items()}
            views[partition] = found
        return found

    def _process(
        self, topic: str, partition: int, records: list[Message], views: dict[str, TableView],
        stream_time_before: int | None,
    ) -> PartitionBatch:  # fmt: skip
        """The job's work on one partition's records; its writes join the round's views
        only if it succeeds."""
        batch = PartitionBatch(topic, partition, records, views,
                               self.stream_times.of_source(topic, partition),
                               self.stream_times.of_partition(partition),
                               first_stream_time_ms=stream_time_before)  # fmt: skip
        attempt = batch.fork(records)
        try:
            self.job.process(attempt)
        except Exception:  # one of the records is poison: find which, one by one
            log.warning("batch failed; retrying its records one at a time", job=self.job.name,
                        topic=topic, partition=partition, records=len(records),
                        exc_info=True)  # fmt: skip
        else:
            attempt.merge_into(batch)
            return batch
        # Each record alone starts at the stream time the records before it brought.
        befores = [stream_time_before, *running_stream_times(stream_time_before, records)[:-1]]
        for record, before in zip(records, befores, strict=True):
            alone = batch.fork([record])
            alone.first_stream_time_ms = before
            try:
                self.job.process(alone)
            except Exception as error:
                batch.count(self.metrics.poison)
                log.error("poison record sent to the dead letters", job=self.job.name,
                          topic=record.topic(), partition=partition, offset=record.offset(),
                          error=repr(error), exc_info=True)  # fmt: skip
                batch.outputs.append(self.job.dead_letter(record, error))
            else:
                alone.merge_into(batch)
        return batch

    def _run_timers(self, views: Views) -> list[PartitionBatch]:
        """Run the timers that are due (`timers`), each partition's batch without records
        reading and writing the round's views."""
        batches: list[PartitionBatch] = []

        def batch_of(partition: int, source: str, read_to_end: frozenset[str]) -> PartitionBatch:
            times = self.stream_times.of_partition(partition)
            assigned = {topic for topic, number in self._assigned if number == partition}
            batch = PartitionBatch(source, partition, [], self._views(views, partition),
                                   times.get(source), times, assigned <= read_to_end,
                                   read_to_end=read_to_end)  # fmt: skip
            batches.append(batch)
            return batch

        self.timers.run(self.stores, self.stream_times.of_source, self._read_to_end, batch_of)
        return batches

    def _align(self) -> None:
        """Hold back the opened source partitions too far ahead of the slowest one still
        being read, release those no longer ahead (`alignment`)."""
        max_drift = self.config.max_drift_ms
        if max_drift is None or not self._assigned:
            return
        clocks: dict[tuple[str, int], Clock] = {}
        for tp in self.consumer.position(self._opened_sources()):
            low, end = self.consumer.get_watermark_offsets(tp, cached=True)
            reading = end > self._read_to(tp, low)
            clocks[(tp.topic, tp.partition)] = Clock(
                self.stream_times.of_source(tp.topic, tp.partition), reading)  # fmt: skip
        held = ahead(clocks, max_drift)
        if held - self._held:
            self.consumer.pause([TopicPartition(t, p) for t, p in held - self._held])
        if self._held - held:
            self.consumer.resume([TopicPartition(t, p) for t, p in self._held - held
                                  if (t, p) in clocks])  # fmt: skip
        self._held = held

    def _opened_sources(self) -> list[TopicPartition]:
        """The assigned source partitions whose tables are restored (their stream times
        loaded): those being read."""
        restoring = {(tp.topic, tp.partition) for tp in self._to_restore}
        return [TopicPartition(t, p) for t, p in self._assigned
                if p in self.stores and (t, p) not in restoring]  # fmt: skip

    def _read_to_end(self) -> dict[int, frozenset[str]]:
        """partition number -> its source topics whose partition here has been read to its
        end (librdkafka's position passes transaction markers, so lag is 0 then)."""
        done: dict[int, set[str]] = {}
        for tp in self.consumer.position(self.consumer.assignment()):
            low, end = self.consumer.get_watermark_offsets(tp, cached=True)
            if end >= 0 and self._read_to(tp, low) >= end:
                done.setdefault(tp.partition, set()).add(tp.topic)
        return {partition: frozenset(topics) for partition, topics in done.items()}

    def _read_to(self, position: TopicPartition, low: int) -> int:
        """The offset the partition has been read to: its position, which librdkafka sets
        only once a fetch returned records (committed or aborted); before that, where
        reading started (the committed offset, else the earliest). A partition whose
        committed offset is its end is read to it: taken as still reading, it would
        hold back every other partition (`_align`) until a new record came."""
        if position.offset >= 0:
            return position.offset
        started = self._offsets.get((position.topic, position.partition), -1)
        return started if started >= 0 else low

    def _commit_read_past(self) -> None:
        """Commit the positions of the partitions read past their committed offset with
        no record to process: a batch commits the offset after its last record, and
        what follows it may hold none for a read_committed consumer (the commit marker of
        the transaction that wrote it, records of aborted transactions and their abort
        marker). librdkafka's position steps over them; committed, the group's lag is 0
        once everything is read (what `wapipe status` and autoscalers read) rather than
        stuck above 0 until the next record. Kafka Streams commits the position for the
        same reason (KAFKA-6607). At most once per `_READ_PAST_SECONDS`, in idle rounds
        only, so light traffic adds at most that many transactions."""
        now = time.monotonic()
        if now < self._read_past_due:
            return
        self._read_past_due = now + _READ_PAST_SECONDS
        past = [self.stream_times.offset(tp.topic, tp.partition, tp.offset)
                for tp in self.consumer.position(self._opened_sources())
                if tp.offset > self._offsets.get((tp.topic, tp.partition), tp.offset)]  # fmt: skip
        if not past:
            return
        try:
            self._commit([], {}, past)
        except (_Aborted, _StartedOver):
            return  # nothing was read: the next idle round tries again
        self._offsets.update(((tp.topic, tp.partition), tp.offset) for tp in past)

    # --- the transaction ----------------------------------------------------------------------
    def _commit(
        self, batches: list[PartitionBatch], views: Views, offsets: list[TopicPartition]
    ) -> dict[tuple[str, int], int]:
        """Produce, send the offsets, commit; the changelog checkpoints (table, partition) ->
        the offset after its last record. Raises _Aborted when the transaction was aborted,
        _StartedOver when the worker started over (`_abort`)."""
        started = time.perf_counter()
        checkpoints: dict[tuple[str, int], int] = {}
        transactions = self.transactions
        try:
            transactions.begin()
            for batch in batches:
                for output in batch.outputs:
                    partitions = (self._partitions_of(output.topic) if output.every_partition
                                  else _BY_KEY)  # fmt: skip
                    for partition in partitions:
                        transactions.produce(output.topic, output.key, output.value, partition,
                                             output.timestamp_ms, output.headers)  # fmt: skip
            for partition, tables in views.items():
                for table, view in tables.items():
                    self._produce_changelog(table, partition, view, checkpoints)
            offsets = [tp for tp in offsets if tp.offset >= 0]
            if offsets:
                transactions.send_offsets(offsets, self.consumer.consumer_group_metadata())
            transactions.commit()
        except KafkaException as exception:
            self._abort(exception)
        except StuckThreads as stuck:
            raise EngineError(str(stuck)) from stuck
        transactions.poll()  # serve the delivery reports that carry the checkpoints
        self._failed_batches = 0
        self.metrics.commit_duration.observe(time.perf_counter() - started)
        self.metrics.last_commit.set_to_current_time()
        return checkpoints

    def _partitions_of(self, topic: str) -> range:
        """Every partition of a broadcast's topic (counted once per worker: a topic's
        partitions are only ever added, and the job's sources, co-partitioned with it,
        would have to be too)."""
        count = self._partition_counts.get(topic)
        if count is None:
            timeout = self.config.broker_timeout_seconds
            found = self.consumer.list_topics(topic, timeout=timeout).topics[topic]
            if found.error is not None or not found.partitions:
                raise EngineError(f"{topic}: no partitions to broadcast to ({found.error})")
            count = self._partition_counts[topic] = len(found.partitions)
        return range(count)

    def _produce_changelog(
        self, table: str, partition: int, view: TableView, checkpoints: dict[tuple[str, int], int]
    ) -> None:
        if not view.writes:
            return
        topic = self.config.changelogs[table]
        *first, (last_key, last_value) = view.writes.items()
        for key, value in first:
            self.transactions.produce(topic, key, value, partition)

        def delivered(error: confluent_kafka.KafkaError | None, message: Message) -> None:
            if error is None:
                checkpoints[(table, partition)] = origin(message)[2] + 1

        self.transactions.produce(topic, last_key, last_value, partition, on_delivery=delivered)

    def _abort(self, exception: KafkaException) -> None:
        """Abort the batch's transaction (raises _Aborted), or start over when the producer
        failed fatally (raises _StartedOver); EngineError when fenced within the
        transaction timeout (another worker took over) or when the broker refused too many
        batches in a row."""
        error = kafka.kafka_error(exception)
        self._failed_batches += 1
        self.metrics.aborted.inc()
        if self._failed_batches > self.config.max_failed_batches:
            raise EngineError(f"the broker refused {self._failed_batches} batches in a row; "
                              f"the last said: {error or exception}")  # fmt: skip
        log.warning("transaction failed; the batch will be processed again",
                    job=self.job.name, error=str(error or exception),
                    failed_in_a_row=self._failed_batches)  # fmt: skip
        if error is None or not error.fatal():
            try:
                self.transactions.abort()
                self.transactions.renew()  # after an outage, librdkafka's old one may hang
                raise _Aborted from exception
            except KafkaException as abort_exception:
                error = kafka.kafka_error(abort_exception)
                if error is None or not error.fatal():
                    raise EngineError(f"aborting the transaction failed: {error}") from None
        if error.code() in FENCED and not self.transactions.outlived_timeout():
            raise EngineError(
                f"the producer was fenced ({error}): another worker with this "
                "WAPIPE_PROCESSOR_INSTANCE took over"
            ) from exception
        # Fenced after the transaction timeout: the coordinator aborted our transaction and
        # bumped the producer's epoch (KIP-360), which librdkafka reports as fenced; seen
        # after a broker outage longer than the timeout. A new producer goes on.
        self._start_over(error)
        raise _StartedOver from exception

    def _start_over(self, error: confluent_kafka.KafkaError) -> None:
        """After a fatal producer error (seen when the transaction coordinator's broker
        died mid-transaction), what a restart would do, in-process: a new producer with
        the same transactional.id (whose `init_transactions` ends the old one's open
        transaction), the consumer back to the committed offsets, and every store
        restored from its checkpoint. Whether the failed transaction committed is not
        known, and need not be: offsets and changelogs say what did."""
        log.warning("the producer failed fatally; starting over from the committed offsets",
                    job=self.job.name, error=str(error))  # fmt: skip
        timeout = self.config.broker_timeout_seconds
        self.transactions.renew()
        self._close_stores(list(self.stores))
        assignment = self.consumer.assignment()
        committed = retrying(lambda: self.consumer.committed(assignment, timeout=timeout),
                             "reading the committed offsets", self.heartbeat.beat,
                             lambda: self._stopping)  # fmt: skip
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else confluent_kafka.OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
        self.stream_times.load(committed)
        self._held.clear()  # paused until restored, then aligned afresh
        if assignment:
            self.consumer.pause(assignment)
            self._to_restore = list(assignment)

    def _rewind(self, groups: Mapping[tuple[str, int], list[Message]]) -> None:
        """Back to each aborted partition's first record (those still ours: a partition
        lost meanwhile is revoked at the next consume)."""
        for (topic, partition), records in groups.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, origin(records[0])[2]))
            except KafkaException as exception:
                log.info("not rewound (no longer assigned)", job=self.job.name, topic=topic,
                         partition=partition, error=str(exception))  # fmt: skip

    def _store(self, views: Views, checkpoints: Mapping[tuple[str, int], int]) -> None:
        for partition, tables in views.items():
            for table, view in tables.items():
                if view.writes:
                    checkpoint = checkpoints.get((table, partition))
                    if checkpoint is None:  # committed, so delivered: a missing report is a bug
                        raise EngineError(f"no delivery report for {table} [{partition}]")
                    view.store.apply(view.writes, checkpoint)

    # --- partitions coming and going ----------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels(self.job.name, "assigned").inc(len(partitions))
        if self._copartitioned:
            consumer.assign(partitions)  # eager: the whole assignment
        else:
            consumer.incremental_assign(partitions)
        log.info("partitions assigned", job=self.job.name,
                 partitions=_names(partitions))  # fmt: skip
        self._assigned |= {(tp.topic, tp.partition) for tp in partitions}
        if partitions:
            consumer.pause(partitions)  # until their stores are restored, stream times loaded
            self._to_restore.extend(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._give_up(consumer, partitions, "revoked")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._give_up(consumer, partitions, "lost")

    def _give_up(self, consumer: Consumer, partitions: list[TopicPartition], kind: str) -> None:
        self.metrics.rebalances.labels(self.job.name, kind).inc(len(partitions))
        log.info(f"partitions {kind}", job=self.job.name, partitions=_names(partitions))
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned -= gone
        self._held -= gone
        for key in gone:
            self._offsets.pop(key, None)
        self._to_restore = [tp for tp in self._to_restore if (tp.topic, tp.partition) not in gone]
        self.stream_times.forget(gone)
        # A partition number leaves once none of its sources' partitions is left here.
        left = frozenset({number for _, number in gone}
                         - {number for _, number in self._assigned})  # fmt: skip
        self._close_stores(list(left))
        self.timers.forget(left)
        if left:
            self.job.partitions_revoked(left)
        if self._copartitioned:
            consumer.unassign()  # eager: the whole assignment goes
        else:
            consumer.incremental_unassign(partitions)

    def _close_stores(self, partitions: list[int]) -> None:
        for partition in partitions:
            for store in self.stores.pop(partition, {}).values():
                store.close()

    def _restore(self) -> None:
        """Open the newly assigned partitions: load their committed stream times, restore
        their stores, then resume them. Restoring stops after `restore_slice_seconds`
        and goes on at the next round (each store keeps what it restored: its
        checkpoint). A broker error leaves them paused and to restore at the next round
        (a broker moving its partitions away, or away for a while)."""
        partitions, self._to_restore = self._to_restore, []
        deadline = time.monotonic() + self.config.restore_slice_seconds
        try:
            # Stable offsets: a predecessor's open transaction on these partitions ends first.
            timeout = self.config.broker_timeout_seconds
            committed = self.consumer.committed(partitions, timeout=timeout)
            self.stream_times.load(committed)
            self._offsets.update({(tp.topic, tp.partition): tp.offset for tp in committed})
            for partition in sorted({tp.partition for tp in partitions} - set(self.stores)):
                opened = self._opened(partition, deadline)
                if opened is not None:
                    self.stores[partition] = opened
        except (KafkaException, RestoreError) as exception:
            error = kafka.kafka_error(exception)
            if error is not None and error.fatal():
                raise
            log.warning("restore failed; retrying", job=self.job.name,
                        error=str(error or exception))  # fmt: skip
            # A new client: an idle one may keep asking a dead broker (a stale leader).
            self.restorer.close()
            self.restorer = kafka.restore_consumer(self.config.kafka)
            self._to_restore = partitions + self._to_restore
            time.sleep(RETRY_SECONDS)  # the broker's way back is not a condition to await
            return
        ready = [tp for tp in partitions if tp.partition in self.stores]
        self._to_restore = [tp for tp in partitions if tp.partition not in self.stores
                            ] + self._to_restore  # fmt: skip
        if ready:
            self.consumer.resume(ready)

    def _opened(self, partition: int, deadline: float) -> dict[str, Store] | None:
        """The partition's stores, restored; None when the deadline came first."""
        opened: dict[str, Store] = {}
        try:
            for table in self.job.tables:
                store = self._restored(table.name, table.ttl_days, partition, deadline)
                if store is None:
                    break
                opened[table.name] = store
            else:
                return opened
        except BaseException:
            for store in opened.values():
                store.close()
            raise
        for store in opened.values():  # restored so far; the next round reopens them
            store.close()
        return None

    def _restored(self, table: str, ttl_days: int | None, partition: int,
                  deadline: float) -> Store | None:  # fmt: skip
        """The table partition's store restored to its changelog's end, or None when the
        deadline came first (closed: it holds what it restored, up to its checkpoint)."""
        path = self.config.state_dir / f"{table}-{partition}"
        options = StoreOptions(self.config.store.write_buffer_mb,
                               self.config.store.block_cache_mb, ttl_days)  # fmt: skip
        changelog = TopicPartition(self.config.changelogs[table], partition)
        store = Store(path, options)
        remaining = self.metrics.restore_remaining.labels(self.job.name, table)
        restored = self.metrics.restored.labels(self.job.name, table)
        counted = 0

        def progress(records: int, left: int) -> None:
            nonlocal counted
            restored.inc(records - counted)
            counted = records
            remaining.set(left)
            self.heartbeat.beat()

        try:
            try:
                report = restore(store, self.restorer, changelog, progress,
                                 self.config.broker_timeout_seconds, deadline)  # fmt: skip
            except CheckpointAhead as ahead:
                log.warning("store ahead of its changelog; restoring it from the start",
                            job=self.job.name, table=table, partition=partition,
                            reason=str(ahead))  # fmt: skip
                store.wipe()
                store = Store(path, options)
                report = restore(store, self.restorer, changelog, progress,
                                 self.config.broker_timeout_seconds, deadline)  # fmt: skip
        except BaseException:
            store.close()  # RocksDB's lock: the next attempt opens it again
            raise
        if not report.done:
            log.info("restoring; going on at the next round", job=self.job.name, table=table,
                     partition=partition, records=report.records, position=report.end,
                     left=report.left)  # fmt: skip
            store.close()
            return None
        remaining.set(0)
        if report.records:
            log.info("table restored", job=self.job.name, table=table, partition=partition,
                     records=report.records, seconds=round(report.seconds, 3),
                     records_per_second=round(report.records / max(report.seconds, 1e-9)),
                     start=report.start, end=report.end)  # fmt: skip
        return store

    # --- observing ----------------------------------------------------------------------------
    def _ready(self) -> bool:
        return self._polled and not self._to_restore and self.heartbeat.alive()

    def _update_gauges(self) -> None:
        now = time.monotonic()
        if now >= self._gauges_due:
            self._gauges_due = now + _GAUGE_SECONDS
            lag, stream_time = self.metrics.consumer_lag, self.metrics.stream_time
            lag.clear()
            stream_time.clear()
            for tp in self.consumer.position(self.consumer.assignment()):
                labels = (self.job.name, tp.topic, str(tp.partition))
                _, end = self.consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset >= 0 and end >= 0:
                    lag.labels(*labels).set(end - tp.offset)
                at = self.stream_times.of_source(tp.topic, tp.partition)
                if at is not None:
                    stream_time.labels(*labels).set(at / 1000)
        if now >= self._memory_due:
            self._memory_due = now + _MEMORY_SECONDS
            totals: dict[tuple[str, str], int] = {}
            for stores in self.stores.values():
                for table, store in stores.items():
                    for kind, value in store.memory_bytes():
                        totals[(table, kind)] = totals.get((table, kind), 0) + value
            for (table, kind), value in totals.items():
                self.metrics.rocksdb_memory.labels(self.job.name, table, kind).set(value)

    def _close(self) -> None:
        with contextlib.suppress(RuntimeError):  # closed already
            self.consumer.close()  # leaves the group; revokes (and closes) every store
        self._close_stores(list(self.stores))
        self.restorer.close()
        self.transactions.close()
        self.web.stop()
        log.info("worker stopped", job=self.job.name)


def _written(views: Views) -> bool:
    return any(view.writes for tables in views.values() for view in tables.values())


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]
