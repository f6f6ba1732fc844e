"""What a job's consumer group committed as each source partition's stream time, and
what it must be: the highest timestamp of the records below the committed offset (the
records the job processed, and nothing it did not). After a SIGKILL, a rebalance or a
restore, a worker resumes from the committed one; it must never be ahead of the
committed outputs, nor behind them."""

from __future__ import annotations

from collections.abc import Iterable

import confluent_kafka
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry

from processors.engine.stream_time import decode
from processors.jobs import create_job
from wapipe.settings import Settings

_TIMEOUT_SECONDS = 30.0


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, TopicPartition]:
    """partition -> its committed offset (with its metadata), for the partitions with one."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})  # fmt: skip
    try:
        partitions = consumer.list_topics(topic, timeout=_TIMEOUT_SECONDS).topics[topic].partitions
        asked = [TopicPartition(topic, p) for p in partitions]
        found = consumer.committed(asked, timeout=_TIMEOUT_SECONDS)
    finally:
        consumer.close()
    return {tp.partition: tp for tp in found if tp.offset >= 0}


def committed_stream_times(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """partition -> the stream time (epoch ms) its committed offset carries."""
    return {p: decode(tp.metadata) for p, tp in committed_offsets(bootstrap, group, topic).items()}


def highest_timestamps(bootstrap: str, topic: str, below: dict[int, int]) -> dict[int, int | None]:
    """partition -> the highest timestamp of its records (read_committed) below the offset."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "enable.partition.eof": True})  # fmt: skip
    highest: dict[int, int | None] = {p: None for p in below}
    open_partitions = {p for p, offset in below.items() if offset > 0}
    consumer.assign([TopicPartition(topic, p, 0) for p in open_partitions])
    try:
        while open_partitions:
            for message in consumer.consume(1_000, 1.0):
                partition = message.partition()
                error = message.error()
                if error is not None:
                    assert error.code() == confluent_kafka.KafkaError._PARTITION_EOF, error
                    open_partitions.discard(partition)
                    continue
                if message.offset() >= below[partition]:
                    open_partitions.discard(partition)
                    continue
                kind, at = message.timestamp()
                current = highest[partition]
                known = kind != confluent_kafka.TIMESTAMP_NOT_AVAILABLE
                if known and (current is None or at > current):
                    highest[partition] = at
    finally:
        consumer.close()
    return highest


def assert_stream_times_committed(bootstrap: str, group: str, topics: Iterable[str]) -> None:
    """Each source partition's committed stream time is the highest timestamp of the
    records below its committed offset."""
    for topic in topics:
        offsets = committed_offsets(bootstrap, group, topic)
        committed = {p: decode(tp.metadata) for p, tp in offsets.items()}
        expected = highest_timestamps(bootstrap, topic, {p: tp.offset for p, tp in offsets.items()})
        assert committed == expected, (
            f"{group} on {topic}: committed stream times {committed}, "
            f"but its records below the committed offsets reach {expected}"
        )


def assert_job_stream_times(settings: Settings, job: str) -> None:
    """`assert_stream_times_committed` for every source topic of `job` (its consumer group
    is `<prefix>.<job>`): after SIGKILLs and restarts, each committed stream time is
    that of the records its committed offset covers."""
    sources = create_job(job, settings, CollectorRegistry()).sources
    assert_stream_times_committed(settings.kafka_bootstrap, f"{settings.topic_prefix}.{job}",
                                  sources)  # fmt: skip
