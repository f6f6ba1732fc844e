"""The stall watchdog: when a partition behind its end has gone without a commit too long."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer
from example_bodies import EXAMPLE_PATHS
from faust.types import TP

from processors.progress import Progress, StallWatchdog, has_records
from wapipe import topics

STALL = 60.0


def test_lag_counts_the_records_after_the_committed_offset() -> None:
    assert Progress(committed=15, end=40).lag == 25
    assert Progress(committed=40, end=40).lag == 0
    assert Progress(committed=41, end=40).lag == 0  # end read before a commit landed


def test_a_partition_behind_with_a_frozen_commit_is_stalled_after_the_limit() -> None:
    watchdog = StallWatchdog(STALL)
    behind = {"status-0": Progress(committed=15, end=40)}
    assert watchdog.stalled(behind, now=100.0) == []
    assert watchdog.stalled(behind, now=159.9) == [], "not before the limit"
    assert watchdog.stalled(behind, now=160.0) == ["status-0"]


def test_a_partition_that_commits_is_not_stalled_however_long_it_is_behind() -> None:
    watchdog = StallWatchdog(STALL)
    for second in range(0, 600, 10):  # a long backlog, worked through
        progress = {"status-0": Progress(committed=15 + second, end=100_000)}
        assert watchdog.stalled(progress, now=float(second)) == []


def test_a_partition_that_catches_up_starts_the_count_again() -> None:
    watchdog = StallWatchdog(STALL)
    assert watchdog.stalled({"p": Progress(committed=15, end=40)}, now=0.0) == []
    assert watchdog.stalled({"p": Progress(committed=40, end=40)}, now=50.0) == []
    assert watchdog.stalled({"p": Progress(committed=40, end=41)}, now=55.0) == []
    assert watchdog.stalled({"p": Progress(committed=40, end=41)}, now=114.0) == []
    assert watchdog.stalled({"p": Progress(committed=40, end=41)}, now=115.0) == ["p"]


def test_an_idle_partition_is_never_stalled() -> None:
    watchdog = StallWatchdog(STALL)
    for second in (0.0, 100.0, 1000.0):
        assert watchdog.stalled({"p": Progress(committed=40, end=40)}, now=second) == []


def test_only_the_stalled_partition_is_named_and_reset_forgets_the_count() -> None:
    watchdog = StallWatchdog(STALL)
    progress = {"a": Progress(committed=0, end=5), "b": Progress(committed=3, end=9)}
    watchdog.stalled(progress, now=0.0)
    moving = {"a": Progress(committed=0, end=5), "b": Progress(committed=9, end=12)}
    assert watchdog.stalled(moving, now=60.0) == ["a"]
    watchdog.reset()  # e.g. a rebalance: the count starts over
    assert watchdog.stalled(progress, now=61.0) == []


def test_an_excused_partition_counts_again_once_its_offsets_move() -> None:
    watchdog = StallWatchdog(STALL)
    marker_only = {"p": Progress(committed=3, end=4)}
    assert watchdog.stalled(marker_only, now=0.0) == []
    assert watchdog.stalled(marker_only, now=60.0) == ["p"]
    watchdog.excuse("p", marker_only["p"])
    assert watchdog.stalled(marker_only, now=600.0) == []
    grown = {"p": Progress(committed=3, end=9)}
    assert watchdog.stalled(grown, now=601.0) == []
    assert watchdog.stalled(grown, now=661.0) == ["p"]


@pytest.mark.kafka
@pytest.mark.slow
async def test_a_partition_ending_in_a_commit_marker_is_behind_but_not_stalled(
    kafka_settings, start_worker, tmp_path, eventually
):
    raw = topics.RAW.name(kafka_settings.topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka_bootstrap,
                                transactional_id=f"{kafka_settings.topic_prefix}.test")  # fmt: skip
    await producer.start()
    try:
        async with producer.transaction():
            for path in EXAMPLE_PATHS[:3]:
                await producer.send(raw, path.read_bytes(), key=path.name.encode())
    finally:
        await producer.stop()
    # Offsets 0-2 hold the events, offset 3 the transaction's commit marker.
    source = TP(raw, 0)
    bootstrap = kafka_settings.kafka_bootstrap
    assert await has_records(bootstrap, source, Progress(committed=2, end=4))
    assert not await has_records(bootstrap, source, Progress(committed=3, end=4))

    # normalize commits offset 3 and stays "behind" by the marker: the watchdog
    # suspects the partition after 10 s, reads it, finds nothing, and lets it be.
    worker = start_worker("normalize", kafka_settings, WAPIPE_PROCESSOR_STALL_SECONDS="10")
    log = tmp_path / "normalize.log"
    await eventually(lambda: worker.poll() is not None or "markers only" in log.read_text(),
                     120, "the watchdog's verdict on the commit marker")  # fmt: skip
    assert worker.poll() is None, log.read_text()[-3000:]
