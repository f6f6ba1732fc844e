"""A subject's recent events in event-time order, and its state re-derived from them:
one mechanism for the jobs whose state is folded from a subject's events (templates,
phones), so that the state is a function of the *set* of events, not of their
arrival order.

Why the state depends on the set only. A subject's history holds its recent events
sorted by (event time, identity) (`event_order`): a total order that does not depend
on when an event arrived. The state is `fold(base, held events in that order)`, where
the base is the state of the events older than the history. A new event is inserted at
its place and the state folded again, so it is what the events would have given had
they come in order; an event already held (same identity: a retry, a replay after a
crash) is a duplicate and changes nothing. Events leave the history oldest first and
are folded into the base: `fold(fold(b, A), B) == fold(b, A + B)`, so evicting changes
nothing either. Hence, unless an event is refused as stale, the state equals the fold
of all distinct events in event-time order, whatever the order and the repetitions.

The bounds (`Bounds`): the newest `MAX_EVENTS` (32) events of a subject, and only
those at most `MAX_AGE_DAYS` (90) days older than its newest. The one stale case: an
event whose place is at or before the base's newest event cannot be placed any more
(the events after it are folded into the base already): it is refused as "stale"
(that very event, the base's newest, is a duplicate). 8x8's retries and reorderings
are minutes or hours; an event is stale only behind 32 newer events of its subject or
90 days. Events without any time (never from normalize) have no place: stale too.

Alerts. A derivation also yields the alerts of the events, each with its deterministic
id (`make_id`, called a condition here): a function of the set of events too. The
history keeps those sent and still standing. After each event, `settle` sends each
alert of the new derivation not standing yet, and corrects each standing one the new
derivation no longer raises: when a new alert of the same time and type family
(`alerts.family`) takes its place (a strike renumbered), the new alert names it in
`supersedes`; otherwise an `ALERT_WITHDRAWN` record does. So the alerts standing (every
id sent minus every id superseded) are always the current derivation's. An id once
superseded cannot stand again (consumers drop repeats by alertId): a condition raised
again after its withdrawal is sent as `<id>|again-<n>`, so the standing *conditions*
(ids without that suffix) are the same for any order. Alerts raised by events that
have left the history stay standing and are not reconsidered.
"""

from __future__ import annotations

import dataclasses
from bisect import insort
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from processors.alerts import Alert, family
from processors.event_order import Arrival, arrival
from processors.normalize import canonical

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# Events held per subject: each is stored with the state, read and written once a batch.
MAX_EVENTS = 32
MAX_AGE_DAYS = 90  # of event time before the subject's newest event

E = TypeVar("E", bound="DataclassInstance")  # a normalized record (`processors.normalize`)
S = TypeVar("S")  # the state of a subject
D = TypeVar("D", bound="DataclassInstance")  # a state that holds its `history`


@dataclass(frozen=True)
class Bounds:
    events: int = MAX_EVENTS  # at least 1: the newest event always stays
    days: int = MAX_AGE_DAYS


BOUNDS = Bounds()


@dataclass(frozen=True)
class Held(Arrival, Generic[E]):
    """One event of the history, with its place (its time and identity)."""

    event: E


@dataclass(frozen=True)
class Standing:
    """An alert sent and standing: enough to recognise, replace or withdraw it."""

    condition: str  # the id the derivation gives it
    alert_id: str  # the id it was sent under: the condition, or `<condition>|again-<n>`
    type: str
    occurred_at: str


@dataclass(frozen=True)
class Withdrawn:
    """A condition withdrawn `times` times: raised again, it needs a fresh id."""

    condition: str
    occurred_at: str
    times: int


@dataclass(frozen=True)
class History(Generic[E, S]):
    events: tuple[Held[E], ...] = ()  # in event-time order
    base: S | None = None  # the state of the events evicted; None: none was
    base_at: str | None = None  # the place of the newest event evicted
    base_identity: str = ""
    standing: tuple[Standing, ...] = ()
    withdrawn: tuple[Withdrawn, ...] = ()

    @property
    def newest_at(self) -> str | None:
        return self.events[-1].at if self.events else self.base_at


