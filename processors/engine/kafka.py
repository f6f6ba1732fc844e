"""The engine's Kafka clients (librdkafka, through confluent-kafka) and their settings.

- The consumer joins the job's group with `cooperative-sticky` assignment (a worker
  joining or leaving moves only the partitions it must) or, for a job whose sources
  must be co-partitioned, `range`; it reads `read_committed` and never commits by
  itself: offsets commit inside each batch's transaction.
- The producer is transactional with a stable `transactional.id` per worker slot, so
  a restarted worker fences its predecessor's open transaction at once; a worker that
  dies without a successor holds back read_committed readers for at most the
  transaction timeout.
- The restore consumer has no group: it reads changelog partitions it is given.

Keys are partitioned with murmur2, as Java's clients, Kafka Streams and aiokafka do,
so that every writer of a topic puts a key in the same partition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import confluent_kafka

# A SIGKILLed worker is noticed by the group after the session timeout; 10 s keeps a
# restart under 15 s, and librdkafka heartbeats from its own thread.
SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_MS = 3_000
# A batch's restore runs inside the loop: allow a long one before the group gives up on us.
MAX_POLL_INTERVAL_MS = 600_000


@dataclass(frozen=True)
class KafkaOptions:
    bootstrap: str
    group_id: str
    transactional_id: str
    transaction_timeout_ms: int = 10_000


def client_config(bootstrap: str, client_id: str) -> dict[str, Any]:
    """What every librdkafka client of wapipe's is given (the engine's, `wapipe replay`)."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "socket.connection.setup.timeout.ms": 5_000,
        "log_level": 4,  # warnings and worse, through Python logging (JSON lines)
        "logger": logging.getLogger("librdkafka"),
    }


def consumer(options: KafkaOptions, *, cooperative: bool = True) -> confluent_kafka.Consumer:
    """`cooperative`: cooperative-sticky assignment; else `range`, which co-partitions the
    subscribed topics (partition p of each to the same member: engine.loop says why)."""
    return confluent_kafka.Consumer({
        **client_config(options.bootstrap, f"{options.transactional_id}.consumer"),
        "group.id": options.group_id,
        "partition.assignment.strategy": "cooperative-sticky" if cooperative else "range",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_MS,
        "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
        # Enough prefetched per partition for full batches, bounded memory.
        "queued.max.messages.kbytes": 32_768,
        "fetch.wait.max.ms": 50,
    })  # fmt: skip


def producer(options: KafkaOptions) -> confluent_kafka.Producer:
    return confluent_kafka.Producer({
        **client_config(options.bootstrap, f"{options.transactional_id}.producer"),
        "transactional.id": options.transactional_id,
        "transaction.timeout.ms": options.transaction_timeout_ms,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",  # JSON compresses about 4x: outputs and changelogs
        # The commit flushes every record anyway: waiting to fill batches only delays it.
        "linger.ms": 0,
        # The broker answers CONCURRENT_TRANSACTIONS to a transaction begun before the
        # previous one's markers are written; librdkafka retries after this backoff, whose
        # default (100 ms) capped back-to-back transactions at a few per second of work.
        # Java's client uses 20 ms for the same reason (KAFKA-5477); 5 ms measured best
        # here. It grows exponentially (retry.backoff.max.ms) during a broker outage.
        "retry.backoff.ms": 5,
        "partitioner": "murmur2_random",
        "queue.buffering.max.messages": 1_000_000,
    })  # fmt: skip


def restore_consumer(options: KafkaOptions) -> confluent_kafka.Consumer:
    return confluent_kafka.Consumer({
        **client_config(options.bootstrap, f"{options.transactional_id}.restore"),
        "group.id": f"{options.group_id}.restore",  # required by the client; never joined
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        # One partition after the other: a fetch that waits 500 ms (the default) at a
        # partition's end costs a restore more than the records (bench/processors/bench_state.py).
        "fetch.wait.max.ms": 10,
        "fetch.max.bytes": 64 << 20,
        "max.partition.fetch.bytes": 16 << 20,
        "queued.max.messages.kbytes": 262_144,
    })  # fmt: skip


def kafka_error(exception: BaseException) -> confluent_kafka.KafkaError | None:
    """The KafkaError inside a KafkaException, if that is what `exception` is."""
    if isinstance(exception, confluent_kafka.KafkaException) and exception.args:
        error = exception.args[0]
        if isinstance(error, confluent_kafka.KafkaError):
            return error
    return None
