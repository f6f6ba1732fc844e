"""The alerts on a subject's messaging limit: MESSAGING_LIMIT_NEAR and
MESSAGING_LIMIT_REACHED, once per crossing, corrected when late receipts move one.

An alert is a crossing of a threshold (the near share of the limit, or the limit): a
time t at which the count rises from below the threshold to at or above it. Its id is
`<type>|<subject>|<limit>@<crossing>` and its record is computed at the crossing, so
the same crossing gives the same alert whatever the order of deltas and evaluations.
A crossing that later receipts move is superseded by the one they show; a crossing
that turns out never to have been one is withdrawn (`limit_alerts` says how).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from processors.alerts import Alert, make_id, withdrawal
from processors.limits.rules import (
    DEFAULT_NEAR_SHARE,
    NEAR,
    REACHED,
    LimitStatus,
    Reach,
    crossing_at,
    near_threshold,
    oldest_leaves_at,
    reached_at,
)
from processors.normalize import canonical


@dataclass(frozen=True)
class AlertBook:
    """A subject's alerts since its cut: those sent that still hold, and those retired
    (superseded or withdrawn: an id is never sent again once retired; a condition raised
    again gets `<id>|again-<n>`, as processors/history.py does)."""

    sent: tuple[str, ...] = ()
    retired: tuple[str, ...] = ()


def limit_alerts(
    status: LimitStatus,
    reach: Reach,
    near_share: float = DEFAULT_NEAR_SHARE,
    book: AlertBook | None = None,
) -> tuple[list[Alert], AlertBook]:
    """The alerts to send at `status.at`, and the subject's alerts after it.

    An alert is a crossing: the start of a stretch during which the count stayed at or
    above a threshold (the near share of the limit, or the limit); its id names the
    limit and the crossing. It is sent once. Receipts that come late can show that a
    crossing sent was none: the stretch began elsewhere, or never was. Then the alert of
    the crossing now standing is sent naming the wrong one in `supersedes`, or an
    ALERT_WITHDRAWN names it when nothing replaces it. So consumers keep the alerts
    that hold: ids received minus ids superseded. Crossings of earlier stretches, over
    since, happened and stay (until the state's cut forgets them)."""
    book = book or AlertBook()
    sent, retired = list(book.sent), set(book.retired)
    wrong = [i for i in sent if not _still_crossed(reach, i, near_share)]
    sent = [i for i in sent if i not in wrong]
    alerts: list[Alert] = []
    limit = status.limit
    if limit is not None:  # unlimited or unknown: nothing to watch
        for kind, threshold in ((NEAR, near_threshold(limit, near_share)), (REACHED, limit)):
            crossed = crossing_at(reach, threshold, status.at)
            if crossed is None:
                continue
            condition = make_id(kind, status.subject, f"{limit}@{crossed}")
            if any(_base(i) == condition for i in sent):
                continue  # sent already
            replaced = tuple(i for i in wrong if i.startswith(f"{kind}|"))
            wrong = [i for i in wrong if i not in replaced]
            alert_id = _fresh(condition, retired | set(replaced))
            sent.append(alert_id)
            retired |= set(replaced)
            alerts.append(_alert(alert_id, kind, status, reach, threshold, crossed, replaced))
    for alert_id in wrong:  # nothing replaces them
        alerts.append(_withdrawal(alert_id, status))
        retired.add(alert_id)
    cut = reach.settled_before

    def known(ids: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted(i for i in ids if cut is None or _crossed(i) > cut))

    return alerts, AlertBook(known(sent), known(retired))


def _fresh(condition: str, retired: set[str]) -> str:
    """`condition`, or `<condition>|again-<n>` when it (or an earlier again) was retired."""
    alert_id, n = condition, 0
    while alert_id in retired:
        n += 1
        alert_id = f"{condition}|again-{n}"
    return alert_id


def _base(alert_id: str) -> str:
    return alert_id.partition("|again-")[0]


def _crossed(alert_id: str) -> str:
    return _base(alert_id).rpartition("@")[2]  # ids end in `<limit>@<crossing>`


def _withdrawal(alert_id: str, status: LimitStatus) -> Alert:
    kind = alert_id.partition("|")[0]
    return withdrawal((alert_id, kind, _crossed(alert_id)), status.subject, _subject(status),
                      _name(status), None)  # fmt: skip


def _still_crossed(reach: Reach, alert_id: str, near_share: float) -> bool:
    """Whether an alert sent names a crossing that still is one by what is known now: the
    count rose to its threshold (of its own kind and limit) at its time. One from before
    the state's cut is taken as it was."""
    kind, _, rest = _base(alert_id).partition("|")
    alert_limit, _, crossed = rest.rpartition("|")[2].partition("@")
    just_before = _shifted(crossed, -1)
    if reach.settled_before and just_before < reach.settled_before:
        return True
    threshold = (
        int(alert_limit) if kind == REACHED else near_threshold(int(alert_limit), near_share)
    )
    return reached_at(reach, crossed) >= threshold > reached_at(reach, just_before)


def _alert(
    alert_id: str, kind: str, status: LimitStatus, reach: Reach, threshold: int, crossed: str,
    supersedes: tuple[str, ...],
) -> Alert:  # fmt: skip
    # Taken at the crossing, not at `status.at`: an id's record is the same whenever made.
    limit, near = status.limit or threshold, kind == NEAR
    reached, leaves = reached_at(reach, crossed), oldest_leaves_at(reach, crossed)
    name = _name(status)
    details: dict[str, object] = {
        "subjectKind": status.subject_kind, "tier": status.tier, "limit": limit,
        "threshold": threshold, "reached": reached, "headroom": limit - reached,
        "crossedAt": crossed, "oldestLeavesAt": leaves,
    }  # fmt: skip
    return Alert(
        alert_id=alert_id,
        type=kind,
        severity="warning" if near else "critical",
        occurred_at=crossed,
        subject=_subject(status),
        summary=f"{name} {'is near' if near else 'reached'} its messaging limit: {reached} "
        f"of {limit} distinct customers reached in the 24 hours up to {crossed} "
        f"({status.tier}); the oldest of them stops counting at {leaves}.",
        details=details,
        supersedes=supersedes,
    )


def _name(status: LimitStatus) -> str:
    if status.subject_kind == "number":
        return f"Phone number +{status.subject.removeprefix('+')}"
    return f"Sub-account {status.subject} (number unknown)"


def _subject(status: LimitStatus) -> dict[str, str | None]:
    number = status.subject_kind == "number"
    return {"displayPhoneNumber": status.subject if number else None,
            "subAccountId": None if number else status.subject}  # fmt: skip


def _shifted(at: str, milliseconds: int) -> str:
    return canonical.format_timestamp(canonical.parse_timestamp(at, "at")
                                      + timedelta(milliseconds=milliseconds))  # fmt: skip
