"""The ingester's durable local spool (ingest.spool): order, durability, crash tolerance.

Everything runs against a temporary directory; no Kafka. Spools are opened through the
`spools` fixture, which closes whatever a test leaves open.
"""

from __future__ import annotations

import asyncio
import errno
import os
import struct
import threading
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import ingest.spool as spool_module
from ingest.spool import Spool, SpooledRecord, SpoolFullError, decode, encode

# The frame head documented in ingest/spool.py: magic (1 byte), payload length (u32),
# CRC-32 of the payload (u32), big-endian.
FRAME_HEAD = struct.Struct(">BII")
MAGIC = 0xA5
BIG = 1 << 20


def record(index: int, *, value: bytes | None = None) -> SpooledRecord:
    """A record of fixed frame size for indices 0..999 (handy for sizing segments)."""
    return SpooledRecord(
        key=f"key-{index:03d}".encode(),
        value=value if value is not None else f'{{"n":{index:03d}}}'.encode(),
        headers=(("event-type", b"inbound_message_received"), ("auth", b"static")),
        received_at_ms=1_700_000_000_000 + index,
    )


FRAME_SIZE = len(encode(record(0)))


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.spool"))


class Spools:
    """Opens spools in one directory and remembers which are still open."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._open: list[Spool] = []

    def open(self, *, max_bytes: int = BIG, segment_bytes: int = BIG) -> Spool:
        spool = Spool(self.directory, max_bytes=max_bytes, segment_bytes=segment_bytes)
        self._open.append(spool)
        spool.open()
        return spool

    async def close(self, spool: Spool) -> None:
        self._open.remove(spool)
        await spool.close()

    async def reopen(self, spool: Spool, **limits: int) -> Spool:
        await self.close(spool)
        return self.open(**limits)

    async def close_all(self) -> None:
        while self._open:
            await self.close(self._open[-1])


@pytest.fixture
async def spools(tmp_path: Path) -> AsyncIterator[Spools]:
    opened = Spools(tmp_path / "spool")
    yield opened
    await opened.close_all()


async def append_all(spool: Spool, records: list[SpooledRecord]) -> None:
    """One append at a time: each record is its own write (and its own fsync)."""
    for item in records:
        await spool.append(item)


async def read_everything(spool: Spool) -> list[SpooledRecord]:
    records, _ = await spool.read_batch(max_records=100_000, max_bytes=1 << 30)
    return records


async def drain(spool: Spool, *, batch: int) -> list[SpooledRecord]:
    """What the publisher's drainer does: read a batch, 'publish' it, commit it."""
    drained: list[SpooledRecord] = []
    while not spool.empty:
        records, position = await spool.read_batch(max_records=batch)
        assert records, "a non-empty spool returned an empty batch"
        drained += records
        await spool.commit(position, len(records))
    return drained


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(record(7), id="ordinary"),
        pytest.param(SpooledRecord(b"", b"{}", (), 0), id="empty-key-and-headers"),
        pytest.param(SpooledRecord(b"k", b"", (), 1), id="empty-value"),
        pytest.param(SpooledRecord(b"\x00\xff" * 10, bytes(range(256)), (), 2), id="binary"),
        pytest.param(
            SpooledRecord(b"k", b"v", (("naïve-ключ-名前", b"\x00\x01"), ("", b"")), 3),
            id="unicode-and-empty-header-names",
        ),
        pytest.param(
            SpooledRecord(b"k", b"x" * 300_000, (("h", b"y" * 70_000),), 2**63 - 1),
            id="large-value-and-max-timestamp",
        ),
    ],
)
def test_encode_decode_round_trip(item: SpooledRecord) -> None:
    frame = encode(item)
    magic, length, crc = FRAME_HEAD.unpack_from(frame)
    payload = frame[FRAME_HEAD.size :]
    assert magic == MAGIC
    assert length == len(payload)
    assert crc == zlib.crc32(payload)
    assert decode(payload) == item


# --------------------------------------------------------------------------- order, commit


async def test_records_come_back_in_append_order_intact(spools: Spools) -> None:
    spool = spools.open()
    written = [record(i) for i in range(20)]
    await append_all(spool, written)

    assert spool.records == 20
    assert not spool.empty
    assert spool.oldest_received_at_ms == written[0].received_at_ms
    assert spool.size_bytes == 20 * FRAME_SIZE
    assert await read_everything(spool) == written


