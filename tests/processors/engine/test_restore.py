"""A restore cut into slices (the loop restores a slice per round and consumes in
between, so that a long restore does not cost the worker its group membership): each
slice leaves the store a prefix of its changelog, at its checkpoint, and the slices
together restore exactly what one restore does. On a real broker."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from processors.engine import kafka
from processors.engine.state.restore import restore
from processors.engine.state.store import Store, StoreOptions

pytestmark = [pytest.mark.kafka]


def test_a_restore_in_slices_ends_where_one_restore_does(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    changelog = f"restore-{uuid.uuid4().hex[:8]}.changelog"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(changelog, 1, 1)])[changelog].result(30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for n in range(1_000):  # 100 keys written 10 times each: the latest value wins
        producer.produce(changelog, f"v{n}".encode(), f"k{n % 100}".encode(), partition=0)
    assert producer.flush(30) == 0
    consumer = kafka.restore_consumer(kafka.KafkaOptions(kafka_bootstrap, "g", "t"))
    partition = TopicPartition(changelog, 0)
    try:
        whole = Store(tmp_path / "whole", StoreOptions())
        assert restore(whole, consumer, partition, lambda *_: None, 30).done
        sliced = Store(tmp_path / "sliced", StoreOptions())
        reports = []
        while not reports or not reports[-1].done:
            assert len(reports) < 1_000, "the sliced restore does not progress"
            reports.append(restore(sliced, consumer, partition, lambda *_: None, 30,
                                   deadline=time.monotonic(), fetch_records=50))  # fmt: skip
            assert sliced.checkpoint == reports[-1].end, "the store is not at its checkpoint"
        assert len(reports) > 2, "the restore was not cut into slices"
        assert [report.left > 0 for report in reports] == [True] * (len(reports) - 1) + [False]
        assert dict(sliced.items()) == dict(whole.items())
        assert sliced.checkpoint == whole.checkpoint == 1_000
        whole.close()
        sliced.close()
    finally:
        consumer.close()
