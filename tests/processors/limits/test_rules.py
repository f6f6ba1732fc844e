"""Messaging limits: the rolling 24-hour reach, the status and its alerts, and that the
count from summed deltas is exact whatever their order and grouping."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from functools import reduce

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.alerts import WITHDRAWN, alert_value
from processors.limits.alerts import AlertBook, limit_alerts
from processors.limits.rules import (
    NEAR,
    REACH_WINDOW,
    REACHED,
    LimitStatus,
    Reach,
    ReachSteps,
    add,
    add_steps,
    crossing_at,
    limit_status,
    messaging_limit_value,
    near_threshold,
    oldest_leaves_at,
    reach_intervals,
    reached_at,
    settle,
    step_changes,
    steps,
    tier_limit,
)
from processors.normalize import canonical
from schemas import validator

BASE = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
HOUR = 3_600_000
DAY = 24 * HOUR


def at(ms: int) -> str:
    return canonical.format_timestamp(BASE + timedelta(milliseconds=ms))


def reach_of(contacts: dict[str, list[int]]) -> Reach:
    """The state of a subject whose customers were contacted at these times (ms)."""
    return add(Reach(), reduce(add_steps, (
        steps(reach_intervals(at(ms) for ms in times)) for times in contacts.values()
    ), {}))  # fmt: skip


def customers(count: int, ms: int = 0) -> dict[str, list[int]]:
    return {f"c{i}": [ms] for i in range(count)}


# --- tiers --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tier", "limit"),
    [
        ("TIER_50", 50),
        ("TIER_250", 250),
        ("TIER_1K", 1_000),
        ("TIER_2K", 2_000),
        ("TIER_10K", 10_000),
        ("TIER_100K", 100_000),
        ("TIER_UNLIMITED", None),
        ("UNLIMITED", None),
        ("TIER_NOT_SET", None),
        ("TIER_5K", 5_000),  # a tier we were never told of, read all the same
        ("TIER_7", 7),
        ("tier_1k", 1_000),
        ("TIER_0", None),
        ("TIER_1M", None),
        ("TIER_", None),
        ("BANANA", None),
        ("", None),
        (None, None),
    ],
)
def test_tier_limit(tier: str | None, limit: int | None) -> None:
    assert tier_limit(tier) == limit


def test_near_threshold_rounds_up_and_refuses_a_share_outside_zero_to_one() -> None:
    assert near_threshold(1_000) == 800
    assert near_threshold(250, 0.7) == 175  # not 176: 0.7 * 250 is just under 175 in floats
    assert near_threshold(50, 0.81) == 41
    assert near_threshold(3, 0.01) == 1
    with pytest.raises(ValueError, match="near_share"):
        near_threshold(1_000, 0)
    with pytest.raises(ValueError, match="near_share"):
        near_threshold(1_000, 1.5)


# --- one customer -------------------------------------------------------------------------------
def test_a_contact_counts_until_one_millisecond_before_24_hours() -> None:
    assert timedelta(milliseconds=DAY) == REACH_WINDOW
    reach = reach_of({"c": [0]})
    assert reached_at(reach, at(-1)) == 0
    assert reached_at(reach, at(0)) == 1
    assert reached_at(reach, at(DAY - 1)) == 1
    assert reached_at(reach, at(DAY)) == 0
    assert oldest_leaves_at(reach, at(0)) == at(DAY)
    assert oldest_leaves_at(reach, at(DAY)) is None


def test_two_contacts_10_hours_apart_count_once_and_leave_24_hours_after_the_second() -> None:
    assert reach_intervals([at(10 * HOUR), at(0)]) == ((at(0), at(34 * HOUR)),)
    reach = reach_of({"c": [0, 10 * HOUR]})
    assert [reached_at(reach, at(ms)) for ms in (0, 10 * HOUR, DAY, 34 * HOUR - 1)] == [1] * 4
    assert reached_at(reach, at(34 * HOUR)) == 0
    assert oldest_leaves_at(reach, at(5 * HOUR)) == at(34 * HOUR)


def test_touching_intervals_merge_and_apart_ones_do_not() -> None:
    assert reach_intervals([at(0), at(DAY)]) == ((at(0), at(2 * DAY)),)
    assert reach_intervals([at(0), at(DAY + 1), at(0)]) == (
        (at(0), at(DAY)), (at(DAY + 1), at(2 * DAY + 1)))  # fmt: skip
    assert reach_intervals([]) == ()


def test_distinct_customers_count_separately() -> None:
    reach = reach_of({"a": [0], "b": [HOUR], "c": [2 * HOUR, 3 * HOUR]})
    assert reached_at(reach, at(3 * HOUR)) == 3
    assert reached_at(reach, at(DAY)) == 2  # a left
    assert oldest_leaves_at(reach, at(DAY)) == at(DAY + HOUR)  # b next


def test_a_late_earlier_receipt_moves_the_interval_and_the_delta_says_so() -> None:
    before = steps(reach_intervals([at(5 * HOUR)]))
    after = steps(reach_intervals([at(2 * HOUR)]))  # the message's contact time moved earlier
    delta = step_changes(before, after)
    assert delta == {f"{at(5 * HOUR)}/{at(29 * HOUR)}": -1, f"{at(2 * HOUR)}/{at(26 * HOUR)}": 1}
    reach = add(add(Reach(), before), delta)
    assert reach == add(Reach(), after)
    assert step_changes(after, after) == {}


# --- settling -----------------------------------------------------------------------------------
def test_settle_keeps_later_counts_and_refuses_earlier_ones() -> None:
    reach = reach_of({"a": [0], "b": [10 * HOUR], "c": [30 * HOUR]})
    settled = settle(reach, at(20 * HOUR))
    assert settled.base == {at(DAY): 1, at(34 * HOUR): 1}
    assert settled.intervals == {f"{at(30 * HOUR)}/{at(54 * HOUR)}": 1}
    assert Reach(**orjson.loads(orjson.dumps(settled))) == settled  # stored as JSON
    assert settle(settled, at(HOUR)) is settled  # a cut behind changes nothing
    for ms in (20 * HOUR, DAY, 30 * HOUR, 34 * HOUR, 60 * HOUR):
        assert reached_at(settled, at(ms)) == reached_at(reach, at(ms))
    with pytest.raises(ValueError, match="not known"):
        reached_at(settled, at(20 * HOUR - 1))
    # A removal of a settled interval, arriving after the settle, still cancels it.
    late = step_changes(steps(reach_intervals([at(0)])), {})
    assert reached_at(add(settled, late), at(20 * HOUR)) == 1


# --- status and alerts on TIER_1K ---------------------------------------------------------------
def test_tier_1k_is_near_at_800_and_reached_at_1000() -> None:
    # 799 customers in the first hour, then one more each minute up to 1000.
    contacts = customers(799) | {f"d{i}": [HOUR + i * 60_000] for i in range(201)}
    reach = reach_of(contacts)

    def status(ms: int) -> LimitStatus:
        return limit_status("6281234567890", "number", reach, "TIER_1K", at(ms))

    alerts, book = limit_alerts(status(HOUR - 1), reach)
    assert (status(HOUR - 1).reached, alerts, book) == (799, [], AlertBook())

    alerts, book = limit_alerts(status(HOUR), reach, book=book)
    assert [(a.type, a.severity, a.occurred_at) for a in alerts] == [(NEAR, "warning", at(HOUR))]
    assert alerts[0].alert_id == f"{NEAR}|6281234567890|1000@{at(HOUR)}"
    assert alerts[0].details["reached"] == 800
    assert "800 of 1000" in alerts[0].summary
    assert at(DAY) in alerts[0].summary
    assert limit_alerts(status(HOUR + 60_000), reach, book=book)[0] == []  # once

    end = HOUR + 200 * 60_000
    alerts, book = limit_alerts(status(end), reach, book=book)
    assert [(a.type, a.severity, a.occurred_at) for a in alerts] == [(REACHED, "critical", at(end))]
    assert alerts[0].subject == {"displayPhoneNumber": "6281234567890", "subAccountId": None}
    assert alerts[0].summary.startswith("Phone number +6281234567890 reached its messaging limit")
    assert book.sent == (f"{NEAR}|6281234567890|1000@{at(HOUR)}", alerts[0].alert_id)
    assert alerts[0].supersedes == ()

    record = messaging_limit_value(status(end))
    assert record == {
        "subject": "6281234567890", "subjectKind": "number", "tier": "TIER_1K",
        "limit": 1_000, "reached": 1_000, "headroom": 0, "usedShare": 1.0,
        "oldestLeavesAt": at(DAY), "at": at(end),
    }  # fmt: skip
    # A day on, the first 799 have left: the count is below both thresholds again.
    assert limit_alerts(status(DAY), reach, book=book)[0] == []
    assert status(DAY).reached == 201


def test_an_upgrade_mid_window_removes_reached_at_the_next_status() -> None:
    reach = reach_of(customers(1_050))
    reached = limit_status("acme", "sub_account", reach, "TIER_1K", at(HOUR))
    alerts, book = limit_alerts(reached, reach)
    assert {a.type for a in alerts} == {NEAR, REACHED}
    assert reached.headroom == -50
    assert alerts[0].summary.startswith("Sub-account acme (number unknown)")
    assert alerts[0].subject == {"displayPhoneNumber": None, "subAccountId": "acme"}
    for alert in alerts:  # records of whatsapp.alerts, as its schema has them
        validator("topics/alerts").validate(alert_value(alert))

    upgraded = limit_status("acme", "sub_account", reach, "TIER_10K", at(2 * HOUR))
    assert (upgraded.limit, upgraded.headroom, upgraded.used_share) == (10_000, 8_950, 0.105)
    alerts, book_after = limit_alerts(upgraded, reach, book=book)
    assert (alerts, book_after.sent) == ([], book.sent)  # they happened: kept, not withdrawn
    assert crossing_at(reach, upgraded.limit, upgraded.at) is None
    # Back down within the day: the same crossings, remembered, are not sent again.
    again = limit_status("acme", "sub_account", reach, "TIER_1K", at(3 * HOUR))
    assert limit_alerts(again, reach, book=book_after)[0] == []


@pytest.mark.parametrize("tier", ["TIER_UNLIMITED", "UNLIMITED", "TIER_NOT_SET", "TIER_X", None])
def test_an_unlimited_or_unknown_tier_never_alerts(tier: str | None) -> None:
    reach = reach_of(customers(200))
    status = limit_status("6281234567890", "number", reach, tier, at(0))
    assert (status.limit, status.headroom, status.used_share, status.reached) == (
        None, None, None, 200)  # fmt: skip
    assert limit_alerts(status, reach) == ([], AlertBook())


def test_crossing_is_the_start_of_the_stretch_above_the_threshold() -> None:
    # Two at 0, a third at 2 h; the first two leave at 24 h, two more come at 30 h.
    reach = reach_of({"a": [0], "b": [0], "c": [2 * HOUR], "d": [30 * HOUR], "e": [30 * HOUR]})
    assert crossing_at(reach, 3, at(5 * HOUR)) == at(2 * HOUR)
    assert crossing_at(reach, 2, at(5 * HOUR)) == at(0)
    assert crossing_at(reach, 3, at(DAY)) is None  # back to one
    assert crossing_at(reach, 3, at(30 * HOUR)) is None  # c left at 26 h
    assert crossing_at(reach, 2, at(30 * HOUR)) == at(30 * HOUR)
    # Settled past the start of the stretch: its crossing is no longer known.
    assert crossing_at(settle(reach, at(HOUR)), 2, at(5 * HOUR)) is None
    assert crossing_at(settle(reach, at(HOUR)), 3, at(5 * HOUR)) == at(2 * HOUR)


def test_a_crossing_moved_earlier_by_late_receipts_supersedes_its_alert() -> None:
    early = {f"e{i}": [i * 60_000] for i in range(3)}  # three customers from minute 0 to 2
    late = {f"l{i}": [HOUR + i * 60_000] for i in range(3)}  # three more an hour later
    partial = reach_of(late)  # the later three arrived first
    status = limit_status("n", "number", partial, "TIER_3", at(2 * HOUR))
    alerts, book = limit_alerts(status, partial)
    reached = next(a for a in alerts if a.type == REACHED)
    assert reached.alert_id == f"{REACHED}|n|3@{at(HOUR + 120_000)}"
    whole = reach_of(early | late)  # now the early three: the limit was reached at minute 2
    status = limit_status("n", "number", whole, "TIER_3", at(2 * HOUR))
    alerts, book = limit_alerts(status, whole, book=book)
    corrected = next(a for a in alerts if a.type == REACHED)
    assert corrected.alert_id == f"{REACHED}|n|3@{at(120_000)}"
    assert corrected.supersedes == (reached.alert_id,)
    assert limit_alerts(status, whole, book=book)[0] == []  # once


def test_an_earlier_stretch_that_ended_stays_alerted() -> None:
    reach = reach_of({"a": [0], "b": [30 * HOUR]})  # one customer, then after a gap another
    first = limit_status("n", "number", reach, "TIER_1", at(HOUR))
    alerts, book = limit_alerts(first, reach)
    assert [a.type for a in alerts] == [NEAR, REACHED]
    gap = limit_status("n", "number", reach, "TIER_1", at(26 * HOUR))
    assert limit_alerts(gap, reach, book=book)[0] == []
    second = limit_status("n", "number", reach, "TIER_1", at(31 * HOUR))
    alerts, _ = limit_alerts(second, reach, book=book)  # a stale standing: still true
    assert [(a.occurred_at, a.supersedes) for a in alerts] == [(at(30 * HOUR), ())] * 2


# --- properties ---------------------------------------------------------------------------------
# A subject's customers, each with messages (umids), each with the times of its receipts:
# the contact time of a message is its earliest receipt, as the upstream stage merges them.
# Times on a 6-hour grid, some a millisecond off: touching and near-touching intervals.
times = st.builds(lambda hours, off: hours * HOUR + off, st.integers(0, 12).map(lambda h: 6 * h),
                  st.sampled_from([0, 0, 1, -1]))  # fmt: skip
messages = st.lists(times, min_size=1, max_size=3)
subjects = st.dictionaries(
    st.sampled_from([f"c{i}" for i in range(8)]),
    st.lists(messages, min_size=1, max_size=3),
    min_size=1,
)
SAMPLES = sorted({ms + d for ms in range(-HOUR, 4 * DAY, 3 * HOUR) for d in (-1, 0, 1)} | {
    h * HOUR + d for h in range(0, 97, 6) for d in (-1, 0, 1)})  # fmt: skip


def deltas(subject: dict[str, list[list[int]]], rng: random.Random) -> list[ReachSteps]:
    """What the upstream stage sends: each receipt arrives alone, in random order, and its
    customer's contact times change to the earliest receipt per message so far."""
    arrivals = [(c, m, t) for c, ms in subject.items() for m, ts in enumerate(ms) for t in ts]
    rng.shuffle(arrivals)
    contact: dict[str, dict[int, int]] = {c: {} for c in subject}
    sent: list[ReachSteps] = []
    for customer, message, ms in arrivals:
        before = steps(reach_intervals(at(t) for t in contact[customer].values()))
        known = contact[customer].get(message)
        contact[customer][message] = ms if known is None else min(known, ms)
        after = steps(reach_intervals(at(t) for t in contact[customer].values()))
        sent.append(step_changes(before, after))
    return sent


