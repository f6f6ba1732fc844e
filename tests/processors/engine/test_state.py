"""The engine's state without Kafka: a store holds committed writes and its checkpoint
together; a batch's view reads its own writes over the store, and a fork (a record
retried alone) keeps its writes apart until merged."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.engine.state.store import Store, StoreOptions
from processors.engine.state.view import TableView


def test_a_new_store_has_no_checkpoint_and_an_applied_batch_moves_it(tmp_path: Path) -> None:
    path = tmp_path / "table-0"
    store = Store(path, StoreOptions())
    assert store.checkpoint is None
    store.apply({b"a": b"1", b"b": b"2"}, checkpoint=7)
    store.apply({b"a": None, b"c": b"3"}, checkpoint=9)
    store.close()

    reopened = Store(path, StoreOptions())  # what a restart finds on disk
    try:
        assert reopened.checkpoint == 9
        assert reopened.get_many([b"a", b"b", b"c", b"d"]) == [None, b"2", b"3", None]
    finally:
        reopened.close()


def test_scan_walks_every_key_in_slices_and_never_returns_the_checkpoint(store: Store) -> None:
    store.apply({f"k{n:03}".encode(): str(n).encode() for n in range(25)}, checkpoint=25)
    seen: list[bytes] = []
    cursor: bytes | None = None
    for _ in range(10):
        found, cursor = store.scan(cursor, limit=10)
        seen += [key for key, _ in found]
        if cursor is None:
            break
    assert seen == [f"k{n:03}".encode() for n in range(25)]
    assert dict(store.items()) == {f"k{n:03}".encode(): str(n).encode() for n in range(25)}


def test_wipe_leaves_an_empty_store_to_restore_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "table-0"
    store = Store(path, StoreOptions())
    store.apply({b"a": b"1"}, checkpoint=3)
    store.wipe()
    fresh = Store(path, StoreOptions())
    try:
        assert (fresh.checkpoint, fresh.get(b"a")) == (None, None)
    finally:
        fresh.close()


def test_a_view_reads_its_own_writes_first_and_leaves_the_store_alone(store: Store) -> None:
    store.apply({b"a": b"1", b"b": b"2"}, checkpoint=2)
    view = TableView(store)
    view.put(b"a", b"10")
    view.delete(b"b")
    view.put(b"c", b"30")
    assert view.get_many([b"a", b"b", b"c", b"d"]) == {b"a": b"10", b"b": None, b"c": b"30",
                                                       b"d": None}  # fmt: skip
    assert (view.get(b"a"), view.get(b"b")) == (b"10", None)
    assert store.get_many([b"a", b"b", b"c"]) == [b"1", b"2", None]  # until committed
    assert view.writes == {b"a": b"10", b"b": None, b"c": b"30"}


def test_a_fork_reads_its_parents_writes_and_merges_only_when_told(store: Store) -> None:
    parent = TableView(store)
    parent.put(b"a", b"1")
    kept, dropped = parent.fork(), parent.fork()
    assert kept.get(b"a") == b"1"
    kept.put(b"a", b"2")
    dropped.put(b"b", b"poison")  # the record that failed: never merged
    kept.merge_into_parent()
    assert parent.writes == {b"a": b"2"}


def test_keys_may_not_take_the_checkpoints_prefix(store: Store) -> None:
    with pytest.raises(ValueError, match="NUL"):
        TableView(store).put(b"\x00wapipe.checkpoint", b"0")


def test_a_views_range_merges_its_writes_over_that_range_of_the_store(store: Store) -> None:
    store.apply({b"a": b"1", b"b": b"2", b"c": b"3", b"e": b"5"}, checkpoint=4)
    parent = TableView(store)
    parent.delete(b"b")
    view = parent.fork()
    view.put(b"d", b"4")
    view.put(b"c", b"30")
    view.put(b"z", b"26")  # outside the range
    assert view.range(b"b", b"e") == [(b"c", b"30"), (b"d", b"4")]
    assert parent.range(b"a", b"f") == [(b"a", b"1"), (b"c", b"3"), (b"e", b"5")]
