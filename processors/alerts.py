"""Alerts: the records of `whatsapp.alerts`, shared by every job that raises them.

An alert's id is deterministic for the condition it reports (`make_id`), so the
same condition computed again (a replay after a crash, a retried event) gives the
same id, and consumers drop repeats by `alertId`.

A job that re-derives its state when an event arrives late (templates, phones:
`processors.history`) may find that an alert it sent no longer holds. It then sends
a correction: the alert that replaces it, or an `ALERT_WITHDRAWN` record when
nothing does, naming the withdrawn id in `supersedes`. So the alerts standing are
every id sent minus every id superseded (withdrawals themselves are no condition).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["info", "warning", "critical"]

WITHDRAWN = "ALERT_WITHDRAWN"
# Types that report the same kind of change of one event, so that one can replace the
# other when a re-derivation changes its verdict (a strike became a mere degradation).
_FAMILIES = {
    "TEMPLATE_QUALITY_RED": "TEMPLATE_QUALITY",
    "TEMPLATE_QUALITY_DEGRADED": "TEMPLATE_QUALITY",
    "MESSAGING_LIMIT_UPGRADED": "MESSAGING_LIMIT",
    "MESSAGING_LIMIT_DOWNGRADED": "MESSAGING_LIMIT",
}


@dataclass(frozen=True)
class Alert:
    alert_id: str
    type: str
    severity: Severity
    occurred_at: str  # event time of the condition
    subject: dict[str, str | None]  # the ids it is about
    summary: str  # one human sentence
    details: dict[str, object]  # type-specific
    # The ids this record withdraws: a list, because one record may correct several (and
    # an empty list keeps the record's shape the same for every alert).
    supersedes: tuple[str, ...] = ()


def make_id(kind: str, subject_id: str, condition: str) -> str:
    """`<type>|<subject id>|<condition>`: readable, and the same for the same condition."""
    return f"{kind}|{subject_id}|{condition}"


def family(kind: str) -> str:
    """The family of an alert type: types one of which may replace the other."""
    return _FAMILIES.get(kind, kind)


def withdrawal(
    withdrawn: tuple[str, str, str],
    subject_id: str,
    subject: dict[str, str | None],
    name: str,
    cause: tuple[str, str] | None,
) -> Alert:
    """The record that withdraws an alert sent before, `withdrawn` = (its id, type, time),
    with nothing to replace it: about the same subject, at the withdrawn alert's time (so
    the same withdrawal always has the same id). `cause`: the (event id, event time) of
    the late event that showed the alert no longer holds."""
    alert_id, kind, occurred_at = withdrawn
    cause_id, cause_at = cause if cause is not None else (None, None)
    late = f" (with event {cause_id} of {cause_at}, which came late)" if cause else ""
    return Alert(
        alert_id=make_id(WITHDRAWN, subject_id, alert_id),
        type=WITHDRAWN,
        severity="info",
        occurred_at=occurred_at,
        subject=subject,
        summary=f"{name}: its {kind} alert of {occurred_at} is withdrawn: the events now "
        f"known{late} no longer raise it.",
        details={
            "withdrawnAlertId": alert_id,
            "withdrawnType": kind,
            "causeEventId": cause_id,
            "causeOccurredAt": cause_at,
        },
        supersedes=(alert_id,),
    )


def alert_value(alert: Alert) -> dict[str, object]:
    """The record of `whatsapp.alerts` (camelCase, docs/interface.md)."""
    return {
        "alertId": alert.alert_id,
        "type": alert.type,
        "severity": alert.severity,
        "occurredAt": alert.occurred_at,
        "subject": alert.subject,
        "summary": alert.summary,
        "details": alert.details,
        "supersedes": list(alert.supersedes),
    }
