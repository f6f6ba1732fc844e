"""Makes each accepted event durable: in Kafka when it answers in time, else in the spool.

The request path tries Kafka (acks=all, idempotent producer) within
`publish_timeout_ms`; on an error or a timeout the event is appended to the
spool instead and Kafka is marked unavailable, so the following requests go
straight to the spool rather than each waiting out the budget. A background
drainer moves the spool to Kafka in order and marks Kafka available again once
a batch is acknowledged. A publish that timed out may still reach Kafka later,
so the raw topic can hold a duplicate: the normalizer drops those; a loss is
what this module exists to prevent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from enum import StrEnum

from ingest.kafka_producer import DeliveryProducer, ProducerError
from ingest.metrics import IngestMetrics
from ingest.spool import Spool, SpooledRecord
from wapipe.logs import get_logger
from wapipe.settings import Settings

log = get_logger(__name__)

_CONNECT_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0)
_FIRST_CONNECT_WAIT_SECONDS = 5.0
_DRAIN_ACK_TIMEOUT_SECONDS = 30.0
_HEADROOM_BYTES = 64 << 10  # room for headers and batch overhead above the largest body


class Durability(StrEnum):
    """Where an accepted event was made durable (the `outcome` metric label)."""

    PUBLISHED = "published"
    SPOOLED = "spooled"


class Publisher:
    def __init__(self, settings: Settings, topic: str, metrics: IngestMetrics) -> None:
        self._settings = settings
        self.topic = topic
        self._metrics = metrics
        self._budget = settings.publish_timeout_ms / 1000
        self.spool = Spool(
            settings.spool_dir,
            max_bytes=settings.spool_max_bytes,
            segment_bytes=settings.spool_segment_bytes,
        )
        self._producer: DeliveryProducer | None = None
        self._kafka_ok = False
        self._problem = "not connected to Kafka yet"
        self._wake = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Open the spool and connect; serve at once if Kafka is slow to answer."""
        self.spool.open()
        self._tasks = [
            asyncio.create_task(self._connect(), name="kafka-connect"),
            asyncio.create_task(self._drain(), name="spool-drain"),
        ]
        # Let the first connection attempt finish, so that a normal start publishes
        # from the first request; while Kafka does not answer, requests are spooled.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_attempt.wait(), _FIRST_CONNECT_WAIT_SECONDS)

    async def stop(self) -> None:
        """Flush what the producer holds; leave the spool's contents for the next run."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._producer is not None:
            left = await self._producer.stop(self._settings.shutdown_timeout_seconds)
            if left:
                # Each of them was spooled when its request's wait ran out: none is lost.
                log.warning("records not acknowledged at shutdown", records=left)
        await self.spool.close()
        log.info("publisher stopped", spool_records=self.spool.records)

    @property
    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): ready while events go straight to Kafka."""
        return (True, "kafka reachable") if self._kafka_ok else (False, self._problem)

    # --- the request path --------------------------------------------------------------
    async def publish(self, record: SpooledRecord) -> Durability:
        """Make `record` durable. Raises SpoolFullError or OSError when nothing can take it."""
        if self._kafka_ok and self._producer is not None:
            started = time.perf_counter()
            try:
                # A timeout cancels only our wait: the batch holding the record still
                # goes out, so a late acknowledgement leaves a duplicate, never a loss.
                async with asyncio.timeout(self._budget):
                    await self._producer.send(self.topic, record.value, record.key, record.headers)
            except TimeoutError:
                self._metrics.producer_errors.labels("timeout").inc()
                self._mark_unavailable(f"no acknowledgement within {self._budget:.2f} s")
            except ProducerError as error:
                self._metrics.producer_errors.labels("kafka_error").inc()
                self._mark_unavailable(str(error))
            else:
                self._metrics.publish_duration.observe(time.perf_counter() - started)
                return Durability.PUBLISHED
        await self.spool.append(record)
        self._wake.set()
        return Durability.SPOOLED

    def _mark_unavailable(self, problem: str) -> None:
        if self._kafka_ok:
            log.warning("kafka unavailable; spooling events", problem=problem)
        self._kafka_ok = False
        self._problem = problem
        self._metrics.kafka_available.set(0)

    def _mark_available(self) -> None:
        if not self._kafka_ok:
            log.info("kafka available; publishing directly")
        self._kafka_ok = True
        self._metrics.kafka_available.set(1)

    # --- background work ------------------------------------------------------------------
    async def _connect(self) -> None:
        """Start the producer, retrying for as long as Kafka cannot be reached."""
        attempt = 0
        while True:
            producer = DeliveryProducer(
                self._settings.kafka_bootstrap,
                client_id="wapipe-ingest",
                max_message_bytes=self._settings.max_body_bytes + _HEADROOM_BYTES,
                delivery_timeout_ms=int(_DRAIN_ACK_TIMEOUT_SECONDS * 1000),
            )
            try:
                await producer.start(self.topic, seconds=10.0)
            except asyncio.CancelledError:
                await producer.stop(seconds=0)
                raise
            except ProducerError as error:
                self._first_attempt.set()
                await producer.stop(seconds=0)
                self._problem = f"cannot reach Kafka at {self._settings.kafka_bootstrap}: {error}"
                if attempt == 0:
                    log.warning("kafka not reachable; spooling until it is", problem=self._problem)
                await asyncio.sleep(_backoff(attempt))
                attempt += 1
                continue
            self._producer = producer
            self._first_attempt.set()
            log.info("kafka producer started", bootstrap=self._settings.kafka_bootstrap,
                     topic=self.topic)  # fmt: skip
            if self.spool.empty:
                self._mark_available()
            self._wake.set()
            return

    async def _drain(self) -> None:
        """Move the spool to Kafka, oldest first, deleting only what Kafka acknowledged."""
        failures = 0
        while True:
            if self.spool.empty or self._producer is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                if self.spool.empty and self._producer is not None and not self._kafka_ok:
                    # Nothing to drain tells us nothing: e.g. the spool refused an
                    # event (full disk) after Kafka failed. Ask Kafka directly.
                    await self._probe(self._producer)
                continue
            records, position = await self.spool.read_batch()
            if not records:
                await asyncio.sleep(0.05)
                continue
            producer = self._producer
            deliveries = [producer.send(self.topic, r.value, r.key, r.headers) for r in records]
            try:
                results = await asyncio.wait_for(
                    asyncio.gather(*deliveries, return_exceptions=True), _DRAIN_ACK_TIMEOUT_SECONDS
                )
                problem = next((r for r in results if isinstance(r, BaseException)), None)
            except TimeoutError as error:
                problem = error
            if problem is not None:
                self._mark_unavailable(f"draining the spool failed: {problem!r}")
                await asyncio.sleep(_backoff(failures))
                failures += 1
                continue
            failures = 0
            await self.spool.commit(position, len(records))
            self._metrics.spool_drained.inc(len(records))
            if self.spool.empty:
                log.info("spool drained")
            self._mark_available()

    async def _probe(self, producer: DeliveryProducer) -> None:
        if await producer.reachable(seconds=5.0):
            self._mark_available()


def _backoff(attempt: int) -> float:
    return _CONNECT_BACKOFF_SECONDS[min(attempt, len(_CONNECT_BACKOFF_SECONDS) - 1)]
