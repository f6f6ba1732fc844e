"""Stream time and timers in the engine, on a real broker, with jobs of the tests' own.

- stream time is the highest record timestamp of a partition, committed with its
  offsets: a worker started afresh (no local state at all) resumes from the committed
  one, and older records do not move it back;
- a stream timer runs as stream time advances, per partition, never more often than
  its interval of stream time, and it has run within one interval of the end;
- a timer that raises is counted and its work dropped; the worker goes on;
- a job is told which partitions left it when another worker takes some.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Message, Producer
from engine_harness import PARTITIONS, Reader, Topics, engine_config, running
from stream_times import assert_stream_times_committed, committed_stream_times

from processors.engine.job import Output, PartitionBatch, StreamTimer, Table
from processors.engine.kafka import KafkaOptions

pytestmark = [pytest.mark.kafka]

BASE_MS = 1_764_000_000_000  # 2025-11-24: event times days before the test runs
TICK_MS = 60_000


class StreamClock:
    """Sends, for each record, the stream time its batch saw; a stream timer sends a tick
    (`tick|<partition>` -> the stream time it ran at) every minute of stream time, or
    raises after writing and sending when `broken`."""

    name = "clock"
    aligned = False
    tables = (Table("counts"),)

    def __init__(self, topics: Topics, *, broken: bool = False) -> None:
        self.sources = (topics.source,)
        self.output, self.deadletter = topics.output, topics.deadletter
        self.broken = broken
        self.timers = (StreamTimer(TICK_MS / 1000, self.tick),)
        self.revoked: set[int] = set()

    def process(self, batch: PartitionBatch) -> None:
        for record in batch.records:
            batch.send(self.output, record.key(), str(batch.stream_time_ms).encode())

    def tick(self, batches: Mapping[int, PartitionBatch]) -> None:
        for partition, batch in batches.items():
            batch.table("counts").put(b"ticked", b"1")
            batch.send(self.output, f"tick|{partition}".encode(),
                       str(batch.stream_time_ms).encode())  # fmt: skip
            if self.broken:
                raise RuntimeError("a broken timer")

    def dead_letter(self, record: Message, error: BaseException) -> Output:
        return Output(self.deadletter, record.key(), record.value())

    def partitions_revoked(self, partitions: frozenset[int]) -> None:
        self.revoked |= partitions


def _feed(topics: Topics, times_ms: list[int], key_prefix: str = "k") -> None:
    """One record per time, round-robin over the partitions, in this order."""
    producer = Producer({"bootstrap.servers": topics.bootstrap})
    for n, at in enumerate(times_ms):
        producer.produce(topics.source, b"x", f"{key_prefix}{n}".encode(),
                         partition=n % PARTITIONS, timestamp=at)  # fmt: skip
    assert producer.flush(30) == 0, "records not delivered"


def _values(reader: Reader, prefix: bytes) -> dict[bytes, list[int]]:
    return {key: [int(value) for value in values] for key, values in reader.records.items()
            if key.startswith(prefix)}  # fmt: skip


def test_stream_time_is_committed_with_the_offsets_and_resumed_without_local_state(
    kafka_bootstrap: str, tmp_path: Path, unused_port
) -> None:
    topics = Topics(kafka_bootstrap)
    # Mostly ascending, some late by up to 5 minutes: stream time never goes back.
    times = [BASE_MS + n * 1_000 - (300_000 if n % 7 == 3 else 0) for n in range(300)]
    _feed(topics, times)
    output = Reader(kafka_bootstrap, topics.output)
    try:
        with running(StreamClock(topics), engine_config(topics, tmp_path / "a", unused_port())):
            output.until(lambda: len(_values(output, b"k")) >= 300, "300 records")
        assert_stream_times_committed(kafka_bootstrap, topics.group, [topics.source])
        committed = committed_stream_times(kafka_bootstrap, topics.group, topics.source)
        for key, seen in _values(output, b"k").items():
            n = int(key[1:])
            assert seen[0] >= times[n], f"{key!r}: stream time behind its own record"
        # A new worker with no local state, fed records older than everything before.
        _feed(topics, [BASE_MS - 86_400_000] * PARTITIONS, key_prefix="old")
        with running(StreamClock(topics), engine_config(topics, tmp_path / "b", unused_port())):
            output.until(lambda: len(_values(output, b"old")) >= PARTITIONS, "the old records")
    finally:
        output.close()
    by_partition = {int(key[3:]) % PARTITIONS: seen[0]
                    for key, seen in _values(output, b"old").items()}  # fmt: skip
    assert by_partition == {p: committed[p] for p in range(PARTITIONS)}, (
        "the restarted worker did not resume from the committed stream times"
    )


def test_a_stream_timer_runs_as_stream_time_advances_per_partition(
    kafka_bootstrap: str, tmp_path: Path, unused_port
) -> None:
    topics = Topics(kafka_bootstrap)
    times = [BASE_MS + n * 10_000 for n in range(600)]  # 100 minutes of stream time
    _feed(topics, times)
    output = Reader(kafka_bootstrap, topics.output)
    ends = {p: max(times[p::PARTITIONS]) for p in range(PARTITIONS)}
    ticks: dict[int, list[int]] = {}

    def ticked_to_the_end() -> bool:
        ticks.clear()
        ticks.update(
            {int(key.split(b"|")[1]): seen for key, seen in _values(output, b"tick").items()}
        )
        return all(p in ticks and ends[p] - ticks[p][-1] < TICK_MS for p in range(PARTITIONS))

    try:
        with running(StreamClock(topics), engine_config(topics, tmp_path, unused_port())):
            output.until(ticked_to_the_end, "each partition's timer to run near its end")
    finally:
        output.close()
    for partition, runs in ticks.items():
        gaps = [later - earlier for earlier, later in itertools.pairwise(runs)]
        assert all(gap >= TICK_MS for gap in gaps), f"partition {partition} ran early: {gaps}"
        assert runs[0] >= BASE_MS
        assert runs[-1] <= ends[partition]


def test_a_timer_that_raises_is_counted_and_dropped_and_the_worker_goes_on(
    kafka_bootstrap: str, tmp_path: Path, unused_port
) -> None:
    topics = Topics(kafka_bootstrap)
    _feed(topics, [BASE_MS + n * 30_000 for n in range(30)])
    output = Reader(kafka_bootstrap, topics.output)
    job = StreamClock(topics, broken=True)
    try:
        with running(job, engine_config(topics, tmp_path, unused_port())) as (worker, registry):
            output.until(lambda: len(_values(output, b"k")) >= 30, "the first records")
            # Then stream time moves on by more than the timer's minute: it runs and raises.
            _feed(topics, [BASE_MS + n * 30_000 for n in range(30, 90)], key_prefix="k3")
            output.until(lambda: len(_values(output, b"k")) >= 90, "every record, after it raised")
            errors = registry.get_sample_value("wapipe_processor_timer_errors_total",
                                               {"processor": "clock"})  # fmt: skip
            ticked = [worker.stores[p]["counts"].get(b"ticked") for p in worker.stores]
    finally:
        output.close()
    assert (errors or 0) >= 1, "the timer's failure was not counted"
    assert not _values(output, b"tick"), "a failed timer's records were committed"
    assert ticked == [None] * len(ticked), "a failed timer's writes were stored"


def test_a_job_is_told_which_partitions_left_it(
    kafka_bootstrap: str, tmp_path: Path, unused_port
) -> None:
    topics = Topics(kafka_bootstrap)
    first, second = StreamClock(topics), StreamClock(topics)
    config = engine_config(topics, tmp_path / "first", unused_port())
    second_slot = KafkaOptions(topics.bootstrap, topics.group, f"{topics.group}.second")
    other = replace(engine_config(topics, tmp_path / "second", unused_port()), kafka=second_slot)
    with running(first, config) as (worker, _):
        deadline = time.monotonic() + 60
        while len(worker.stores) < PARTITIONS:
            assert time.monotonic() < deadline, "the first worker never opened every partition"
            time.sleep(0.1)
        with running(second, other) as (joined, _):
            while not first.revoked or not joined.stores:
                assert time.monotonic() < deadline + 60, "no partition moved to the second worker"
                time.sleep(0.1)
            moved = set(joined.stores)
    assert moved <= first.revoked


def test_a_source_partition_committed_at_its_end_holds_no_other_back_after_a_restart(
    kafka_bootstrap: str, tmp_path: Path, unused_port
) -> None:
    """Aligned, two sources. `more` is read to its end and committed there, at an old
    stream time; then `source` gets records a day later. A restarted worker has read
    nothing of `more` (librdkafka leaves the position unset until a fetch returns a
    record): `more` is nonetheless read to its end, so it holds nothing back."""
    topics = Topics(kafka_bootstrap)
    producer = Producer({"bootstrap.servers": topics.bootstrap})
    for partition in range(PARTITIONS):
        producer.produce(topics.more, b"x", f"more{partition}".encode(), partition=partition,
                         timestamp=BASE_MS)  # fmt: skip
    assert producer.flush(30) == 0, "records not delivered"
    output = Reader(kafka_bootstrap, topics.output)
    config = engine_config(topics, tmp_path, unused_port(), max_drift_ms=10 * TICK_MS)

    def clock() -> StreamClock:
        job = StreamClock(topics)
        job.sources, job.aligned = (topics.source, topics.more), True
        return job

    try:
        with running(clock(), config):
            output.until(lambda: len(_values(output, b"more")) == PARTITIONS, "the old records")
        _feed(topics, [BASE_MS + 86_400_000] * 900, key_prefix="later")  # batches of 100
        with running(clock(), replace(config, web_port=unused_port())):
            output.until(
                lambda: len(_values(output, b"later")) == 900,
                "the later records (held back by the partitions read to their end?)",
            )
    finally:
        output.close()
