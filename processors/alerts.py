"""Alerts: the records of `whatsapp.alerts`, shared by every job that raises them.

An alert's id is deterministic for the condition it reports (`make_id`), so the
same condition computed again (a replay after a crash, a retried event) gives the
same id, and consumers drop repeats by `alertId`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True)
class Alert:
    alert_id: str
    type: str
    severity: Severity
    occurred_at: str  # event time of the condition
    subject: dict[str, str | None]  # the ids it is about
    summary: str  # one human sentence
    details: dict[str, object]  # type-specific


def make_id(kind: str, subject_id: str, condition: str) -> str:
    """`<type>|<subject id>|<condition>`: readable, and the same for the same condition."""
    return f"{kind}|{subject_id}|{condition}"


def alert_value(alert: Alert) -> dict[str, object]:
    """The record of `whatsapp.alerts` (camelCase, CONTRACT.md)."""
    return {
        "alertId": alert.alert_id,
        "type": alert.type,
        "severity": alert.severity,
        "occurredAt": alert.occurred_at,
        "subject": alert.subject,
        "summary": alert.summary,
        "details": alert.details,
    }
