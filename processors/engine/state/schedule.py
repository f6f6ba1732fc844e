"""Keys due at a point of time, kept in a table of their own, as Kafka Streams' jobs keep
a time-ordered index store beside their state for their punctuators.

A timer that asks "what is due by now?" walks only the entries due, in time order (a
range of the store), however many wait: the alternative, a walk of every key of the
job's state at each run, grows with the state. An entry is written and deleted in the
batch's transaction like any table write, so it is as exact under aborts and crashes
as the state it indexes.

Entries may go stale (a pause extended, a window re-decided): the job checks each due
entry against its state and `done`s it, which costs less than deleting eagerly.
"""

from __future__ import annotations

from collections.abc import Iterator

from processors.engine.state.view import TableView

# The due time's milliseconds, zero-padded so that the keys sort by time (no table key
# may start with a NUL byte, which a big-endian integer would), then the job's key.
_WIDTH = 16
_SEPARATOR = b"|"


class Schedule:
    """A table partition's entries `(due_ms, key)`, read back in due order."""

    def __init__(self, view: TableView) -> None:
        self.view = view

    def add(self, due_ms: int, key: bytes) -> None:
        self.view.put(_entry(due_ms, key), b"")

    def done(self, due_ms: int, key: bytes) -> None:
        self.view.delete(_entry(due_ms, key))

    def due(self, until_ms: int) -> Iterator[tuple[int, bytes]]:
        """The entries due at or before `until_ms`, earliest first."""
        for entry, _ in self.view.range(_time(0), _time(until_ms + 1)):
            due, _, key = entry.partition(_SEPARATOR)
            yield int(due), key


def _time(ms: int) -> bytes:
    if not 0 <= ms < 10**_WIDTH:
        raise ValueError(f"a schedule's time must be 0 to 10^{_WIDTH} ms: {ms}")
    return str(ms).zfill(_WIDTH).encode()


def _entry(due_ms: int, key: bytes) -> bytes:
    return _time(due_ms) + _SEPARATOR + key
