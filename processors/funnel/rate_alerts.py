"""Rate alerts on a sub-account's funnel window: failure spikes and read-rate drops.

A sub-account's window is the sum of its windows per country and template
category (`subaccount_key` names it). An alert needs a minimum volume, so one failure
out of two messages is no spike, and its id names the window, so the same
condition is alerted once however often the window is re-published.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from processors.alerts import Alert, make_id
from processors.funnel.windows import WindowKey, funnel_record


@dataclass(frozen=True)
class RateThresholds:
    window: str = "1h"  # the window size the alerts look at
    failure_rate: float = 0.2  # undelivered / (delivered + undelivered) at or above: a spike
    read_rate: float = 0.3  # read / delivered at or below: a drop
    min_volume: int = 50  # messages with an outcome (failure) or delivered (read) at least


def subaccount_key(key: WindowKey) -> WindowKey:
    """The sub-account's whole window that `key` is a part of."""
    return WindowKey(key.size, key.start, key.sub_account_id, "", "")


def rate_alerts(key: WindowKey, counts: Mapping[str, int], limits: RateThresholds) -> list[Alert]:
    """The alerts a sub-account's window `key` (from `subaccount_key`) calls for."""
    if key.size != limits.window:
        return []
    record = funnel_record(key, counts)
    sub_account = key.sub_account_id or "unknown"
    subject: dict[str, str | None] = {"subAccountId": key.sub_account_id or None}
    window = {"window": key.size, "windowStart": key.start, "windowEnd": key.end}
    alerts = []
    delivered, undelivered = int(record["delivered"]), int(record["undelivered"])  # type: ignore[call-overload]
    failure_rate = record["failureRate"]
    if (
        delivered + undelivered >= limits.min_volume
        and failure_rate is not None
        and float(failure_rate) >= limits.failure_rate  # type: ignore[arg-type]
    ):
        alerts.append(Alert(
            make_id("DELIVERY_FAILURE_SPIKE", sub_account, f"{key.size}|{key.start}"),
            "DELIVERY_FAILURE_SPIKE", "critical", key.start, subject,
            f"Sub-account {sub_account}: {failure_rate:.0%} of {delivered + undelivered} "
            f"messages undelivered in the {key.size} window from {key.start}.",
            {**window, "failureRate": failure_rate, "threshold": limits.failure_rate,
             "delivered": delivered, "undelivered": undelivered,
             "undeliveredByErrorCode": record["undeliveredByErrorCode"]},
        ))  # fmt: skip
    read_rate = record["readRate"]
    if (
        delivered >= limits.min_volume
        and read_rate is not None
        and float(read_rate) <= limits.read_rate  # type: ignore[arg-type]
    ):
        alerts.append(Alert(
            make_id("READ_RATE_DROP", sub_account, f"{key.size}|{key.start}"),
            "READ_RATE_DROP", "warning", key.start, subject,
            f"Sub-account {sub_account}: only {read_rate:.0%} of {delivered} delivered "
            f"messages read in the {key.size} window from {key.start}.",
            {**window, "readRate": read_rate, "threshold": limits.read_rate,
             "delivered": delivered, "read": record["read"]},
        ))  # fmt: skip
    return alerts
