"""Rate alerts on a sub-account's funnel window: failure spikes, read-rate drops, and
free-form messages failing for want of an open customer-service window.

A sub-account's window is the sum of its windows per country and template
category (`subaccount_key` names it). An alert needs a minimum volume, so one failure
out of two messages is no spike, and its id names the window.

A window's alerts count the changes made by records up to its end plus `delay` of
stream time (the receipts that come after its end, reads above all, still count),
judged where the receipts are merged, record by record (`horizon`); they are decided
once every hop that sends such changes has progressed past that point
(`decides_at`, `funnel.deltas.Progress`). Deciding on running totals instead would
alert at the first 50 deliveries of a campaign, none read yet, and give other counts,
or no alert, on a replay; decided at a point of stream time, the alert is what the
events give (docs/design.md, Time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from processors.alerts import Alert, make_id
from processors.funnel.windows import (
    SIZE_SECONDS,
    Horizon,
    WindowKey,
    funnel_record,
    window_end_time,
)
from processors.normalize import canonical

if TYPE_CHECKING:
    from wapipe.settings import Settings


@dataclass(frozen=True)
class RateThresholds:
    window: str = "1h"  # the window size the alerts look at
    failure_rate: float = 0.2  # undelivered / (delivered + undelivered) at or above: a spike
    read_rate: float = 0.3  # read / delivered at or below: a drop
    min_volume: int = 50  # messages with an outcome (failure) or delivered (read) at least
    service_window_failures: int = 10  # free-form sends failed outside the window: more is alerted
    delay: timedelta = timedelta(minutes=10)  # of stream time past the window's end

    @classmethod
    def of(cls, settings: Settings) -> RateThresholds:
        """The thresholds the settings give (the funnel's and the conversations' alike)."""
        return cls(
            window=settings.funnel_alert_window,
            failure_rate=settings.funnel_failure_rate_alert,
            read_rate=settings.funnel_read_rate_alert,
            min_volume=settings.funnel_alert_min_volume,
            service_window_failures=settings.service_window_failures_alert,
            delay=timedelta(minutes=settings.funnel_alert_delay_minutes),
        )

    def horizon(self) -> Horizon[WindowKey]:
        """What of a batch's window changes the alerts count (`windows.Horizon`): those of
        windows of their size, summed per sub-account, up to the window's end plus the
        delay, each at its record's stream time (the merge hop's, any batching alike)."""
        return Horizon(self._counted, self.delay, self.window)

    def _counted(self, key: WindowKey) -> WindowKey | None:
        return subaccount_key(key) if key.size == self.window else None

    def decides_at(self, key: WindowKey) -> int:
        """The progress (epoch ms of stream time) at which the window's alerts are
        decided: its end plus the delay."""
        end = canonical.epoch_ms(window_end_time(key.start, key.size))
        return end + self._delay_ms

    def to_decision(self, at_ms: int) -> int:
        """The last point, at or before `at_ms`, at which windows of the alerts' size are
        decided (`decides_at`: windows are aligned on the epoch, in UTC)."""
        size_ms = SIZE_SECONDS[self.window] * 1000
        return (at_ms - self._delay_ms) // size_ms * size_ms + self._delay_ms

    @property
    def _delay_ms(self) -> int:
        return self.delay // timedelta(milliseconds=1)


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
