"""The state of one message template and the alerts its events raise: pure functions.

Meta's pause rule ("3 strikes"): each drop to RED from another score is a strike;
strike 1 pauses the template for 3 hours, strike 2 for 6 hours, strike 3
disables it for good (durations and count: `StrikePolicy`). What adds no strike:
a RED event whose previous score was already RED, a duplicate, and an event
older than the state already holds (events are applied in event time; a late
older one is stale news, counted and otherwise ignored). So re-delivery after a
crash, sender retries and late old events never change strikes, pauses or alerts.

Meta's own count arrives with PAUSED/DISABLED statuses as `otherInfo.title`
(FIRST_PAUSE, SECOND_PAUSE, DISABLED; UNPAUSE ends a pause; RATE_LIMITING_PAUSE
is no strike). Where it disagrees with ours, Meta's is the truth: the state takes
it and the outcome reports the disagreement (the worker logs and counts it).

Every alert has a deterministic id built from the condition it reports (the
template, the alert type, the event time, and for a strike its number), so the
same condition gives the same id whenever it is computed again, and a strike
reached again after Meta corrected our count is a new alert.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from processors.alerts import Alert, Severity, make_id
from processors.event_order import NOTHING, Applied, arrival
from processors.normalize import canonical
from processors.normalize.records import TemplateEvent

RED = "RED"
_META_STRIKES = {"FIRST_PAUSE": 1, "SECOND_PAUSE": 2, "DISABLED": 3}
_UNPAUSE = "UNPAUSE"
_COUNTING_STATUSES = frozenset({"PAUSED", "DISABLED"})  # the statuses carrying Meta's count
_SCORE_RANK = {"GREEN": 3, "YELLOW": 2, RED: 1}


@dataclass(frozen=True)
class StrikePolicy:
    """Meta's rule, configurable: pause hours of strikes 1, 2, ...; the strike that disables."""

    pause_hours: tuple[int, ...] = (3, 6)
    disabling_strike: int = 3


@dataclass(frozen=True)
class TemplateState:
    """The record of `whatsapp.template_state` (snake_case here, camelCase on the topic)."""

    template_id: str
    template_name: str | None = None
    template_language: str | None = None
    business_account_id: str | None = None
    status: str | None = None
    quality: str | None = None
    category: str | None = None
    red_strikes: int = 0
    paused_until: str | None = None
    disabled: bool = False
    disable_date: str | None = None
    applied: Applied = NOTHING  # the latest event time applied (`updatedAt`), its ids

    @property
    def updated_at(self) -> str | None:
        return self.applied.at


@dataclass(frozen=True)
class Disagreement:
    """Meta's strike count (`otherInfo.title`) differs from ours; Meta's was taken."""

    ours: int
    metas: int
    title: str


@dataclass(frozen=True)
class Outcome:
    state: TemplateState
    alerts: tuple[Alert, ...] = ()
    disagreement: Disagreement | None = None
    ignored: str | None = None  # "duplicate" or "stale" when the event changed nothing


def apply(state: TemplateState, event: TemplateEvent, policy: StrikePolicy) -> Outcome:
    """`state` after `event`, with the alerts it raises."""
    news = arrival(event)
    refusal = state.applied.refuses(news)
    if news is None or refusal is not None:
        return Outcome(state, ignored=refusal)
    at, occurrence = news.at, news.occurrence
    state = replace(
        state,
        template_name=event.template_name or state.template_name,
        template_language=event.template_language or state.template_language,
        business_account_id=event.business_account_id or state.business_account_id,
        applied=state.applied.plus(news),
    )
    if event.new_quality is not None:
        return _quality(state, event, at, occurrence, policy)
    if event.status is not None:
        return _status(state, event, at, occurrence, policy)
    if event.new_category is not None:
        return _category(state, event, at, occurrence)
    return Outcome(state)  # advisory (correct category detection): kept, no alert


def end_pause(state: TemplateState, now: str) -> Outcome:
    """The timer's rule: a pause whose end has come is over (one info alert)."""
    if state.paused_until is None or state.disabled or state.paused_until > now:
        return Outcome(state)
    ended = state.paused_until
    alert = _alert(
        state,
        "TEMPLATE_UNPAUSED",
        "info",
        ended,
        key=ended,
        summary=f"{_name(state)}: its pause ended at {ended}.",
        details={"pausedUntil": ended, "redStrikes": state.red_strikes},
    )
    return Outcome(replace(state, paused_until=None), (alert,))


# --- per event type --------------------------------------------------------------------------
def _quality(
    state: TemplateState, event: TemplateEvent, at: str, occurrence: str, policy: StrikePolicy
) -> Outcome:
    previous = event.previous_quality or state.quality
    new = event.new_quality
    state = replace(state, quality=new)
    if new == RED and previous != RED:
        if state.disabled or state.red_strikes >= policy.disabling_strike:
            return Outcome(state)  # disabled already: nothing left to strike
        return _strike(state, state.red_strikes + 1, at, policy, previous)
    if previous is not None and new is not None and _worse(previous, new) and new != RED:
        alert = _alert(
            state,
            "TEMPLATE_QUALITY_DEGRADED",
            "warning",
            at,
            key=occurrence,
            summary=f"{_name(state)}: quality dropped from {previous} to {new}.",
            details={"previousQuality": previous, "newQuality": new},
        )
        return Outcome(state, (alert,))
    return Outcome(state)