# (base state or None, events in order) -> (state, the alerts of the fold, in order)
Fold = Callable[[S | None, Sequence[Held[E]]], tuple[S, list[Alert]]]
# (the state derived, a standing alert that nothing replaces) -> its withdrawal record
Withdraw = Callable[[S, Standing], Alert]
# The newest event -> the state and alerts after it, from the state before it: one fold
# step; None when the job cannot take that shortcut.
Append = Callable[[Held[E]], tuple[S, list[Alert]] | None]


@dataclass(frozen=True)
class Taken(Generic[E, S]):
    """What an event does to a history."""

    history: History[E, S]
    state: S | None = None  # what the events now derive; None when the event was refused
    alerts: tuple[Alert, ...] = ()  # the new alerts and the corrections to send
    ignored: str | None = None  # "duplicate" or "stale"
    reordered: bool = False  # placed before the newest event held
    identity: str = ""  # the event's (`event_order.identity`), when it was taken


def take(
    history: History[E, S],
    event: E,
    *,
    derive: Fold[S, E],
    fold: Fold[S, E],
    withdraw: Withdraw[S],
    append: Append[E, S] | None = None,
    bounds: Bounds = BOUNDS,
) -> Taken[E, S]:
    """`event` placed in `history`, the state derived again (`derive`: `fold` and what
    the job adds at the end, e.g. a timer's effect), the alerts settled, and the events
    beyond the bounds folded (`fold`) into the base.

    The newest event (the usual case) only adds a step at the end of the fold: `append`
    takes it from the state before, and the alerts standing stay (the steps before are
    the same), so nothing is withdrawn; a fold of the whole history is for a late event."""
    news = arrival(event)
    if news is None:
        return Taken(history, ignored="stale")  # no time, no place
    if any(held.identity == news.identity for held in history.events):
        return Taken(history, ignored="duplicate")
    if history.base_at is not None and news.key <= (history.base_at, history.base_identity):
        ignored = "duplicate" if news.key == (history.base_at, history.base_identity) else "stale"
        return Taken(history, ignored=ignored)
    held = Held(news.at, news.identity, _kept(event))
    events = list(history.events)
    reordered = bool(events) and held.key < events[-1].key
    insort(events, held, key=lambda item: item.key)
    grown = replace(history, events=tuple(events))
    appended = None if reordered or append is None else append(held)
    if appended is not None:
        state, alerts = appended
        sent, settled = add(grown, alerts)
    else:
        state, alerts = derive(grown.base, grown.events)
        sent, settled = settle(grown, state, alerts, withdraw)
    return Taken(evict(settled, bounds, fold), state, sent, reordered=reordered,
                 identity=held.identity)  # fmt: skip


def settle(
    history: History[E, S], state: S, alerts: Sequence[Alert], withdraw: Withdraw[S]
) -> tuple[tuple[Alert, ...], History[E, S]]:
    """The records that make the alerts standing those of a derivation (`state`,
    `alerts`), and the history that holds them as standing."""
    return _settle(history, alerts, lambda standing: withdraw(state, standing), complete=True)


def add(history: History[E, S], alerts: Sequence[Alert]) -> tuple[tuple[Alert, ...], History[E, S]]:
    """Alerts the derivation gains without losing any (the newest event's step, a timer's
    end of a pause): those to send."""
    return _settle(history, alerts, lambda standing: _never(standing), complete=False)


def _settle(
    history: History[E, S],
    alerts: Sequence[Alert],
    withdraw: Callable[[Standing], Alert],
    *,
    complete: bool,
) -> tuple[tuple[Alert, ...], History[E, S]]:
    derived: dict[str, Alert] = {}
    for alert in alerts:
        derived.setdefault(alert.alert_id, alert)
    before = {standing.condition: standing for standing in history.standing}
    gone = sorted((s for s in history.standing if complete and s.condition not in derived),
                  key=lambda standing: standing.alert_id)  # fmt: skip
    # A gone alert is replaced by a new one about the same event: same time, same family.
    replaceable: dict[tuple[str, str], list[Standing]] = {}
    for standing in gone:
        replaceable.setdefault((standing.occurred_at, family(standing.type)), []).append(standing)
    withdrawn = {entry.condition: entry for entry in history.withdrawn}
    sent: list[Alert] = []
    kept = [] if complete else [s for s in history.standing if s.condition not in derived]
    for condition, alert in derived.items():
        if condition in before:
            kept.append(before[condition])
            continue
        again = withdrawn.get(condition)
        alert_id = condition if again is None else f"{condition}|again-{again.times}"
        candidates = replaceable.get((alert.occurred_at, family(alert.type)))
        supersedes = (candidates.pop(0).alert_id,) if candidates else ()
        sent.append(replace(alert, alert_id=alert_id, supersedes=supersedes))
        kept.append(Standing(condition, alert_id, alert.type, alert.occurred_at))
    sent += [withdraw(standing) for left in replaceable.values() for standing in left]
    for standing in gone:
        times = withdrawn[standing.condition].times + 1 if standing.condition in withdrawn else 1
        withdrawn[standing.condition] = Withdrawn(standing.condition, standing.occurred_at, times)
    return tuple(sent), replace(history, standing=tuple(kept),
                                withdrawn=tuple(withdrawn.values()))  # fmt: skip


