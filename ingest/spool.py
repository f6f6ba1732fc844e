"""The ingester's durable local spool: where an event waits while Kafka cannot take it.

The sender gives up about 2 minutes after its first attempt, so an event we
answer 200 must be on disk before we answer. Records are appended to segment
files (`000000000001.spool`, ...) and fsynced in groups: every request waiting
at the same moment shares one fsync. A drainer reads them back in order
(`read_batch`) and, once Kafka has acknowledged a batch, moves the cursor past
it (`commit`), deleting segments it has finished.

Frame layout, big-endian: magic (1 byte), payload length (u32), CRC-32 of the
payload (u32), payload. Payload: received-at ms (u64), key length (u16), key,
header count (u16), per header name length (u16), value length (u32), name,
value; then the record value to the end. A frame torn by a crash fails its
length or CRC check and ends its segment: it was never acknowledged.

All file work runs on one dedicated thread, so writes, reads, commits and
segment rolls never interleave and the event loop never blocks on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from wapipe.logs import get_logger

log = get_logger(__name__)

_MAGIC = 0xA5
_FRAME = struct.Struct(">BII")
_RECORD_HEAD = struct.Struct(">QH")
_COUNT = struct.Struct(">H")
_HEADER_HEAD = struct.Struct(">HI")
_SUFFIX = ".spool"
T = TypeVar("T")


@dataclass(frozen=True)
class SpooledRecord:
    """One event as it goes to the raw topic: key, headers, the body byte for byte."""

    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    received_at_ms: int


@dataclass(frozen=True, order=True)
class Position:
    segment: int
    offset: int


class SpoolFullError(Exception):
    """The spool is at its configured size: the request cannot be made durable."""


def encode(record: SpooledRecord) -> bytes:
    parts = [_RECORD_HEAD.pack(record.received_at_ms, len(record.key)), record.key]
    parts.append(_COUNT.pack(len(record.headers)))
    for name, value in record.headers:
        encoded_name = name.encode()
        parts += [_HEADER_HEAD.pack(len(encoded_name), len(value)), encoded_name, value]
    parts.append(record.value)
    payload = b"".join(parts)
    return _FRAME.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes) -> SpooledRecord:
    received_at_ms, key_length = _RECORD_HEAD.unpack_from(payload, 0)
    at = _RECORD_HEAD.size
    key = payload[at : at + key_length]
    at += key_length
    (count,) = _COUNT.unpack_from(payload, at)
    at += _COUNT.size
    headers = []
    for _ in range(count):
        name_length, value_length = _HEADER_HEAD.unpack_from(payload, at)
        at += _HEADER_HEAD.size
        name = payload[at : at + name_length].decode()
        at += name_length
        headers.append((name, payload[at : at + value_length]))
        at += value_length
    return SpooledRecord(key, payload[at:], tuple(headers), received_at_ms)


def _read_frame(file: IO[bytes], limit: int) -> tuple[bytes, int] | None:
    """The next frame's payload and size, or None at the end or at a torn frame."""
    start = file.tell()
    head = file.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    magic, length, crc = _FRAME.unpack(head)
    if magic != _MAGIC or start + _FRAME.size + length > limit:
        return None
    payload = file.read(length)
    if len(payload) < length or zlib.crc32(payload) != crc:
        return None
    return payload, _FRAME.size + length


