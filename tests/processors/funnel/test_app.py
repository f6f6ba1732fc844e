"""The funnel's wiring of the rate alerts' decisions, on real stores without Kafka: a
window is decided when its deltas' stream time reaches `decides_at`, or, on a partition
read to its end whose stream time stands still, once stream time plus the wall-clock
time it has stood still gets there; never by the wall clock alone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from processors.engine.job import PartitionBatch
from processors.engine.state.schedule import Schedule
from processors.engine.state.store import Store, StoreOptions
from processors.engine.state.view import TableView
from processors.funnel.app import FunnelJob
from processors.funnel.batch import SubAccountWindow
from processors.funnel.windows import WindowKey

HOUR = WindowKey("1h", "2026-11-25T10:00:00.000Z", "acme", "", "")
SPIKE = {"delivered": 40, "undelivered": 20}
WALL = datetime(2026, 12, 7, 12, tzinfo=UTC)  # days after the window: it must not decide


class Funnel:
    """The job with one partition's stores, committed after each call."""

    def __init__(self, settings: Any, directory: Path) -> None:
        self.job = FunnelJob(settings(), CollectorRegistry())
        self.stores = {table.name: Store(directory / table.name, StoreOptions())
                       for table in self.job.tables}  # fmt: skip
        self.decides_at = self.job.limits.decides_at(HOUR)
        self._commit(self._batch(None))
        views = self._views()
        views["subaccount_windows"].put(HOUR.encode().encode(),
                                        orjson.dumps(SubAccountWindow(SPIKE)))  # fmt: skip
        Schedule(views["alerts_due"]).add(self.decides_at, HOUR.encode().encode())
        self._commit_views(views)

    def alerts_live(self, stream_time_ms: int, now: datetime, caught_up: bool = True) -> list[str]:
        batch = self._batch(stream_time_ms, caught_up)
        self.job.decide_rate_alerts_live({0: batch}, now)
        return self._commit(batch)

    def alerts_by_stream_time(self, stream_time_ms: int) -> list[str]:
        batch = self._batch(stream_time_ms)
        self.job.decide_rate_alerts({0: batch})
        return self._commit(batch)

    def close(self) -> None:
        for store in self.stores.values():
            store.close()

    def _views(self) -> dict[str, TableView]:
        return {name: TableView(store) for name, store in self.stores.items()}

    def _batch(self, stream_time_ms: int | None, caught_up: bool = True) -> PartitionBatch:
        times = {} if stream_time_ms is None else {self.job.deltas: stream_time_ms}
        return PartitionBatch(self.job.deltas, 0, [], self._views(), stream_time_ms, times,
                              caught_up)  # fmt: skip

    def _commit(self, batch: PartitionBatch) -> list[str]:
        self._commit_views(batch.tables)
        return [orjson.loads(output.value)["type"] for output in batch.outputs
                if output.topic == self.job.alerts and output.value]  # fmt: skip

    def _commit_views(self, views: dict[str, TableView]) -> None:
        for name, view in views.items():
            if view.writes:
                self.stores[name].apply(view.writes, checkpoint=None)


@pytest.fixture
def funnel(settings_for: Any, tmp_path: Path) -> Iterator[Funnel]:
    opened = Funnel(settings_for, tmp_path)
    yield opened
    opened.close()


def test_stream_time_decides_a_window_once(funnel: Funnel) -> None:
    assert funnel.alerts_by_stream_time(funnel.decides_at - 1) == []
    assert funnel.alerts_by_stream_time(funnel.decides_at) == ["DELIVERY_FAILURE_SPIKE"]
    assert funnel.alerts_by_stream_time(funnel.decides_at + 60_000) == []


def test_a_caught_up_partition_decides_once_stream_time_has_stood_still_long_enough(
    funnel: Funnel,
) -> None:
    standing = funnel.decides_at - 60_000  # a minute short of the decision
    assert funnel.alerts_live(standing, WALL) == []  # first seen: no time has passed yet
    assert funnel.alerts_live(standing, WALL + timedelta(seconds=59)) == []
    assert funnel.alerts_live(standing, WALL + timedelta(seconds=60)) == ["DELIVERY_FAILURE_SPIKE"]


def test_the_wall_clock_counts_only_while_stream_time_stands_still_and_all_is_read(
    funnel: Funnel,
) -> None:
    standing = funnel.decides_at - 60_000
    assert funnel.alerts_live(standing, WALL) == []
    assert funnel.alerts_live(standing, WALL + timedelta(seconds=50), caught_up=False) == []
    assert funnel.alerts_live(standing, WALL + timedelta(seconds=70)) == []  # still from here
    assert funnel.alerts_live(standing + 1, WALL + timedelta(seconds=80)) == []  # it moved
    assert funnel.alerts_live(standing + 1, WALL + timedelta(seconds=139)) == []
    assert funnel.alerts_live(standing + 1, WALL + timedelta(seconds=140)) == [
        "DELIVERY_FAILURE_SPIKE"]  # fmt: skip
