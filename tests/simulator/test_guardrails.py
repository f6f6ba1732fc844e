"""The guard-rails story (simulator/guardrails.py) and its oracle
(simulator/guardrails_expected.py): repeatable, within its span, exact to the
millisecond through normalize, and the oracle's limits, alerts, windows and bills."""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import phonenumbers
import pytest

from processors.normalize.records import InboundMessage
from processors.normalize.records import Receipt as NormalizedReceipt
from processors.normalize.rules import Normalized, normalize
from simulator import Plan, make_timeline, timeline_bodies
from simulator.bodies import body
from simulator.command import simulate_command
from simulator.guardrails import (
    COLD_CUSTOMERS,
    COLD_FAILED_AFTER_SENT,
    COLD_FAILED_AT_ONCE,
    LIMIT,
    NUMBER,
    SERVICE_CUSTOMERS,
    SUB_ACCOUNT,
    TIER,
)
from simulator.guardrails_expected import NEAR, REACHED, canonical, expected_guardrails
from simulator.stories import SENT, UNDELIVERED, Inbound, PhoneChange, Receipt, Timeline
from wapipe.settings import Settings

ANCHOR = datetime(2026, 11, 25, 8, 0, 0, 456_789, tzinfo=UTC)  # floored to 08:00:00
PLAN = Plan(seed=5, story="guardrails", duration=20, time_scale=720)  # 4 h of story


@pytest.fixture(scope="module")
def timeline() -> Timeline:
    return make_timeline(PLAN, ANCHOR)


@pytest.fixture(scope="module")
def normalized(timeline: Timeline) -> list[Normalized]:
    """What normalize makes of every body (none refused)."""
    results = [normalize(raw, None) for raw in timeline_bodies(timeline)]
    assert all(isinstance(result, Normalized) for result in results)
    return results  # type: ignore[return-value]


def test_the_plan_tells_the_stories_apart():
    assert Plan().story == "mixed"
    mixed = make_timeline(Plan(seed=5), ANCHOR)
    assert len(mixed.population.sub_accounts) == 3
    assert not any(isinstance(e.fact, Receipt) and e.fact.complete for e in mixed.events)
    with pytest.raises(ValueError, match="story must be one of mixed, guardrails"):
        Plan(story="chaos")
    with pytest.raises(ValueError, match="guardrails story spans"):
        Plan(story="guardrails", duration=60, time_scale=1_000)  # 16.7 h
    with pytest.raises(ValueError, match="guardrails story spans"):
        Plan(story="guardrails", duration=30)


def test_the_story_is_repeatable_and_within_its_span(timeline: Timeline):
    again = make_timeline(PLAN, ANCHOR)
    assert timeline_bodies(again) == timeline_bodies(timeline)
    assert timeline.anchor == ANCHOR.replace(microsecond=0)
    assert len({event.key for event in timeline.events}) == len(timeline)
    for event in timeline.events:
        assert event.at == int(event.at)  # whole seconds: every body's time is exact
        assert 0 <= event.at <= event.post_at <= PLAN.span
    posts = [event.post_at for event in timeline.events]
    assert posts == sorted(posts)
    assert timeline.events[-1].at > 0.8 * PLAN.span  # it reaches close to now


def test_the_cast_one_number_on_tier_1k_and_customers_in_two_countries(timeline: Timeline):
    phones = [e.fact for e in timeline.events if isinstance(e.fact, PhoneChange)]
    assert [(p.phone.display_phone_number, p.event, p.tier) for p in phones] == [
        (NUMBER, "ONBOARDING", TIER)
    ]
    (sub_account,) = timeline.population.sub_accounts
    assert (sub_account.sub_account_id, sub_account.channel_id) == (SUB_ACCOUNT, NUMBER)
    customers = timeline.population.customers
    assert len({c.msisdn for c in customers}) == len(customers) == LIMIT + 50
    for customer in customers:
        number = phonenumbers.parse(customer.msisdn)
        assert phonenumbers.is_valid_number(number)
        assert phonenumbers.region_code_for_number(number) == customer.country
    assert {c.country for c in customers} == {"DE", "ID"}


