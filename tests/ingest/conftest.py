"""Fixtures for the ingester: a real app on a loopback port, and a reader of the raw topic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from prometheus_client import CollectorRegistry

from ingest.app import PUBLISHER, WEBHOOK_PATH, create_app
from ingest.publisher import Publisher
from wapipe.settings import Settings
from wapipe.topics import RAW


@dataclass
class RunningIngester:
    app: web.Application
    server: TestServer
    session: aiohttp.ClientSession
    registry: CollectorRegistry

    @property
    def publisher(self) -> Publisher:
        return self.app[PUBLISHER]

    def url(self, path: str = WEBHOOK_PATH) -> str:
        return str(self.server.make_url(path))

    async def post(
        self, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, object]]:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        async with self.session.post(self.url(), data=body, headers=all_headers) as response:
            return response.status, await response.json(content_type=None)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


StartIngester = Callable[[Settings], AbstractAsyncContextManager[RunningIngester]]


@pytest.fixture
def start_ingester() -> StartIngester:
    @asynccontextmanager
    async def start(settings: Settings) -> AsyncIterator[RunningIngester]:
        registry = CollectorRegistry()
        app = create_app(settings, registry)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        session = aiohttp.ClientSession()
        try:
            yield RunningIngester(app, server, session, registry)
        finally:
            await session.close()
            await server.close()

    return start


ReadRaw = Callable[..., Awaitable[list[ConsumerRecord]]]


@pytest.fixture
def read_raw() -> ReadRaw:
    """Read the raw topic from the start until `count` records arrived or `timeout` passed."""

    async def read(settings: Settings, count: int, timeout: float = 60.0) -> list[ConsumerRecord]:
        consumer = AIOKafkaConsumer(
            RAW.name(settings.topic_prefix),
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        try:
            while len(records) < count and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for batch in batches.values():
                    records.extend(batch)
        finally:
            await consumer.stop()
        assert len(records) >= count, (
            f"only {len(records)} of {count} records reached "
            f"{RAW.name(settings.topic_prefix)} within {timeout:.0f} s"
        )
        return records

    return read


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def eventually() -> Callable[[Callable[[], bool], float, str], Awaitable[None]]:
    return wait_for
