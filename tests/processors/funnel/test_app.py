"""The funnel's wiring of the rate alerts' decisions, on real stores without Kafka.

The hops that send deltas (the funnel's merge hop, the conversations job) send their
progress to every deltas partition (`deltas.Progress`); the deltas hop decides a
window once the lowest progress of the hop partitions it has heard from reaches
`decides_at`. A partition read to its end progresses by the wall-clock time its stream
time has stood still; never by the wall clock alone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Message
from prometheus_client import CollectorRegistry

from processors.engine.job import PartitionBatch
from processors.engine.state.schedule import Schedule
from processors.engine.state.store import Store, StoreOptions
from processors.engine.state.view import TableView
from processors.funnel.app import FunnelJob
from processors.funnel.batch import SubAccountWindow
from processors.funnel.deltas import HOLDING, IDLE, merge_progress
from processors.funnel.windows import WindowKey

HOUR = WindowKey("1h", "2026-11-25T10:00:00.000Z", "acme", "", "")
SPIKE = {"delivered": 40, "undelivered": 20}
WALL = datetime(2026, 12, 7, 12, tzinfo=UTC)  # days after the window: it must not decide
ALL = ("status", "replies", "inbound")


class Funnel:
    """The job with one partition's stores, committed after each call; the window HOUR
    summed and waiting for its decision."""

    def __init__(self, settings: Any, directory: Path) -> None:
        self.job = FunnelJob(settings(), CollectorRegistry())
        self.stores = {table.name: Store(directory / table.name, StoreOptions())
                       for table in self.job.tables}  # fmt: skip
        self.decides_at = self.job.limits.decides_at(HOUR)
        self._offset = 0
        views = self._views()
        views["subaccount_windows"].put(HOUR.encode().encode(),
                                        orjson.dumps(SubAccountWindow(SPIKE)))  # fmt: skip
        Schedule(views["alerts_due"]).add(self.decides_at, HOUR.encode().encode())
        self._commit_views(views)

    def progress(self, *hops: tuple[str, int]) -> list[str]:
        """The deltas hop reads progress records ("<hop>|<partition>", at): the alerts sent."""
        records = []
        for hop, at in hops:
            self._offset += 1
            records.append(Message(topic=self.job.deltas, partition=0, offset=self._offset,
                                   key=b"hop", value=orjson.dumps({"progress": hop, "at": at}),
                                   timestamp=(1, at)))  # fmt: skip
        batch = PartitionBatch(self.job.deltas, 0, records, self._views())
        self.job.process(batch)
        return self._commit(batch)

    def sent_progress(
        self, now: datetime, reading: tuple[str, ...] = (), **source_times: int
    ) -> list[dict[str, Any]]:  # fmt: skip
        """The merge hop's progress timer on partition 0, its sources' stream times given
        by name (status, replies, inbound), those `reading` not read to their end: the
        progress records it broadcast."""
        times = {getattr(self.job, name): at for name, at in source_times.items()}
        read = frozenset(times) - {getattr(self.job, name) for name in reading}
        batch = PartitionBatch(self.job.status, 0, [], self._views(), None, times,
                               not reading, read_to_end=read)  # fmt: skip
        self.job.send_progress({0: batch}, now)
        assert all(output.every_partition and output.topic == self.job.deltas
                   for output in batch.outputs)  # fmt: skip
        return [orjson.loads(output.value or b"") for output in batch.outputs]

    def close(self) -> None:
        for store in self.stores.values():
            store.close()

    def _views(self) -> dict[str, TableView]:
        return {name: TableView(store) for name, store in self.stores.items()}

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


def test_a_window_is_decided_once_when_its_one_hop_partition_has_progressed_past_it(
    funnel: Funnel,
) -> None:
    assert funnel.progress(("funnel|0", funnel.decides_at - 1)) == []
    assert funnel.progress(("funnel|0", funnel.decides_at)) == ["DELIVERY_FAILURE_SPIKE"]
    assert funnel.progress(("funnel|0", funnel.decides_at + 3_600_000)) == []


def test_a_window_waits_for_the_slowest_hop_partition_heard_from(funnel: Funnel) -> None:
    ahead, behind = funnel.decides_at + 3_600_000, funnel.decides_at - 60_000
    assert funnel.progress(("funnel|0", ahead), ("conversations|2", behind)) == []
    assert funnel.progress(("funnel|1", ahead)) == []  # a new partition: still the slowest
    assert funnel.progress(("conversations|2", behind - 1)) == []  # progress never goes back
    assert funnel.progress(("conversations|2", funnel.decides_at)) == ["DELIVERY_FAILURE_SPIKE"]


def test_the_merge_hop_sends_the_lowest_of_its_sources_down_to_a_decision_point(
    funnel: Funnel,
) -> None:
    hour = 3_600_000
    lowest = funnel.decides_at + 20 * 60_000  # 20 minutes past the decision point
    sent = funnel.sent_progress(WALL, reading=ALL, status=lowest + hour, replies=lowest,
                                inbound=lowest + 2 * hour)  # fmt: skip
    assert sent == [{"progress": "funnel|0", "at": funnel.decides_at}]
    assert (
        funnel.sent_progress(WALL, reading=ALL, status=lowest + hour, replies=lowest + 30 * 60_000)
        == []
    )  # the same point: not again
    assert funnel.sent_progress(WALL, reading=ALL, status=lowest + hour) == [
        {"progress": "funnel|0", "at": funnel.decides_at + hour}]  # fmt: skip


def test_a_caught_up_partition_progresses_by_the_time_it_has_stood_still(funnel: Funnel) -> None:
    standing = funnel.decides_at - 60_000  # a minute short of the decision point
    assert funnel.sent_progress(WALL, status=standing) == [
        {"progress": "funnel|0", "at": funnel.decides_at - 3_600_000}]  # fmt: skip
    assert funnel.sent_progress(WALL + timedelta(seconds=59), status=standing) == []
    assert funnel.sent_progress(WALL + timedelta(seconds=60), status=standing) == [
        {"progress": "funnel|0", "at": funnel.decides_at}]  # fmt: skip


def test_the_wall_clock_counts_only_while_stream_time_stands_still_and_all_is_read(
    funnel: Funnel,
) -> None:
    standing = funnel.decides_at - 60_000
    funnel.sent_progress(WALL, status=standing)
    assert funnel.sent_progress(WALL + timedelta(seconds=50), ALL, status=standing) == []
    assert funnel.sent_progress(WALL + timedelta(seconds=70), status=standing) == []  # from here
    assert funnel.sent_progress(WALL + timedelta(seconds=80), status=standing + 1) == []  # moved
    assert funnel.sent_progress(WALL + timedelta(seconds=139), status=standing + 1) == []
    assert funnel.sent_progress(WALL + timedelta(seconds=140), status=standing + 1) == [
        {"progress": "funnel|0", "at": funnel.decides_at}]  # fmt: skip


def test_a_partition_that_has_read_nothing_holds_the_others_back_until_idle(
    funnel: Funnel,
) -> None:
    """A replay's first seconds: the merge hop's partition 1 has nothing to read yet
    (normalize has not written there), partition 0 is hours ahead. Partition 1 holds
    the decisions back until it has had nothing to read for a minute; it counts again
    from its first record."""
    ahead = funnel.decides_at + 3_600_000
    assert funnel.sent_progress(WALL, ALL) == [{"progress": "funnel|0", "at": HOLDING}]
    assert funnel.sent_progress(WALL + timedelta(seconds=30)) == []  # read to its end: empty
    assert funnel.progress(("funnel|1", ahead), ("funnel|0", HOLDING)) == []
    assert funnel.sent_progress(WALL + timedelta(seconds=89)) == []
    idle = funnel.sent_progress(WALL + timedelta(seconds=90))
    assert idle == [{"progress": "funnel|0", "at": IDLE}]
    assert funnel.progress(("funnel|0", IDLE)) == ["DELIVERY_FAILURE_SPIKE"]


def test_holding_idle_and_stream_times_merge_in_any_order() -> None:
    """What the deltas hop keeps of a hop partition's progress records, whatever order
    they come in (a worker's, then its successor's after a rebalance)."""
    later = 1_764_000_000_000
    for stored, sent, kept in [
        (HOLDING, IDLE, IDLE), (IDLE, HOLDING, IDLE), (HOLDING, later, later),
        (IDLE, later, later), (later, HOLDING, later), (later, IDLE, later),
        (later, later - 1, later), (later - 1, later, later),
    ]:  # fmt: skip
        assert merge_progress(stored, sent) == kept, (stored, sent)


def test_an_idle_source_moves_on_while_another_is_still_being_read(funnel: Funnel) -> None:
    """Few customers write: the inbound partition stands still, read to its end, while
    receipts are still being read; it holds the progress back only as long as it has
    not stood still long enough."""
    ahead, standing = funnel.decides_at + 3_600_000, funnel.decides_at - 60_000
    assert funnel.sent_progress(WALL, ("status",), status=ahead, inbound=standing) == [
        {"progress": "funnel|0", "at": funnel.decides_at - 3_600_000}]  # fmt: skip
    assert funnel.sent_progress(WALL + timedelta(seconds=60), ("status",), status=ahead,
                                inbound=standing) == [
        {"progress": "funnel|0", "at": funnel.decides_at}]  # fmt: skip