def _strike(
    state: TemplateState, strike: int, at: str, policy: StrikePolicy, previous: str | None
) -> Outcome:
    disables = strike >= policy.disabling_strike
    hours = None if disables else policy.pause_hours[min(strike, len(policy.pause_hours)) - 1]
    paused_until = None if hours is None else _plus_hours(at, hours)
    state = replace(state, red_strikes=strike, paused_until=paused_until, disabled=disables)
    if disables:
        summary = f"{_name(state)}: quality RED, strike {strike}: the template is disabled."
    else:
        summary = (
            f"{_name(state)}: quality RED, strike {strike}: paused {hours} h until {paused_until}."
        )
        if strike == policy.disabling_strike - 1:
            summary += " One more RED disables it for good."
    alert = _alert(
        state,
        "TEMPLATE_QUALITY_RED",
        "warning" if strike == 1 else "critical",
        at,
        key=f"strike-{strike}|{at}",
        summary=summary,
        details={
            "strike": strike,
            "action": "DISABLE" if disables else "PAUSE",
            "pauseHours": hours,
            "pausedUntil": paused_until,
            "previousQuality": previous,
            "strikesToDisable": policy.disabling_strike,
        },
    )
    return Outcome(state, (alert,))


def _status(
    state: TemplateState, event: TemplateEvent, at: str, occurrence: str, policy: StrikePolicy
) -> Outcome:
    status = event.status
    state = replace(state, status=status)
    title = event.other_info_title
    disagreement = None
    metas = _META_STRIKES.get(title or "") if status in _COUNTING_STATUSES else None
    if metas is not None and metas != state.red_strikes and not state.disabled:
        disagreement = Disagreement(state.red_strikes, metas, title or "")
        disables = metas >= policy.disabling_strike
        hours = None if disables else policy.pause_hours[min(metas, len(policy.pause_hours)) - 1]
        state = replace(
            state,
            red_strikes=metas,
            disabled=state.disabled or disables,
            paused_until=None if hours is None else _plus_hours(at, hours),
        )
    if title == _UNPAUSE and status in _COUNTING_STATUSES:
        state = replace(state, paused_until=None)
    alerts: list[Alert] = []
    details: dict[str, object] = {
        "reason": event.reason,
        "title": title,
        "description": event.other_info_description,
    }
    if status == "PAUSED":
        alerts.append(
            _alert(
                state,
                "TEMPLATE_PAUSED",
                "warning",
                at,
                key=occurrence,
                summary=f"{_name(state)} is paused ({title or 'no reason given'}).",
                details={**details, "pausedUntil": state.paused_until},
            )
        )
    elif status == "DISABLED":
        state = replace(state, disabled=True, paused_until=None)
        alerts.append(
            _alert(
                state,
                "TEMPLATE_DISABLED",
                "critical",
                at,
                key=occurrence,
                summary=f"{_name(state)} is disabled for good.",
                details=details,
            )
        )
    elif status == "REJECTED":
        alerts.append(
            _alert(
                state,
                "TEMPLATE_REJECTED",
                "warning",
                at,
                key=occurrence,
                summary=f"{_name(state)} was rejected ({event.reason or 'no reason'}).",
                details=details,
            )
        )
    elif status == "FLAGGED":
        state = replace(state, disable_date=event.disable_date)
        alerts.append(
            _alert(
                state,
                "TEMPLATE_FLAGGED",
                "warning",
                at,
                key=occurrence,
                summary=f"{_name(state)} is flagged: it will be disabled on "
                f"{event.disable_date or 'an unknown date'} unless quality recovers.",
                details={**details, "disableDate": event.disable_date},
            )
        )
    return Outcome(state, tuple(alerts), disagreement)


def _category(state: TemplateState, event: TemplateEvent, at: str, occurrence: str) -> Outcome:
    previous = event.previous_category or state.category
    state = replace(state, category=event.new_category)
    if previous == event.new_category:
        return Outcome(state)
    alert = _alert(
        state,
        "TEMPLATE_CATEGORY_CHANGED",
        "warning",
        at,
        key=occurrence,
        summary=f"{_name(state)}: category changed from {previous} to "
        f"{event.new_category}, which changes the price of every message.",
        details={"previousCategory": previous, "newCategory": event.new_category},
    )
    return Outcome(state, (alert,))


# --- helpers ----------------------------------------------------------------------------------
def _alert(
    state: TemplateState,
    kind: str,
    severity: Severity,
    at: str,
    *,
    key: str,
    summary: str,
    details: dict[str, object],
) -> Alert:
    return Alert(
        alert_id=make_id(kind, state.template_id, key),
        type=kind,
        severity=severity,
        occurred_at=at,
        subject={
            "templateId": state.template_id,
            "templateName": state.template_name,
            "templateLanguage": state.template_language,
            "businessAccountId": state.business_account_id,
        },
        summary=summary,
        details=details,
    )


def _name(state: TemplateState) -> str:
    if state.template_name is None:
        return f"Template {state.template_id}"
    language = f" ({state.template_language})" if state.template_language else ""
    return f"Template {state.template_name}{language}"


def _worse(previous: str, new: str) -> bool:
    return _SCORE_RANK.get(new, 0) < _SCORE_RANK.get(previous, 0) and new in _SCORE_RANK


def _plus_hours(at: str, hours: int) -> str:
    moment = canonical.parse_timestamp(at, "at") + timedelta(hours=hours)
    return canonical.format_timestamp(moment)


def template_state_value(state: TemplateState) -> dict[str, object]:
    """The record of `whatsapp.template_state` (camelCase, CONTRACT.md)."""
    return {
        "templateId": state.template_id,
        "templateName": state.template_name,
        "templateLanguage": state.template_language,
        "businessAccountId": state.business_account_id,
        "status": state.status,
        "quality": state.quality,
        "category": state.category,
        "redStrikes": state.red_strikes,
        "pausedUntil": state.paused_until,
        "disabled": state.disabled,
        "disableDate": state.disable_date,
        "updatedAt": state.updated_at,
    }
