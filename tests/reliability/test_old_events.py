"""Events days old, fed to a fresh pipeline exactly as `wapipe replay` feeds it (the raw
topic's records with their keys, timestamps and `wapipe-received-at` headers, in the
order they arrived), are counted as the live run counted them: every message once in
the funnel's 1-minute and 1-hour windows and in the billing windows.

Windows close by stream time, not by the wall clock (docs/design.md, Time): with the
wall clock deciding, every window more than WAPIPE_FUNNEL_WINDOW_DAYS older than the
day of the replay was final, and all 3,000 messages were dropped as late.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from stream_times import assert_stream_times_committed

from processors.normalize import canonical
from wapipe import topics
from wapipe.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MESSAGES = 3_000
STEPS = (("sent", None), ("delivered", "delivered_to_recipient"), ("read", None))

Raw = tuple[bytes, bytes, list[tuple[str, bytes]], int]  # key, body, headers, timestamp (ms)


def _raw_receipts(now: datetime, seed: int = 28) -> list[Raw]:
    """Each message's sent, delivered and read receipts, its sending 3 to 6 days before
    `now`; each received a few seconds after it happened, the raw topic in the order the
    ingester received them."""
    rng = random.Random(seed)
    arrivals: list[tuple[datetime, Raw]] = []
    for n in range(MESSAGES):
        umid = f"old-{n}"
        at = now - timedelta(days=3 + 3 * rng.random())
        for step, (state, detail) in enumerate(STEPS):
            at += timedelta(seconds=0 if step == 0 else rng.uniform(1, 3_600))
            received = at + timedelta(seconds=rng.uniform(0.1, 5))
            status = {"state": state, "timestamp": canonical.format_timestamp(at)}
            if detail:
                status["detail"] = detail
            body = {"namespace": "ChatApps", "eventType": "outbound_message_status_changed",
                    "payload": {"umid": umid, "subAccountId": f"acme-{n % 3}",
                                "channel": "whatsapp", "user": {"msisdn": "+6281234567890"},
                                "whatsapp": {"pricingCategory": "marketing"},
                                "status": status}}  # fmt: skip
            header = [("wapipe-received-at", canonical.format_timestamp(received).encode())]
            raw = (umid.encode(), orjson.dumps(body), header, canonical.epoch_ms(received))
            arrivals.append((received, raw))
    arrivals.sort(key=lambda arrival: arrival[0])
    return [raw for _, raw in arrivals]


def _write_raw(settings: Settings, records: list[Raw]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5,
                         "partitioner": "murmur2_random", "enable.idempotence": True})  # fmt: skip
    topic = topics.RAW.name(settings.topic_prefix)
    for key, value, headers, timestamp in records:
        producer.produce(topic, value, key, headers=headers, timestamp=timestamp)
        producer.poll(0)
    assert producer.flush(60) == 0, "raw records not delivered"


def _sums(windows: dict[Any, Any], size: str, *fields: str) -> dict[str, int]:
    return {name: sum(record[name] for record in windows.values() if record["window"] == size)
            for name in fields}  # fmt: skip


async def test_events_days_old_fed_to_a_fresh_pipeline_are_each_counted_once(
    fresh_topics: Callable[[int], Any], start_worker: Callable[..., Any],
    follow_topic: Callable[..., Any],
) -> None:  # fmt: skip
    settings: Settings = await fresh_topics(3)
    _write_raw(settings, _raw_receipts(datetime.now(UTC)))
    workers = [start_worker(job, settings) for job in ("normalize", "funnel")]
    by_window = lambda record: orjson.loads(record.value)["windowId"]  # noqa: E731
    funnel = await follow_topic(settings, topics.FUNNEL, by_window)
    billing = await follow_topic(settings, topics.BILLING, by_window)

    def alive() -> str | None:
        dead = [worker.args for worker in workers if worker.poll() is not None]
        return f"a worker exited: {dead}" if dead else None

    def every_read_counted() -> bool:
        return _sums(funnel.latest_json(), "1h", "read")["read"] >= MESSAGES

    await funnel.until(every_read_counted, "every message read in the 1 h windows", 180, alive)
    await funnel.drain()

    def every_delivery_billed() -> bool:
        return _sums(billing.latest_json(), "1d", "delivered")["delivered"] >= MESSAGES

    await billing.until(every_delivery_billed, "every delivery in the 1 d billing windows", 60,
                        alive)  # fmt: skip
    await billing.drain()
    windows, bills = funnel.latest_json(), billing.latest_json()
    stages = ("sent", "delivered", "read")
    for size in ("1m", "1h"):
        assert _sums(windows, size, *stages) == dict.fromkeys(stages, MESSAGES), size
    for size in ("1h", "1d"):
        assert _sums(bills, size, "delivered") == {"delivered": MESSAGES}, size
    source_topics = [topics.RAW.name(settings.topic_prefix)]
    assert_stream_times_committed(settings.kafka_bootstrap, f"{settings.topic_prefix}.normalize",
                                  source_topics)  # fmt: skip
