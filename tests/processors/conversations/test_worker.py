"""The conversations worker on the real broker, beside the funnel: customers' service
windows, and free-form messages sent outside them counted (and alerted) in the funnel
windows; exact when the conversations worker is SIGKILLed mid-run."""

from __future__ import annotations

import random
import signal
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from state_topics import StateAndAlerts, feed, run_with_sigkills

from processors.normalize import canonical
from processors.normalize.records import InboundMessage, Receipt, record_from_value
from wapipe import topics
from wapipe.topics import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
START = canonical.format_timestamp(HOUR)


def at(minutes: float) -> str:
    return canonical.format_timestamp(HOUR + timedelta(minutes=minutes))


def customer(n: int) -> str:
    return f"+62812345{n:05d}"


def inbound(sub_account: str, n: int, minutes: float) -> InboundMessage:
    return record_from_value(InboundMessage, {
        "umid": f"in-{uuid.uuid4().hex[:12]}", "eventType": "inbound_message_received",
        "echo": False, "subAccountId": sub_account, "channel": "whatsapp",
        "occurredAt": at(minutes), "msisdn": customer(n), "country": "ID", "type": "text",
    })  # fmt: skip


def receipt(sub_account: str, umid: str, n: int, state: str, minutes: float,
            **fields: object) -> Receipt:  # fmt: skip
    return record_from_value(Receipt, {
        "umid": umid, "subAccountId": sub_account, "channel": "whatsapp", "state": state,
        "occurredAt": at(minutes), "msisdn": customer(n), "country": "ID", **fields,
    })  # fmt: skip


def window(sub_account: str, n: int, last_inbound: float,
           first_inbound: float | None = None) -> dict[str, Any]:  # fmt: skip
    return {"subAccountId": sub_account, "customer": customer(n), "lastInboundAt": at(last_inbound),
            "openedAt": at(first_inbound if first_inbound is not None else last_inbound),
            "closesAt": at(last_inbound + 24 * 60)}  # fmt: skip


def story(
    sub_account: str = "care",
) -> tuple[list[InboundMessage], list[Receipt], dict[str, dict[str, Any]]]:
    """30 customers of a sub-account, and their expected service windows:
    - 0-9 wrote at minute 5 (10 of them twice, 20 h apart: one window), then got a
      free-form answer at minute 30: inside, not counted;
    - 10-19 never wrote; a free-form message at minute 30 is outside, and 10-15 of them
      failed for it (errorCode 1022);
    - 20-24 wrote 30 hours before: their window had closed; a free-form message at
      minute 30 is outside and failed (Meta's 131047);
    - 25-29 never wrote and got a template: never counted.
    So the sub-account's funnel hour from START holds 15 outside the window, 11 failed."""
    messages: list[InboundMessage] = []
    receipts: list[Receipt] = []
    windows: dict[str, dict[str, Any]] = {}
    for n in range(30):
        umid = f"{sub_account}-out-{n}"
        if n < 10:
            messages += [inbound(sub_account, n, 5), inbound(sub_account, n, 5 - 20 * 60)]
            windows[f"{sub_account}|{customer(n)}"] = window(sub_account, n, 5, 5 - 20 * 60)
            receipts += [
                receipt(sub_account, umid, n, "sent", 30),
                receipt(sub_account, umid, n, "read", 31),
            ]
        elif n < 20:
            receipts.append(receipt(sub_account, umid, n, "sent", 30))
            if n < 16:
                receipts.append(receipt(sub_account, umid, n, "undelivered", 31, errorCode=1022))
        elif n < 25:
            messages.append(inbound(sub_account, n, -30 * 60))
            windows[f"{sub_account}|{customer(n)}"] = window(sub_account, n, -30 * 60)
            receipts.append(receipt(sub_account, umid, n, "undelivered", 30, errorCode=100,
                                    providerErrorCode="131047"))  # fmt: skip
        else:
            receipts += [receipt(sub_account, umid, n, "sent", 30, pricingCategory="marketing"),
                         receipt(sub_account, umid, n, "delivered", 31)]  # fmt: skip
    return messages, receipts, windows


