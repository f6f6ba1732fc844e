"""`wapipe replay` against a real broker: the raw topic copied into a fresh prefix exactly
(partition, order, key, value, timestamp, headers), the --from/--to range, and refusals."""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import TopicPartition

from wapipe.replay import ReplayRequest, point_in_time, run_replay, utc
from wapipe.settings import Settings
from wapipe.topics import RAW, TOPICS, create_topics

pytestmark = pytest.mark.kafka

DAY_MS = 24 * 3600 * 1000
# What a test compares: key, value, (timestamp type, timestamp), headers; per partition, in order.
Record = tuple[bytes | None, bytes | None, tuple[int, int], list[tuple[str, bytes]] | None]


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}.whatsapp"


@pytest.fixture
def source(kafka_bootstrap: str, settings_for: Any) -> Callable[[int], Settings]:
    """`source(partitions)`: settings with a fresh prefix whose topics exist."""

    def make(partitions: int) -> Settings:
        settings: Settings = settings_for(
            kafka_bootstrap=kafka_bootstrap, topic_prefix=_prefix(), topic_partitions=partitions
        )
        asyncio.run(create_topics(settings))
        return settings

    return make


def _write(settings: Settings, records: list[tuple[int, Record]]) -> None:
    """Produce (partition, record) pairs to the raw topic, each with its own timestamp."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True}
    )
    for partition, (key, value, (_, timestamp), headers) in records:
        producer.produce(RAW.name(settings.topic_prefix), value, key, partition=partition,
                         timestamp=timestamp, headers=headers)  # fmt: skip
    assert producer.flush(30) == 0, "the test records were not all acknowledged within 30 s"


def _read(
    bootstrap: str, topic: str, partitions: int, timeout: float = 30.0
) -> dict[int, list[Record]]:
    """Every record of `topic` up to its end now, per partition, in order."""
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": "test-replay-reader",
        "isolation.level": "read_committed", "enable.auto.commit": False,
    })  # fmt: skip
    try:
        ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
                for p in range(partitions)]  # fmt: skip
        consumer.assign([TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                         for p in range(partitions)])  # fmt: skip
        records: dict[int, list[Record]] = {p: [] for p in range(partitions)}
        reached = [0] * partitions
        deadline = time.monotonic() + timeout
        while any(reached[p] < ends[p] for p in range(partitions)):
            assert time.monotonic() < deadline, (
                f"read only up to offsets {reached} of {ends} of {topic} within {timeout:.0f} s"
            )
            for message in consumer.consume(1000, timeout=0.5):
                assert message.error() is None, message.error()
                partition, offset = message.partition() or 0, message.offset() or 0
                records[partition].append(
                    (message.key(), message.value(), message.timestamp(), message.headers())
                )
                reached[partition] = offset + 1
        return records
    finally:
        consumer.close()


def _replay(settings: Settings, to_prefix: str, **options: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run_replay(settings, ReplayRequest(to_prefix=to_prefix, confirmed=True, **options),
                        out=out, err=err, progress_interval=1e-6)  # fmt: skip
    return status, out.getvalue(), err.getvalue()


def _topics(bootstrap: str) -> set[str]:
    admin = confluent_kafka.admin.AdminClient({"bootstrap.servers": bootstrap})
    return set(admin.list_topics(timeout=10).topics)


def _story(
    partitions: int, per_partition: int, start_ms: int, step_ms: int
) -> list[tuple[int, Record]]:
    """Records in every partition, interleaved, stamped `step_ms` apart from `start_ms` on:
    keys (one without), JSON values, the ingester's headers and some odd ones."""
    records = []
    for n in range(per_partition * partitions):
        partition = n % partitions
        key = None if n == 7 else f"umid-{n % 11}".encode()
        headers = [
            ("wapipe-received-at", utc(start_ms + n * step_ms).encode()),
            ("wapipe-event-type", b"outbound_message_status_changed"),
            ("binary", bytes([0, 255, n % 256])),
            ("binary", b"a repeated name, kept in its place"),
        ]
        value = f'{{"umid": "umid-{n}", "n": {n}}}'.encode()
        records.append((partition, (key, value, (1, start_ms + n * step_ms), headers)))
    return records


# --------------------------------------------------------------------------- the copy


