"""The state of one message template and the alerts its events raise: pure functions.

Meta's pause rule ("3 strikes"): each drop to RED from another score is a strike;
strike 1 pauses the template for 3 hours, strike 2 for 6 hours, strike 3
disables it for good (durations and count: `StrikePolicy`). A RED event whose
previous score was already RED adds no strike.

Meta's own count arrives with PAUSED/DISABLED statuses as `otherInfo.title`
(FIRST_PAUSE, SECOND_PAUSE, DISABLED; UNPAUSE ends a pause; RATE_LIMITING_PAUSE
is no strike). Where it disagrees with ours, Meta's is the truth: the state takes
it and the outcome reports the disagreement (the worker logs and counts it).

Why the state is a function of the set of a template's events, not of their arrival
order: it is re-derived on each new event by folding the per-event rules (`_quality`,
`_status`, `_category`, `_strike`) over the template's events sorted in event time
(`processors.history`: the newest 32 events within 90 days of the newest, the older
ones folded into a base). Retries and replays are duplicates and change nothing; a
late event is placed where it belongs, so strikes are counted in event time whatever
the order they came in. The one event refused ("stale") is one older than the events
folded into the base: behind 32 newer events of its template or 90 days.

A pause ends in the fold too: a strike's pause whose end has come by the time of a
later event is over before that event (one TEMPLATE_UNPAUSED alert). The timer ends the
last pause once the wall clock passes its end (`end_pause`) and the state remembers
that pause's end (`ended_by`), so every re-derivation ends the pauses due by then as
well: a re-derivation neither loses a pause the timer ended nor invents one (a pause a
late event shows never ran to its end is withdrawn with its TEMPLATE_UNPAUSED). The
pause's end, not the wall clock: an event after it (most of them) is then one step at
the end of the fold, not a fold of the whole history, also when the events are
replayed long after they happened.

Every alert has a deterministic id built from the condition it reports (the
template, the alert type, the event time, and for a strike its number), so the
same condition gives the same id whenever it is computed again, and a strike
renumbered by a late event is a new alert that supersedes the old one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta

from processors.alerts import Alert, Severity, make_id, withdrawal
from processors.event_order import event_time
from processors.history import BOUNDS, Bounds, Held, History, Standing, add, take
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
    """A template's state: the record of `whatsapp.template_state` (snake_case here,
    camelCase on the topic: `template_state_value`), and what it is derived from (the
    events held, the alerts standing: `history`; the timer's `ended_by`)."""

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
    # The end of the last pause the timer ended: re-derivations end the pauses due by
    # then, as the timer did.
    ended_by: str | None = None
    history: History[TemplateEvent, TemplateState] = field(default_factory=History)

    @property
    def updated_at(self) -> str | None:
        """The time of the newest event (`updatedAt`)."""
        return self.history.newest_at


@dataclass(frozen=True)
class Disagreement:
    """Meta's strike count (`otherInfo.title`) differs from ours; Meta's was taken."""

    ours: int
    metas: int
    title: str


@dataclass(frozen=True)
class Outcome:
    state: TemplateState
    alerts: tuple[Alert, ...] = ()  # to send: new alerts and corrections of earlier ones
    disagreement: Disagreement | None = None  # at the event applied
    ignored: str | None = None  # "duplicate" or "stale" when the event changed nothing
    reordered: bool = False  # the event came after a newer one of its template


def apply(
    state: TemplateState, event: TemplateEvent, policy: StrikePolicy, bounds: Bounds = BOUNDS
) -> Outcome:
    """`state` with `event` among its events: the state they derive, and the alerts to
    send (those the derivation raises anew, and the corrections of those it no longer
    raises)."""
    notes: dict[str, Disagreement] = {}

    def append(held: Held[TemplateEvent]) -> tuple[TemplateState, list[Alert]] | None:
        # `state` is the fold with the timer's end at `ended_by`; an event at or after
        # that time ends no less than the timer did, and the pause a step sets ends after
        # it, so the timer's end needs no second look. Before that time, fold it all.
        if state.ended_by is not None and state.ended_by > held.at:
            return None
        return _fold(state, (held,), policy, notes)

    taken = take(
        state.history,
        event,
        derive=lambda base, events: _derive(state, base, events, policy, notes),
        fold=lambda base, events: _fold(_start(state, base), events, policy),
        withdraw=_withdraw(event),
        append=append,
        bounds=bounds,
    )
    if taken.state is None:
        return Outcome(state, ignored=taken.ignored)
    after = replace(taken.state, history=taken.history, ended_by=state.ended_by)
    disagreement = notes.get(taken.identity)  # the event's own, not its neighbours'
    return Outcome(after, taken.alerts, disagreement, reordered=taken.reordered)


def end_pause(state: TemplateState, now: str) -> Outcome:
    """The timer's rule: a pause whose end has come by `now` is over (one info alert).
    The state keeps that end, so that every re-derivation ends it too."""
    ended, alerts = _end(state, now)
    if not alerts or state.paused_until is None:
        return Outcome(state)
    sent, history = add(state.history, alerts)
    by = max(state.paused_until, state.ended_by or state.paused_until)
    return Outcome(replace(ended, ended_by=by, history=history), sent)


def _derive(
    state: TemplateState,
    base: TemplateState | None,
    events: Sequence[Held[TemplateEvent]],
    policy: StrikePolicy,
    notes: dict[str, Disagreement],
) -> tuple[TemplateState, list[Alert]]:
    """What the events give, with the pauses the timer had ended by `state.ended_by`
    ended (ending twice, by an earlier time then a later one, is ending by the later)."""
    derived, alerts = _fold(_start(state, base), events, policy, notes)
    if state.ended_by is not None:
        derived, ended = _end(derived, state.ended_by)
        alerts += ended
    return derived, alerts


def _fold(
    start: TemplateState,
    events: Sequence[Held[TemplateEvent]],
    policy: StrikePolicy,
    notes: dict[str, Disagreement] | None = None,
) -> tuple[TemplateState, list[Alert]]:
    """The per-event rules over `events` in event-time order, from `start`."""
    state, alerts = start, []
    for held in events:
        state, ended = _end(state, held.at)  # a pause over before the event
        alerts += ended
        outcome = _step(state, held.event, held.at, held.occurrence, policy)
        state = outcome.state
        alerts += outcome.alerts
        if notes is not None and outcome.disagreement is not None:
            notes[held.identity] = outcome.disagreement
    return state, alerts


def _step(
    state: TemplateState, event: TemplateEvent, at: str, occurrence: str, policy: StrikePolicy
) -> Outcome:
    """One event's rule."""
    state = replace(
        state,
        template_name=event.template_name or state.template_name,
        template_language=event.template_language or state.template_language,
        business_account_id=event.business_account_id or state.business_account_id,
    )
    if event.new_quality is not None:
        return _quality(state, event, at, occurrence, policy)
    if event.status is not None:
        return _status(state, event, at, occurrence, policy)
    if event.new_category is not None:
        return _category(state, event, at, occurrence)
    return Outcome(state)  # advisory (correct category detection): kept, no alert


def _end(state: TemplateState, now: str) -> tuple[TemplateState, list[Alert]]:
    """A strike's pause whose end has come by `now` is over."""
    if state.paused_until is None or state.disabled or state.paused_until > now:
        return state, []
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
    return replace(state, paused_until=None), [alert]


def _start(state: TemplateState, base: TemplateState | None) -> TemplateState:
    """Where a fold starts: the base, else the template before any event."""
    return TemplateState(template_id=state.template_id) if base is None else base


def _withdraw(event: TemplateEvent) -> Callable[[TemplateState, Standing], Alert]:
    at = event_time(event)
    cause = None if at is None else (event.event_id, at)

    def withdraw(state: TemplateState, standing: Standing) -> Alert:
        return withdrawal((standing.alert_id, standing.type, standing.occurred_at),
                          state.template_id, _subject(state), _name(state), cause)  # fmt: skip

    return withdraw


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
        subject=_subject(state),
        summary=summary,
        details=details,
    )


def _subject(state: TemplateState) -> dict[str, str | None]:
    return {
        "templateId": state.template_id,
        "templateName": state.template_name,
        "templateLanguage": state.template_language,
        "businessAccountId": state.business_account_id,
    }


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
    """The record of `whatsapp.template_state` (camelCase, docs/interface.md)."""
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
