"""normalize's memory of the events it has written: the `seen` table, and its expiry.

A dedupe key maps to when it was first seen (`<epoch ms>`); an id key to that and
the content digest of the event that used the id (`<epoch ms>:<digest>`), as bytes.

Keys live `WAPIPE_DEDUPE_DAYS`. RocksDB's TTL drops them from the local store, but
the table's changelog is compacted, and compaction keeps the latest record of
every key forever: without deletes, the changelog (and a restore from it) would
grow with every event ever seen. So `SeenSweep` walks each partition's keys a
slice per batch and deletes the expired ones through the batch's view, which
writes their tombstones to the changelog in the batch's transaction; compaction
then drops them from the changelog too. A full walk takes (keys / slice) batches;
the RocksDB TTL is two days longer than the expiry, so the walk reaches a key
before RocksDB drops it silently.
"""

from __future__ import annotations

from processors.engine.state.view import TableView

SLICE = 500  # keys examined per partition and batch
SWEEP_MARGIN_DAYS = 2  # RocksDB's TTL is this much longer than the expiry


def seen_value(first_seen_ms: int, digest: str | None = None) -> bytes:
    return (str(first_seen_ms) if digest is None else f"{first_seen_ms}:{digest}").encode()


def digest_of(value: bytes) -> str | None:
    """The content digest an id key's value holds (None for a dedupe key's)."""
    _, _, digest = value.partition(b":")
    return digest.decode() or None


def first_seen_ms(value: bytes) -> int | None:
    head = value.partition(b":")[0]
    return int(head) if head.isdigit() else None


class SeenSweep:
    """Deletes expired keys of the `seen` table, a slice of one partition at a time. The
    walk reads the committed store; the deletes go through the batch's view."""

    def __init__(self, max_age_ms: int, slice_size: int = SLICE) -> None:
        self.max_age_ms, self.slice_size = max_age_ms, slice_size
        self.cursors: dict[int, bytes | None] = {}  # partition -> the next key to examine

    def forget(self, partitions: frozenset[int]) -> None:
        """Partitions gone from this worker: their walks start over wherever they go."""
        for partition in partitions:
            self.cursors.pop(partition, None)

    def sweep(self, partition: int, seen: TableView, now_ms: int) -> int:
        """Delete the keys of the next slice of `partition` that expired by `now_ms` (the
        partition's stream time); returns how many."""
        found, self.cursors[partition] = seen.store.scan(self.cursors.get(partition),
                                                         self.slice_size)  # fmt: skip
        expired = 0
        for key, value in found:
            if key in seen.writes:  # written in this batch: the store's value is stale
                continue
            seen_at = first_seen_ms(value)
            if seen_at is not None and now_ms - seen_at > self.max_age_ms:
                seen.delete(key)
                expired += 1
        return expired