async def test_read_batch_respects_max_records_and_does_not_move_without_commit(
    spools: Spools,
) -> None:
    spool = spools.open()
    written = [record(i) for i in range(5)]
    await append_all(spool, written)

    first, position = await spool.read_batch(max_records=2)
    again, same_position = await spool.read_batch(max_records=2)

    assert first == written[:2]
    assert again == first
    assert same_position == position
    assert spool.records == 5


async def test_read_batch_respects_max_bytes(spools: Spools) -> None:
    spool = spools.open()
    await append_all(spool, [record(i) for i in range(5)])

    records, _ = await spool.read_batch(max_bytes=2 * FRAME_SIZE)

    assert [r.key for r in records] == [b"key-000", b"key-001"]


async def test_commit_advances_and_counts_down_to_empty(spools: Spools) -> None:
    spool = spools.open()
    written = [record(i) for i in range(5)]
    await append_all(spool, written)

    batch, position = await spool.read_batch(max_records=2)
    await spool.commit(position, len(batch))
    assert spool.records == 3
    assert spool.oldest_received_at_ms == written[2].received_at_ms

    rest, position = await spool.read_batch()
    assert rest == written[2:]
    await spool.commit(position, len(rest))

    assert spool.records == 0
    assert spool.empty
    assert spool.oldest_received_at_ms is None
    assert await read_everything(spool) == []
    assert spool.size_bytes == 0
    assert segment_files(spools.directory) == []


async def test_appends_after_a_full_drain_are_read(spools: Spools) -> None:
    spool = spools.open()
    await append_all(spool, [record(0), record(1)])
    await drain(spool, batch=10)

    await append_all(spool, [record(2)])

    assert spool.records == 1
    assert spool.oldest_received_at_ms == record(2).received_at_ms
    assert await read_everything(spool) == [record(2)]


# --------------------------------------------------------------------------- restarts


async def test_reopen_keeps_uncommitted_and_forgets_committed(spools: Spools) -> None:
    spool = spools.open()
    written = [record(i) for i in range(6)]
    await append_all(spool, written)
    batch, position = await spool.read_batch(max_records=2)
    await spool.commit(position, len(batch))

    spool = await spools.reopen(spool)

    assert spool.records == 4
    assert not spool.empty
    assert spool.oldest_received_at_ms == written[2].received_at_ms
    assert await read_everything(spool) == written[2:]


async def test_reopen_without_commit_keeps_everything(spools: Spools) -> None:
    spool = spools.open()
    written = [record(i) for i in range(3)]
    await append_all(spool, written)
    size = spool.size_bytes

    spool = await spools.reopen(spool)

    assert spool.records == 3
    assert spool.size_bytes == size
    assert spool.oldest_received_at_ms == written[0].received_at_ms
    assert await read_everything(spool) == written


async def test_records_appended_after_reopen_follow_the_old_ones(spools: Spools) -> None:
    spool = spools.open()
    await append_all(spool, [record(0), record(1)])
    batch, position = await spool.read_batch(max_records=1)
    await spool.commit(position, len(batch))

    spool = await spools.reopen(spool)
    await append_all(spool, [record(2)])

    assert spool.records == 2
    assert await drain(spool, batch=10) == [record(1), record(2)]
    assert spool.empty


async def test_records_appended_after_reopening_a_drained_spool_are_read(
    spools: Spools,
) -> None:
    spool = spools.open()
    await append_all(spool, [record(0), record(1)])
    await drain(spool, batch=10)

    spool = await spools.reopen(spool)
    await append_all(spool, [record(2)])
    assert spool.records == 1
    read = await read_everything(spool)

    spool = await spools.reopen(spool)
    assert read == [record(2)]
    assert spool.records == 1


# --------------------------------------------------------------------------- damage


