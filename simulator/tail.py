"""`wapipe tail TOPIC`: print a topic's records as they arrive, JSON values indented.

For watching a demo (`wapipe tail alerts`) and for debugging: the topic is named
with or without the prefix (`funnel` is `whatsapp.funnel`), any other name is
taken as it is. No consumer group: nothing is committed, any number of tails
may run beside the workers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from wapipe.settings import Settings
from wapipe.topics import TOPICS

_POLL_MS = 500
_METADATA_TIMEOUT_SECONDS = 30.0


class TailError(RuntimeError):
    """The topic cannot be read; the message says why."""


def resolve_topic(name: str, prefix: str) -> str:
    """`funnel` -> `<prefix>.funnel`; a full name, or a topic not of the contract, as is."""
    suffixes = {spec.suffix for spec in TOPICS}
    stripped = name.removeprefix(f"{prefix}.")
    if stripped in suffixes:
        return f"{prefix}.{stripped}"
    return name


def format_record(record: Any) -> str:
    """A record as a header line (topic, partition, offset, time, key), its headers,
    and its value: indented JSON when it is JSON, else its text."""
    moment = datetime.fromtimestamp(record.timestamp / 1000, UTC)
    when = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    key = _text(record.key) if record.key is not None else "(none)"
    lines = [
        f"--- {record.topic}  partition {record.partition}  offset {record.offset}  "
        f"{when}  key {key}"
    ]
    headers = [f"{name}={_text(value)}" for name, value in (record.headers or ())]
    if headers:
        lines.append("headers: " + "  ".join(headers))
    lines.append(_value(record.value))
    return "\n".join(lines) + "\n"


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _value(data: bytes | None) -> str:
    if data is None:
        return "(tombstone: no value)"
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _text(data)
    return orjson.dumps(parsed, option=orjson.OPT_INDENT_2).decode()


async def tail(
    settings: Settings,
    topic: str,
    out: TextIO,
    *,
    from_beginning: bool = False,
    count: int | None = None,
    stop_after: float | None = None,
    ready: Callable[[str], None] | None = None,
) -> int:
    """Print the records of `topic` to `out`: those written from now on, or all from
    the start; stop after `count` records or `stop_after` seconds (else run until
    cancelled). `ready(name)` is called once the consumer's positions are fixed:
    anything produced after it is printed. Returns the number of records printed."""
    name = resolve_topic(topic, settings.topic_prefix)
    deadline = None if stop_after is None else time.monotonic() + stop_after
    consumer = AIOKafkaConsumer(
        isolation_level="read_committed",
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        client_id="wapipe-tail",
    )
    await consumer.start()
    try:
        partitions = await _partitions(consumer, name)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        for partition in partitions:
            await consumer.position(partition)
        if ready is not None:
            ready(name)
        printed = 0
        while count is None or printed < count:
            wait_ms = _POLL_MS
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wait_ms = max(1, min(_POLL_MS, int(left * 1000)))
            batches = await consumer.getmany(timeout_ms=wait_ms)
            for _, records in sorted(batches.items()):
                for record in records:
                    if count is not None and printed >= count:
                        break
                    out.write(format_record(record))
                    printed += 1
            out.flush()
        return printed
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, name: str) -> list[TopicPartition]:
    """Subscribe to every partition of `name` (without a group, all are ours)."""
    existing = await consumer.topics()
    if name not in existing:
        known = sorted(topic for topic in existing if not topic.startswith("__"))
        raise TailError(f"no topic {name!r} on the broker; topics: {', '.join(known) or '(none)'}")
    consumer.subscribe([name])
    deadline = time.monotonic() + _METADATA_TIMEOUT_SECONDS
    while not consumer.assignment():  # assigned once the client has the topic's metadata
        if time.monotonic() > deadline:
            raise TailError(f"the broker assigns no partitions of {name!r}")
        await asyncio.sleep(0.05)
    return sorted(consumer.assignment())
