"""A schedule gives back the entries due by a time, earliest first, as the batch sees
them (its own additions and `done`s included), and nothing due later."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.engine.state.schedule import Schedule
from processors.engine.state.store import Store, StoreOptions
from processors.engine.state.view import TableView


def test_due_entries_come_in_time_order_and_later_ones_wait(store: Store) -> None:
    committed = Schedule(TableView(store))
    committed.add(2_000, b"tpl-b")
    committed.add(1_000, b"tpl-a")
    store.apply(committed.view.writes, checkpoint=2)
    schedule = Schedule(TableView(store))
    schedule.add(1_500, b"tpl|with|bars")  # the key may hold the separator
    schedule.add(10_000, b"tpl-c")
    assert list(schedule.due(2_000)) == [(1_000, b"tpl-a"), (1_500, b"tpl|with|bars"),
                                         (2_000, b"tpl-b")]  # fmt: skip
    schedule.done(1_000, b"tpl-a")
    assert list(schedule.due(9_999)) == [(1_500, b"tpl|with|bars"), (2_000, b"tpl-b")]
    assert list(schedule.due(999)) == []


def test_a_time_outside_the_keys_width_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="schedule's time"):
        Schedule(TableView(store)).add(-1, b"k")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**13), st.binary(min_size=1, max_size=8)
                          .filter(lambda key: not key.startswith(b"\x00")))),
       st.integers(0, 10**13))  # fmt: skip
def test_due_is_every_entry_at_or_before_the_time_sorted(
    entries: list[tuple[int, bytes]], until: int
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = Store(Path(directory), StoreOptions())
        try:
            half = len(entries) // 2  # half committed before the batch, half its own
            committed = Schedule(TableView(store))
            for due, key in entries[:half]:
                committed.add(due, key)
            store.apply(committed.view.writes, checkpoint=1)
            schedule = Schedule(TableView(store))
            for due, key in entries[half:]:
                schedule.add(due, key)
            expected = sorted({entry for entry in entries if entry[0] <= until})
            assert list(schedule.due(until)) == expected
        finally:
            store.close()
