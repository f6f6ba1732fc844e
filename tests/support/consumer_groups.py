"""What the broker says of a consumer group: for tests that scale workers in and out."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient


async def group_state(bootstrap: str, group: str) -> tuple[str, int]:
    """The group's state ("Stable", "PreparingRebalance", ...) and its member count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    _error, _group_id, state, _protocol_type, _protocol, members = response.groups[0][:6]
    return state, len(members)


async def join_leave_join(start_second: Callable[[], Any]) -> AsyncIterator[int]:
    """Scale a job out and in around its first worker: start a second worker, stop it
    with SIGTERM, start it again; after each step, yields the group's member count
    that step leads to (2, 1, 2)."""
    second = start_second()
    yield 2
    second.send_signal(signal.SIGTERM)
    await asyncio.to_thread(second.wait, 60)
    yield 1
    start_second()
    yield 2