def summed(sent: list[ReachSteps], rng: random.Random) -> Reach:
    """The deltas in random order and random batches (each batch summed first)."""
    sent = sent[:]
    rng.shuffle(sent)
    reach = Reach()
    while sent:
        size = rng.randint(1, len(sent))
        batch, sent = sent[:size], sent[size:]
        reach = add(reach, reduce(add_steps, batch, {}))
    return reach


def contacts_of(subject: dict[str, list[list[int]]]) -> dict[str, list[int]]:
    return {c: [min(ts) for ts in ms] for c, ms in subject.items()}


def brute_count(contacts: dict[str, list[int]], t: int) -> int:
    return sum(any(t - DAY < c <= t for c in cs) for cs in contacts.values())


def brute_leaves(contacts: dict[str, list[int]], t: int) -> int | None:
    """The earliest time after t at which a customer counted at t is no longer reached."""
    leaving = [
        min(x for x in (c + DAY for c in cs) if x > t and not any(x - DAY < c <= x for c in cs))
        for cs in contacts.values()
        if any(t - DAY < c <= t for c in cs)
    ]
    return min(leaving, default=None)


@settings(max_examples=200, deadline=None)
@given(subjects, st.randoms(use_true_random=False))
def test_summed_deltas_count_exactly_in_any_order_and_grouping(
    subject: dict[str, list[list[int]]], rng: random.Random
) -> None:
    sent = deltas(subject, rng)
    reach = summed(sent, rng)
    assert reach == summed(deltas(subject, rng), rng)  # another arrival order, other batches
    assert all(count > 0 for count in reach.intervals.values())
    contacts = contacts_of(subject)
    for t in SAMPLES:
        assert reached_at(reach, at(t)) == brute_count(contacts, t)
        leaves = brute_leaves(contacts, t)
        assert oldest_leaves_at(reach, at(t)) == (None if leaves is None else at(leaves))


