"""One subject of the limits job (a business number, or a sub-account whose number is
unknown): its summed reach, its tier, the alerts it raised and the record last written;
and its evaluation at a time, as a pure function.

A subject's count changes with its reach (a batch of deltas) and with time alone
(customers leave the 24-hour window), so the job evaluates it after each batch that
touches it and on a timer: a record is written when anything but its time changed, and
`alerts.limit_alerts` raises each crossing once (the alerts sent and retired are kept here).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

import orjson

from processors.alerts import Alert
from processors.limits.alerts import AlertBook, limit_alerts
from processors.limits.rules import (
    LATENESS,
    REACH_WINDOW,
    Reach,
    ReachSteps,
    add,
    limit_status,
    messaging_limit_value,
    settle,
)
from processors.limits.senders import subject_kind
from processors.normalize import canonical


@dataclass(frozen=True)
class Subject:
    reach: Reach = field(default_factory=Reach)
    tier: str | None = None  # currentLimit of its whatsapp.phone_state (numbers only)
    alerts: AlertBook = field(default_factory=AlertBook)  # sent and retired alerts
    published: dict[str, object] | None = None  # the last record written, without `at`


@dataclass(frozen=True)
class Evaluation:
    state: Subject
    record: dict[str, object] | None  # the record to write, None when nothing changed
    alerts: list[Alert]


def settle_cut(now: datetime) -> str:
    """How far back a subject's reach is kept exact: a day and the alerts' memory."""
    return canonical.format_timestamp(now - REACH_WINDOW - LATENESS)


def with_changes(state: Subject, changes: ReachSteps) -> Subject:
    return replace(state, reach=add(state.reach, changes)) if changes else state


def evaluate(key: str, state: Subject, now: datetime, near_share: float) -> Evaluation:
    """`state` at `now`: settled, its record if it changed, and its new alerts."""
    reach = settle(state.reach, settle_cut(now))
    kind, subject = subject_kind(key)
    status = limit_status(subject, kind, reach, state.tier, canonical.format_timestamp(now))
    record = messaging_limit_value(status)
    comparable = {name: value for name, value in record.items() if name != "at"}
    alerts, book = limit_alerts(status, reach, near_share, state.alerts)
    after = Subject(reach, state.tier, book, comparable)
    return Evaluation(after, record if comparable != state.published else None, alerts)


def dump_subject(state: Subject) -> bytes:
    return orjson.dumps(state)


def load_subject(data: bytes) -> Subject:
    raw = orjson.loads(data)
    book = AlertBook(tuple(raw["alerts"]["sent"]), tuple(raw["alerts"]["retired"]))
    return Subject(Reach(**raw["reach"]), raw["tier"], book, raw["published"])
