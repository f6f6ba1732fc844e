"""A template's state and alerts depend on the set of its events, not on the order they
arrive in (issue 21): late events, corrections of alerts, the history's bounds. No Kafka."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from alert_corrections import assert_well_formed, conditions, standing
from hypothesis import given, settings
from hypothesis import strategies as st
from typed_events import TEMPLATE_ID as TEMPLATE
from typed_events import template_event

from processors.alerts import WITHDRAWN, Alert
from processors.event_order import identity
from processors.history import Bounds
from processors.normalize import canonical
from processors.normalize.records import TemplateEvent
from processors.templates.app import _load
from processors.templates.rules import (
    Outcome,
    StrikePolicy,
    TemplateState,
    apply,
    end_pause,
    template_state_value,
)

POLICY = StrikePolicy()
BASE = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def at(hours: float) -> str:
    return canonical.format_timestamp(BASE + timedelta(hours=hours))


def event(hours: float, **fields: object) -> TemplateEvent:
    return template_event(at(hours), **fields)


def quality(hours: float, previous: str | None, new: str) -> TemplateEvent:
    return event(hours, previous_quality=previous, new_quality=new)


def status(hours: float, value: str, title: str | None = None) -> TemplateEvent:
    return event(hours, event_type="template_status_update", status=value, other_info_title=title)


def category(hours: float, previous: str | None, new: str) -> TemplateEvent:
    return event(hours, event_type="template_category_update", previous_category=previous,
                 new_category=new)  # fmt: skip


Tick = str  # the timer's `now`
Step = TemplateEvent | Tick


def run(
    steps: list[Step], state: TemplateState | None = None, bounds: Bounds | None = None
) -> tuple[TemplateState, list[Alert], list[Outcome]]:
    """The worker's fold: each event applied, each tick ended pauses; what it sent."""
    state = state or TemplateState(TEMPLATE)
    sent: list[Alert] = []
    outcomes: list[Outcome] = []
    for item in steps:
        if isinstance(item, str):
            outcome = end_pause(state, item)
        elif bounds is None:
            outcome = apply(state, item, POLICY)
        else:
            outcome = apply(state, item, POLICY, bounds)
        state = outcome.state
        sent += outcome.alerts
        outcomes.append(outcome)
    return state, sent, outcomes


def in_event_time(events: list[TemplateEvent]) -> list[TemplateEvent]:
    return sorted(events, key=lambda item: (item.occurred_at, identity(item)))


def record(state: TemplateState) -> dict[str, object]:
    return template_state_value(state)


# --- the story of issue 21 ----------------------------------------------------------------------
STORY = [
    quality(0, None, "GREEN"),
    quality(1, "GREEN", "RED"),  # strike 1: paused until 4
    quality(5, "RED", "YELLOW"),  # the pause ended at 4
    quality(6, "YELLOW", "RED"),  # strike 2: paused until 12
    quality(20, "RED", "GREEN"),  # the pause ended at 12
    quality(21, "GREEN", "RED"),  # strike 3: disabled
]
STORY_STANDING = {
    f"TEMPLATE_QUALITY_RED|{TEMPLATE}|strike-1|{at(1)}",
    f"TEMPLATE_UNPAUSED|{TEMPLATE}|{at(4)}",
    f"TEMPLATE_QUALITY_RED|{TEMPLATE}|strike-2|{at(6)}",
    f"TEMPLATE_UNPAUSED|{TEMPLATE}|{at(12)}",
    f"TEMPLATE_QUALITY_RED|{TEMPLATE}|strike-3|{at(21)}",
}


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(STORY)))))
def test_the_six_event_story_ends_with_three_strikes_in_any_order(order: tuple[int, ...]) -> None:
    state, sent, _ = run([STORY[n] for n in order])
    assert (state.red_strikes, state.disabled, state.paused_until) == (3, True, None)
    assert (state.quality, state.updated_at) == ("RED", at(21))
    assert standing(sent) == STORY_STANDING
    assert_well_formed(sent)
    strikes = {a.details["strike"]: a.details for a in sent if a.alert_id in STORY_STANDING
               and a.type == "TEMPLATE_QUALITY_RED"}  # fmt: skip
    assert [(strikes[n]["action"], strikes[n]["pausedUntil"]) for n in (1, 2, 3)] == [
        ("PAUSE", at(4)), ("PAUSE", at(12)), ("DISABLE", None)]  # fmt: skip