def test_the_facts_of_each_walk(timeline: Timeline):
    receipts = [e.fact for e in timeline.events if isinstance(e.fact, Receipt)]
    inbound = [e.fact for e in timeline.events if isinstance(e.fact, Inbound)]
    assert all(fact.complete for fact in [*receipts, *inbound])
    marketing = {r.customer.msisdn for r in receipts if r.category == "MARKETING"}
    assert len(marketing) == LIMIT
    categories = Counter(r.category for r in receipts if r.state == SENT)
    free_form_sent = SERVICE_CUSTOMERS + COLD_CUSTOMERS - COLD_FAILED_AT_ONCE
    assert categories == {"MARKETING": 1050, "UTILITY": 60, "AUTHENTICATION": 40,
                          "SERVICE": free_form_sent}  # fmt: skip
    assert all((r.template is None) == (r.category == "SERVICE") for r in receipts)
    failures = [r for r in receipts if r.state == UNDELIVERED]
    assert len(failures) == COLD_FAILED_AT_ONCE + COLD_FAILED_AFTER_SENT
    assert {(r.failure.code, r.failure.provider_code) for r in failures if r.failure} == {
        (1022, "131047")
    }
    writers = Counter(fact.customer.msisdn for fact in inbound)
    assert len(writers) == SERVICE_CUSTOMERS
    assert max(writers.values()) == 2
    assert not marketing & set(writers)


def test_bodies_carry_what_the_jobs_read(timeline: Timeline):
    for event in timeline.events:
        value, fact = body(timeline, event), event.fact
        if isinstance(fact, Receipt):
            payload = value["payload"]
            if fact.state != UNDELIVERED:
                assert payload["whatsapp"]["pricingCategory"] == fact.category.lower()
            if fact.template is None:
                assert "outboundContent" not in payload
        elif isinstance(fact, Inbound):
            assert "timestamp" in value["payload"]
            assert value["payload"]["recipient"]["channelId"] == NUMBER


def test_normalize_reads_every_time_exactly(timeline: Timeline, normalized: list[Normalized]):
    for event, result in zip(timeline.events, normalized, strict=True):
        record = result.record
        if isinstance(record, NormalizedReceipt | InboundMessage):
            assert record.occurred_at == canonical(timeline.anchor + timedelta(seconds=event.at))


def test_the_limit_and_its_alerts(timeline: Timeline, normalized: list[Normalized]):
    expected = expected_guardrails(timeline)
    (limit,) = expected.limits.values()
    assert (limit.subject, limit.subject_kind, limit.tier, limit.limit) == (
        NUMBER, "number", TIER, 1_000,
    )  # fmt: skip
    assert (limit.reached, limit.headroom) == (1_000, 0)
    # From normalize's records, another way: each customer's first sent-or-later receipt
    # of a message priced other than `service`.
    firsts: dict[str, str] = {}
    for result in normalized:
        record = result.record
        if isinstance(record, NormalizedReceipt) and record.pricing_category != "service":
            assert record.msisdn is not None
            if record.state in ("sent", "delivered", "read"):
                known = firsts.get(record.msisdn, record.occurred_at)
                firsts[record.msisdn] = min(known, record.occurred_at)
    times = sorted(firsts.values())
    assert len(times) == 1_000
    assert expected.alerts == {f"{NEAR}|{NUMBER}|1000@{times[799]}",
                               f"{REACHED}|{NUMBER}|1000@{times[999]}"}  # fmt: skip
    start = canonical(timeline.anchor)
    assert start < times[799] < times[999] < canonical(timeline.anchor + timedelta(hours=4))


