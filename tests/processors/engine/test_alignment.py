"""Stream-time alignment as a plain function: which source partitions wait for the
slowest one still being read."""

from __future__ import annotations

from processors.engine.alignment import Clock, ahead

MINUTE = 60_000


def test_partitions_more_than_the_drift_ahead_of_the_slowest_reading_one_wait() -> None:
    clocks = {
        ("status", 0): Clock(100 * MINUTE, reading=True),  # the slowest still reading
        ("status", 1): Clock(110 * MINUTE, reading=True),  # within the drift
        ("status", 2): Clock(111 * MINUTE, reading=True),  # just past it
        ("deltas", 0): Clock(500 * MINUTE, reading=False),  # ahead, and nothing to read
    }
    assert ahead(clocks, 10 * MINUTE) == {("status", 2), ("deltas", 0)}


def test_partitions_read_to_their_end_hold_nobody_back() -> None:
    clocks = {
        ("status", 0): Clock(1 * MINUTE, reading=False),  # idle: no traffic for a while
        ("status", 1): Clock(900 * MINUTE, reading=True),
        ("status", 2): Clock(None, reading=False),  # never had a record
    }
    assert ahead(clocks, 10 * MINUTE) == set()


def test_a_partition_not_read_yet_is_the_slowest_until_its_first_records() -> None:
    clocks = {
        ("status", 0): Clock(None, reading=True),  # newly fed: its times are not known
        ("status", 1): Clock(5 * MINUTE, reading=True),
        ("inbound", 1): Clock(7 * MINUTE, reading=False),
    }
    assert ahead(clocks, 10 * MINUTE) == {("status", 1), ("inbound", 1)}
    assert ("status", 0) not in ahead(clocks, 10 * MINUTE), "the slowest never waits"


def test_nothing_waits_when_nothing_is_being_read() -> None:
    assert ahead({("status", 0): Clock(5, reading=False)}, 0) == set()
    assert ahead({}, MINUTE) == set()
