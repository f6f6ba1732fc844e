"""A phone number's state and alerts depend on the set of its events, not on the order
they arrive in (issue 21): tier changes and flags out of order, corrections. No Kafka."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
from alert_corrections import assert_well_formed, conditions, standing
from hypothesis import given, settings
from hypothesis import strategies as st
from typed_events import NUMBER, phone_event

from processors.alerts import WITHDRAWN, Alert
from processors.event_order import identity
from processors.history import Bounds
from processors.normalize import canonical
from processors.normalize.records import PhoneEvent
from processors.phones.app import _load
from processors.phones.rules import PhoneOutcome, PhoneState, apply, phone_state_value

BASE = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def at(minutes: float) -> str:
    return canonical.format_timestamp(BASE + timedelta(minutes=minutes))


def phone(
    minutes: float,
    event: str | None,
    current: str | None = None,
    old: str | None = None,
    reason: str | None = None,
) -> PhoneEvent:
    return phone_event(at(minutes), event, current, old, reason)


def run(
    events: list[PhoneEvent], state: PhoneState | None = None, bounds: Bounds | None = None
) -> tuple[PhoneState, list[Alert], list[PhoneOutcome]]:
    state = state or PhoneState(NUMBER)
    sent: list[Alert] = []
    outcomes: list[PhoneOutcome] = []
    for item in events:
        outcome = apply(state, item) if bounds is None else apply(state, item, bounds)
        state = outcome.state
        sent += outcome.alerts
        outcomes.append(outcome)
    return state, sent, outcomes


def in_event_time(events: list[PhoneEvent]) -> list[PhoneEvent]:
    return sorted(events, key=lambda item: (item.occurred_at, identity(item)))


def test_a_late_tier_change_turns_a_downgrade_into_an_upgrade() -> None:
    onboarding, lowered = phone(0, "ONBOARDING", "TIER_10K"), phone(20, "DOWNGRADE", "TIER_1K")
    state, sent, _ = run([onboarding, lowered])
    assert [(a.type, a.details["oldLimit"]) for a in sent] == [
        ("MESSAGING_LIMIT_DOWNGRADED", "TIER_10K")]  # fmt: skip
    # Down to TIER_250 at 10, which we learn last: at 20 the number went *up* to TIER_1K.
    late = apply(state, phone(10, "DOWNGRADE", "TIER_250"))
    assert late.reordered
    down, up = late.alerts
    assert (down.type, down.severity, down.occurred_at) == (
        "MESSAGING_LIMIT_DOWNGRADED", "critical", at(10))  # fmt: skip
    assert (up.type, up.occurred_at, up.supersedes) == (
        "MESSAGING_LIMIT_UPGRADED", at(20), (sent[0].alert_id,))  # fmt: skip
    assert [c.tier for c in late.state.tier_history] == ["TIER_10K", "TIER_250", "TIER_1K"]
    assert late.state.tier == "TIER_1K"
    replayed, again, _ = run([lowered, onboarding], late.state)
    assert (replayed, again) == (late.state, [])


def test_a_late_flag_is_placed_and_an_unflagging_before_it_is_no_last_word() -> None:
    unflagged = phone(30, "UNFLAGGED")
    state, _, _ = run([phone(0, "ONBOARDING", "TIER_1K"), phone(10, "FLAGGED", reason="X"),
                       unflagged])  # fmt: skip
    assert not state.flagged
    late = apply(state, phone(40, "FLAGGED", reason="QUALITY_DECREASE"))  # newest: in order
    assert (late.state.flagged, late.reordered) == (True, False)
    earlier = apply(state, phone(20, "FLAGGED", reason="Y"))  # before the unflagging
    assert (earlier.state.flagged, earlier.reordered) == (False, True)


def test_a_flag_a_late_event_shows_was_no_change_keeps_its_alert() -> None:
    # Flag alerts name their event: a late event never withdraws them.
    flagged = phone(10, "FLAGGED", reason="X")
    state, sent, _ = run([flagged])
    late = apply(state, phone(5, "FLAGGED", reason="X"))
    assert WITHDRAWN not in {a.type for a in late.alerts}
    assert standing([*sent, *late.alerts]) >= {sent[0].alert_id}


_TIERS = ("TIER_50", "TIER_250", "TIER_1K", "TIER_2K", "TIER_10K", "UNLIMITED", "TIER_NEW")
_minutes = st.integers(0, 240)
phone_events = st.one_of(
    st.builds(phone, _minutes, st.sampled_from(["UPGRADE", "DOWNGRADE", "ONBOARDING"]),
              st.sampled_from(_TIERS), st.sampled_from([None, *_TIERS])),
    st.builds(phone, _minutes, st.sampled_from(["FLAGGED", "UNFLAGGED"]),
              reason=st.sampled_from([None, "QUALITY_DECREASE"])),
    # An old body: only the deprecated currentLimit, no event.
    st.builds(phone, _minutes, st.none(), st.sampled_from(_TIERS)),
)  # fmt: skip


@st.composite
def arrivals(draw: st.DrawFn) -> tuple[list[PhoneEvent], list[PhoneEvent]]:
    """A story and the order it arrives in: a permutation with duplicates and retries."""
    story = draw(st.lists(phone_events, min_size=1, max_size=14))
    arriving = list(draw(st.permutations(story)))
    for _ in range(draw(st.integers(0, 6))):
        copy = draw(st.sampled_from(story))
        if draw(st.booleans()):
            copy = replace(copy, received_at=at(1000))  # a retry
        arriving.insert(draw(st.integers(0, len(arriving))), copy)
    return story, arriving


@settings(max_examples=500, deadline=None)
@given(arrivals())
def test_any_order_and_repetition_gives_the_state_and_alerts_of_event_time_order(
    arrival: tuple[list[PhoneEvent], list[PhoneEvent]],
) -> None:
    story, arriving = arrival
    state, sent, outcomes = run(arriving)
    ordered, in_order, _ = run(in_event_time(story))
    assert phone_state_value(state) == phone_state_value(ordered)
    assert state.history.events == ordered.history.events
    assert conditions(standing(sent)) == standing(in_order)
    assert all(a.supersedes == () for a in in_order)
    assert_well_formed(sent)
    assert sum(o.ignored == "duplicate" for o in outcomes) == len(arriving) - len(story)


@settings(max_examples=200, deadline=None)
@given(story=st.lists(phone_events, min_size=1, max_size=20), events=st.integers(1, 5))
def test_eviction_keeps_the_state_of_the_whole_fold(story: list[PhoneEvent], events: int) -> None:
    state, _, outcomes = run(story, bounds=Bounds(events=events))
    taken = [item for item, o in zip(story, outcomes, strict=True) if o.ignored is None]
    assert phone_state_value(state) == phone_state_value(run(in_event_time(taken))[0])
    assert len(state.history.events) <= events


def test_the_stored_state_loads_back_whole() -> None:
    story = [phone(m, "UPGRADE", tier) for m, tier in ((30, "TIER_10K"), (0, "TIER_1K"))]
    state, _, _ = run([*story, phone(20, "FLAGGED", reason="X"), phone(40, None, "TIER_2K")],
                      bounds=Bounds(events=3))  # fmt: skip
    assert state.history.base is not None
    assert _load(NUMBER, orjson.dumps(state)) == state
