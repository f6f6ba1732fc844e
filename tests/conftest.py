"""Shared fixtures: one real Kafka broker per test session, a fresh topic prefix per test.

The broker is, in order of preference: the one WAPIPE_KAFKA_BOOTSTRAP names; a
testcontainers Kafka container when a Docker engine answers; else a local
KRaft broker from the Maven Central jars (`wapipe.local_kafka`) on free ports.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from prometheus_client import CollectorRegistry

from ingest.app import PUBLISHER, WEBHOOK_PATH, create_app
from ingest.publisher import Publisher
from wapipe.local_kafka import LocalBroker, free_port
from wapipe.settings import Settings
from wapipe.topics import RAW, TopicSpec, create_topics

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "tests" / "fixtures" / "examples"
# Read before any test clears the environment: the one setting tests honour.
_EXPLICIT_BOOTSTRAP = os.environ.get("WAPIPE_KAFKA_BOOTSTRAP")


def example_files() -> list[Path]:
    return sorted(EXAMPLES.rglob("*.json"))


def make_local_broker(directory: Path) -> LocalBroker:
    """A broker of its own for a test, sharing the repository's jar cache."""
    return LocalBroker(
        directory=directory,
        jar_cache=REPO / ".wapipe" / "kafka-jars",
        port=free_port(),
        controller_port=free_port(),
    )


@pytest.fixture
def local_broker(tmp_path: Path) -> Iterator[Callable[[], LocalBroker]]:
    """Make brokers of a test's own (to stop, kill, restart); all are stopped afterwards."""
    brokers: list[LocalBroker] = []

    def make() -> LocalBroker:
        brokers.append(make_local_broker(tmp_path / f"kafka-{len(brokers)}"))
        return brokers[-1]

    yield make
    for broker in brokers:
        broker.down()


@pytest.fixture
def unused_port() -> Callable[[], int]:
    """A function that returns a loopback TCP port nothing listens on."""
    return free_port


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer's WAPIPE_* variable leaks into a test's Settings."""
    for name in list(os.environ):
        if name.startswith("WAPIPE_"):
            monkeypatch.delenv(name)


def _docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if _EXPLICIT_BOOTSTRAP:
        yield _EXPLICIT_BOOTSTRAP
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    broker = make_local_broker(tmp_path_factory.mktemp("kafka"))
    broker.up()
    try:
        yield broker.bootstrap
    finally:
        broker.down()


@pytest.fixture
def settings_for(tmp_path: Path) -> Any:
    """Build Settings for a test: its own spool directory, then the given overrides."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"spool_dir": tmp_path / "spool", "log_format": "console"}
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def fresh_topics(kafka_bootstrap: str, settings_for: Any) -> Callable[[int], Awaitable[Settings]]:
    """`await fresh_topics(partitions)`: settings with a fresh topic prefix whose topics
    exist with that many partitions each."""

    async def create(partitions: int) -> Settings:
        settings: Settings = settings_for(
            kafka_bootstrap=kafka_bootstrap,
            topic_prefix=f"t{uuid.uuid4().hex[:10]}.whatsapp",
            topic_partitions=partitions,
        )
        await create_topics(settings)
        return settings

    return create


@pytest.fixture
async def kafka_settings(fresh_topics: Callable[[int], Awaitable[Settings]]) -> Settings:
    """Settings with a fresh topic prefix whose topics exist (1 partition each: fast)."""
    return await fresh_topics(1)


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


ReadTopic = Callable[..., Awaitable[list[ConsumerRecord]]]


async def read_topic(
    settings: Settings, spec: TopicSpec, count: int, timeout: float = 60.0
) -> list[ConsumerRecord]:
    """Read a topic from the start until `count` records arrived or `timeout` passed."""
    consumer = AIOKafkaConsumer(
        spec.name(settings.topic_prefix),
        isolation_level="read_committed",
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
        f"{spec.name(settings.topic_prefix)} within {timeout:.0f} s"
    )
    return records


@pytest.fixture
def read_raw() -> ReadTopic:
    """Read the raw topic from the start until `count` records arrived or `timeout` passed."""

    async def read(settings: Settings, count: int, timeout: float = 60.0) -> list[ConsumerRecord]:
        return await read_topic(settings, RAW, count, timeout)

    return read


@pytest.fixture
def read_records() -> ReadTopic:
    """Read any topic: `read_records(settings, spec, count, timeout)`."""
    return read_topic


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


@pytest.fixture
def start_worker(tmp_path: Path, unused_port: Callable[[], int]) -> Iterator[Callable[..., Any]]:
    """Start `wapipe process <job>` as a real process for `settings`; logs go to
    `<tmp>/<job>.log`. Workers still running at the end get SIGTERM."""
    workers: list[subprocess.Popen[bytes]] = []

    def start(job: str, settings: Settings, **environment: str) -> subprocess.Popen[bytes]:
        variables = {
            **os.environ,
            "WAPIPE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "WAPIPE_TOPIC_PREFIX": settings.topic_prefix,
            "WAPIPE_TOPIC_PARTITIONS": str(settings.topic_partitions),
            "WAPIPE_HOME": str(tmp_path),
            "WAPIPE_PROCESSOR_WEB_PORT": str(unused_port()),
            # The worker's slot: a restart of the same slot fences its predecessor at once; a
            # second worker side by side needs a slot of its own.
            "WAPIPE_PROCESSOR_INSTANCE": "first",
            **environment,
        }

        with (tmp_path / f"{job}.log").open("ab") as log:
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "wapipe", "process", job], env=variables,
                stdout=log, stderr=log,
            ))  # fmt: skip
        return workers[-1]

    yield start
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
