"""The producer-buffer flush before each commit waits for what was written before it,
and no longer (faust's own waited for an empty buffer, which starved the commits)."""

from __future__ import annotations

import asyncio

import pytest

from processors.runtime import BoundedFlush


class _Buffer:
    """What BoundedFlush replaces on faust's ProducerBuffer: `put` and `flush`."""

    def __init__(self) -> None:
        self.queued: list[asyncio.Future[None]] = []

    def put(self, record: asyncio.Future[None]) -> None:
        self.queued.append(record)

    async def flush(self) -> None:
        raise AssertionError("replaced")


async def test_a_flush_waits_for_the_records_written_before_it_and_not_for_later_ones() -> None:
    buffer = _Buffer()
    BoundedFlush(buffer)
    loop = asyncio.get_running_loop()
    before = [loop.create_future() for _ in range(3)]
    for record in before:
        buffer.put(record)
    flush = asyncio.create_task(buffer.flush())
    await asyncio.sleep(0)  # the flush starts
    later = loop.create_future()
    buffer.put(later)  # an agent keeps writing while the commit flushes
    for record in before[:2]:
        record.set_result(None)
    await asyncio.sleep(0)
    assert not flush.done(), "one record written before the flush is still unacknowledged"
    before[2].set_result(None)
    await asyncio.wait_for(flush, timeout=1)  # done although `later` is still pending
    assert buffer.queued == [*before, later], "every record still goes to faust's buffer"


async def test_a_refused_record_fails_every_later_flush() -> None:
    buffer = _Buffer()
    BoundedFlush(buffer)
    refused = asyncio.get_running_loop().create_future()
    buffer.put(refused)
    refused.set_exception(RuntimeError("NotEnoughReplicas"))
    await asyncio.sleep(0)  # the done callback runs
    for _ in range(2):
        with pytest.raises(RuntimeError, match="NotEnoughReplicas"):
            await buffer.flush()