def test_in_event_time_the_story_sends_no_correction() -> None:
    _, sent, outcomes = run(STORY)
    assert {a.alert_id for a in sent} == STORY_STANDING
    assert all(a.supersedes == () for a in sent)
    assert not any(o.reordered for o in outcomes)


# --- corrections -------------------------------------------------------------------------------
def test_a_late_drop_renumbers_a_strike_with_a_correction_and_a_replay_sends_nothing() -> None:
    first, later = quality(1, "GREEN", "RED"), quality(10, "GREEN", "RED")
    state, sent, _ = run([later])
    assert [a.alert_id for a in sent] == [f"TEMPLATE_QUALITY_RED|{TEMPLATE}|strike-1|{at(10)}"]
    late = apply(state, first, POLICY)
    assert late.reordered
    renumbered = next(a for a in late.alerts if a.occurred_at == at(10))
    assert renumbered.alert_id == f"TEMPLATE_QUALITY_RED|{TEMPLATE}|strike-2|{at(10)}"
    assert renumbered.supersedes == (sent[0].alert_id,)
    assert (renumbered.details["strike"], renumbered.details["pauseHours"]) == (2, 6)
    assert WITHDRAWN not in {a.type for a in late.alerts}  # replaced, not withdrawn
    replayed, again, outcomes = run([later, first, later], late.state)
    assert (replayed, again) == (late.state, [])
    assert [o.ignored for o in outcomes] == ["duplicate"] * 3


def test_an_alert_a_late_event_shows_wrong_is_withdrawn() -> None:
    strike = quality(5, "GREEN", "RED")
    state, sent, _ = run([strike])
    late = apply(state, status(1, "DISABLED", "DISABLED"), POLICY)  # disabled before the drop
    (disabled, withdrawal) = late.alerts
    assert disabled.type == "TEMPLATE_DISABLED"
    assert (withdrawal.type, withdrawal.severity) == (WITHDRAWN, "info")
    assert withdrawal.alert_id == f"{WITHDRAWN}|{TEMPLATE}|{sent[0].alert_id}"
    assert withdrawal.supersedes == (sent[0].alert_id,)
    assert (withdrawal.occurred_at, withdrawal.subject["templateId"]) == (at(5), TEMPLATE)
    assert withdrawal.details["withdrawnType"] == "TEMPLATE_QUALITY_RED"
    assert withdrawal.details["causeOccurredAt"] == at(1)
    assert (late.state.red_strikes, late.state.disabled) == (3, True)


def test_a_pause_the_timer_ended_survives_re_derivation_and_a_prolonged_one_is_withdrawn() -> None:
    state, sent, _ = run([quality(0, "GREEN", "RED"), at(3.5)])  # strike 1; the timer, at 3.5
    unpaused = f"TEMPLATE_UNPAUSED|{TEMPLATE}|{at(3)}"
    assert sent[-1].alert_id == unpaused
    assert state.paused_until is None
    kept, nothing, _ = run([status(2, "APPROVED")], state)  # within the pause: ends it no less
    assert (kept.paused_until, nothing) == (None, [])
    # A late second strike at 2 prolongs the pause to 8: the end at 3 never was.
    late = apply(state, quality(2, "GREEN", "RED"), POLICY)
    assert late.state.paused_until == at(8)
    withdrawal = next(a for a in late.alerts if a.type == WITHDRAWN)
    assert withdrawal.supersedes == (unpaused,)
    assert standing([*sent, *late.alerts]) == {
        f"TEMPLATE_QUALITY_RED|{TEMPLATE}|strike-1|{at(0)}",
        f"TEMPLATE_QUALITY_RED|{TEMPLATE}|strike-2|{at(2)}",
    }