def test_every_record_is_copied_exactly_to_its_partition_in_order(source):
    settings = source(3)
    days_ago = int((datetime.now(UTC) - timedelta(days=5)).timestamp() * 1000)
    _write(settings, _story(3, per_partition=200, start_ms=days_ago, step_ms=1000))
    target = _prefix()

    status, out, err = _replay(settings, target)

    assert status == 0, err
    original = _read(settings.kafka_bootstrap, RAW.name(settings.topic_prefix), 3)
    copy = _read(settings.kafka_bootstrap, RAW.name(target), 3)
    for partition in range(3):
        assert len(copy[partition]) == 200
        assert copy[partition] == original[partition], f"partition {partition} differs"
    assert {spec.name(target) for spec in TOPICS} <= _topics(settings.kafka_bootstrap)
    assert "copied 600 records" in out
    assert [f"  partition {p}: 200" in out for p in range(3)] == [True] * 3
    assert f"timestamps from {utc(days_ago)} to {utc(days_ago + 599_000)}" in out
    assert " / 600 records  " in err  # the progress line
    assert " records/s  ETA " in err


def test_the_range_is_fixed_at_the_start_while_the_ingesters_keep_writing(source):
    settings = source(2)
    _write(settings, _story(2, per_partition=5_000, start_ms=int(time.time() * 1000) - DAY_MS,
                            step_ms=1))  # fmt: skip
    stop, writing = threading.Event(), threading.Event()

    def keep_writing() -> None:
        producer = confluent_kafka.Producer({"bootstrap.servers": settings.kafka_bootstrap})
        n = 0
        while not stop.is_set():
            producer.produce(RAW.name(settings.topic_prefix), b'{"late": true}', b"late",
                             partition=n % 2)  # fmt: skip
            n += 1
            if n == 100:
                producer.flush(30)
                writing.set()
            producer.poll(0.001)
        producer.flush(30)

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    assert writing.wait(30), "the writer did not get its first records through in 30 s"
    try:
        status, _, err = _replay(settings, target := _prefix())
    finally:
        stop.set()
        writer.join(60)

    assert status == 0, err
    original = _read(settings.kafka_bootstrap, RAW.name(settings.topic_prefix), 2)
    copy = _read(settings.kafka_bootstrap, RAW.name(target), 2)
    for partition in (0, 1):
        # Every record of the story, then some of the later ones, but the source went on.
        assert 5_000 <= len(copy[partition]) < len(original[partition])
        assert copy[partition] == original[partition][: len(copy[partition])]


def test_from_and_to_select_exactly_the_records_stamped_in_the_range(source):
    settings = source(2)
    start = int((datetime.now(UTC) - timedelta(days=4)).timestamp() * 1000) // 1000 * 1000
    hour = 3600 * 1000
    story = _story(2, per_partition=48, start_ms=start, step_ms=hour)  # one record an hour
    _write(settings, story)
    since, until = start + 10 * hour, start + 70 * hour  # both exactly on records
    target = _prefix()

    status, out, err = _replay(settings, target, since=utc(since), until=utc(until))

    assert status == 0, err
    expected: dict[int, list[Record]] = {0: [], 1: []}
    for partition, record in story:
        if since <= record[2][1] < until:
            expected[partition].append(record)
    copy = _read(settings.kafka_bootstrap, RAW.name(target), 2)
    assert [len(copy[p]) for p in (0, 1)] == [30, 30]
    for partition in (0, 1):
        assert [(r[0], r[1], r[2][1], r[3]) for r in copy[partition]] == [
            (r[0], r[1], r[2][1], r[3]) for r in expected[partition]
        ]
    assert f"timestamps from {utc(since)} to {utc(until - hour)}" in out


def test_a_second_replay_into_the_same_prefix_is_refused_and_copies_nothing(source):
    settings = source(2)
    _write(settings, _story(2, per_partition=5, start_ms=int(time.time() * 1000) - DAY_MS,
                            step_ms=10))  # fmt: skip
    target = _prefix()
    assert _replay(settings, target)[0] == 0

    status, out, err = _replay(settings, target)

    assert status == 1
    assert f"{RAW.name(target)} already holds 10 records" in err
    assert "fresh prefix" in err
    assert "copied" not in out
    copy = _read(settings.kafka_bootstrap, RAW.name(target), 2)
    assert sum(len(records) for records in copy.values()) == 10


def test_mismatched_partition_counts_are_refused(source):
    settings = source(3)
    _write(settings, _story(3, per_partition=2, start_ms=int(time.time() * 1000), step_ms=1))
    other = source(2)  # its topics exist, with 2 partitions each, and are empty

    status, _, err = _replay(settings, other.topic_prefix)

    assert status == 1
    assert (f"{RAW.name(settings.topic_prefix)} has 3 partitions and "
            f"{RAW.name(other.topic_prefix)} has 2") in err  # fmt: skip
    assert _read(settings.kafka_bootstrap, RAW.name(other.topic_prefix), 2) == {0: [], 1: []}

    # A target that does not exist yet would get WAPIPE_TOPIC_PARTITIONS: refused before
    # anything is created.
    fresh = _prefix()
    status, _, err = _replay(settings.model_copy(update={"topic_partitions": 4}), fresh)

    assert status == 1
    assert "would get 4 (WAPIPE_TOPIC_PARTITIONS)" in err
    assert "WAPIPE_TOPIC_PARTITIONS=3" in err
    assert not any(name.startswith(fresh) for name in _topics(settings.kafka_bootstrap))


