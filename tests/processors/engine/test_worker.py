"""The engine on a real broker, with a job of the tests' own (the engine knows no job):
`Counting` counts each key's records in a table and sends every new count. A key's
outputs must then be exactly 1, 2, ..., n: a record processed twice, or a count lost
from the table, shows as a repeated or missing number.

- a poison record ends on the dead letters, the worker goes on, and the other records
  of its batch count exactly;
- a lost disk is restored from the changelog; a kept one from its checkpoint, reading
  nothing;
- two co-partitioned sources count into the same table: within a round, the records
  of both see each other's writes.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry

from processors.engine.job import Output, PartitionBatch, Table, Timer
from processors.engine.kafka import KafkaOptions
from processors.engine.loop import EngineConfig, Worker
from processors.engine.state.store import StoreOptions

pytestmark = [pytest.mark.kafka]

PARTITIONS = 3
POISON = b"poison"


class Counting:
    name = "count"
    timers: tuple[Timer, ...] = ()
    tables = (Table("counts"),)

    def __init__(self, source: str, output: str, deadletter: str, *more: str) -> None:
        self.sources = (source, *more)
        self.output, self.deadletter = output, deadletter

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

    def dead_letter(self, record: Message, error: BaseException) -> Output:
        return Output(self.deadletter, record.key(), record.value())


class Topics:
    def __init__(self, bootstrap: str) -> None:
        prefix = f"engine-{uuid.uuid4().hex[:8]}"
        self.bootstrap = bootstrap
        self.source, self.more, self.output = f"{prefix}.in", f"{prefix}.more", f"{prefix}.out"
        self.deadletter, self.changelog = f"{prefix}.dead", f"{prefix}.counts.changelog"
        self.group = f"{prefix}.count"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        new = [
            NewTopic(name, PARTITIONS, 1)
            for name in (self.source, self.more, self.output, self.deadletter)
        ]
        new.append(NewTopic(self.changelog, PARTITIONS, 1, config={"cleanup.policy": "compact"}))
        for future in admin.create_topics(new).values():
            future.result(30)

    def feed(self, records: list[tuple[bytes, bytes]], topic: str | None = None) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "partitioner": "murmur2_random"})
        for key, value in records:
            producer.produce(topic or self.source, value, key)
            producer.poll(0)
        assert producer.flush(30) == 0, "records not delivered"


class Reader:
    """Reads a topic from the start, read_committed, as the derived topics' readers do."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.records: dict[bytes, list[bytes]] = defaultdict(list)
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                                   "isolation.level": "read_committed"})  # fmt: skip
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])

    def until(self, done: object, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not done():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
            for message in self._consumer.consume(1_000, 0.2):
                if message.error() is None:
                    self.records[message.key()].append(message.value())

    def close(self) -> None:
        self._consumer.close()


def _config(topics: Topics, state_dir: Path, port: int) -> EngineConfig:
    return EngineConfig(
        kafka=KafkaOptions(topics.bootstrap, topics.group, f"{topics.group}.first"),
        state_dir=state_dir, changelogs={"counts": topics.changelog}, store=StoreOptions(),
        batch_size=100, web_port=port, broker_timeout_seconds=30,
    )  # fmt: skip


@contextmanager
def running(job: Counting, config: EngineConfig) -> Iterator[tuple[Worker, CollectorRegistry]]:
    registry = CollectorRegistry()
    worker = Worker(job, config, registry)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as error:  # surfaced in the test's thread below
            failures.append(error)

    thread = threading.Thread(target=run, name="worker")
    thread.start()
    try:
        yield worker, registry
        assert thread.is_alive(), f"the worker stopped: {failures}"
    finally:
        worker.stop()
        thread.join(60)
    assert not thread.is_alive(), "the worker did not stop within 60 s"
    assert not failures, failures


def _counts_are_exact(records: dict[bytes, list[bytes]], expected: dict[bytes, int]) -> None:
    def counted(n: int) -> list[bytes]:
        return [str(count).encode() for count in range(1, n + 1)]

    wrong = {key: got for key, got in records.items() if got != counted(expected.get(key, 0))}
    assert not wrong, f"keys whose counts are not 1..n: {dict(list(wrong.items())[:3])}"


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
        with running(job, _config(topics, tmp_path / "state", unused_port())) as (_, registry):
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
    _counts_are_exact(output.records, expected)
    assert sorted(dead.records) == sorted({keys[at % 20] for at in (150, 900, 1_700)})
    assert poisoned == 3


def test_a_lost_disk_is_restored_from_the_changelog_and_a_kept_one_reads_nothing(
    kafka_bootstrap: str, tmp_path: Path, unused_port
) -> None:
    topics = Topics(kafka_bootstrap)
    keys = [f"key-{n}".encode() for n in range(50)]
    job = Counting(topics.source, topics.output, topics.deadletter)
    state_dir = tmp_path / "state"
    config = _config(topics, state_dir, unused_port())
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
    _counts_are_exact(output.records, expected)
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
        with running(job, _config(topics, tmp_path / "state", unused_port())):
            output.until(lambda: sum(map(len, output.records.values())) >= 3_000, "3,000 counts")
    finally:
        output.close()
    _counts_are_exact(output.records, {key: 100 for key in keys})
