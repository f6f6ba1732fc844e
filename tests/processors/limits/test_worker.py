"""The limits worker on the real broker, behind the conversations worker: a number walked
to 80% and 100% of its TIER_1K messaging limit by 1,000 customers, its receipts shuffled
and retried; a sub-account whose number is unknown counted on its own; exact when the
limits worker is SIGKILLed mid-run."""

from __future__ import annotations

import random
import signal
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from state_topics import StateAndAlerts, feed, starts, until_started
from stream_times import assert_job_stream_times

from processors.normalize import canonical
from processors.normalize.records import InboundMessage, Receipt, record_from_value
from wapipe import topics
from wapipe.settings import Settings
from wapipe.topics import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

NUMBER = "4930901820"
CHANNEL = "c6b2f1e0-5d1a-4f8e-8a7c-0b9d3e4f5a61"  # the channel id 8x8 gives the number
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=11)
ENVIRONMENT = {"WAPIPE_SENDER_NUMBERS": f"{CHANNEL}={NUMBER}",
               "WAPIPE_MESSAGING_LIMIT_CHECK_SECONDS": "1"}  # fmt: skip


def at(seconds: float) -> str:
    return canonical.format_timestamp(START + timedelta(seconds=seconds))


def customer(n: int) -> str:
    return f"+49151{n:07d}"


def template(sub_account: str, n: int, seconds: float, umid: str = "") -> list[Receipt]:
    """A marketing template to customer n: sent at `seconds`, delivered a second later."""
    umid = umid or f"{sub_account}-{n}"
    return [record_from_value(Receipt, {
        "umid": umid, "subAccountId": sub_account, "channel": "whatsapp", "state": state,
        "occurredAt": at(seconds + delay), "msisdn": customer(n), "country": "DE",
        "pricingCategory": "marketing",
    }) for state, delay in (("sent", 0), ("delivered", 1))]  # fmt: skip


def story() -> tuple[list[InboundMessage], list[Receipt]]:
    """`acme` sends from the number (its customers write to CHANNEL): 1,000 customers
    reached, one every 30 s from START, two messages each for a tenth of them; `globex`
    (no inbound message, no setting: number unknown) reaches 5."""
    inbound = [record_from_value(InboundMessage, {
        "umid": f"in-{uuid.uuid4().hex[:12]}", "eventType": "inbound_message_received",
        "echo": False, "subAccountId": "acme", "channel": "whatsapp", "occurredAt": at(0),
        "msisdn": customer(0), "channelId": CHANNEL, "type": "text",
    })]  # fmt: skip
    receipts: list[Receipt] = []
    for n in range(1_000):
        receipts += template("acme", n, 30 * n)
        if n % 10 == 0:  # a second message later: the customer still counts once
            receipts += template("acme", n, 30 * n + 3_600, umid=f"acme-{n}-again")
    for n in range(5):
        receipts += template("globex", n, 60 * n)
    return inbound, receipts


def expected_alerts() -> set[str]:
    """The alerts standing in the end: the 800th customer crossed 80%, the 1,000th 100%."""
    return {f"MESSAGING_LIMIT_NEAR|{NUMBER}|1000@{at(30 * 799)}",
            f"MESSAGING_LIMIT_REACHED|{NUMBER}|1000@{at(30 * 999)}"}  # fmt: skip


