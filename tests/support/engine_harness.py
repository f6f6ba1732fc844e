"""The engine on a real broker, for tests with jobs of their own (the engine knows no
job): the topics of one test, a read_committed reader of a topic, a worker running
on a thread, and its configuration."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry

from processors.engine.job import Job
from processors.engine.kafka import KafkaOptions
from processors.engine.loop import EngineConfig, Worker
from processors.engine.state.store import StoreOptions

PARTITIONS = 3


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

    def until(self, done: object, what: str | Callable[[], str], timeout: float = 60) -> None:
        """Read until `done()`; `what` says what was awaited (called when it was not done)."""
        deadline = time.monotonic() + timeout
        while not done():  # type: ignore[operator]
            if time.monotonic() >= deadline:
                raise AssertionError(f"waited {timeout:.0f} s for "
                                     f"{what() if callable(what) else what}")  # fmt: skip
            for message in self._consumer.consume(1_000, 0.2):
                if message.error() is None:
                    self.records[message.key()].append(message.value())

    def close(self) -> None:
        self._consumer.close()


def high_watermark(bootstrap: str, topic: str, partition: int) -> int:
    """The partition's end: past its last record and transaction marker."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, partition), 30)[1])
    finally:
        consumer.close()


def engine_config(topics: Topics, state_dir: Path, port: int, **more: Any) -> EngineConfig:
    return EngineConfig(
        kafka=KafkaOptions(topics.bootstrap, topics.group, f"{topics.group}.first"),
        state_dir=state_dir, changelogs={"counts": topics.changelog}, store=StoreOptions(),
        batch_size=100, web_port=port, broker_timeout_seconds=30, **more,
    )  # fmt: skip


@contextmanager
def running(job: Job, config: EngineConfig) -> Iterator[tuple[Worker, CollectorRegistry]]:
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


def counts_are_exact(records: dict[bytes, list[bytes]], expected: dict[bytes, int]) -> None:
    def counted(n: int) -> list[bytes]:
        return [str(count).encode() for count in range(1, n + 1)]

    wrong = {key: got for key, got in records.items() if got != counted(expected.get(key, 0))}
    assert not wrong, f"keys whose counts are not 1..n: {dict(list(wrong.items())[:3])}"
