"""Phone-number health and account events: states and alerts as pure functions.

A phone number's state is folded from its events in event time: its messaging tier,
the history of its tiers, and its quality flag. The tier is what normalize read from
`maxDailyConversationsPerBusiness`, else the deprecated `currentLimit`. Tier names
Meta retired or has not told us about are kept as they are; a change between two
tiers we can rank is an upgrade or a downgrade by their rank, else by what the event
says (UPGRADE, DOWNGRADE).

Why the state is a function of the set of a number's events, not of their arrival
order: it is re-derived on each new event by folding the per-event rule (`_step`) over
the number's events sorted in event time (`processors.history`: the newest 32 events
within 90 days of the newest, the older ones folded into a base). Retries and replays
are duplicates and change nothing; a late event is placed where it belongs, so a tier
change is compared with the tier before it in event time, and an alert a late event
shows wrong (an upgrade that was a downgrade) is corrected. The one event refused
("stale") is one older than the events folded into the base: behind 32 newer events
of its number or 90 days.

Account events change no state here: each raises its alert, with a deterministic
id (the event time names the condition).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from processors.alerts import Alert, Severity, make_id, withdrawal
from processors.event_order import arrival, event_time
from processors.history import BOUNDS, Bounds, Held, History, Standing, take
from processors.normalize.records import AccountEvent, PhoneEvent

# Unique customers per rolling 24 h, in order; both spellings of unlimited.
TIER_RANK = {
    "TIER_NOT_SET": 0,
    "TIER_50": 1,
    "TIER_250": 2,
    "TIER_1K": 3,
    "TIER_2K": 4,
    "TIER_10K": 5,
    "TIER_100K": 6,
    "TIER_UNLIMITED": 7,
    "UNLIMITED": 7,
}
LOW_TIERS = frozenset({"TIER_NOT_SET", "TIER_50", "TIER_250"})  # a downgrade here is critical
HISTORY_LENGTH = 20  # tier changes kept per number


@dataclass(frozen=True)
class TierChange:
    at: str
    tier: str


@dataclass(frozen=True)
class PhoneState:
    """A number's state: the record of `whatsapp.phone_state` (snake_case here, camelCase
    on the topic: `phone_state_value`), and what it is derived from (`history`)."""

    display_phone_number: str
    business_account_id: str | None = None
    tier: str | None = None
    tier_history: tuple[TierChange, ...] = ()  # the latest last
    flagged: bool = False
    flag_reason: str | None = None
    last_event: str | None = None  # Meta's `event` of the latest event in event time
    history: History[PhoneEvent, PhoneState] = field(default_factory=History)

    @property
    def updated_at(self) -> str | None:
        """The time of the newest event (`updatedAt`)."""
        return self.history.newest_at


@dataclass(frozen=True)
class PhoneOutcome:
    state: PhoneState
    alerts: tuple[Alert, ...] = ()  # to send: new alerts and corrections of earlier ones
    ignored: str | None = None  # "duplicate" or "stale"
    reordered: bool = False  # the event came after a newer one of its number


def apply(state: PhoneState, event: PhoneEvent, bounds: Bounds = BOUNDS) -> PhoneOutcome:
    """`state` with `event` among its events: the state they derive, and the alerts to
    send (those the derivation raises anew, and the corrections of those it no longer
    raises)."""

    def fold(
        base: PhoneState | None, events: Sequence[Held[PhoneEvent]]
    ) -> tuple[PhoneState, list[Alert]]:
        return _fold(_start(state, base), events)

    taken = take(state.history, event, derive=fold, fold=fold, withdraw=_withdraw(event),
                 append=lambda held: _fold(state, (held,)), bounds=bounds)  # fmt: skip
    if taken.state is None:
        return PhoneOutcome(state, ignored=taken.ignored)
    after = replace(taken.state, history=taken.history)
    return PhoneOutcome(after, taken.alerts, reordered=taken.reordered)


def _fold(start: PhoneState, events: Sequence[Held[PhoneEvent]]) -> tuple[PhoneState, list[Alert]]:
    """The per-event rule over `events` in event-time order, from `start`."""
    state, alerts = start, []
    for held in events:
        state, raised = _step(state, held.event, held.at, held.occurrence)
        alerts += raised
    return state, alerts


def _step(
    state: PhoneState, event: PhoneEvent, at: str, occurrence: str
) -> tuple[PhoneState, list[Alert]]:
    """One event's rule."""
    state = replace(
        state,
        business_account_id=event.business_account_id or state.business_account_id,
        last_event=event.event,
    )
    alerts: list[Alert] = []
    if event.event == "FLAGGED":
        state = replace(state, flagged=True, flag_reason=event.reason)
        alerts.append(
            _alert(
                state,
                "PHONE_NUMBER_FLAGGED",
                "warning",
                (at, occurrence),
                f"{_number(state)} is flagged for quality ({event.reason or 'no reason given'}).",
                {"reason": event.reason},
            )
        )
    elif event.event == "UNFLAGGED":
        state = replace(state, flagged=False, flag_reason=None)
        alerts.append(
            _alert(
                state,
                "PHONE_NUMBER_UNFLAGGED",
                "info",
                (at, occurrence),
                f"{_number(state)} is no longer flagged.",
                {"reason": event.reason},
            )
        )
    if event.current_limit is not None and event.current_limit != state.tier:
        previous = state.tier or event.old_limit
        history = (*state.tier_history, TierChange(at, event.current_limit))[-HISTORY_LENGTH:]
        state = replace(state, tier=event.current_limit, tier_history=history)
        direction = _direction(previous, event.current_limit, event.event)
        if direction is not None:
            alerts.append(_tier_alert(state, direction, previous, (at, occurrence)))
    return state, alerts


