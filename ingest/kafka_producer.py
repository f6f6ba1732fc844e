"""The ingester's Kafka producer: librdkafka (confluent-kafka), with asyncio futures.

Why librdkafka and not aiokafka, as an asyncio server might: the ingester's
throughput is bound by its one Python thread, and aiokafka does its batching,
record encoding, partitioning and compression in that thread. librdkafka does all
of it in its own C threads, on the other core; the event loop only hands over the
bytes and awaits a future. `bench/ingest` measures the difference. (The jobs use
librdkafka too, through the engine: processors/engine/kafka.py.)

Deliveries are reported by librdkafka during `poll()`, which a dedicated thread
calls; it hands each poll's reports to the event loop in one batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from functools import partial
from typing import Any

import confluent_kafka

_POLL_SECONDS = 0.05


class ProducerError(Exception):
    """Kafka refused or could not deliver a record (the message says why)."""


class DeliveryProducer:
    """An idempotent `acks=all` producer whose `send` returns an awaitable future."""

    def __init__(self, bootstrap: str, *, client_id: str, max_message_bytes: int,
                 delivery_timeout_ms: int) -> None:  # fmt: skip
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "enable.idempotence": True,  # implies acks=all and ordered retries
            "acks": "all",
            "compression.type": "lz4",
            # murmur2, as the jobs' producers (processors/engine/kafka.py): a key's raw
            # partition is then its partition in the typed topics normalize writes, so
            # normalize maps partition p to partition p and each partition's order goes
            # through unchanged. With librdkafka's default (CRC32) every typed partition
            # interleaved all raw ones in the order normalize read them: a replay at full
            # speed gave the funnel another order than the live run, and other alerts.
            "partitioner": "murmur2_random",
            # Concurrent requests share a batch; 2 ms adds little to a request's
            # latency and saves many small produce requests under load.
            "linger.ms": 2,
            "message.max.bytes": max_message_bytes,
            "message.timeout.ms": delivery_timeout_ms,
            "socket.connection.setup.timeout.ms": 5000,
            "log_level": 4,  # warnings and worse
            # Through Python logging (so, JSON lines like ours), served by poll().
            "logger": logging.getLogger("librdkafka"),
        }
        self._producer: confluent_kafka.Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: threading.Thread | None = None
        self._stopping = threading.Event()
        self._reports: list[tuple[asyncio.Future[None], Any]] = []

    async def start(self, topic: str, seconds: float) -> None:
        """Connect and fetch `topic`'s metadata; ProducerError if Kafka does not answer within
        `seconds`."""
        self._loop = asyncio.get_running_loop()
        self._producer = confluent_kafka.Producer(self._config)
        try:
            metadata = await asyncio.to_thread(self._producer.list_topics, topic, seconds)
        except confluent_kafka.KafkaException as error:
            raise ProducerError(str(error.args[0])) from None
        topic_metadata = metadata.topics.get(topic)
        if topic_metadata is None or topic_metadata.error is not None:
            problem = topic_metadata.error if topic_metadata is not None else "not found"
            raise ProducerError(f"topic {topic}: {problem} (run `wapipe topics create`)")
        self._poller = threading.Thread(target=self._poll, name="kafka-poll", daemon=True)
        self._poller.start()

    def send(
        self, topic: str, value: bytes, key: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        """Queue one record; the future resolves when Kafka acknowledged it."""
        assert self._producer is not None, "start() first"
        assert self._loop is not None
        delivered: asyncio.Future[None] = self._loop.create_future()
        try:
            self._producer.produce(
                topic,
                value,
                key,
                headers=list(headers),
                on_delivery=partial(self._report, delivered),
            )
        except (BufferError, confluent_kafka.KafkaException) as error:
            delivered.set_exception(ProducerError(f"{type(error).__name__}: {error}"))
        return delivered

    async def stop(self, seconds: float) -> int:
        """Deliver what is queued (for up to `seconds`); return how many are left undelivered."""
        if self._producer is None:
            return 0
        # Stop the poll thread first: flush() polls too, and reports must come
        # from one thread at a time.
        self._stopping.set()
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)
        left = await asyncio.to_thread(self._producer.flush, seconds)
        self._hand_over()
        return int(left)

    async def reachable(self, seconds: float) -> bool:
        """True when the cluster answers a metadata request within `seconds`."""
        assert self._producer is not None
        try:
            await asyncio.to_thread(self._producer.list_topics, None, seconds)
        except confluent_kafka.KafkaException:
            return False
        return True

    # --- the poll thread ------------------------------------------------------------------
    def _report(self, delivered: asyncio.Future[None], error: Any, _message: Any) -> None:
        self._reports.append((delivered, error))

    def _poll(self) -> None:
        assert self._producer is not None
        while not self._stopping.is_set():
            self._producer.poll(_POLL_SECONDS)
            self._hand_over()

    def _hand_over(self) -> None:
        if self._reports and self._loop is not None and not self._loop.is_closed():
            reports, self._reports = self._reports, []
            self._loop.call_soon_threadsafe(_resolve, reports)


def _resolve(reports: list[tuple[asyncio.Future[None], Any]]) -> None:
    for delivered, error in reports:
        if delivered.done():  # the request stopped waiting (its budget ran out)
            continue
        if error is None:
            delivered.set_result(None)
        else:
            delivered.set_exception(ProducerError(str(error)))
