"""The funnel worker on the real broker: a failure spike and a read-rate drop raise
their alert once; a low-volume window raises none."""

from __future__ import annotations

import signal
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from state_topics import StateAndAlerts, feed

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
        worker.send_signal(signal.SIGTERM)  # every record it sent is acknowledged by now
        assert worker.wait(timeout=60) == 0
        await outputs.drain()
    assert Counter(alert["alertId"] for alert in outputs.alerts) == {
        f"DELIVERY_FAILURE_SPIKE|spiky|1h|{START}": 1,
        f"READ_RATE_DROP|spiky|1h|{START}": 1,
    }
    spike = next(a for a in outputs.alerts if a["type"] == "DELIVERY_FAILURE_SPIKE")
    assert spike["details"]["undeliveredByErrorCode"] == {"1022": 20}
