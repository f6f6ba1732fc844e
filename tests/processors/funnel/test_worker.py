"""The funnel worker on the real broker: a failure spike and a read-rate drop raise
their alert once; a low-volume window raises none; delivered messages are billed by
country and pricing category, priced with the rate card."""

from __future__ import annotations

import random
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from state_topics import StateAndAlerts, feed

from processors.funnel.rate_card import load_rate_card
from processors.funnel.windows import window_start
from processors.normalize import canonical
from processors.normalize.records import Receipt, record_from_value
from wapipe import topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
START = canonical.format_timestamp(HOUR)


def receipt(umid: str, sub_account: str, state: str, minute: int, **fields: object) -> Receipt:
    moment = canonical.format_timestamp(HOUR + timedelta(minutes=minute))
    return record_from_value(Receipt, {
        "umid": umid, "subAccountId": sub_account, "channel": "whatsapp", "state": state,
        "occurredAt": moment, "country": "ID", **fields,
    })  # fmt: skip


async def test_a_failure_spike_and_a_read_rate_drop_are_alerted_once(
    kafka_settings, start_worker, tmp_path
):
    receipts = []
    for n in range(80):  # spiky: 20 of 80 undelivered; 6 of the 60 delivered read
        receipts.append(receipt(f"s-{n}", "spiky", "sent", 10))
        if n < 20:
            receipts.append(receipt(f"s-{n}", "spiky", "undelivered", 11, errorCode=1022))
        else:
            receipts.append(receipt(f"s-{n}", "spiky", "delivered", 11))
            if n < 26:
                receipts.append(receipt(f"s-{n}", "spiky", "read", 30))
    receipts += [receipt("q-1", "quiet", "undelivered", 12, errorCode=1022),
                 receipt("q-2", "quiet", "delivered", 12)]  # fmt: skip
    await feed(kafka_settings, topics.STATUS, receipts, key=lambda r: r.umid)
    spiky, quiet = f"1h|{START}|spiky|ID|", f"1h|{START}|quiet|ID|"

    def totals(window_id: str) -> tuple[int, ...]:
        record = outputs.states.get(window_id, {})
        return tuple(record.get(name, 0) for name in ("sent", "delivered", "read", "undelivered"))

    worker = start_worker("funnel", kafka_settings)
    async with StateAndAlerts(kafka_settings, topics.FUNNEL,
                              state_id=lambda _, value: value["windowId"]) as outputs:  # fmt: skip
        await outputs.until(
            lambda: totals(spiky) == (80, 60, 6, 20) and totals(quiet) == (1, 1, 0, 1),
            worker, tmp_path / "funnel.log", "the final windows",
        )  # fmt: skip
        assert outputs.alerts == [], "alerted before the window was decided"
        # Traffic goes on, on every partition: the merge hop's progress passes the
        # window's end by the alerts' delay (10 minutes), and its alerts are decided.
        later = [receipt(f"later-{n}", "later", "sent", 81) for n in range(40)]
        await feed(kafka_settings, topics.STATUS, later, key=lambda r: r.umid)
        await outputs.until(lambda: len(outputs.alerts) == 2, worker, tmp_path / "funnel.log",
                            "the window's two alerts")  # fmt: skip
        worker.send_signal(signal.SIGTERM)  # every record it sent is acknowledged by now
        assert worker.wait(timeout=60) == 0
        await outputs.drain()
    assert Counter(alert["alertId"] for alert in outputs.alerts) == {
        f"DELIVERY_FAILURE_SPIKE|spiky|1h|{START}": 1,
        f"READ_RATE_DROP|spiky|1h|{START}": 1,
    }
    spike = next(a for a in outputs.alerts if a["type"] == "DELIVERY_FAILURE_SPIKE")
    assert spike["details"]["undeliveredByErrorCode"] == {"1022": 20}


RATE_CARD = Path(__file__).resolve().parents[3] / "deploy" / "billing" / "rate-card.example.csv"
BILLED = {("ID", "marketing"): 5, ("ID", "utility"): 4, ("ID", "authentication"): 3,
          ("DE", "marketing"): 2, ("DE", "utility"): 1, ("DE", "authentication"): 6}  # fmt: skip


async def test_delivered_messages_are_billed_by_country_and_category_with_the_rate_card(
    kafka_settings, start_worker, tmp_path
):
    receipts = []
    for (country, category), count in BILLED.items():
        for n in range(count):
            umid = f"b-{country}-{category}-{n}"
            # The category comes on the delivered receipt only for some: those move from
            # the unknown category to their own when it arrives.
            sent_category = category if n % 2 else None
            receipts += [
                receipt(umid, "billed", "sent", 10, country=country, pricingCategory=sent_category),
                receipt(umid, "billed", "delivered", 11, country=country, pricingCategory=category),
            ]
            if n % 3 == 0:
                receipts.append(receipt(umid, "billed", "read", 20, country=country))
    # Not billed: failed, or only on the operator's side.
    receipts += [
        receipt("f-1", "billed", "undelivered", 12, errorCode=1022, pricingCategory="marketing"),
        receipt("o-1", "billed", "delivered", 12, detail="delivered_to_operator",
                pricingCategory="marketing"),
    ]  # fmt: skip
    rng = random.Random(20)
    receipts += rng.sample(receipts, k=len(receipts) // 3)  # retried receipts
    rng.shuffle(receipts)
    await feed(kafka_settings, topics.STATUS, receipts, key=lambda r: r.umid)
    card = load_rate_card(RATE_CARD)
    day = window_start(START, "1d")
    expected = {}
    for (country, category), count in BILLED.items():
        rate = card.rate(country, category)
        assert rate is not None
        expected[f"1d|{day}|billed|{country}|{category}"] = (count, str(rate.price * count))
        expected[f"1h|{START}|billed|{country}|{category}"] = (count, str(rate.price * count))

    def billed() -> dict[str, tuple[int, str | None]]:
        return {window_id: (record["delivered"], record["estimatedCost"])
                for window_id, record in outputs.states.items() if record["delivered"]}  # fmt: skip

    worker = start_worker("funnel", kafka_settings, WAPIPE_BILLING_RATE_CARD=str(RATE_CARD))
    async with StateAndAlerts(kafka_settings, topics.BILLING,
                              state_id=lambda _, value: value["windowId"]) as outputs:  # fmt: skip
        await outputs.until(lambda: billed() == expected, worker, tmp_path / "funnel.log",
                            "six countries and categories billed")  # fmt: skip
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
        await outputs.drain()
    assert billed() == expected
    record = outputs.states[f"1d|{day}|billed|DE|authentication"]
    assert (record["pricePerMessage"], record["currency"]) == ("0.0700", "USD")