def test_a_missing_source_topic_is_named(kafka_bootstrap, settings_for):
    settings = settings_for(kafka_bootstrap=kafka_bootstrap, topic_prefix=_prefix())

    status, _, err = _replay(settings, _prefix())

    assert status == 1
    assert f"{RAW.name(settings.topic_prefix)} does not exist: nothing to replay" in err


# --------------------------------------------------------------------------- the command


def _wapipe(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    variables = {name: value for name, value in os.environ.items()
                 if not name.startswith("WAPIPE_")}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "wapipe", *args], env={**variables, **environment},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_command_end_to_end(source):
    settings = source(2)
    now = int(time.time() * 1000)
    _write(settings, _story(2, per_partition=10, start_ms=now - 3 * DAY_MS, step_ms=1000))
    _write(settings, _story(2, per_partition=3, start_ms=now - 3600_000, step_ms=1000))
    target = _prefix()
    environment = {
        "WAPIPE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "WAPIPE_TOPIC_PREFIX": settings.topic_prefix,
        "WAPIPE_TOPIC_PARTITIONS": "2",
    }

    unconfirmed = _wapipe("replay", "--to-prefix", target, "--to", "1d", **environment)
    result = _wapipe("replay", "--to-prefix", target, "--to", "1d", "--yes", **environment)

    assert unconfirmed.returncode == 2
    assert unconfirmed.stderr.strip() == "wapipe replay: no terminal to confirm on: pass --yes"
    assert result.returncode == 0, result.stderr
    assert f"copied 20 records of {RAW.name(settings.topic_prefix)} into {RAW.name(target)}" in (
        result.stdout
    )
    assert re.search(r" in \d+\.\d s \([\d,]+ records/s\)\n", result.stdout), result.stdout
    assert "  partition 0: 10\n  partition 1: 10\n" in result.stdout
    assert f"timestamps from {utc(now - 3 * DAY_MS)} to {utc(now - 3 * DAY_MS + 19_000)}" in (
        result.stdout
    )
    for step in (f"WAPIPE_TOPIC_PREFIX={target} wapipe run",
                 f"WAPIPE_TOPIC_PREFIX={target} wapipe status"):  # fmt: skip
        assert step in result.stdout
    copy = _read(settings.kafka_bootstrap, RAW.name(target), 2)
    assert [len(copy[p]) for p in (0, 1)] == [10, 10]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"to_prefix": "SAME"}, "is the current prefix (WAPIPE_TOPIC_PREFIX)",
                     id="same-prefix"),
        pytest.param({"to_prefix": "a b"}, "--to-prefix 'a b' is not a topic prefix",
                     id="bad-prefix"),
        pytest.param({"to_prefix": "new", "since": "yesterday"},
                     "--from: 'yesterday' is neither an ISO 8601 time", id="bad-from"),
        pytest.param({"to_prefix": "new", "until": "3x"}, "--to: '3x' is neither", id="bad-to"),
        pytest.param({"to_prefix": "new", "since": "1d", "until": "2d"}, "must be before --to",
                     id="from-after-to"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_naming_the_option(options, message, settings_for, unused_port):
    # A broker that does not answer: each of these is refused before Kafka is asked.
    settings = settings_for(kafka_bootstrap=f"127.0.0.1:{unused_port()}", topic_prefix="SAME")
    err = io.StringIO()

    status = run_replay(settings, ReplayRequest(**{"confirmed": True, **options}),
                        out=io.StringIO(), err=err)  # fmt: skip

    assert status == 2
    assert message in err.getvalue()


def test_an_unreachable_broker_is_one_line(unused_port):
    bootstrap = f"127.0.0.1:{unused_port()}"

    result = _wapipe("replay", "--to-prefix", "new", "--yes", WAPIPE_KAFKA_BOOTSTRAP=bootstrap)

    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"wapipe replay: cannot reach Kafka at {bootstrap}: connection refused — start it with "
        "`wapipe kafka up` or set WAPIPE_KAFKA_BOOTSTRAP"
    )


def test_points_in_time():
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    assert point_in_time("3d", now) == datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert point_in_time("12h", now) == datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    assert point_in_time("2026-12-01T00:00:00Z", now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert point_in_time("2026-12-01T02:00:00+02:00", now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert point_in_time("2026-12-01", now) == datetime(2026, 12, 1, tzinfo=UTC)  # UTC
    with pytest.raises(ValueError, match="neither an ISO 8601 time"):
        point_in_time("soon", now)
