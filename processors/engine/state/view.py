"""What a job sees of one table partition during a batch: the committed store, with the
batch's own writes on top. Nothing reaches the store until the batch's transaction has
committed (store.py says why)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from processors.engine.state.store import RESERVED_PREFIX, Store

_MISSING = object()


class TableView:
    """Reads see this batch's writes first, then the committed store."""

    def __init__(self, store: Store, parent: TableView | None = None) -> None:
        self.store = store
        self.parent = parent  # a view this one forks from (a record retried alone)
        self.writes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        value = self._pending(key)
        if value is not _MISSING:
            return value  # type: ignore[return-value]
        return self.store.get(key)

    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, bytes | None]:
        """The values of `keys`, those not written in this batch read in one multi-get."""
        found: dict[bytes, bytes | None] = {}
        unread: list[bytes] = []
        for key in keys:
            value = self._pending(key)
            if value is _MISSING:
                unread.append(key)
            else:
                found[key] = value  # type: ignore[assignment]
        if unread:
            found.update(zip(unread, self.store.get_many(unread), strict=True))
        return found

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) of the table partition as this batch sees it (a walk of the
        whole store: for the few-keyed tables' timers and gauges)."""
        pending = self._all_pending()
        for key, value in self.store.items():
            if key not in pending:
                yield key, value
        for key, written in pending.items():
            if written is not None:
                yield key, written

    def range(self, start: bytes, stop: bytes) -> list[tuple[bytes, bytes]]:
        """The (key, value) pairs with `start <= key < stop` as this batch sees them, in key
        order: a walk of that range of the store only."""
        found = dict(self.store.range(start, stop))
        for key, written in self._all_pending().items():
            if start <= key < stop:
                if written is None:
                    found.pop(key, None)
                else:
                    found[key] = written
        return sorted(found.items())

    def put(self, key: bytes, value: bytes) -> None:
        if key.startswith(RESERVED_PREFIX):
            raise ValueError(f"table keys may not start with a NUL byte: {key!r}")
        self.writes[key] = value

    def delete(self, key: bytes) -> None:
        self.writes[key] = None

    def fork(self) -> TableView:
        """A view whose writes stay apart until `merge_into` its parent."""
        return TableView(self.store, parent=self)

    def merge_into_parent(self) -> None:
        assert self.parent is not None
        self.parent.writes.update(self.writes)

    def _all_pending(self) -> dict[bytes, bytes | None]:
        chain: list[TableView] = []
        view: TableView | None = self
        while view is not None:
            chain.append(view)
            view = view.parent
        pending: dict[bytes, bytes | None] = {}
        for ancestor in reversed(chain):  # the nearest writes win
            pending.update(ancestor.writes)
        return pending

    def _pending(self, key: bytes) -> object:
        view: TableView | None = self
        while view is not None:
            if key in view.writes:
                return view.writes[key]
            view = view.parent
        return _MISSING
