"""The engine on a real broker, with a job of the tests' own (the engine knows no job):
`Counting` counts each key's records in a table and sends every new count. A key's
outputs must then be exactly 1, 2, ..., n: a record processed twice, or a count lost
from the table, shows as a repeated or missing number.

- a poison record ends on the dead letters, the worker goes on, and the other records
  of its batch count exactly, in the outputs and in the job's counters (a batch
  retried record by record counts once);
- a lost disk is restored from the changelog; a kept one from its checkpoint, reading
  nothing;
- two co-partitioned sources count into the same table: within a round, the records
  of both see each other's writes.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from engine_harness import (
    PARTITIONS,
    Reader,
    Topics,
    counts_are_exact,
    engine_config,
    high_watermark,
    running,
)
from stream_times import committed_offsets

from processors.engine.job import Output, PartitionBatch, Table, Timer
from processors.engine.loop import EngineConfig

pytestmark = [pytest.mark.kafka]

POISON = b"poison"


class Tally:
    """A counter as the engine sees one (Prometheus's `inc`)."""

    def __init__(self) -> None:
        self.total = 0.0

    def inc(self, amount: float = 1) -> None:
        self.total += amount


class Counting:
    name = "count"
    aligned = False
    timers: tuple[Timer, ...] = ()
    tables = (Table("counts"),)

    def __init__(self, source: str, output: str, deadletter: str, *more: str) -> None:
        self.sources = (source, *more)
        self.output, self.deadletter = output, deadletter
        self.tally = Tally()  # records counted, through the batches (committed work only)

    def process(self, batch: PartitionBatch) -> None:
        counts = batch.table("counts")
        current = counts.get_many({record.key() for record in batch.records})
        for record in batch.records:
            if record.value() == POISON:
                raise ValueError("a poison record")
            key = record.key()
            current[key] = count = str(int(current.get(key) or b"0") + 1).encode()
            counts.put(key, count)
            batch.send(self.output, key, count)
            batch.count(self.tally)

    def dead_letter(self, record: Message, error: BaseException) -> Output:
        return Output(self.deadletter, record.key(), record.value())

    def partitions_revoked(self, partitions: frozenset[int]) -> None:
        pass


def test_a_poison_record_goes_to_the_dead_letters_and_its_batch_counts_exactly(
    kafka_bootstrap: str, tmp_path: Path, unused_port
) -> None:
    topics = Topics(kafka_bootstrap)
    keys = [f"key-{n}".encode() for n in range(20)]
    records = [(keys[n % 20], b"x") for n in range(2_000)]
    for at in (150, 900, 1_700):  # in the middle of batches
        records.insert(at, (keys[at % 20], POISON))
    expected = {key: 100 for key in keys}
    topics.feed(records)
    job = Counting(topics.source, topics.output, topics.deadletter)
    output, dead = (
        Reader(kafka_bootstrap, topics.output),
        Reader(kafka_bootstrap, topics.deadletter),
    )
    try:
        config = engine_config(topics, tmp_path / "state", unused_port())
        with running(job, config) as (_, registry):
            output.until(lambda: sum(map(len, output.records.values())) >= 2_000, "2,000 counts")
            dead.until(lambda: sum(map(len, dead.records.values())) >= 3, "3 dead letters")
            topics.feed([(keys[0], b"x")])  # still going after the poison
            expected[keys[0]] += 1
            output.until(lambda: len(output.records[keys[0]]) >= 101, "the record after")
            poisoned = registry.get_sample_value("wapipe_processor_poison_records_total",
                                                 {"processor": "count"})  # fmt: skip
    finally:
        output.close()
        dead.close()
    counts_are_exact(output.records, expected)
    assert sorted(dead.records) == sorted({keys[at % 20] for at in (150, 900, 1_700)})
    assert poisoned == 3
    assert job.tally.total == 2_001, "records retried one at a time were counted twice"


def test_a_lost_disk_is_restored_from_the_changelog_and_a_kept_one_reads_nothing(
    kafka_bootstrap: str, tmp_path: Path, unused_port
) -> None:
    topics = Topics(kafka_bootstrap)
    keys = [f"key-{n}".encode() for n in range(50)]
    job = Counting(topics.source, topics.output, topics.deadletter)
    state_dir = tmp_path / "state"
    config = engine_config(topics, state_dir, unused_port())
    output = Reader(kafka_bootstrap, topics.output)
    expected = {key: 0 for key in keys}
    restored: list[float | None] = []

    def one_more_round(worker_config: EngineConfig) -> None:
        with running(job, worker_config) as (_, registry):
            topics.feed([(key, b"x") for key in keys for _ in range(20)])
            for key in keys:
                expected[key] += 20
            output.until(lambda: all(len(output.records[k]) >= n for k, n in expected.items()),
                         f"counts up to {expected[keys[0]]}")  # fmt: skip
            restored.append(registry.get_sample_value(
                "wapipe_processor_restore_records_total",
                {"processor": "count", "table": "counts"}))  # fmt: skip

    try:
        one_more_round(config)
        shutil.rmtree(state_dir)  # the disk is lost
        one_more_round(config)
        one_more_round(config)  # the disk kept: from its checkpoint
    finally:
        output.close()
    counts_are_exact(output.records, expected)
    assert restored[0] in (None, 0.0), "a first start has nothing to restore"
    assert (restored[1] or 0) >= len(keys), "the lost disk was not restored"
    assert restored[2] in (None, 0.0), "a kept disk read its changelog again"


def test_co_partitioned_sources_count_into_one_table_exactly(
    kafka_bootstrap: str, tmp_path: Path, unused_port
) -> None:
    topics = Topics(kafka_bootstrap)
    keys = [f"key-{n}".encode() for n in range(30)]
    topics.feed([(keys[n % 30], b"x") for n in range(1_500)])
    topics.feed([(keys[n % 30], b"x") for n in range(1_500)], topics.more)
    job = Counting(topics.source, topics.output, topics.deadletter, topics.more)
    output = Reader(kafka_bootstrap, topics.output)
    try:
        with running(job, engine_config(topics, tmp_path / "state", unused_port())):
            output.until(lambda: sum(map(len, output.records.values())) >= 3_000, "3,000 counts")
    finally:
        output.close()
    counts_are_exact(output.records, {key: 100 for key in keys})


def test_the_group_commits_past_commit_markers_and_aborted_records_to_lag_zero(
    kafka_bootstrap: str, tmp_path: Path, unused_port
) -> None:
    """The source is written in transactions, as every topic a job reads: one committed
    and, after it, one aborted with the abort marker. A read_committed worker gets one
    record per partition, yet its group must commit each partition's end (the last
    stable offset), or its lag stays above 0 for ever (`wapipe status`, autoscalers and
    the tests' wait for a settled pipeline all read it)."""
    topics = Topics(kafka_bootstrap)
    producer = Producer({"bootstrap.servers": kafka_bootstrap,
                         "transactional.id": f"{topics.group}.upstream"})  # fmt: skip
    producer.init_transactions(30)
    for commit in (True, False):
        producer.begin_transaction()
        for partition in range(PARTITIONS):
            for n in range(1 if commit else 3):
                producer.produce(topics.source, b"x", f"k{partition}-{n}".encode(),
                                 partition=partition)  # fmt: skip
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    job = Counting(topics.source, topics.output, topics.deadletter)
    output = Reader(kafka_bootstrap, topics.output)
    ends = {p: high_watermark(kafka_bootstrap, topics.source, p) for p in range(PARTITIONS)}
    committed: dict[int, int] = {}

    def all_committed() -> bool:
        committed.update(
            (p, tp.offset)
            for p, tp in committed_offsets(kafka_bootstrap, topics.group, topics.source).items()
        )
        return committed == ends

    try:
        with running(job, engine_config(topics, tmp_path / "state", unused_port())):
            output.until(lambda: sum(map(len, output.records.values())) >= PARTITIONS,
                         "one count per partition")  # fmt: skip
            output.until(
                all_committed, lambda: f"the offsets {ends} committed (committed: {committed})"
            )
    finally:
        output.close()
    counts_are_exact(output.records, {f"k{p}-0".encode(): 1 for p in range(PARTITIONS)})


class Broadcasting(Counting):
    """Counts, and after each batch tells every partition of the output how far it got."""

    def process(self, batch: PartitionBatch) -> None:
        super().process(batch)
        last = batch.records[-1]
        batch.broadcast(self.output, b"progress", f"{batch.partition}@{last.offset()}".encode(),
                        timestamp_ms=0)  # fmt: skip


def test_a_broadcast_reaches_every_partition_of_its_topic(
    kafka_bootstrap: str, tmp_path: Path, unused_port
) -> None:
    topics = Topics(kafka_bootstrap)
    keys = [f"key-{n}".encode() for n in range(30)]
    topics.feed([(key, b"x") for key in keys])
    job = Broadcasting(topics.source, topics.output, topics.deadletter)
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "unused",
                         "isolation.level": "read_committed"})  # fmt: skip
    consumer.assign([TopicPartition(topics.output, p, 0) for p in range(PARTITIONS)])
    seen: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}

    def every_partition_told_of_every_source_partition() -> bool:
        for message in consumer.consume(1_000, 0.2):
            if message.error() is None:
                seen[message.partition() or 0].append(message.key() or b"")
                if message.key() == b"progress":
                    seen[message.partition() or 0].append(message.value() or b"")
        told = {p: {value.split(b"@")[0] for value in values if b"@" in value}
                for p, values in seen.items()}  # fmt: skip
        return all(len(sources) == PARTITIONS for sources in told.values())

    try:
        with running(job, engine_config(topics, tmp_path / "state", unused_port())):
            deadline = time.monotonic() + 60
            while not every_partition_told_of_every_source_partition():
                assert time.monotonic() < deadline, f"not every partition told: {seen}"
    finally:
        consumer.close()
    counted = sum(key.startswith(b"key-") for values in seen.values() for key in values)
    assert counted == len(keys), "the counts and the broadcasts went astray"