def test_a_condition_raised_again_after_its_withdrawal_gets_a_fresh_id() -> None:
    red_5, red_1 = quality(5, "GREEN", "RED"), quality(1, "GREEN", "RED")
    metas_first = status(3, "PAUSED", "FIRST_PAUSE")  # Meta counts 1 at 3: the drop at 5 is #2
    red_0 = quality(0, "GREEN", "RED")
    state, sent, _ = run([red_5, red_1, red_0, metas_first])
    again = f"TEMPLATE_QUALITY_RED|{TEMPLATE}|strike-2|{at(5)}|again-1"
    assert again in standing(sent)
    assert_well_formed(sent)
    ordered, in_order, _ = run(in_event_time([red_5, red_1, red_0, metas_first]))
    assert record(state) == record(ordered)
    assert conditions(standing(sent)) == standing(in_order)


# --- any order, any repetition ------------------------------------------------------------------
_SCORES = (None, "GREEN", "YELLOW", "RED", "UNKNOWN")
_TITLES = (None, "FIRST_PAUSE", "SECOND_PAUSE", "DISABLED", "UNPAUSE", "RATE_LIMITING_PAUSE")
_hours = st.integers(0, 96).map(lambda quarter: quarter / 4)  # ties, and pauses ending between
template_events = st.one_of(
    st.builds(quality, _hours, st.sampled_from(_SCORES), st.sampled_from(_SCORES[1:])),
    st.builds(quality, _hours, st.sampled_from(_SCORES), st.sampled_from(_SCORES[1:])),
    st.builds(status, _hours, st.sampled_from(["PAUSED", "DISABLED", "REJECTED", "FLAGGED",
                                                "APPROVED"]), st.sampled_from(_TITLES)),
    st.builds(category, _hours, st.sampled_from([None, "UTILITY", "MARKETING"]),
              st.sampled_from(["UTILITY", "MARKETING", "AUTHENTICATION"])),
)  # fmt: skip


@st.composite
def arrivals(draw: st.DrawFn) -> tuple[list[TemplateEvent], list[Step], list[Tick]]:
    """A story, the order it arrives in (a permutation, with repetitions: duplicates,
    retries received later, and the timer's ticks between), and the ticks."""
    story = draw(st.lists(template_events, min_size=1, max_size=14))
    arriving: list[Step] = list(draw(st.permutations(story)))
    for _ in range(draw(st.integers(0, 6))):
        copy = draw(st.sampled_from(story))
        if draw(st.booleans()):
            copy = replace(copy, received_at=at(200))  # a retry
        arriving.insert(draw(st.integers(0, len(arriving))), copy)
    ticks = draw(st.lists(_hours.map(at), max_size=3))
    for tick in ticks:
        arriving.insert(draw(st.integers(0, len(arriving))), tick)
    return story, arriving, ticks


@settings(max_examples=500, deadline=None)
@given(arrivals())
def test_any_order_and_repetition_gives_the_state_and_alerts_of_event_time_order(
    arrival: tuple[list[TemplateEvent], list[Step], list[Tick]],
) -> None:
    story, arriving, ticks = arrival
    final = at(100) if not ticks else max([*ticks, at(100)])  # the timer goes on past them all
    state, sent, outcomes = run([*arriving, final])
    ordered, in_order, _ = run([*in_event_time(story), final])
    assert record(state) == record(ordered)
    assert state.history.events == ordered.history.events
    assert conditions(standing(sent)) == standing(in_order)
    assert conditions(s.alert_id for s in state.history.standing) == standing(in_order)
    assert all(a.supersedes == () for a in in_order)  # in order: nothing to correct
    assert_well_formed(sent)
    repeats = sum(isinstance(item, TemplateEvent) for item in arriving) - len(story)
    assert sum(o.ignored == "duplicate" for o in outcomes) == repeats


