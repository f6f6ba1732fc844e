"""Fixtures of the reliability tests: a local 3-node cluster, `wapipe ingest` as a real
process (to SIGKILL), and a follower that counts what reaches a topic."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from wapipe.local_kafka import LocalCluster
from wapipe.settings import Settings
from wapipe.topics import FUNNEL, MESSAGE_STATE, TopicSpec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def local_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Make local KRaft clusters of a test's own; all are stopped afterwards."""
    clusters: list[LocalCluster] = []

    def make(nodes: int = 3) -> LocalCluster:
        directory = tmp_path / f"cluster-{len(clusters)}"
        clusters.append(LocalCluster(directory, REPO / ".wapipe" / "kafka-jars", nodes=nodes))
        return clusters[-1]

    yield make
    for cluster in clusters:
        cluster.down()


class Samples(dict[tuple[str, frozenset[tuple[str, str]]], float]):
    """Prometheus samples by name and labels."""

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 for one not (yet) exported, as for a counter never hit."""
        return self.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(value for (sample, got), value in self.items()
                   if sample == name and wanted <= got)  # fmt: skip


@dataclass
class IngestProcess:
    """`wapipe ingest` run as operators run it, on loopback; JSON logs in `log`."""

    environment: dict[str, str]
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.base}/webhooks/whatsapp"

    async def start(self, timeout: float = 30.0) -> None:
        """Start the process; return once `/healthz` answers 200."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                [sys.executable, "-m", "wapipe", "ingest"], env=self.environment,
                stdout=log, stderr=log,
            )  # fmt: skip
        self.runs += 1
        await self.wait_for_status("/healthz", 200, timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, with whatever is in flight."""
        assert self.process is not None
        assert self.process.poll() is None, self.tail()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; the exit status (None if it was not running)."""
        if self.process is None or self.process.poll() is not None:
            return None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    async def status(self, path: str) -> int | None:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
                session.get(f"{self.base}{path}") as response,
            ):
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def wait_for_status(self, path: str, status: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (got := await self.status(path)) != status:
            assert self.process is not None
            assert self.process.poll() is None, self.tail()
            assert time.monotonic() < deadline, (
                f"{path} answered {got}, not {status}, for {timeout:.0f} s\n{self.tail()}"
            )
            await asyncio.sleep(0.1)

    async def metrics(self) -> Samples:
        """Every sample of `/metrics`."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(f"{self.base}/metrics") as response,
        ):
            assert response.status == 200
            text = await response.text()
        samples = Samples()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples

    async def wait_for_metrics(
        self, condition: Callable[[Samples], bool], what: str, timeout: float
    ) -> Samples:
        """Read `/metrics` until `condition(samples)` holds; return those samples."""
        deadline = time.monotonic() + timeout
        while not condition(samples := await self.metrics()):
            assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s: {samples}"
            await asyncio.sleep(0.2)
        return samples

    def tail(self, characters: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-characters:] if self.log.exists() else ""


@pytest.fixture
def ingest_process(tmp_path: Path, unused_port: Callable[[], int]) -> Iterator[Callable[..., Any]]:
    """Make `wapipe ingest` processes for `settings` (not started); stopped afterwards."""
    made: list[IngestProcess] = []

    def make(settings: Settings) -> IngestProcess:
        environment = {
            **os.environ,
            "WAPIPE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "WAPIPE_TOPIC_PREFIX": settings.topic_prefix,
            "WAPIPE_SPOOL_DIR": str(settings.spool_dir),
            "WAPIPE_INGEST_HOST": "127.0.0.1",
            "WAPIPE_INGEST_PORT": str(unused_port()),
        }
        ingester = IngestProcess(
            environment, int(environment["WAPIPE_INGEST_PORT"]),
            tmp_path / f"ingest-{len(made)}.log",
        )  # fmt: skip
        made.append(ingester)
        return ingester

    yield make
    for ingester in made:
        ingester.stop()


@dataclass
class TopicFollower:
    """Reads a topic from its start, counting each record's identity (`identify`) and
    keeping the latest value of each."""

    consumer: AIOKafkaConsumer
    identify: Callable[[Any], Any]
    counts: Counter[Any] = field(default_factory=Counter)
    latest: dict[Any, bytes] = field(default_factory=dict)  # identity -> its last value
    records: int = 0

    async def read(self) -> None:
        for batch in (await self.consumer.getmany(timeout_ms=200, max_records=5000)).values():
            for record in batch:
                self.records += 1
                identity = self.identify(record)
                self.counts[identity] += 1
                self.latest[identity] = record.value

    async def until(self, condition: Callable[[], bool], what: str, timeout: float,
                    alive: Callable[[], str | None] = lambda: None) -> None:  # fmt: skip
        """Read until `condition()` holds; fail after `timeout` s, or as soon as `alive()`
        names a process that died."""
        deadline = time.monotonic() + timeout
        while not condition():
            dead = alive()
            assert dead is None, f"waiting for {what}: {dead}"
            assert time.monotonic() < deadline, (
                f"no {what} within {timeout:.0f} s ({self.records} records read)"
            )
            await self.read()

    async def drain(self, timeout: float = 60.0) -> None:
        """Read to the current end of the topic."""
        deadline = time.monotonic() + timeout
        while not self.consumer.assignment():  # the group's first assignment
            assert time.monotonic() < deadline, f"no partitions assigned in {timeout:.0f} s"
            await self.read()
        ends = await self.consumer.end_offsets(list(self.consumer.assignment()))
        while [tp for tp, end in ends.items() if await self.consumer.position(tp) < end]:
            assert time.monotonic() < deadline, f"could not read to the end in {timeout:.0f} s"
            await self.read()

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.counts.values())

    def latest_json(self) -> dict[Any, Any]:
        """identity -> its latest value, parsed as JSON."""
        return {identity: orjson.loads(value) for identity, value in self.latest.items()}


@pytest.fixture
async def follow_topic() -> AsyncIterator[Callable[..., Any]]:
    """`await follow_topic(settings, spec, identify)`: a TopicFollower from the start of
    the topic; `identify(record)` defaults to the record's value."""
    consumers: list[AIOKafkaConsumer] = []

    async def follow(
        settings: Settings, spec: TopicSpec, identify: Callable[[Any], Any] = lambda r: r.value
    ) -> TopicFollower:
        consumer = AIOKafkaConsumer(
            spec.name(settings.topic_prefix), bootstrap_servers=settings.kafka_bootstrap,
            isolation_level="read_committed",
            auto_offset_reset="earliest", enable_auto_commit=False,
        )  # fmt: skip
        await consumer.start()
        consumers.append(consumer)
        return TopicFollower(consumer, identify)

    yield follow
    for consumer in consumers:
        await consumer.stop()


async def describe_partitions(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], Any]:
    """(topic, partition) -> its metadata: `leader` (node id, -1: none), `replicas`, `isr`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return {
        (topic["topic"], partition["partition"]): partition
        for topic in described
        for partition in topic["partitions"]
    }


@pytest.fixture
def partitions() -> Callable[..., Any]:
    """`await partitions(bootstrap, [topic, ...])`: (topic, partition) -> its metadata."""
    return describe_partitions


@dataclass
class Pipeline:
    """`wapipe ingest` and some workers as processes, each worker on a web port of its
    own, with followers of `message_state` (by umid) and `funnel` (by window id)."""

    settings: Settings
    ingester: IngestProcess
    workers: dict[str, subprocess.Popen[bytes]]
    ports: dict[str, int]  # job -> its worker's web port (/metrics)
    states: TopicFollower
    windows: TopicFollower
    logs: Path
    start: Callable[[str], subprocess.Popen[bytes]]

    def a_worker_died(self) -> str | None:
        """What the first worker found dead said last, or None while all run."""
        for job, worker in self.workers.items():
            if worker.poll() is not None:
                log = (self.logs / f"{job}.log").read_text()[-3000:]
                return f"{job} exited with {worker.returncode}:\n{log}"
        return None

    async def sigkill_and_restart(self, job: str) -> None:
        self.workers[job].send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.workers[job].wait)
        self.workers[job] = self.start(job)


@pytest.fixture
def start_pipeline(
    ingest_process: Callable[..., Any], start_worker: Callable[..., Any],
    follow_topic: Callable[..., Any], unused_port: Callable[[], int], tmp_path: Path,
) -> Callable[..., Any]:  # fmt: skip
    """`await start_pipeline(settings, jobs, **environment)`: the workers of `jobs` (with
    `environment`), then the ingester, ready (`/readyz` 200), and the followers."""

    async def start(settings: Settings, jobs: tuple[str, ...], **environment: str) -> Pipeline:
        ports = {job: unused_port() for job in jobs}

        def start_job(job: str) -> subprocess.Popen[bytes]:
            port = {"WAPIPE_PROCESSOR_WEB_PORT": str(ports[job])}
            worker: subprocess.Popen[bytes] = start_worker(job, settings, **environment, **port)
            return worker

        workers = {job: start_job(job) for job in jobs}
        ingester = ingest_process(settings)
        await ingester.start()
        await ingester.wait_for_status("/readyz", 200, 60)
        states = await follow_topic(settings, MESSAGE_STATE, lambda record: record.key.decode())
        windows = await follow_topic(settings, FUNNEL, lambda r: orjson.loads(r.value)["windowId"])
        return Pipeline(settings, ingester, workers, ports, states, windows, tmp_path, start_job)

    return start
