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
changelog's end read next holds everything that predecessor committed.
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
from processors.engine.job import Job, PartitionBatch, origin
from processors.engine.metrics import EngineMetrics, Heartbeat, WebServer
from processors.engine.state.restore import CheckpointAhead, RestoreError, restore
from processors.engine.state.store import Store, StoreOptions
from processors.engine.state.view import TableView
from processors.engine.transaction import FENCED, RETRY_SECONDS, Transactions, retrying
from wapipe.logs import get_logger

log = get_logger(__name__)

Views = dict[int, dict[str, TableView]]  # partition -> table -> this round's view of it

_GAUGE_SECONDS = 2.0
_MEMORY_SECONDS = 10.0


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
        self.stores: dict[int, dict[str, Store]] = {}  # partition -> table -> its store
        self._to_restore: list[TopicPartition] = []
        self._assigned: set[tuple[str, int]] = set()
        self._stopping = False
        self._polled = False
        self._failed_batches = 0
        self._timers_due = [time.monotonic() + timer.every_seconds for timer in job.timers]
        self._gauges_due = self._memory_due = 0.0

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
        views: Views = {}
        batches = [self._process(topic, partition, records, self._views(views, partition))
                   for (topic, partition), records in groups.items()]  # fmt: skip
        batches += self._run_timers(views)
        if groups or any(batch.outputs for batch in batches) or _written(views):
            offsets = [TopicPartition(topic, partition, origin(records[-1])[2] + 1)
                       for (topic, partition), records in groups.items()]  # fmt: skip
            try:
                checkpoints = self._commit(batches, views, offsets)
            except _Aborted:
                self._rewind(groups)
            except _StartedOver:
                pass
            else:
                self._store(views, checkpoints)
                records = sum(map(len, groups.values()))
                self.metrics.records.inc(records)
                self.metrics.batch_records.observe(records)
                self.metrics.batch_duration.observe(time.perf_counter() - started)
        self._update_gauges()

    def _by_partition(self, messages: list[Message]) -> dict[tuple[str, int], list[Message]]:
        groups: dict[tuple[str, int], list[Message]] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise EngineError(f"the consumer failed: {error}")
                log.warning("consumer error", job=self.job.name, error=str(error))
                continue
            topic, partition, _ = origin(message)
            key = (topic, partition)
            if key not in self._assigned:  # fetched before a rebalance took it: not ours
                continue
            group = groups.get(key)
            if group is None:
                groups[key] = [message]
            else:
                group.append(message)
        return groups

    # --- the job ------------------------------------------------------------------------------
    def _views(self, views: Views, partition: int) -> dict[str, TableView]:
        """The round's views of `partition`'s tables, shared by all its sources' records."""
        found = views.get(partition)
        if found is None:
            if not self.job.tables:
                found = {}
            elif (stores := self.stores.get(partition)) is None:  # paused until restored
                raise EngineError(f"records of partition {partition} before its restore")
            else:
                found = {name: TableView(store) for name, store in stores.items()}
            views[partition] = found
        return found

    def _process(
        self, topic: str, partition: int, records: list[Message], views: dict[str, TableView]
    ) -> PartitionBatch:
        """The job's work on one partition's records; its writes join the round's views
        only if it succeeds."""
        batch = PartitionBatch(topic, partition, records, views)
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
        for record in records:
            alone = batch.fork([record])
            try:
                self.job.process(alone)
            except Exception as error:
                self.metrics.poison.inc()
                log.error("poison record sent to the dead letters", job=self.job.name,
                          topic=record.topic(), partition=partition, offset=record.offset(),
                          error=repr(error), exc_info=True)  # fmt: skip
                batch.outputs.append(self.job.dead_letter(record, error))
            else:
                alone.merge_into(batch)
        return batch

    def _run_timers(self, views: Views) -> list[PartitionBatch]:
        now = time.monotonic()
        due = [i for i, at in enumerate(self._timers_due) if at <= now]
        if not due:
            return []
        source = self.job.sources[0]
        restored = {partition: PartitionBatch(source, partition, [], self._views(views, partition))
                    for partition in self.stores}  # timers are stateful work  # fmt: skip
        for index in due:
            self.job.timers[index].run(restored, time.time())
            self._timers_due[index] = now + self.job.timers[index].every_seconds
        return list(restored.values())

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
                    transactions.produce(output.topic, output.key, output.value, None,
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
        transactions.poll()  # serve the delivery reports that carry the checkpoints
        self._failed_batches = 0
        self.metrics.commit_duration.observe(time.perf_counter() - started)
        self.metrics.last_commit.set_to_current_time()
        return checkpoints

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
        if self.job.tables and assignment:
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
        if self.job.tables and partitions:
            consumer.pause(partitions)  # until their stores are restored
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
        self._to_restore = [tp for tp in self._to_restore if (tp.topic, tp.partition) not in gone]
        self._close_stores([tp.partition for tp in partitions])
        if self._copartitioned:
            consumer.unassign()  # eager: the whole assignment goes
        else:
            consumer.incremental_unassign(partitions)

    def _close_stores(self, partitions: list[int]) -> None:
        for partition in partitions:
            for store in self.stores.pop(partition, {}).values():
                store.close()

    def _restore(self) -> None:
        """Restore the stores of the newly assigned partitions, then resume them. A broker
        error leaves them paused and to restore at the next round (a broker moving its
        partitions away, or away for a while)."""
        partitions, self._to_restore = self._to_restore, []
        try:
            # Stable offsets: a predecessor's open transaction on these partitions ends first.
            self.consumer.committed(partitions, timeout=self.config.broker_timeout_seconds)
            for partition in sorted({tp.partition for tp in partitions} - set(self.stores)):
                opened: dict[str, Store] = {}
                try:
                    for table in self.job.tables:
                        opened[table.name] = self._restored(table.name, table.ttl_days,
                                                            partition)  # fmt: skip
                except BaseException:
                    for store in opened.values():
                        store.close()
                    raise
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
        self.consumer.resume(partitions)

    def _restored(self, table: str, ttl_days: int | None, partition: int) -> Store:
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
                                 self.config.broker_timeout_seconds)  # fmt: skip
            except CheckpointAhead as ahead:
                log.warning("store ahead of its changelog; restoring it from the start",
                            job=self.job.name, table=table, partition=partition,
                            reason=str(ahead))  # fmt: skip
                store.wipe()
                store = Store(path, options)
                report = restore(store, self.restorer, changelog, progress,
                                 self.config.broker_timeout_seconds)  # fmt: skip
        except BaseException:
            store.close()  # RocksDB's lock: the next attempt opens it again
            raise
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
            lag = self.metrics.consumer_lag
            lag.clear()
            for tp in self.consumer.position(self.consumer.assignment()):
                _, end = self.consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset >= 0 and end >= 0:
                    lag.labels(self.job.name, tp.topic, str(tp.partition)).set(end - tp.offset)
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