# --- the history's bounds ----------------------------------------------------------------------
def test_an_event_older_than_the_base_is_stale_and_one_after_it_is_placed() -> None:
    bounds = Bounds(events=3)
    story = [quality(hours, "GREEN", "RED" if hours % 2 else "GREEN") for hours in range(6)]
    state, _, _ = run(story, bounds=bounds)
    assert [held.at for held in state.history.events] == [at(3), at(4), at(5)]
    assert state.history.base_at == at(2)
    stale = apply(state, quality(1.5, "GREEN", "RED"), POLICY, bounds)
    assert (stale.ignored, stale.state, stale.alerts) == ("stale", state, ())
    assert apply(state, story[2], POLICY, bounds).ignored == "duplicate"  # the base's newest
    placed = apply(state, quality(2.5, "GREEN", "YELLOW"), POLICY, bounds)
    assert (placed.ignored, placed.reordered) == (None, True)


def test_events_older_than_the_age_bound_leave_the_history() -> None:
    bounds = Bounds(days=1)
    state, _, _ = run([quality(0, None, "GREEN"), quality(30, "GREEN", "RED")], bounds=bounds)
    assert [held.at for held in state.history.events] == [at(30)]
    assert apply(state, quality(-1, None, "RED"), POLICY, bounds).ignored == "stale"


@settings(max_examples=300, deadline=None)
@given(story=st.lists(template_events, min_size=1, max_size=20), events=st.integers(1, 6))
def test_eviction_keeps_the_state_of_the_whole_fold(
    story: list[TemplateEvent], events: int
) -> None:
    """Whatever the order: the state is the fold of every event not refused as stale, in
    event time; in event time, none is refused."""
    state, _, outcomes = run(story, bounds=Bounds(events=events))
    taken = [item for item, o in zip(story, outcomes, strict=True) if o.ignored is None]
    assert record(state) == record(run(in_event_time(taken))[0])
    assert len(state.history.events) <= events
    ordered_story = in_event_time(story)
    ordered, _, outcomes = run(ordered_story, bounds=Bounds(events=events))
    assert not any(o.ignored == "stale" for o in outcomes)
    assert record(ordered) == record(run(ordered_story)[0])


# --- the table ---------------------------------------------------------------------------------
def test_the_stored_state_loads_back_whole() -> None:
    state, _, _ = run([STORY[n] for n in (3, 0, 5, 1, 4, 2)], bounds=Bounds(events=4))
    state = run([at(30)], state)[0]
    assert state.history.base is not None
    assert state.history.standing
    assert _load(TEMPLATE, orjson.dumps(state)) == state


def test_a_state_stored_before_the_history_becomes_its_base() -> None:
    old = {
        "template_id": TEMPLATE, "template_name": "spring_sale_2026", "template_language": "en_US",
        "business_account_id": None, "status": "PAUSED", "quality": "RED", "category": None,
        "red_strikes": 1, "paused_until": at(4), "disabled": False, "disable_date": None,
        "applied": {"at": at(1), "event_ids": ["e-1|0011223344556677"]},
    }  # fmt: skip
    state = _load(TEMPLATE, orjson.dumps(old))
    assert (state.red_strikes, state.updated_at, state.history.events) == (1, at(1), ())
    assert apply(state, quality(0.5, "GREEN", "RED"), POLICY).ignored == "stale"
    later = apply(state, quality(5, "RED", "GREEN"), POLICY)
    assert [a.type for a in later.alerts] == ["TEMPLATE_UNPAUSED"]
    assert (later.state.red_strikes, later.state.updated_at) == (1, at(5))