def _never(standing: Standing) -> Alert:
    raise AssertionError(f"nothing is withdrawn without a derivation: {standing}")


def evict(history: History[E, S], bounds: Bounds, fold: Fold[S, E]) -> History[E, S]:
    """The history within `bounds`: the oldest events beyond them folded into the base;
    their alerts stay standing for good, so they are no longer held as standing."""
    events = history.events
    if not events:
        return history
    oldest = _days_before(events[-1].at, bounds.days)
    cut = 0
    while cut < len(events) - 1 and (len(events) - cut > bounds.events or events[cut].at < oldest):
        cut += 1
    if cut == 0:
        return history
    evicted, newest = events[:cut], events[cut - 1]
    base, alerts = fold(history.base, evicted)
    raised = {alert.alert_id for alert in alerts}
    return History(
        events=events[cut:],
        base=base,
        base_at=newest.at,
        base_identity=newest.identity,
        standing=tuple(s for s in history.standing if s.condition not in raised),
        # Every alert a derivation raises from now on is at or after the base's newest
        # event: a condition withdrawn before it cannot come back.
        withdrawn=tuple(w for w in history.withdrawn if w.occurred_at >= newest.at),
    )


def load_state(
    raw: dict[str, Any],
    build: Callable[[dict[str, Any]], D],
    event_type: type[E],
    *,
    events: bool = True,
) -> D:
    """A state (with a `history`) as `orjson.dumps` wrote it: `build` makes it of its own
    fields, this adds its history; without `events`, an empty one (for what needs only
    the record's fields). A state written before the history (with `applied`, the time
    and ids of its latest events) becomes the base of an empty history, so that an event
    older than its latest is stale, as it was then."""
    state = build(raw)
    applied = raw.get("applied")
    history: History[E, D] = History()
    if applied is not None:
        newest = max(applied["event_ids"], default="")
        history = History(base=state, base_at=applied["at"], base_identity=newest)
    elif events and raw.get("history"):
        history = _load_history(raw["history"], event_type,
                                lambda base: load_state(base, build, event_type))  # fmt: skip
    return replace(state, history=history)


def _load_history(
    raw: Mapping[str, Any], event_type: type[E], load_base: Callable[[dict[str, Any]], S]
) -> History[E, S]:
    events = tuple(
        Held(held["at"], held["identity"], _event(event_type, held["event"]))
        for held in raw["events"]
    )
    return History(
        events=events,
        base=None if raw["base"] is None else load_base(raw["base"]),
        base_at=raw["base_at"],
        base_identity=raw["base_identity"],
        standing=tuple(Standing(**standing) for standing in raw["standing"]),
        withdrawn=tuple(Withdrawn(**entry) for entry in raw["withdrawn"]),
    )


def _event(event_type: type[E], fields: dict[str, Any]) -> E:
    """An event as stored: the fields this version writes, straight; else (stored by
    another version) the fields it knows, those missing None, those it does not ignored."""
    try:
        return event_type(**fields)
    except TypeError:
        names = [field.name for field in dataclasses.fields(event_type)]
        return event_type(**{name: fields.get(name) for name in names})


def _kept(event: E) -> E:
    """The event as held: its receive time only matters without an event time, and
    dropping it makes a history the same whichever copy of a retried event came first."""
    if getattr(event, "occurred_at", None) is None:
        return event
    return replace(event, received_at=None)


def _days_before(at: str, days: int) -> str:
    return canonical.format_timestamp(canonical.parse_timestamp(at, "at") - timedelta(days=days))