class Spool:
    """A directory of segment files, owned by one process at a time (an flock)."""

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int) -> None:
        self.directory = directory
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._lock_file: IO[bytes] | None = None
        self._cursor = Position(0, 0)
        # Segment index -> durable size. Only the spool thread touches this dict;
        # the event loop reads the plain int `_disk_bytes` instead.
        self._sizes: dict[int, int] = {}
        self._disk_bytes = 0
        self._active: IO[bytes] | None = None
        self._active_index = 0
        self._queue: list[tuple[bytes, int, asyncio.Future[None]]] = []
        self._queued_bytes = 0
        self._flusher: asyncio.Task[None] | None = None
        self.records = 0  # records written and not yet drained
        self.oldest_received_at_ms: int | None = None

    # --- opening and closing --------------------------------------------------------
    def open(self) -> None:
        """Lock the directory and account for what earlier runs left in it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = (self.directory / "spool.lock").open("ab")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"spool {self.directory} is in use by another ingester process: give each "
                "process its own WAPIPE_SPOOL_DIR"
            ) from None
        self._sizes = {
            int(path.stem): path.stat().st_size for path in self.directory.glob(f"*{_SUFFIX}")
        }
        self._disk_bytes = sum(self._sizes.values())
        self._cursor = self._load_cursor()
        # New segments go after every existing one and after the cursor: a spool
        # drained to the end has no files left but a cursor pointing past them.
        self._active_index = max(max(self._sizes, default=0), self._cursor.segment - 1)
        records, oldest = 0, None
        for record_time in self._record_times(self._cursor):
            records += 1
            oldest = record_time if oldest is None else oldest
        self.records, self.oldest_received_at_ms = records, oldest
        if records:
            log.warning("spool holds events from an earlier run", records=records,
                        bytes=self.size_bytes, directory=str(self.directory))  # fmt: skip

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        await self._run(self._close_sync)
        self._executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._active is not None:
            self._active.close()
            self._active = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    @property
    def size_bytes(self) -> int:
        """Bytes the spool's segment files hold on disk."""
        return self._disk_bytes

    @property
    def empty(self) -> bool:
        return self.records == 0

    # --- writing ---------------------------------------------------------------------
    async def append(self, record: SpooledRecord) -> None:
        """Return once `record` is fsynced; SpoolFullError or OSError if it cannot be."""
        frame = encode(record)
        if self.size_bytes + self._queued_bytes + len(frame) > self._max_bytes:
            raise SpoolFullError(
                f"spool at {self.size_bytes} of {self._max_bytes} bytes (WAPIPE_SPOOL_MAX_BYTES)"
            )
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((frame, record.received_at_ms, done))
        self._queued_bytes += len(frame)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            batch_bytes = sum(len(frame) for frame, _, _ in batch)
            try:
                await self._run(self._write_sync, [frame for frame, _, _ in batch])
            except OSError as error:
                self._queued_bytes -= batch_bytes
                log.error("spool write failed", error=str(error), records=len(batch))
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(error)
                continue
            # Counted as queued until now, so `append` never sees these bytes nowhere.
            self._queued_bytes -= batch_bytes
            self.records += len(batch)
            if self.oldest_received_at_ms is None:
                self.oldest_received_at_ms = batch[0][1]
            for _, _, done in batch:
                if not done.done():
                    done.set_result(None)

    def _write_sync(self, frames: Sequence[bytes]) -> None:
        if self._active is None:
            self._active_index += 1
            path = self._segment_path(self._active_index)
            self._active = path.open("ab")
            self._sizes[self._active_index] = 0
            _fsync_directory(self.directory)
        data = b"".join(frames)
        try:
            self._active.write(data)
            self._active.flush()
            os.fsync(self._active.fileno())
        except OSError:
            # Drop the partial write, so that the next frame starts on a boundary.
            with contextlib.suppress(OSError):
                self._active.truncate(self._sizes[self._active_index])
                self._active.seek(0, os.SEEK_END)
            raise
        self._sizes[self._active_index] += len(data)
        self._disk_bytes += len(data)
        if self._sizes[self._active_index] >= self._segment_bytes:
            self._active.close()
            self._active = None

    # --- draining --------------------------------------------------------------------
    async def read_batch(
        self, max_records: int = 500, max_bytes: int = 4 << 20
    ) -> tuple[list[SpooledRecord], Position]:
        """The oldest undrained records (in order) and the position just after them."""
        return await self._run(self._read_sync, max_records, max_bytes)

    async def commit(self, position: Position, drained: int) -> None:
        """Mark everything before `position` as acknowledged by Kafka."""
        await self._run(self._commit_sync, position, drained)

    def _read_sync(self, max_records: int, max_bytes: int) -> tuple[list[SpooledRecord], Position]:
        records: list[SpooledRecord] = []
        size = 0
        position = self._cursor
        for segment in sorted(index for index in self._sizes if index >= position.segment):
            offset = position.offset if segment == position.segment else 0
            limit = self._sizes[segment]
            with self._segment_path(segment).open("rb") as file:
                file.seek(offset)
                while len(records) < max_records and size < max_bytes:
                    frame = _read_frame(file, limit)
                    if frame is None:
                        break
                    payload, frame_size = frame
                    records.append(decode(payload))
                    size += frame_size
                    offset += frame_size
            position = Position(segment, offset)
            if len(records) >= max_records or size >= max_bytes:
                break
            if offset < limit:
                log.error("spool segment has a damaged frame; skipping its rest",
                          segment=segment, offset=offset, size=limit)  # fmt: skip
            if segment != self._active_index or self._active is None:
                position = Position(segment + 1, 0)
        return records, position

    def _commit_sync(self, position: Position, drained: int) -> None:
        self._cursor = position
        for segment in [index for index in self._sizes if index < position.segment]:
            self._delete_segment(segment)
        self.records = max(0, self.records - drained)
        # Drained to the end of a segment: reclaim it now, also the one being
        # written (the next append starts a fresh segment).
        if self._sizes.get(position.segment) == position.offset:
            if self._active is not None and position.segment == self._active_index:
                self._active.close()
                self._active = None
            self._delete_segment(position.segment)
            self._cursor = Position(position.segment + 1, 0)
        self._store_cursor()
        self.oldest_received_at_ms = next(self._record_times(self._cursor), None)

    def _delete_segment(self, segment: int) -> None:
        self._segment_path(segment).unlink(missing_ok=True)
        self._disk_bytes -= self._sizes.pop(segment)

    # --- cursor and scanning -----------------------------------------------------------
    def _load_cursor(self) -> Position:
        try:
            segment, offset = (self.directory / "cursor").read_text().split()
            return Position(int(segment), int(offset))
        except (FileNotFoundError, ValueError):
            return Position(min(self._sizes, default=1), 0)

    def _store_cursor(self) -> None:
        # Atomic replace; no fsync: losing the newest cursor after a power cut only
        # re-sends records Kafka already has (duplicates downstream tolerates).
        temporary = self.directory / "cursor.tmp"
        temporary.write_text(f"{self._cursor.segment} {self._cursor.offset}\n")
        temporary.replace(self.directory / "cursor")

    def _record_times(self, start: Position) -> Iterator[int]:
        """Receive times of the records from `start` on, read from the frames' heads."""
        for segment in sorted(index for index in self._sizes if index >= start.segment):
            with self._segment_path(segment).open("rb") as file:
                file.seek(start.offset if segment == start.segment else 0)
                while (frame := _read_frame(file, self._sizes[segment])) is not None:
                    yield _RECORD_HEAD.unpack_from(frame[0], 0)[0]

    def _segment_path(self, index: int) -> Path:
        return self.directory / f"{index:012d}{_SUFFIX}"

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