async def feed_story(settings: Settings, seed: int) -> None:
    inbound, receipts = story()
    rng = random.Random(seed)
    receipts += rng.sample(receipts, k=len(receipts) // 4)  # retries
    rng.shuffle(receipts)
    await feed(settings, topics.INBOUND, inbound, key=lambda m: m.umid)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:  # the number's tier, as the phones job publishes it
        await producer.send_and_wait(topics.PHONE_STATE.name(settings.topic_prefix),
                                     orjson.dumps({"displayPhoneNumber": NUMBER,
                                                   "currentLimit": "TIER_1K"}),
                                     key=NUMBER.encode())  # fmt: skip
    finally:
        await producer.stop()
    await feed(settings, topics.STATUS, receipts, key=lambda r: r.umid)


def final(outputs: StateAndAlerts) -> dict[str, tuple[Any, ...]]:
    return {key: (value["subjectKind"], value["tier"], value["limit"], value["reached"],
                  value["headroom"], value["oldestLeavesAt"])
            for key, value in outputs.states.items() if value["reached"]}  # fmt: skip


# Customer 0 got a second message an hour later: the first to leave is customer 1.
EXPECTED = {NUMBER: ("number", "TIER_1K", 1_000, 1_000, 0, at(24 * 3600 + 30)),
            "globex": ("sub_account", None, None, 5, None, at(24 * 3600))}  # fmt: skip


def standing(outputs: StateAndAlerts) -> set[str]:
    superseded = {s for alert in outputs.alerts for s in alert["supersedes"]}
    return {alert["alertId"] for alert in outputs.alerts
            if alert["type"] != "ALERT_WITHDRAWN"} - superseded  # fmt: skip


def at_the_end(outputs: StateAndAlerts) -> bool:
    return final(outputs) == EXPECTED and standing(outputs) == expected_alerts()


async def stop_and_check(outputs: StateAndAlerts, *workers: Any) -> None:
    """Stop the workers, read to the end: the final records and alerts, each alert once."""
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    await outputs.drain()
    assert at_the_end(outputs)
    assert max(outputs.alert_counts.values()) == 1  # no alert sent twice, across kills too


async def test_a_number_walked_to_its_limit(kafka_settings, start_worker, tmp_path):
    await feed_story(kafka_settings, seed=1)
    conversations = start_worker("conversations", kafka_settings)
    limits = start_worker("limits", kafka_settings, **ENVIRONMENT)
    async with StateAndAlerts(kafka_settings, topics.MESSAGING_LIMITS) as outputs:
        await outputs.until(lambda: at_the_end(outputs), limits, tmp_path / "limits.log",
                            "the number at its limit, and its two alerts")  # fmt: skip
        await stop_and_check(outputs, conversations, limits)
    near = next(a for a in outputs.alerts if a["alertId"] in expected_alerts()
                and a["type"] == "MESSAGING_LIMIT_NEAR")  # fmt: skip
    assert near["details"]["reached"] == 800
    assert near["subject"] == {"displayPhoneNumber": NUMBER, "subAccountId": None}


async def test_exact_when_the_limits_worker_is_killed(
    kafka_bootstrap, settings_for, start_worker, tmp_path
):
    settings = settings_for(kafka_bootstrap=kafka_bootstrap,
                            topic_prefix=f"t{uuid.uuid4().hex[:10]}.whatsapp",
                            topic_partitions=3)  # fmt: skip
    await create_topics(settings)
    await feed_story(settings, seed=2)
    environment = {**ENVIRONMENT, "WAPIPE_PROCESSOR_BATCH_SIZE": "50"}
    conversations = start_worker("conversations", settings, WAPIPE_PROCESSOR_BATCH_SIZE="50")
    limits = start_worker("limits", settings, **environment)
    log = tmp_path / "limits.log"
    async with StateAndAlerts(settings, topics.MESSAGING_LIMITS) as outputs:
        for reached in (200, 500, 900):  # SIGKILLed as the count climbs
            await outputs.until(lambda r=reached: outputs.states.get(NUMBER, {}).get(
                "reached", 0) >= r, limits, log, f"{reached} customers counted")  # fmt: skip
            limits.send_signal(signal.SIGKILL)
            limits.wait()
            started = starts(log)
            limits = start_worker("limits", settings, **environment)
        await outputs.until(lambda: at_the_end(outputs), limits, log, "the end, 3 SIGKILLs on")
        await until_started(log, started + 1, limits)  # so that it handles SIGTERM
        await stop_and_check(outputs, conversations, limits)
    assert_job_stream_times(settings, "limits")