@settings(max_examples=200, deadline=None)
@given(subjects, st.randoms(use_true_random=False), st.integers(-HOUR, 4 * DAY))
def test_settle_changes_no_count_from_its_cut_on_and_commutes_with_add(
    subject: dict[str, list[list[int]]], rng: random.Random, cut: int
) -> None:
    sent = deltas(subject, rng)
    reach = summed(sent, rng)
    settled = settle(reach, at(cut))
    # Settled part-way through the deltas, the rest added after: the same state.
    split = rng.randint(0, len(sent))
    assert reduce(add, sent[split:], settle(summed(sent[:split], rng), at(cut))) == settled
    assert settle(settled, at(cut - HOUR)) == settled
    for t in (s for s in SAMPLES if s >= cut):
        assert reached_at(settled, at(t)) == reached_at(reach, at(t))
        assert oldest_leaves_at(settled, at(t)) == oldest_leaves_at(reach, at(t))
        for threshold in (1, 2, 3):
            whole = crossing_at(reach, threshold, at(t))
            known = None if whole is None or whole <= at(cut) else whole
            assert crossing_at(settled, threshold, at(t)) == known


@settings(max_examples=200, deadline=None)
@given(subjects, st.randoms(use_true_random=False), st.integers(1, 4))
def test_crossings_and_alert_ids_do_not_depend_on_arrival_order(
    subject: dict[str, list[list[int]]], rng: random.Random, limit: int
) -> None:
    contacts = contacts_of(subject)
    orders = [summed(deltas(subject, rng), rng) for _ in range(2)]
    books = [AlertBook(), AlertBook()]
    raised: list[list[str]] = [[], []]
    for t in SAMPLES[::4]:
        for i, reach in enumerate(orders):
            status = limit_status("n", "number", reach, f"TIER_{limit}", at(t))
            alerts, books[i] = limit_alerts(status, reach, 0.5, books[i])
            assert all(a.supersedes == () for a in alerts)  # all known: nothing to correct
            raised[i] += [a.alert_id for a in alerts]
        crossed = crossing_at(orders[0], limit, at(t))
        if crossed is not None:  # the count is >= limit from the crossing to t, not just before
            c = int((canonical.parse_timestamp(crossed, "at") - BASE) / timedelta(milliseconds=1))
            assert brute_count(contacts, c - 1) < limit
            moves = {x + d for cs in contacts.values() for x in cs for d in (0, DAY)}
            assert all(brute_count(contacts, s) >= limit for s in moves | {c} if c <= s <= t)
    assert raised[0] == raised[1]
    assert len(raised[0]) == len(set(raised[0]))  # each crossing alerts once
    assert books[0] == books[1]


