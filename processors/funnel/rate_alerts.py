"""Rate alerts on a sub-account's funnel window: failure spikes, read-rate drops, and
free-form messages failing for want of an open customer-service window.

A sub-account's window is the sum of its windows per country and template
category (`subaccount_key` names it). An alert needs a minimum volume, so one failure
out of two messages is no spike, and its id names the window.

A window's alerts are decided once, when stream time has passed its end by `delay`
(the receipts that come after its end, reads above all, still count) and `allowance`
(the drift: the other partitions' deltas of that time still arrive), on the deltas that
came before that stream time (`decides_at`). Deciding on running totals instead would
alert at the first 50 deliveries of a campaign, none read yet, and give other counts,
or no alert, on a replay; decided at a point of stream time, the alert is what the
events give (docs/design.md, Time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from processors.alerts import Alert, make_id
from processors.funnel.windows import WindowKey, funnel_record
from processors.normalize import canonical


@dataclass(frozen=True)
class RateThresholds:
    window: str = "1h"  # the window size the alerts look at
    failure_rate: float = 0.2  # undelivered / (delivered + undelivered) at or above: a spike
    read_rate: float = 0.3  # read / delivered at or below: a drop
    min_volume: int = 50  # messages with an outcome (failure) or delivered (read) at least
    service_window_failures: int = 10  # free-form sends failed outside the window: more is alerted
    delay: timedelta = timedelta(minutes=10)  # of stream time past the window's end
    allowance: timedelta = timedelta(minutes=10)  # the sources' drift

    def decides_at(self, key: WindowKey) -> int:
        """The stream time (epoch ms) at which the window's alerts are decided: deltas
        that come at or after it no longer count toward them."""
        return _epoch_ms(key.end) + (self.delay + self.allowance) // timedelta(milliseconds=1)


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
    failed = int(record["freeformOutsideWindowFailed"])  # type: ignore[call-overload]
    if failed > limits.service_window_failures:
        alerts.append(Alert(
            make_id("SERVICE_WINDOW_FAILURES", sub_account, f"{key.size}|{key.start}"),
            "SERVICE_WINDOW_FAILURES", "warning", key.start, subject,
            f"Sub-account {sub_account}: {failed} free-form messages failed in the {key.size} "
            f"window from {key.start} because the customer's 24-hour service window was "
            "closed: send a template to customers who have not written in the last 24 hours.",
            {**window, "failed": failed, "threshold": limits.service_window_failures,
             "sentOutsideWindow": record["freeformOutsideWindow"]},
        ))  # fmt: skip
    return alerts


@lru_cache(maxsize=1024)  # a batch touches few windows, many times each
def _epoch_ms(at: str) -> int:
    return canonical.epoch_ms(canonical.parse_timestamp(at, "windowEnd"))
