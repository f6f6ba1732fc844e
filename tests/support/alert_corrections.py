"""What a consumer of `whatsapp.alerts` makes of the records a worker sent: the alerts
standing (every id sent minus every id superseded; a withdrawal is no condition)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from processors.alerts import WITHDRAWN, Alert

_AGAIN = re.compile(r"\|again-\d+$")


def standing(sent: Iterable[Alert]) -> set[str]:
    """The ids standing after `sent`, in any order: sent minus superseded."""
    sent = list(sent)
    superseded = {alert_id for alert in sent for alert_id in alert.supersedes}
    return {a.alert_id for a in sent if a.type != WITHDRAWN} - superseded


def conditions(alert_ids: Iterable[str]) -> set[str]:
    """The conditions of alert ids: an id raised again after its withdrawal without its
    `|again-<n>` suffix."""
    return {_AGAIN.sub("", alert_id) for alert_id in alert_ids}


def assert_well_formed(sent: list[Alert]) -> None:
    """No id is sent twice, and a correction supersedes ids sent before it, once."""
    ids = [alert.alert_id for alert in sent]
    assert len(ids) == len(set(ids)), ids
    superseded = [alert_id for alert in sent for alert_id in alert.supersedes]
    assert len(superseded) == len(set(superseded)), superseded
    seen: set[str] = set()
    for alert in sent:
        assert set(alert.supersedes) <= seen, (alert.alert_id, alert.supersedes)
        assert (alert.type == WITHDRAWN) == (alert.details.get("withdrawnAlertId") is not None)
        seen.add(alert.alert_id)