async def test_half_a_frame_appended_to_the_tail_is_ignored_on_reopen(spools: Spools) -> None:
    spool = spools.open()
    written = [record(i) for i in range(3)]
    await append_all(spool, written)
    await spools.close(spool)
    [segment] = segment_files(spools.directory)
    with segment.open("ab") as file:
        file.write(encode(record(3))[: FRAME_SIZE // 2])

    spool = spools.open()
    assert spool.records == 3
    assert await read_everything(spool) == written

    # The torn segment is left alone; new records go elsewhere and are read after it.
    await append_all(spool, [record(4)])
    assert spool.records == 4
    assert await drain(spool, batch=2) == [*written, record(4)]


@pytest.mark.parametrize("cut", [1, FRAME_HEAD.size, FRAME_SIZE - 1], ids=lambda c: f"cut{c}")
async def test_segment_truncated_mid_frame_keeps_the_whole_frames(spools: Spools, cut: int) -> None:
    spool = spools.open()
    written = [record(i) for i in range(4)]
    await append_all(spool, written)
    await spools.close(spool)
    [segment] = segment_files(spools.directory)
    os.truncate(segment, 3 * FRAME_SIZE + cut)

    spool = spools.open()

    assert spool.records == 3
    assert spool.oldest_received_at_ms == written[0].received_at_ms
    assert await drain(spool, batch=10) == written[:3]


async def test_corrupt_crc_in_a_closed_segment_skips_its_rest_but_not_later_segments(
    spools: Spools,
) -> None:
    spool = spools.open(segment_bytes=3 * FRAME_SIZE)
    written = [record(i) for i in range(6)]
    await append_all(spool, written)
    await spools.close(spool)
    first, second = segment_files(spools.directory)
    damaged = bytearray(first.read_bytes())
    damaged[FRAME_SIZE + 5] ^= 0xFF  # a CRC byte of the second frame
    first.write_bytes(bytes(damaged))

    spool = spools.open(segment_bytes=3 * FRAME_SIZE)

    assert second.exists()
    assert spool.records == 4
    assert await drain(spool, batch=10) == [written[0], *written[3:]]
    assert spool.empty


# --------------------------------------------------------------------------- segments


async def test_segments_roll_and_draining_deletes_them(spools: Spools) -> None:
    spool = spools.open(segment_bytes=2 * FRAME_SIZE)
    written = [record(i) for i in range(7)]
    await append_all(spool, written)
    files = segment_files(spools.directory)
    assert len(files) == 4
    assert spool.size_bytes == sum(path.stat().st_size for path in files)

    batch, position = await spool.read_batch(max_records=3)
    size_before = spool.size_bytes
    await spool.commit(position, len(batch))
    assert spool.size_bytes < size_before
    assert not files[0].exists()

    assert [*batch, *await drain(spool, batch=3)] == written
    assert spool.size_bytes == 0
    assert segment_files(spools.directory) == []


@pytest.mark.parametrize("batch", [1, 3, 100], ids=lambda b: f"batch{b}")
async def test_draining_everything_leaves_no_segments(spools: Spools, batch: int) -> None:
    spool = spools.open(segment_bytes=2 * FRAME_SIZE)
    written = [record(i) for i in range(5)]
    await append_all(spool, written)

    assert await drain(spool, batch=batch) == written
    assert spool.size_bytes == 0
    assert segment_files(spools.directory) == []


async def test_draining_a_batch_ending_at_a_rolled_segment_end_deletes_it(
    spools: Spools,
) -> None:
    spool = spools.open(segment_bytes=2 * FRAME_SIZE)
    written = [record(i) for i in range(4)]
    await append_all(spool, written)

    assert await drain(spool, batch=2) == written
    assert spool.empty
    assert segment_files(spools.directory) == []
    assert spool.size_bytes == 0


# --------------------------------------------------------------------------- limits, locks


async def test_full_spool_refuses_and_writes_nothing(spools: Spools) -> None:
    spool = spools.open(max_bytes=3 * FRAME_SIZE)
    await append_all(spool, [record(i) for i in range(3)])
    files_before = {path: path.read_bytes() for path in segment_files(spools.directory)}

    with pytest.raises(SpoolFullError, match="WAPIPE_SPOOL_MAX_BYTES"):
        await spool.append(record(3))

    assert spool.records == 3
    assert spool.size_bytes == 3 * FRAME_SIZE
    assert {path: path.read_bytes() for path in segment_files(spools.directory)} == files_before
    assert await read_everything(spool) == [record(i) for i in range(3)]


async def test_concurrent_appends_beyond_max_bytes_are_refused(spools: Spools) -> None:
    spool = spools.open(max_bytes=3 * FRAME_SIZE)

    results = await asyncio.gather(
        *(spool.append(record(i)) for i in range(5)), return_exceptions=True
    )

    assert results[:3] == [None, None, None]
    assert all(isinstance(result, SpoolFullError) for result in results[3:])
    assert spool.size_bytes == 3 * FRAME_SIZE
    assert await read_everything(spool) == [record(i) for i in range(3)]


async def test_bytes_being_written_count_towards_max_bytes(
    spools: Spools, monkeypatch: pytest.MonkeyPatch
) -> None:
    max_bytes = 2 * FRAME_SIZE + FRAME_SIZE // 2
    spool = spools.open(max_bytes=max_bytes)
    await spool.append(record(0))  # the segment file exists from here on
    entered, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        entered.set()
        release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", slow_fsync)
    in_flight = asyncio.create_task(spool.append(record(1)))
    assert await asyncio.to_thread(entered.wait, 10)
    asyncio.get_running_loop().call_soon(release.set)  # record(1) is mid-write until then

    try:
        with pytest.raises(SpoolFullError):
            await spool.append(record(2))
    finally:
        release.set()
        await in_flight
    assert spool.size_bytes <= max_bytes


async def test_second_spool_on_the_same_directory_is_refused(spools: Spools) -> None:
    spools.open()

    with pytest.raises(RuntimeError, match=str(spools.directory)):
        spools.open()


async def test_directory_is_free_again_after_close(spools: Spools) -> None:
    spool = spools.open()
    await spools.close(spool)

    spool = spools.open()

    assert spool.empty


# --------------------------------------------------------------------------- group commit


async def test_concurrent_appends_share_fsyncs(
    spools: Spools, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = spools.open()
    real_fsync = os.fsync
    calls = 0

    def counting_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", counting_fsync)
    written = [record(i) for i in range(200)]

    results = await asyncio.gather(*(spool.append(item) for item in written))

    assert results == [None] * 200
    assert 1 <= calls <= 10
    assert spool.records == 200
    read = await read_everything(spool)
    assert len(read) == 200
    assert sorted(read, key=lambda r: r.key) == written


class FailingWrites:
    """Wraps the spool's segment file: the first write stores half its data, then fails."""

    def __init__(self, file: Any) -> None:
        self._file = file
        self.failures = 0

    def write(self, data: bytes) -> int:
        if self.failures == 0:
            self.failures += 1
            self._file.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return int(self._file.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


async def test_write_error_reaches_the_appenders_and_leaves_no_partial_frame(
    spools: Spools,
) -> None:
    spool = spools.open()
    await spool.append(record(0))
    failing = FailingWrites(spool._active)
    spool._active = failing  # type: ignore[assignment]

    results = await asyncio.gather(
        *(spool.append(record(i)) for i in (1, 2, 3)), return_exceptions=True
    )

    assert failing.failures == 1
    assert all(isinstance(result, OSError) for result in results)
    assert all(result.errno == errno.ENOSPC for result in results)  # type: ignore[union-attr]
    assert spool.records == 1
    assert spool.size_bytes == FRAME_SIZE

    await spool.append(record(4))
    assert spool.records == 2
    assert await read_everything(spool) == [record(0), record(4)]

    spool = await spools.reopen(spool)
    assert spool.records == 2
    assert spool.size_bytes == 2 * FRAME_SIZE
    assert await read_everything(spool) == [record(0), record(4)]


async def test_fsync_error_reaches_the_appender_and_leaves_no_partial_frame(
    spools: Spools, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = spools.open()
    await spool.append(record(0))
    real_fsync = os.fsync
    failures = 0

    def failing_once(fd: int) -> None:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", failing_once)

    with pytest.raises(OSError, match="Input/output error"):
        await spool.append(record(1))

    assert failures == 1
    await spool.append(record(2))
    assert spool.records == 2
    assert await read_everything(spool) == [record(0), record(2)]
    spool = await spools.reopen(spool)
    assert await read_everything(spool) == [record(0), record(2)]


async def test_commit_position_survives_restart_mid_segment(spools: Spools) -> None:
    spool = spools.open()
    written = [record(i) for i in range(3)]
    await append_all(spool, written)
    batch, position = await spool.read_batch(max_records=1)
    await spool.commit(position, len(batch))

    spool = await spools.reopen(spool)
    rest, _ = await spool.read_batch()

    assert rest == written[1:]