def test_one_customer_lost_leaves_the_number_below_its_limit(timeline: Timeline):
    last = max(
        (e for e in timeline.events if isinstance(e.fact, Receipt) and e.fact.state == SENT
         and e.fact.category == "MARKETING"), key=lambda e: e.at,
    )  # fmt: skip
    assert isinstance(last.fact, Receipt)
    umids = {e.fact.umid for e in timeline.events if isinstance(e.fact, Receipt)
             and e.fact.customer == last.fact.customer}  # fmt: skip
    lost = [e.key for e in timeline.events if isinstance(e.fact, Receipt) and e.fact.umid in umids]
    expected = expected_guardrails(timeline, lost=lost)
    (limit,) = expected.limits.values()
    assert (limit.reached, limit.headroom) == (999, 1)
    assert [alert.partition("|")[0] for alert in expected.alerts] == [NEAR]


def test_service_windows(timeline: Timeline):
    windows = expected_guardrails(timeline).service_windows
    assert len(windows) == SERVICE_CUSTOMERS
    inbound = Counter(e.fact.customer.msisdn for e in timeline.events
                      if isinstance(e.fact, Inbound))  # fmt: skip
    for key, record in windows.items():
        assert key == f"{SUB_ACCOUNT}|{record['customer']}"
        assert record["subAccountId"] == SUB_ACCOUNT
        opened, last, closes = record["openedAt"], record["lastInboundAt"], record["closesAt"]
        assert None not in (opened, last, closes)
        assert isinstance(last, str)
        # Both messages of a customer who wrote twice (hours apart) make one window.
        assert (opened < last) == (inbound[record["customer"]] == 2)
        last_time = datetime.fromisoformat(last.replace("Z", "+00:00"))
        assert closes == canonical(last_time + timedelta(hours=24))


def test_free_form_messages_outside_a_window(timeline: Timeline):
    outside = expected_guardrails(timeline).freeform_outside
    # The cold customers' messages only: every answer came inside its window.
    assert sum(o for o, _ in outside.values()) == COLD_CUSTOMERS
    assert sum(f for _, f in outside.values()) == COLD_FAILED_AT_ONCE + COLD_FAILED_AFTER_SENT
    for window_id in outside:
        size, start, sub_account, country, category = window_id.split("|")
        assert (size, sub_account, category) == ("1h", SUB_ACCOUNT, "")
        assert start.endswith(":00:00.000Z")
        assert country in ("DE", "ID")


def test_billing_in_three_categories_and_two_countries(timeline: Timeline):
    billing = expected_guardrails(timeline).billing
    day = canonical(timeline.anchor.replace(hour=0, minute=0, second=0))
    by_category: Counter[str] = Counter()
    for window_id, delivered in billing.items():
        size, start, sub_account, country, category = window_id.split("|")
        assert (size, start, sub_account) == ("1d", day, SUB_ACCOUNT)
        assert country in ("DE", "ID")
        by_category[category] += delivered
    assert by_category == {"marketing": 1050, "utility": 60, "authentication": 40,
                           "service": SERVICE_CUSTOMERS + COLD_CUSTOMERS - COLD_FAILED_AT_ONCE
                           - COLD_FAILED_AFTER_SENT}  # fmt: skip
    countries = {tuple(w.split("|")[3:]) for w in billing}
    assert {(c, k) for c in ("DE", "ID") for k in ("marketing", "utility", "authentication")} <= (
        countries
    )


def test_a_dry_run_of_the_story_writes_its_oracle(tmp_path: Path, capsys):
    path = tmp_path / "expected.json"
    arguments = argparse.Namespace(
        seed=5, rate=20.0, duration=20.0, time_scale=720.0, messages=None, sub_accounts=3,
        customers=200, templates=6, concurrency=32, timeout=5.0, retry_pauses="1,10,30,90",
        url=None, dry_run=True, expected=str(path), story="guardrails",
    )  # fmt: skip
    assert simulate_command(Settings(), arguments) == 0
    out = capsys.readouterr().out
    assert f"expected messaging limit of {NUMBER}: 1000 of 1000 customers reached" in out
    written = orjson.loads(path.read_bytes())["extra"]["guardrails"]
    assert written["limits"][NUMBER]["reached"] == 1_000
    assert len(written["alerts"]) == 2
