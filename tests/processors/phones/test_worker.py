"""The phones worker on the real broker: every phone and account example gives the
right phone_state and alerts, and SIGKILLs mid-run change neither."""

from __future__ import annotations

import itertools
import random
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from state_topics import StateAndAlerts, feed, run_with_sigkills

from processors.alerts import Alert
from processors.normalize import canonical
from processors.normalize.records import AccountEvent, PhoneEvent
from processors.normalize.rules import Normalized, normalize
from processors.phones.rules import PhoneState, account_alerts, apply, phone_state_value
from wapipe import topics
from wapipe.topics import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "examples"
NOW = datetime.now(UTC).replace(microsecond=0)  # event times near now (retention)
_ids = itertools.count()


def at(minutes: float) -> str:
    return canonical.format_timestamp(NOW + timedelta(minutes=minutes))


def expected(
    phones: list[PhoneEvent],
    accounts: list[AccountEvent] = (),  # type: ignore[assignment]
) -> tuple[dict[str, dict[str, Any]], Counter[str]]:
    """Final states and alert ids (each as often as raised) by the pure rules, in each
    number's partition order."""
    states: dict[str, PhoneState] = {}
    alerts: list[Alert] = [alert for event in accounts for alert in account_alerts(event)]
    for event in phones:
        outcome = apply(states.get(event.display_phone_number,
                                   PhoneState(event.display_phone_number)), event)  # fmt: skip
        states[event.display_phone_number] = outcome.state
        alerts += outcome.alerts
    return ({number: phone_state_value(state) for number, state in states.items()},
            Counter(alert.alert_id for alert in alerts))  # fmt: skip


async def test_every_phone_and_account_example(kafka_settings, start_worker, tmp_path):
    phones: list[PhoneEvent] = []
    accounts: list[AccountEvent] = []
    for n, path in enumerate(sorted(EXAMPLES.rglob("*.json"))):
        result = normalize(path.read_bytes(), None)
        if isinstance(result, Normalized) and isinstance(result.record, PhoneEvent | AccountEvent):
            record = replace(result.record, occurred_at=at(n - 60))  # in order, near now
            (phones if isinstance(record, PhoneEvent) else accounts).append(record)
    assert len(phones) >= 3
    assert accounts
    states, alerts = expected(phones, accounts)
    alert_ids = set(alerts)
    await feed(kafka_settings, topics.PHONE, phones, key=lambda e: e.display_phone_number)
    await feed(kafka_settings, topics.ACCOUNT, accounts, key=lambda e: e.business_account_id)
    worker = start_worker("phones", kafka_settings)
    async with StateAndAlerts(kafka_settings, topics.PHONE_STATE) as outputs:
        await outputs.until(lambda: outputs.states == states and outputs.alert_ids >= alert_ids,
                            worker, tmp_path / "phones.log", "every state and alert")  # fmt: skip
    assert sorted(alert["type"] for alert in outputs.alerts) == [
        "ACCOUNT_RESTRICTED", "MESSAGING_LIMIT_DOWNGRADED", "PHONE_NUMBER_FLAGGED"]  # fmt: skip
    flagged = states["4930901820"]
    assert (flagged["flagged"], flagged["flagReason"], flagged["currentLimit"]) == (
        True, "QUALITY_DECREASE", "TIER_1K")  # fmt: skip
    assert states["15550783881"]["currentLimit"] == "TIER_10K"  # maxDailyConversations...


async def test_sigkills_change_neither_the_states_nor_the_alert_ids(
    kafka_bootstrap, settings_for, start_worker, tmp_path
):
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}.whatsapp",
        topic_partitions=3,
    )  # fmt: skip
    await create_topics(settings)
    rng = random.Random(5)
    tiers = ["TIER_250", "TIER_1K", "TIER_2K", "TIER_10K", "TIER_100K", "TIER_NEW"]
    events: list[PhoneEvent] = []
    for n in range(300):
        minutes = -600.0
        for _ in range(10):
            minutes += rng.uniform(1, 20)
            kind = rng.choice(["UPGRADE", "DOWNGRADE", "FLAGGED", "UNFLAGGED", None])
            events.append(PhoneEvent(
                event_id=f"p-{next(_ids)}", display_phone_number=f"4930{n:06d}",
                occurred_at=at(minutes), received_at=at(minutes), business_account_id="b",
                account_id="acme", event=kind, reason="QUALITY_DECREASE" if kind else None,
                current_limit=rng.choice(tiers) if kind in ("UPGRADE", "DOWNGRADE") else None,
                old_limit=None,
            ))  # fmt: skip
            if rng.random() < 0.15:
                events.append(events[-1])  # a retry
            if rng.random() < 0.1:  # late news: placed in event time, maybe correcting alerts
                events.append(replace(events[-1], event_id=f"late-{next(_ids)}",
                                      occurred_at=at(minutes - 30)))  # fmt: skip
    rng.shuffle(events)  # arrival order is not event order (issue 21)
    states, alerts = expected(events)
    await feed(settings, topics.PHONE, events, key=lambda e: e.display_phone_number)
    await run_with_sigkills(settings, "phones", topics.PHONE_STATE, start_worker,
                            tmp_path / "phones.log", states, alerts,
                            WAPIPE_PROCESSOR_BATCH_SIZE="50")  # fmt: skip
    assert len(alerts) > 1000
