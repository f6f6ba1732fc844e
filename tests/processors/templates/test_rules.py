"""Template strikes, pauses and alerts as plain functions (no Kafka)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import reduce

from hypothesis import given, settings
from hypothesis import strategies as st
from typed_events import template_event

from processors.alerts import Alert
from processors.event_order import identity
from processors.normalize import canonical
from processors.normalize.records import TemplateEvent
from processors.templates.rules import (
    Outcome,
    StrikePolicy,
    TemplateState,
    apply,
    end_pause,
)

POLICY = StrikePolicy()
BASE = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def at(hours: float) -> str:
    return canonical.format_timestamp(BASE + timedelta(hours=hours))


def event(hours: float, **fields: object) -> TemplateEvent:
    return template_event(at(hours), **fields)


def quality(hours: float, previous: str, new: str, **fields: object) -> TemplateEvent:
    return event(hours, previous_quality=previous, new_quality=new, **fields)


def status(hours: float, value: str, title: str | None = None, **fields: object) -> TemplateEvent:
    return event(hours, event_type="template_status_update", status=value,
                 other_info_title=title, **fields)  # fmt: skip


def run(events: list[TemplateEvent]) -> tuple[TemplateState, list[Alert], list[Outcome]]:
    state, alerts, outcomes = TemplateState("951847263015"), [], []
    for item in events:
        outcome = apply(state, item, POLICY)
        state = outcome.state
        alerts += outcome.alerts
        outcomes.append(outcome)
    return state, alerts, outcomes


def types(alerts: list[Alert]) -> list[str]:
    return [alert.type for alert in alerts]


# --- the three strikes -------------------------------------------------------------------------
def test_three_drops_to_red_pause_3_h_then_6_h_then_disable() -> None:
    story = [quality(0, "GREEN", "RED"), quality(4, "RED", "GREEN"), quality(5, "GREEN", "RED"),
             quality(12, "RED", "YELLOW"), quality(13, "YELLOW", "RED")]  # fmt: skip
    state, alerts, _ = run(story)
    red = [alert for alert in alerts if alert.type == "TEMPLATE_QUALITY_RED"]
    assert [a.details["strike"] for a in red] == [1, 2, 3]
    assert [a.details["action"] for a in red] == ["PAUSE", "PAUSE", "DISABLE"]
    assert [a.details["pauseHours"] for a in red] == [3, 6, None]
    assert [a.details["pausedUntil"] for a in red] == [at(3), at(11), None]
    assert [a.severity for a in red] == ["warning", "critical", "critical"]
    assert "One more RED disables it" in red[1].summary
    assert (state.red_strikes, state.disabled, state.paused_until) == (3, True, None)
    assert len({alert.alert_id for alert in alerts}) == len(alerts)


def test_red_to_red_and_a_duplicate_add_no_strike_and_a_late_drop_counts_in_event_time() -> None:
    first = quality(1, "GREEN", "RED")
    state, alerts, outcomes = run([first, first, quality(2, "RED", "RED"), first])
    assert state.red_strikes == 1
    assert types(alerts) == ["TEMPLATE_QUALITY_RED"]
    assert [o.ignored for o in outcomes] == [None, "duplicate", None, "duplicate"]
    # A drop older than the state is no stale news: it is the first strike, `first` the second.
    late = apply(state, quality(0.5, "YELLOW", "RED"), POLICY)
    assert (late.ignored, late.reordered, late.state.red_strikes) == (None, True, 2)
    assert [(a.details["strike"], a.occurred_at, a.supersedes) for a in late.alerts] == [
        (1, at(0.5), ()),
        (2, at(1), (alerts[0].alert_id,)),
    ]


def test_events_at_the_same_time_are_all_applied() -> None:
    # Ordered by identity at the same time: ids that sort in the order they are sent.
    red = quality(1, "GREEN", "RED", event_id="same-time-a")
    state, alerts, _ = run([red, status(1, "PAUSED", "FIRST_PAUSE", event_id="same-time-b")])
    assert types(alerts) == ["TEMPLATE_QUALITY_RED", "TEMPLATE_PAUSED"]
    assert (state.status, state.red_strikes) == ("PAUSED", 1)


def test_a_red_drop_after_the_template_is_disabled_adds_nothing() -> None:
    state, alerts, _ = run([status(0, "DISABLED", "DISABLED"), quality(1, "GREEN", "RED")])
    assert state.red_strikes == 3
    assert types(alerts) == ["TEMPLATE_DISABLED"]


def test_the_durations_and_the_count_are_configurable() -> None:
    policy = StrikePolicy(pause_hours=(1, 2, 4), disabling_strike=4)
    state = TemplateState("t")
    for hours in (0, 10, 20):
        state = apply(state, quality(hours, "GREEN", "RED"), policy).state
        state = apply(state, quality(hours + 5, "RED", "GREEN"), policy).state
    assert (state.red_strikes, state.disabled) == (3, False)
    outcome = apply(state, quality(30, "GREEN", "RED"), policy)
    assert outcome.state.disabled
    assert outcome.alerts[0].details["action"] == "DISABLE"


# --- Meta's count ------------------------------------------------------------------------------
def test_metas_count_is_the_truth_when_it_disagrees() -> None:
    # Our first RED event was lost: Meta says SECOND_PAUSE while we count 1.
    _, _, outcomes = run([quality(0, "GREEN", "RED"), status(0.1, "PAUSED", "SECOND_PAUSE")])
    outcome = outcomes[-1]
    assert outcome.disagreement is not None
    assert (outcome.disagreement.ours, outcome.disagreement.metas) == (1, 2)
    assert (outcome.state.red_strikes, outcome.state.paused_until) == (2, at(6.1))
    assert outcome.alerts[0].details["pausedUntil"] == at(6.1)


def test_agreement_rate_limiting_and_unpause_report_no_disagreement() -> None:
    _, _, outcomes = run([quality(0, "GREEN", "RED"), status(0.1, "PAUSED", "FIRST_PAUSE"),
                          status(1, "PAUSED", "RATE_LIMITING_PAUSE"),
                          status(2, "PAUSED", "UNPAUSE")])  # fmt: skip
    assert all(outcome.disagreement is None for outcome in outcomes)
    assert outcomes[-1].state.red_strikes == 1
    assert outcomes[-1].state.paused_until is None


def test_metas_count_neither_revives_a_disabled_template_nor_comes_with_other_statuses() -> None:
    state, _, outcomes = run([status(0, "DISABLED", "DISABLED"), status(1, "PAUSED", "FIRST_PAUSE"),
                              status(2, "APPROVED", "FIRST_PAUSE")])  # fmt: skip
    assert (state.red_strikes, state.disabled, state.paused_until) == (3, True, None)
    assert [o.disagreement is None for o in outcomes] == [False, True, True]
    approved, _, outcomes = run([quality(0, "GREEN", "RED"), status(1, "APPROVED", "SECOND_PAUSE")])
    assert approved.red_strikes == 1
    assert outcomes[-1].disagreement is None


def test_two_events_at_the_same_time_raise_two_alerts() -> None:
    _, alerts, _ = run([status(1, "PAUSED", "FIRST_PAUSE"),
                        status(1, "PAUSED", "RATE_LIMITING_PAUSE")])  # fmt: skip
    assert len({alert.alert_id for alert in alerts}) == 2


# --- the other alerts ----------------------------------------------------------------------------
def test_degraded_flagged_rejected_disabled_and_category_alerts() -> None:
    state, alerts, _ = run([
        quality(0, "GREEN", "YELLOW"),
        status(1, "FLAGGED", disable_date="2026-12-02"),
        status(2, "REJECTED", reason="INCORRECT_CATEGORY"),
        event(3, event_type="template_category_update", previous_category="UTILITY",
              new_category="MARKETING"),
        status(4, "DISABLED", "DISABLED"),
    ])  # fmt: skip
    assert types(alerts) == ["TEMPLATE_QUALITY_DEGRADED", "TEMPLATE_FLAGGED", "TEMPLATE_REJECTED",
                             "TEMPLATE_CATEGORY_CHANGED", "TEMPLATE_DISABLED"]  # fmt: skip
    flagged, rejected, category = alerts[1], alerts[2], alerts[3]
    assert flagged.details["disableDate"] == "2026-12-02"
    assert rejected.details["reason"] == "INCORRECT_CATEGORY"
    assert (category.details["previousCategory"], category.details["newCategory"]) == (
        "UTILITY", "MARKETING",
    )  # fmt: skip
    assert alerts[4].severity == "critical"
    assert (state.category, state.disable_date, state.disabled) == ("MARKETING", "2026-12-02", True)


def test_a_recovery_and_an_advisory_raise_nothing() -> None:
    _, alerts, _ = run([quality(0, "YELLOW", "GREEN"),
                        event(1, event_type="template_correct_category_detection",
                              category="UTILITY", correct_category="MARKETING")])  # fmt: skip
    assert alerts == []


def test_the_timer_ends_a_pause_once() -> None:
    state, _, _ = run([quality(0, "GREEN", "RED")])
    assert end_pause(state, at(2.9)).state == state
    ended = end_pause(state, at(3))
    assert ended.state.paused_until is None
    assert [(a.type, a.severity) for a in ended.alerts] == [("TEMPLATE_UNPAUSED", "info")]
    assert end_pause(ended.state, at(4)).alerts == ()


# --- properties ---------------------------------------------------------------------------------
_SCORES = ("GREEN", "YELLOW", "RED", "UNKNOWN")
_STATUSES = ("APPROVED", "PAUSED", "DISABLED", "REJECTED", "FLAGGED", "PENDING")
_TITLES = (None, "FIRST_PAUSE", "SECOND_PAUSE", "DISABLED", "UNPAUSE", "RATE_LIMITING_PAUSE")

quality_events = st.builds(lambda h, p, n: quality(h, p, n), st.integers(0, 48),
                           st.sampled_from(_SCORES), st.sampled_from(_SCORES))  # fmt: skip
status_events = st.builds(lambda h, s, t: status(h, s, t), st.integers(0, 48),
                          st.sampled_from(_STATUSES), st.sampled_from(_TITLES))  # fmt: skip
stories = st.lists(st.one_of(quality_events, status_events), min_size=1, max_size=25)


@settings(max_examples=400, deadline=None)
@given(story=stories, seed=st.integers(0, 2**32 - 1))
def test_repetitions_change_nothing(story: list[TemplateEvent], seed: int) -> None:
    """Any repetition of the same events (a retry: received again later; a replay after a
    crash) gives the same strikes, pauses, state and alert ids. Late events are no
    repetitions: test_order.py."""
    rng = random.Random(seed)
    state, alerts, _ = run(story)
    noisy: list[TemplateEvent] = []
    for item in story:
        noisy.append(item)
        for _ in range(rng.randint(0, 2)):
            earlier = rng.choice(noisy)
            if rng.random() < 0.5:  # a retry: only its receive time differs
                earlier = replace(earlier, received_at=at(48 + rng.random()))
            noisy.append(earlier)
    noisy_state, noisy_alerts, outcomes = run(noisy)
    assert noisy_state == state
    assert [a.alert_id for a in noisy_alerts] == [a.alert_id for a in alerts]
    assert sum(o.ignored == "duplicate" for o in outcomes) == len(noisy) - len(set(story))


@settings(max_examples=400, deadline=None)
@given(story=stories)
def test_strikes_stay_within_the_rule(story: list[TemplateEvent]) -> None:
    story = sorted(story, key=lambda item: (item.occurred_at, identity(item)))  # in event time
    state, _, outcomes = run(story)
    assert 0 <= state.red_strikes <= POLICY.disabling_strike
    last = 0  # each strike alerted once and in order, until Meta's count corrects ours
    for outcome in outcomes:
        if outcome.disagreement is not None:
            last = outcome.state.red_strikes
        for alert in outcome.alerts:
            if alert.type == "TEMPLATE_QUALITY_RED":
                assert alert.details["strike"] == last + 1
                last += 1
    if state.red_strikes >= POLICY.disabling_strike:
        assert state.disabled
        assert state.paused_until is None
    final = reduce(lambda s, e: apply(s, e, POLICY).state, story, TemplateState("951847263015"))
    assert final == state