@settings(max_examples=200, deadline=None)
@given(subjects, st.randoms(use_true_random=False), st.integers(1, 4))
def test_alerts_evaluated_on_partial_arrivals_end_standing_as_on_the_whole(
    subject: dict[str, list[list[int]]], rng: random.Random, limit: int
) -> None:
    """Deltas arriving in any order, the subject evaluated after each batch at one time:
    the alerts standing in the end (ids received minus ids superseded, withdrawals
    included) are those the whole reach raises, and crossings of earlier stretches that
    still are crossings, whatever order the partial ones came in."""
    t = 3 * DAY
    sent = deltas(subject, rng)
    reach, book = Reach(), AlertBook()
    received, superseded = set(), set()
    while sent:
        size = rng.randint(1, len(sent))
        batch, sent = sent[:size], sent[size:]
        reach = add(reach, reduce(add_steps, batch, {}))
        status = limit_status("n", "number", reach, f"TIER_{limit}", at(t))
        alerts, book = limit_alerts(status, reach, 0.5, book)
        received |= {a.alert_id for a in alerts if a.type != WITHDRAWN}
        superseded |= {s for a in alerts for s in a.supersedes}
    whole = reach_of(contacts_of(subject))
    expected, _ = limit_alerts(
        limit_status("n", "number", whole, f"TIER_{limit}", at(t)), whole, 0.5
    )
    current = {a.alert_id for a in expected}
    holding = {alert_id.partition("|again-")[0] for alert_id in received - superseded}
    assert current <= holding  # (an id raised again after a correction: `<id>|again-<n>`)
    # What else stands is a crossing that still is one, of an earlier stretch.
    for alert_id in holding - current:
        crossed = alert_id.rpartition("@")[2]
        threshold = limit if alert_id.startswith(REACHED) else near_threshold(limit, 0.5)
        assert crossing_at(whole, threshold, crossed) == crossed