async def feed_shuffled(settings: Any, messages: list[InboundMessage], receipts: list[Receipt],
                        seed: int) -> None:  # fmt: skip
    """Both inputs shuffled, a third of each sent twice (retries)."""
    rng = random.Random(seed)
    messages = messages + rng.sample(messages, k=len(messages) // 3)
    receipts = receipts + rng.sample(receipts, k=len(receipts) // 3)
    rng.shuffle(messages)
    rng.shuffle(receipts)
    await feed(settings, topics.INBOUND, messages, key=lambda m: m.umid)
    await feed(settings, topics.STATUS, receipts, key=lambda r: r.umid)


async def test_service_windows_and_free_form_messages_outside_them(
    kafka_settings, start_worker, tmp_path
):
    messages, receipts, expected_windows = story()
    await feed_shuffled(kafka_settings, messages, receipts, seed=1)
    conversations = start_worker("conversations", kafka_settings)
    funnel = start_worker("funnel", kafka_settings, WAPIPE_SERVICE_WINDOW_FAILURES_ALERT="10")
    hour = f"1h|{START}|care|ID|"

    def outside() -> tuple[int, int]:
        record = windows.states.get(hour, {})
        return record.get("freeformOutsideWindow", 0), record.get("freeformOutsideWindowFailed", 0)

    async with (
        StateAndAlerts(kafka_settings, topics.SERVICE_WINDOWS) as service_windows,
        StateAndAlerts(kafka_settings, topics.FUNNEL,
                       state_id=lambda _, value: value["windowId"]) as windows,
    ):  # fmt: skip
        await service_windows.until(lambda: service_windows.states == expected_windows,
                                    conversations, tmp_path / "conversations.log",
                                    "the expected service windows")  # fmt: skip
        await windows.until(lambda: outside() == (15, 11), funnel, tmp_path / "funnel.log",
                            "15 free-form messages outside the window, 11 failed")  # fmt: skip
        # Traffic goes on, on every partition of every source of both jobs: their
        # progress passes the window's end by the alerts' delay (10 minutes), and its
        # alerts are decided.
        customers = range(100, 140)
        await feed(kafka_settings, topics.INBOUND, [inbound("later", n, 81) for n in customers],
                   key=lambda m: m.umid)  # fmt: skip
        await feed(kafka_settings, topics.STATUS,
                   [receipt("later", f"later-out-{n}", n, "sent", 81) for n in customers],
                   key=lambda r: r.umid)  # fmt: skip
        await windows.until(lambda: windows.alerts, funnel, tmp_path / "funnel.log",
                            "the window's alert")  # fmt: skip
        for worker in (conversations, funnel):
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0
        await windows.drain()
        await service_windows.drain()
    assert service_windows.repeated_states == 0
    assert outside() == (15, 11)
    assert Counter(alert["alertId"] for alert in windows.alerts
                   if alert["type"] == "SERVICE_WINDOW_FAILURES") == {
        f"SERVICE_WINDOW_FAILURES|care|1h|{START}": 1}  # fmt: skip


async def test_exact_when_the_conversations_worker_is_killed(
    kafka_bootstrap, settings_for, start_worker, tmp_path
):
    settings = settings_for(kafka_bootstrap=kafka_bootstrap,
                            topic_prefix=f"t{uuid.uuid4().hex[:10]}.whatsapp",
                            topic_partitions=3)  # fmt: skip
    await create_topics(settings)
    messages: list[InboundMessage] = []
    receipts: list[Receipt] = []
    expected_windows: dict[str, dict[str, Any]] = {}
    for copy in range(10):  # ten sub-accounts living the same story: 300 pairs
        copy_messages, copy_receipts, copy_windows = story(f"care-{copy}")
        messages += copy_messages
        receipts += copy_receipts
        expected_windows |= copy_windows
    await feed_shuffled(settings, messages, receipts, seed=2)
    await run_with_sigkills(settings, "conversations", topics.SERVICE_WINDOWS, start_worker,
                            tmp_path / "conversations.log", expected_windows, Counter(),
                            WAPIPE_PROCESSOR_BATCH_SIZE="20")  # fmt: skip
    # What the killed worker sent the funnel: each delta once, or the sums would be off.
    # The service windows can be exact before every receipt was folded (receipts change
    # no window): a worker of the same slot finishes what the last one left.
    conversations = start_worker("conversations", settings, WAPIPE_PROCESSOR_BATCH_SIZE="20")
    funnel = start_worker("funnel", settings, WAPIPE_SERVICE_WINDOW_FAILURES_ALERT="100")
    expected = {f"1h|{START}|care-{copy}|ID|": (15, 11) for copy in range(10)}

    def outside() -> dict[str, tuple[int, int]]:
        return {window_id: (record["freeformOutsideWindow"], record["freeformOutsideWindowFailed"])
                for window_id, record in windows.states.items()
                if window_id.startswith("1h|") and record["freeformOutsideWindow"]}  # fmt: skip

    async with StateAndAlerts(settings, topics.FUNNEL,
                              state_id=lambda _, value: value["windowId"]) as windows:  # fmt: skip
        await windows.until(lambda: outside() == expected, funnel, tmp_path / "funnel.log",
                            "each sub-account's 15 outside the window, 11 failed")  # fmt: skip
        for worker in (conversations, funnel):
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0
        await windows.drain()
    assert outside() == expected
