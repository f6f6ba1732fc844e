"""One table partition on local disk: a RocksDB store that only ever holds committed
state, and the changelog offset it holds it up to (its checkpoint).

The engine writes a store only after the Kafka transaction that carried the same
writes to the table's changelog has committed, in one RocksDB write batch with the
new checkpoint (the changelog offset after the last record of that transaction).
So the store is always a prefix of the changelog: a crash at any point leaves a
store that restoring from its checkpoint brings up to date, never one that holds a
write the changelog does not. A lost disk is an empty store with no checkpoint,
restored from the changelog's start.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import rocksdict

# Table keys are the jobs' ids (umids, dedupe keys, template ids): none starts with a
# NUL byte, so the checkpoint cannot collide with one. `TableView` refuses such keys.
CHECKPOINT_KEY = b"\x00wapipe.checkpoint"
RESERVED_PREFIX = b"\x00"
_DAY_SECONDS = 86_400

Writes = Mapping[bytes, bytes | None]  # key -> new value, or None to delete it

_MEMORY_PROPERTIES = {
    "memtables": "rocksdb.size-all-mem-tables",
    "block_cache": "rocksdb.block-cache-usage",
    "table_readers": "rocksdb.estimate-table-readers-mem",
}


@dataclass(frozen=True)
class StoreOptions:
    """RocksDB's budget per table partition, and an optional time-to-live."""

    write_buffer_mb: int = 8
    block_cache_mb: int = 16
    ttl_days: int | None = None  # keys untouched this long are dropped at compaction


class Store:
    """One table partition: committed state and its checkpoint."""

    def __init__(self, path: Path, options: StoreOptions) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        rocks = rocksdict.Options(raw_mode=True)
        rocks.create_if_missing(True)
        rocks.set_write_buffer_size(options.write_buffer_mb << 20)
        rocks.set_max_write_buffer_number(2)
        rocks.set_compression_type(rocksdict.DBCompressionType.lz4())
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(rocksdict.Cache(options.block_cache_mb << 20))
        rocks.set_block_based_table_factory(table)
        access = (
            rocksdict.AccessType.read_write()
            if options.ttl_days is None
            else rocksdict.AccessType.with_ttl(options.ttl_days * _DAY_SECONDS)
        )
        self._db = rocksdict.Rdict(str(path), rocks, access_type=access)

    @property
    def checkpoint(self) -> int | None:
        """The changelog offset this store holds every committed write before; None for a
        store that never restored or committed anything (a new or lost disk)."""
        value = self._db.get(CHECKPOINT_KEY)
        return None if value is None else int(value)

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(key)
        return value

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """One RocksDB multi-get: far cheaper than a get per key."""
        values = self._db.get(list(keys))
        return cast(list[bytes | None], values)

    def apply(self, writes: Writes, checkpoint: int | None) -> None:
        """Apply committed `writes` and move the checkpoint, atomically (one write batch)."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in writes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if checkpoint is not None:
            batch.put(CHECKPOINT_KEY, str(checkpoint).encode())
        self._db.write(batch)

    def scan(
        self, start: bytes | None, limit: int
    ) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
        """Up to `limit` (key, value) pairs from `start` on (the first key if None), and the
        key to resume at (None once the walk reached the end)."""
        cursor = self._db.iter()
        if start is None:
            cursor.seek_to_first()
        else:
            cursor.seek(start)
        found: list[tuple[bytes, bytes]] = []
        while cursor.valid() and len(found) < limit:
            key = cursor.key()
            if not key.startswith(RESERVED_PREFIX):
                found.append((key, cursor.value()))
            cursor.next()
        return found, (cursor.key() if cursor.valid() else None)

    def range(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The (key, value) pairs with `start <= key < stop`, in key order (never the
        checkpoint)."""
        cursor = self._db.iter()
        cursor.seek(start)
        while cursor.valid() and cursor.key() < stop:
            if not cursor.key().startswith(RESERVED_PREFIX):
                yield cursor.key(), cursor.value()
            cursor.next()

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) of the table partition (for gauges over few keys)."""
        for key, value in self._db.items():
            if not cast(bytes, key).startswith(RESERVED_PREFIX):
                yield cast(bytes, key), cast(bytes, value)

    def memory_bytes(self) -> Iterator[tuple[str, int]]:
        """(kind, bytes) of what RocksDB holds in memory for this store."""
        for kind, name in _MEMORY_PROPERTIES.items():
            yield kind, self._db.property_int_value(name) or 0

    def close(self) -> None:
        self._db.close()

    def wipe(self) -> None:
        """Delete the store's files (its checkpoint ran ahead of the changelog: a changelog
        deleted and made anew); the next open restores from the changelog's start."""
        self._db.close()
        shutil.rmtree(self.path, ignore_errors=True)
