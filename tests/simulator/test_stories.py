"""The simulator's story: repeatable, realistic, and true to the rules of 8x8's traffic."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime

import phonenumbers
import pytest

from simulator import Plan, make_timeline, new_timeline
from simulator.stories import (
    DELIVERED,
    QUEUED,
    READ,
    SENT,
    UNDELIVERED,
    Event,
    Inbound,
    PhoneChange,
    Receipt,
    TemplateQuality,
    TemplateStatus,
    Timeline,
)

ANCHOR = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
# A minute of story at scale 1 (the receipts' own rhythm), and 30 hours in a minute
# (reads hours later, template pauses at their real length).
PLANS = {
    "real-time": Plan(seed=11, rate=20, duration=60),
    "compressed": Plan(seed=12, rate=20, duration=60, time_scale=1800),
}


@pytest.fixture(scope="module", params=sorted(PLANS))
def timeline(request: pytest.FixtureRequest) -> Timeline:
    return make_timeline(PLANS[request.param], ANCHOR)


def _receipts_by_umid(timeline: Timeline) -> dict[str, list[Event]]:
    receipts: dict[str, list[Event]] = defaultdict(list)
    for event in timeline.events:
        if isinstance(event.fact, Receipt):
            receipts[event.fact.umid].append(event)
    return receipts


def test_the_same_seed_gives_the_same_timeline():
    plan = Plan(seed=5, messages=80, duration=30, time_scale=60)
    assert make_timeline(plan, ANCHOR) == make_timeline(plan, ANCHOR)


def test_another_seed_gives_another_timeline():
    first = make_timeline(Plan(seed=5, messages=80, duration=30), ANCHOR)
    second = make_timeline(Plan(seed=6, messages=80, duration=30), ANCHOR)
    assert first.population != second.population
    assert {e.key for e in first.events}.isdisjoint({e.key for e in second.events})


def test_events_are_posted_in_order_within_the_run_and_never_before_they_happen(timeline):
    posts = [event.post_at for event in timeline.events]
    assert posts == sorted(posts)
    assert all(0 <= event.at <= event.post_at <= timeline.plan.span for event in timeline.events)
    assert len({event.key for event in timeline.events}) == len(timeline.events)


def test_the_story_ends_about_now_and_never_in_the_future():
    plan = Plan(seed=1, messages=50, duration=60, time_scale=1800)
    now = datetime.now(UTC)
    timeline = new_timeline(plan, now)
    # Posted at now + post_at / scale; its event time is at or before that moment.
    for event in timeline.events:
        event_time = timeline.anchor.timestamp() + event.at
        assert event_time <= now.timestamp() + plan.real_offset(event.post_at) + 1e-6
    assert timeline.anchor.timestamp() == pytest.approx(now.timestamp() - (plan.span - 60))


def test_customers_have_valid_numbers_in_several_countries(timeline):
    customers = timeline.population.customers
    for customer in customers:
        number = phonenumbers.parse(customer.msisdn)
        assert phonenumbers.is_valid_number(number), customer.msisdn
        assert phonenumbers.region_code_for_number(number) == customer.country
    assert len({customer.country for customer in customers}) >= 5


def test_every_message_follows_the_receipt_rules(timeline):
    for umid, events in _receipts_by_umid(timeline).items():
        states = [event.fact.state for event in sorted(events, key=lambda e: e.at)]
        assert len(states) == len(set(states)), f"{umid}: a state twice: {states}"
        assert set(states) <= {QUEUED, SENT, DELIVERED, READ, UNDELIVERED}
        order = [QUEUED, SENT, DELIVERED, READ, UNDELIVERED]
        # In event time, states only move forward (posting may be out of order).
        assert states == sorted(states, key=order.index), f"{umid}: {states}"
        if UNDELIVERED in states:
            assert not {DELIVERED, READ} & set(states), f"{umid}: failed and delivered"
            failure = next(e.fact.failure for e in events if e.fact.state == UNDELIVERED)
            assert failure is not None
            assert 1 <= failure.code <= 61 or 1000 <= failure.code <= 1054
        sub_accounts = {event.fact.sub_account for event in events}
        assert len(sub_accounts) == 1, f"{umid}: receipts from several sub-accounts"


def test_the_story_has_every_kind_of_receipt_and_some_out_of_order(timeline):
    receipts = _receipts_by_umid(timeline)
    states = {event.fact.state for events in receipts.values() for event in events}
    assert states == {QUEUED, SENT, DELIVERED, READ, UNDELIVERED}
    out_of_order = sum(
        1
        for events in receipts.values()
        if [e.post_at for e in sorted(events, key=lambda e: e.at)]
        != sorted(e.post_at for e in events)
    )
    assert out_of_order > 0
    read_alone = [
        umid
        for umid, events in receipts.items()
        if {e.fact.state for e in events} >= {READ}
        and DELIVERED not in {e.fact.state for e in events}
    ]
    assert read_alone, "no read receipt without a delivered one"
    never_read = [umid for umid, events in receipts.items()
                  if DELIVERED in {e.fact.state for e in events}
                  and READ not in {e.fact.state for e in events}]  # fmt: skip
    assert never_read


def test_reads_come_hours_later_in_a_compressed_run():
    timeline = make_timeline(PLANS["compressed"], ANCHOR)
    delays = []
    for events in _receipts_by_umid(timeline).values():
        times = {event.fact.state: event.at for event in events}
        if DELIVERED in times and READ in times:
            delays.append(times[READ] - times[DELIVERED])
    assert max(delays) > 3600
    assert min(delays) < 300


def test_replies_name_our_messages_and_other_inbound_messages_vary(timeline):
    umids = set(_receipts_by_umid(timeline))
    inbound = [event.fact for event in timeline.events if isinstance(event.fact, Inbound)]
    replies = [fact for fact in inbound if fact.reply_to is not None]
    assert replies
    assert {reply.reply_to for reply in replies} <= umids
    kinds = {fact.kind for fact in inbound}
    assert {"text", "button_reply"} <= kinds
    assert kinds & {"image", "video", "audio", "document"}
    assert any(fact.echo for fact in inbound)


def test_a_reply_comes_after_the_message_was_delivered(timeline):
    delivered_at: dict[str, float] = {}
    for event in timeline.events:
        fact = event.fact
        if isinstance(fact, Receipt) and fact.state in (DELIVERED, READ):
            delivered_at[fact.umid] = min(event.at, delivered_at.get(fact.umid, event.at))
    for event in timeline.events:
        fact = event.fact
        if isinstance(fact, Inbound) and fact.reply_to in delivered_at:
            assert event.at > delivered_at[fact.reply_to]


def test_a_template_walks_into_its_third_red_strike_recovering_in_between(timeline):
    template = timeline.population.templates[0]
    facts = [
        event.fact
        for event in sorted(timeline.events, key=lambda e: e.at)
        if isinstance(event.fact, TemplateQuality | TemplateStatus)
        and event.fact.template == template
    ]
    qualities = [f.new for f in facts if isinstance(f, TemplateQuality)]
    reds = [i for i, q in enumerate(qualities) if q == "RED"]
    assert len(reds) == 3, qualities
    for before, after in itertools.pairwise(reds):
        assert "GREEN" in qualities[before:after], "quality recovers between strikes"
    statuses = [(f.status, f.title) for f in facts if isinstance(f, TemplateStatus)]
    assert ("PAUSED", "FIRST_PAUSE") in statuses
    assert ("PAUSED", "SECOND_PAUSE") in statuses
    assert statuses[-1] == ("DISABLED", "DISABLED")


def test_template_and_phone_events_are_grouped_in_event_time_order(timeline):
    groups: dict[str, list[Event]] = defaultdict(list)
    for event in timeline.events:
        if event.group is not None:
            groups[event.group].append(event)
        else:
            assert not isinstance(event.fact, TemplateQuality | TemplateStatus | PhoneChange)
    assert groups
    for name, events in groups.items():
        times = [event.at for event in events]  # in posting order
        assert all(b - a >= 2.0 for a, b in itertools.pairwise(times)), name


def test_phone_numbers_change_tiers_and_get_flagged(timeline):
    changes = [event.fact for event in timeline.events if isinstance(event.fact, PhoneChange)]
    events = {change.event for change in changes}
    assert {"ONBOARDING", "UPGRADE", "DOWNGRADE", "FLAGGED", "UNFLAGGED"} <= events


def test_messages_size_the_run_to_the_rate():
    timeline = make_timeline(Plan(seed=2, rate=40, duration=30, time_scale=600), ANCHOR)
    assert 0.6 * 40 * 30 <= len(timeline.events) <= 1.4 * 40 * 30


@pytest.mark.parametrize(
    ("field", "value"),
    [("rate", 0), ("duration", -1), ("time_scale", float("nan")), ("messages", -1)],
)
def test_a_bad_plan_is_refused_with_its_name(field, value):
    with pytest.raises(ValueError, match=field):
        Plan(**{field: value})
