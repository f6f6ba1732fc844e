"""The watchdog that ends a worker whose commits are stuck behind events faust lost."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
from faust.types import TP

from processors import runtime
from wapipe.exit_codes import EXIT_OFFSETS_STUCK


@dataclass
class FakeConsumer:
    """faust's consumer bookkeeping as the watchdog reads it."""

    acked: dict[TP, list[int]] = field(default_factory=lambda: defaultdict(list))
    committed: dict[TP, int | None] = field(default_factory=dict)

    def assignment(self) -> set[TP]:
        return {TP("status", 0)}

    @property
    def _acked(self) -> dict[TP, list[int]]:
        return self.acked

    @property
    def _committed_offset(self) -> dict[TP, int | None]:
        return self.committed


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Any:
    now = [1000.0]
    monkeypatch.setattr(runtime.time, "monotonic", lambda: now[0])
    exits: list[int] = []

    def fake_exit(code: int) -> None:
        exits.append(code)

    monkeypatch.setattr(runtime.os, "_exit", fake_exit)
    return now, exits


@pytest.mark.parametrize(
    ("acked", "committed", "exits"),
    [
        ([28, 29, 30], 15, [EXIT_OFFSETS_STUCK]),  # events 16-27 never acknowledged
        ([16, 17, 18], 15, []),  # contiguous: faust commits them
        ([], 15, []),
        ([28, 29], None, []),  # nothing committed yet: no reference
    ],
)
def test_a_gap_that_lasts_ends_the_worker(clock, acked, committed, exits):
    now, exited = clock
    consumer = FakeConsumer()
    consumer.acked[TP("status", 0)] = acked
    consumer.committed[TP("status", 0)] = committed
    watchdog = runtime._StuckOffsets("funnel")
    watchdog.check(consumer)
    now[0] += 29
    watchdog.check(consumer)
    assert exited == [], "not before the gap has lasted 30 s"
    now[0] += 1
    watchdog.check(consumer)
    assert exited == exits


def test_a_gap_that_closes_starts_the_count_again(clock):
    now, exited = clock
    consumer = FakeConsumer()
    consumer.committed[TP("status", 0)] = 15
    watchdog = runtime._StuckOffsets("funnel")
    consumer.acked[TP("status", 0)] = [20]
    watchdog.check(consumer)
    now[0] += 20
    consumer.acked[TP("status", 0)] = []  # the batch in between arrived; faust committed
    watchdog.check(consumer)
    consumer.acked[TP("status", 0)] = [40]
    now[0] += 20
    watchdog.check(consumer)
    assert exited == []
