"""The simulator's bodies: the shapes of 8x8's webhook docs, in all their real variants, and
every one of them accepted by the ingester's schemas and by normalize."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

import schemas
from ingest import envelope
from processors.normalize.records import InboundMessage, PhoneEvent, Receipt, TemplateEvent
from processors.normalize.rules import Normalized, normalize
from simulator import Plan, body, event_bytes, make_timeline, timeline_bodies
from simulator.stories import Inbound, PhoneChange, TemplateCategory, Timeline
from simulator.stories import Receipt as ReceiptFact

ANCHOR = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
RECEIVED_AT = "2026-11-25T09:00:00.000Z"


@pytest.fixture(scope="module", params=[1.0, 1800.0], ids=["real-time", "compressed"])
def timeline(request: pytest.FixtureRequest) -> Timeline:
    return make_timeline(Plan(seed=21, rate=20, duration=60, time_scale=request.param), ANCHOR)


@pytest.fixture(scope="module")
def bodies(timeline: Timeline) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in timeline_bodies(timeline)]


def test_every_body_matches_the_webhook_schema(bodies):
    validator = schemas.validator("webhooks/webhook")
    for item in bodies:
        errors = [error.message for error in validator.iter_errors(item)]
        assert not errors, (errors, item)
        assert envelope.is_recognised(item)


def test_every_body_normalizes_to_what_its_event_says(timeline):
    for event in timeline.events:
        result = normalize(event_bytes(timeline, event), RECEIVED_AT)
        assert isinstance(result, Normalized), (result, body(timeline, event))
        record, fact = result.record, event.fact
        if isinstance(fact, ReceiptFact):
            assert isinstance(record, Receipt)
            assert (record.umid, record.state) == (fact.umid, fact.state)
            assert record.sub_account_id == fact.sub_account.sub_account_id
            assert record.msisdn == fact.customer.msisdn
            assert record.country == fact.customer.country
            assert record.channel == "whatsapp"
            assert record.error_code == (fact.failure.code if fact.failure else None)
        elif isinstance(fact, Inbound):
            assert isinstance(record, InboundMessage)
            assert (record.umid, record.reply_to_umid, record.echo) == (
                fact.umid, fact.reply_to, fact.echo
            )  # fmt: skip
            assert record.country == fact.customer.country
        elif isinstance(fact, PhoneChange):
            assert isinstance(record, PhoneEvent)
            assert record.display_phone_number == fact.phone.display_phone_number
            assert record.event == fact.event
            assert record.current_limit == fact.tier
        else:
            assert isinstance(record, TemplateEvent)
            assert record.template_id == fact.template.template_id
            if isinstance(fact, TemplateCategory):
                assert record.new_category == fact.new


def test_event_times_are_the_story_times(timeline):
    for event in timeline.events[:300]:
        result = normalize(event_bytes(timeline, event), RECEIVED_AT)
        assert isinstance(result, Normalized)
        if result.occurred_at is None:
            continue  # an inbound message without a timestamp, as some are
        story_time = ANCHOR.timestamp() + event.at
        # Truncated to whole seconds at worst (account events, some receipts).
        assert story_time - 1 < result.occurred_at.timestamp() <= story_time + 1e-6


def test_the_same_event_gives_the_same_bytes():
    plan = Plan(seed=4, messages=40, duration=20)
    first, second = make_timeline(plan, ANCHOR), make_timeline(plan, ANCHOR)
    assert timeline_bodies(first) == timeline_bodies(second)


def test_bodies_vary_as_real_ones_do(bodies):
    receipts = [b for b in bodies if b["eventType"] == "outbound_message_status_changed"]
    inbound = [b for b in bodies if b["eventType"] == "inbound_message_received"]
    versions = Counter(b.get("version") for b in receipts + inbound)
    assert {None, 3, 8, 9} <= set(versions)
    channels = {b["payload"]["channel"] for b in receipts}
    assert {"whatsapp", "WhatsApp", "whatsApp"} <= channels
    states = {b["payload"]["status"]["state"] for b in receipts}
    assert any(state != state.lower() for state in states), "no mixed-case state"
    digits = Counter(_fraction_digits(b["payload"]["status"]["timestamp"]) for b in receipts)
    assert {0, 1, 2, 3, 7} <= set(digits)
    assert any("description" not in b for b in bodies)
    assert any("outboundContent" in b["payload"] for b in receipts)
    assert any("providerErrorCode" in b["payload"].get("whatsapp", {}) for b in receipts)
    assert any("channelUserId" not in b["payload"]["user"] for b in receipts)  # queued
    user_ids = {b["payload"]["user"].get("channelUserId", "") for b in receipts + inbound}
    assert any(re.fullmatch(r"[A-Z]{2}\.\d+", user_id) for user_id in user_ids), "no BSUID"
    assert any(user_id.startswith("+") for user_id in user_ids)
    types = {b["payload"]["type"] for b in inbound}
    assert {"Text", "Interactive"} <= types
    assert any(t.islower() for t in types)
    template_ids = [b["eventDetails"]["templateId"] for b in bodies
                    if b["eventType"].startswith("template_")]  # fmt: skip
    assert {int, str} <= {type(template_id) for template_id in template_ids}


def _fraction_digits(value: str) -> int:
    match = re.search(r"\.(\d+)Z$", value)
    return len(match.group(1)) if match else 0