def _start(state: PhoneState, base: PhoneState | None) -> PhoneState:
    """Where a fold starts: the base, else the number before any event."""
    return PhoneState(display_phone_number=state.display_phone_number) if base is None else base


def _withdraw(event: PhoneEvent) -> Callable[[PhoneState, Standing], Alert]:
    at = event_time(event)
    cause = None if at is None else (event.event_id, at)

    def withdraw(state: PhoneState, standing: Standing) -> Alert:
        return withdrawal((standing.alert_id, standing.type, standing.occurred_at),
                          state.display_phone_number, _subject(state), _number(state),
                          cause)  # fmt: skip

    return withdraw


def account_alerts(event: AccountEvent) -> tuple[Alert, ...]:
    """The alert an account event raises: restriction, violation, failed verification."""
    account = event.business_account_id or event.account_id or ""
    news = arrival(event)
    if news is None:
        return ()
    at, occurrence = news.at, news.occurrence
    subject = {"businessAccountId": event.business_account_id, "accountId": event.account_id}
    details = event.details
    if event.event == "ACCOUNT_RESTRICTION":
        restrictions = _items(details.get("restrictionInfo"))
        what = ", ".join(str(r.get("restrictionType")) for r in restrictions) or "unknown"
        until = ", ".join(str(r.get("expiration")) for r in restrictions if r.get("expiration"))
        return (
            Alert(
                make_id("ACCOUNT_RESTRICTED", account, occurrence),
                "ACCOUNT_RESTRICTED",
                "critical",
                at,
                subject,
                f"Account {account} is restricted: {what}" + (f" until {until}." if until else "."),
                {"restrictions": restrictions, "phoneNumber": details.get("phoneNumber")},
            ),
        )
    if event.event == "ACCOUNT_VIOLATION":
        violation = details.get("violationInfo")
        return (
            Alert(
                make_id("ACCOUNT_VIOLATION", account, occurrence),
                "ACCOUNT_VIOLATION",
                "critical",
                at,
                subject,
                f"Meta reports a policy violation on account {account}.",
                {"violation": violation},
            ),
        )
    if event.event == "BUSINESS_VERIFICATION_STATUS_UPDATE":
        info = details.get("businessVerificationInfo")
        verification = info if isinstance(info, dict) else {}
        status = str(verification.get("status", "")).upper()
        if status in {"REJECTED", "FAILED", "DECLINED"}:
            reasons = verification.get("rejectionReasons") or verification.get("rejection_reasons")
            return (
                Alert(
                    make_id("BUSINESS_VERIFICATION_FAILED", account, occurrence),
                    "BUSINESS_VERIFICATION_FAILED",
                    "warning",
                    at,
                    subject,
                    f"Business verification of account {account} failed.",
                    {"status": status, "rejectionReasons": reasons},
                ),
            )
    return ()


def phone_state_value(state: PhoneState) -> dict[str, object]:
    """The record of `whatsapp.phone_state` (camelCase, docs/interface.md)."""
    return {
        "displayPhoneNumber": state.display_phone_number,
        "businessAccountId": state.business_account_id,
        "currentLimit": state.tier,
        "tierHistory": [{"at": change.at, "tier": change.tier} for change in state.tier_history],
        "flagged": state.flagged,
        "flagReason": state.flag_reason,
        "lastEvent": state.last_event,
        "updatedAt": state.updated_at,
    }


def _direction(previous: str | None, new: str, said: str | None) -> str | None:
    if previous in TIER_RANK and new in TIER_RANK:
        if TIER_RANK[new] == TIER_RANK[previous]:  # e.g. UNLIMITED renamed TIER_UNLIMITED
            return None
        return "UPGRADED" if TIER_RANK[new] > TIER_RANK[previous] else "DOWNGRADED"
    return {"UPGRADE": "UPGRADED", "DOWNGRADE": "DOWNGRADED"}.get(said or "")


def _tier_alert(
    state: PhoneState, direction: str, previous: str | None, when: tuple[str, str]
) -> Alert:
    new = state.tier
    if direction == "UPGRADED":
        severity: Severity = "info"
    else:
        severity = "critical" if new in LOW_TIERS else "warning"
    return _alert(
        state,
        f"MESSAGING_LIMIT_{direction}",
        severity,
        when,
        f"{_number(state)}: messaging limit {direction.lower()} from "
        f"{previous or 'unknown'} to {new}.",
        {"oldLimit": previous, "currentLimit": new},
    )


def _alert(
    state: PhoneState,
    kind: str,
    severity: Severity,
    when: tuple[str, str],  # (event time, occurrence: the event's time and identity)
    summary: str,
    details: dict[str, object],
) -> Alert:
    at, occurrence = when
    return Alert(
        make_id(kind, state.display_phone_number, occurrence),
        kind,
        severity,
        at,
        _subject(state),
        summary,
        details,
    )


def _subject(state: PhoneState) -> dict[str, str | None]:
    return {
        "displayPhoneNumber": state.display_phone_number,
        "businessAccountId": state.business_account_id,
    }


def _number(state: PhoneState) -> str:
    return f"Phone number +{state.display_phone_number}"


def _items(value: object) -> list[dict[str, object]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
