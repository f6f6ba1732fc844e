"""The stall watchdog: when a partition behind its end has gone without a commit too long."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaProducer
from example_bodies import EXAMPLE_PATHS
from faust.types import TP

from processors.progress import Continuity, Progress, StallWatchdog, has_records
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


def test_a_partition_waiting_behind_the_backlog_of_others_is_not_stalled() -> None:
    """Backpressure: the client hands over other partitions' backlog first, and the
    worker commits those meanwhile."""
    watchdog = StallWatchdog(STALL)
    for second in range(0, 300, 10):
        progress = {"partials-3": Progress(committed=900, end=1900, position=900),
                    "observations-1": Progress(committed=second * 100, end=90_000)}  # fmt: skip
        assert watchdog.stalled(progress, now=float(second)) == []
    taken = {"partials-3": Progress(committed=900, end=1900, position=1400),
             "observations-1": Progress(committed=90_000, end=90_000)}  # fmt: skip
    assert watchdog.stalled(taken, now=300.0) == [], "the clock starts when faust has them"
    assert watchdog.stalled(taken, now=359.9) == []
    assert watchdog.stalled(taken, now=360.0) == ["partials-3"]


def test_a_partition_waiting_in_an_idle_worker_is_stalled() -> None:
    """Nothing else moves: the client is not handing the records over at all."""
    watchdog = StallWatchdog(STALL)
    waiting = {"observations-0": Progress(committed=5697, end=5780, position=5697),
               "observations-1": Progress(committed=5718, end=5718, position=5718)}  # fmt: skip
    assert watchdog.stalled(waiting, now=0.0) == []
    assert watchdog.stalled(waiting, now=60.0) == ["observations-0"]


def test_a_partition_not_being_fetched_counts_however_its_position_stands() -> None:
    """A partition faust no longer asks the client for (position None) waits for nothing."""
    watchdog = StallWatchdog(STALL)
    held_back = {"p": Progress(committed=900, end=1900, position=None)}
    assert watchdog.stalled(held_back, now=0.0) == []
    assert watchdog.stalled(held_back, now=60.0) == ["p"]


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


class _Consumer:
    """What `Continuity` reads of faust's consumer: the generation and committed offsets."""

    def __init__(self, committed: dict[str, int]) -> None:
        self.app = SimpleNamespace(consumer_generation_id=1)
        self._committed_offset = committed


def _events(*offsets: tuple[str, int]) -> list[SimpleNamespace]:
    return [SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset))
            for tp, offset in offsets]  # fmt: skip


def test_events_in_order_leave_no_hole_and_repeats_are_no_hole() -> None:
    continuity = Continuity(_Consumer({"p0": 10, "p1": 3}))
    assert continuity.holes(_events(("p0", 10), ("p1", 3), ("p0", 11), ("p0", 12))) == {}
    assert continuity.holes(_events(("p0", 11), ("p0", 13))) == {}, "11 again: a repeat"


def test_an_event_past_the_next_expected_offset_names_the_hole() -> None:
    continuity = Continuity(_Consumer({"p0": 609}))
    assert continuity.holes(_events(("p0", 609), ("p0", 610))) == {}
    assert continuity.holes(_events(("p0", 612), ("p0", 613))) == {
        "p0": Progress(committed=611, end=612)
    }, "611 never reached the agent"


def test_the_first_event_after_a_rebalance_is_checked_against_the_committed_offset() -> None:
    consumer = _Consumer({"p0": 100})
    continuity = Continuity(consumer)
    assert continuity.holes(_events(("p0", 100), ("p0", 101))) == {}
    consumer.app.consumer_generation_id = 2  # partitions moved; faust sought to 95
    consumer._committed_offset = {"p0": 95}
    assert continuity.holes(_events(("p0", 97))) == {"p0": Progress(committed=95, end=97)}


def test_a_partition_never_committed_starts_at_its_first_event() -> None:
    continuity = Continuity(_Consumer({}))
    assert continuity.holes(_events(("p0", 40), ("p0", 41))) == {}


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
