"""normalize's memory of the events it has written: the `seen` table, and its expiry.

A dedupe key maps to when it was first seen (`<epoch ms>`); an id key to that and
the content digest of the event that used the id (`<epoch ms>:<digest>`).

Keys live `WAPIPE_DEDUPE_DAYS`. RocksDB's TTL drops them from the local store, but
the table's changelog is compacted, and compaction keeps the latest record of
every key forever: without deletes, the changelog (and a restore from it) would
grow with every event ever seen. So `SeenSweep` walks each partition's keys a
slice per batch and deletes the expired ones through the table, which writes
their tombstones; compaction then drops them from the changelog too. A full walk
takes (keys / slice) batches; the RocksDB TTL is two days longer than the expiry,
so the walk reaches a key before RocksDB drops it silently.
"""

from __future__ import annotations

from typing import Any

from processors import runtime

SLICE = 500  # keys examined per partition and batch
SWEEP_MARGIN_DAYS = 2  # RocksDB's TTL is this much longer than the expiry
_FAUST_KEYS = b"__faust"  # faust's own bookkeeping keys in the same store


def seen_value(first_seen_ms: int, digest: str | None = None) -> str:
    return str(first_seen_ms) if digest is None else f"{first_seen_ms}:{digest}"


def digest_of(value: str) -> str | None:
    """The content digest an id key's value holds (None for a dedupe key's)."""
    _, _, digest = value.partition(":")
    return digest or None


def first_seen_ms(value: str) -> int | None:
    head = value.partition(":")[0]
    return int(head) if head.isdigit() else None


class SeenSweep:
    """Deletes expired keys of the `seen` table, a slice of one partition at a time.

    Reads the partition's RocksDB store directly (faust's `_db_for_partition` and
    key/value decoding: faust-streaming is pinned exactly), and deletes through the
    table so that the changelog gets the tombstones.
    """

    def __init__(self, table: Any, max_age_ms: int, slice_size: int = SLICE) -> None:
        self.table, self.max_age_ms, self.slice_size = table, max_age_ms, slice_size
        self.cursors: dict[int, bytes | None] = {}  # partition -> the next key to examine

    def sweep(self, partition: int, event: Any, now_ms: int) -> int:
        """Delete the expired keys of the next slice of `partition` (in the context of
        `event`, one of that partition's events); returns how many."""
        expired = self._expired(partition, now_ms)
        with runtime.as_current_event(event):
            for key in expired:
                del self.table[key]
        return len(expired)

    def _expired(self, partition: int, now_ms: int) -> list[str]:
        store = self.table.data
        cursor = store._db_for_partition(partition).iter()
        start = self.cursors.get(partition)
        if start is None:
            cursor.seek_to_first()
        else:
            cursor.seek(start)
        expired: list[str] = []
        for _ in range(self.slice_size):
            if not cursor.valid():
                self.cursors[partition] = None  # the walk starts over
                return expired
            raw_key = cursor.key()
            if not raw_key.startswith(_FAUST_KEYS):
                seen_at = first_seen_ms(store._decode_value(cursor.value()))
                if seen_at is not None and now_ms - seen_at > self.max_age_ms:
                    expired.append(store._decode_key(raw_key))
            cursor.next()
        self.cursors[partition] = cursor.key() if cursor.valid() else None
        return expired
