"""The funnel worker's Prometheus metrics: its own work, and the current windows.

The window gauges show, per window size and (sub-account, country, template
category), the most recent window this worker has published. A combination with
no traffic for a whole window drops out (`sweep`), so a gauge never shows an old
window as current. Workers publish disjoint sub-accounts (the windows are
partitioned by sub-account), so sums across workers are right.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge

from processors.funnel.windows import QUANTILES, STAGES, WINDOW_SECONDS, WindowKey
from processors.normalize import canonical

_ALERT_SHOWN = timedelta(minutes=15)  # a rate alert's gauge, at least (scrapes, rules)
_DIMENSIONS = ["window", "sub_account_id", "country", "template_category"]
# The `stage` label of wapipe_funnel_window_messages: the transitions, and the free-form
# messages sent outside the customer's service window (and of those, the failed ones).
_STAGES = {**{stage: stage for stage in STAGES},
           "freeform_outside_window": "freeformOutsideWindow",
           "freeform_outside_window_failed": "freeformOutsideWindowFailed"}  # fmt: skip
_RATES = {"delivery": "deliveryRate", "read": "readRate", "reply": "replyRate",
          "failure": "failureRate"}  # fmt: skip


class FunnelMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.observations = Counter(
            "wapipe_funnel_observations",
            "Receipts and replies merged into message states, by source.",
            ["source"],
            registry=registry,
        )
        self.merged = Counter(
            "wapipe_funnel_merged_observations",
            "Observations merged into message states (receipts and replies, by the merge hop).",
            registry=registry,
        )
        self.state_changes = Counter(
            "wapipe_funnel_state_changes",
            "message_state records written (one per changed message and batch).",
            registry=registry,
        )
        self.late_changes = Counter(
            "wapipe_funnel_late_changes",
            "Window changes dropped because their window was final "
            "(WAPIPE_FUNNEL_WINDOW_DAYS past its end).",
            registry=registry,
        )
        self.late_for_alerts = Counter(
            "wapipe_funnel_rate_alert_late_changes",
            "Window changes not counted in the rate alerts because their sub-account window "
            "had been decided (WAPIPE_FUNNEL_ALERT_DELAY_MINUTES and the drift past its end).",
            registry=registry,
        )
        self.alerts = Counter(
            "wapipe_funnel_alerts",
            "Rate alerts sent, by type and sub-account.",
            ["type", "sub_account_id"],
            registry=registry,
        )
        self.window_records = Counter(
            "wapipe_funnel_window_records",
            "whatsapp.funnel records written (one per changed window and batch).",
            registry=registry,
        )


class WindowGauges:
    """The current window of every (size, sub-account, country, category) as gauges."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, documentation: str, *extra: str) -> Gauge:
            return Gauge(name, documentation, [*_DIMENSIONS, *extra], registry=registry)

        self.start = gauge(
            "wapipe_funnel_window_start_timestamp_seconds",
            "Start of the current funnel window (event time).",
        )
        self.messages = gauge(
            "wapipe_funnel_window_messages",
            "Messages making each funnel transition in the current window; also "
            "freeform_outside_window: free-form messages sent outside the customer's 24-hour "
            "service window, and freeform_outside_window_failed: those of them that failed.",
            "stage",
        )
        self.rate = gauge(
            "wapipe_funnel_window_rate",
            "Ratios of transitions in the current window: delivery (delivered/sent), "
            "read (read/delivered), reply (replied/delivered), failure "
            "(undelivered/(delivered+undelivered)).",
            "rate",
        )
        self.time_to_deliver = gauge(
            "wapipe_funnel_window_time_to_deliver_seconds",
            "Time from sent to delivered of the messages delivered in the current window.",
            "quantile",
        )
        self.time_to_read = gauge(
            "wapipe_funnel_window_time_to_read_seconds",
            "Time from delivered to read of the messages read in the current window.",
            "quantile",
        )
        self.undelivered = gauge(
            "wapipe_funnel_window_undelivered_messages",
            "Messages undelivered in the current window, by error code.",
            "error_code",
        )
        self.rate_alert = Gauge(
            "wapipe_funnel_rate_alert_active",
            "1 while a sub-account's current window has raised this rate alert "
            "(DELIVERY_FAILURE_SPIKE, READ_RATE_DROP, SERVICE_WINDOW_FAILURES); for Prometheus "
            "alert rules.",
            ["type", "sub_account_id"],
            registry=registry,
        )
        self._current: dict[tuple[str, ...], tuple[str, set[str]]] = {}  # -> (start, error codes)
        self._alerted: dict[tuple[str, str], datetime] = {}  # (type, sub-account) -> shown until

    def show(self, key: WindowKey, record: Mapping[str, object]) -> None:
        """Show `record` if its window is the latest one of its combination."""
        labels = _labels(key)
        current = self._current.get(labels)
        if current is not None and key.start < current[0]:
            return
        if current is not None and key.start > current[0]:
            self._remove(labels)
        start = canonical.parse_timestamp(key.start, "windowStart")
        self.start.labels(*labels).set(start.timestamp())
        for stage, field in _STAGES.items():
            self.messages.labels(*labels, stage).set(record[field])  # type: ignore[arg-type]
        for rate, field in _RATES.items():
            value = record[field]
            self.rate.labels(*labels, rate).set(float("nan") if value is None else value)  # type: ignore[arg-type]
        for gauge, field in ((self.time_to_deliver, "timeToDeliverSeconds"),
                             (self.time_to_read, "timeToReadSeconds")):  # fmt: skip
            distribution: Mapping[str, object] = record[field]  # type: ignore[assignment]
            for q in QUANTILES:
                value = distribution[f"p{round(q * 100)}"]
                gauge.labels(*labels, str(q)).set(float("nan") if value is None else value)  # type: ignore[arg-type]
        codes: Mapping[str, int] = record["undeliveredByErrorCode"]  # type: ignore[assignment]
        known = self._current[labels][1] if labels in self._current else set()
        for code in known - set(codes):
            self.undelivered.remove(*labels, code)
        for code, count in codes.items():
            self.undelivered.labels(*labels, code).set(count)
        self._current[labels] = (key.start, set(codes))

    def show_alert(self, kind: str, key: WindowKey) -> None:
        """Show a rate alert for a window's length (at least `_ALERT_SHOWN`) from now: it is
        raised once its window is decided, some time after the window's end."""
        labels = (kind, key.sub_account_id or "unknown")
        length = max(timedelta(seconds=WINDOW_SECONDS[key.size]), _ALERT_SHOWN)
        self._alerted[labels] = datetime.now(UTC) + length
        self.rate_alert.labels(*labels).set(1)

    def sweep(self, now: datetime) -> None:
        """Drop the combinations and alerts whose window ended more than a window ago."""
        for labels, (start, _) in list(self._current.items()):
            if _over(labels[0], start, now):
                self._remove(labels)
        for labels, until in list(self._alerted.items()):
            if until < now:
                del self._alerted[labels]
                self.rate_alert.remove(*labels)

    def clear(self) -> None:
        """Show nothing (the worker's partitions left it: their windows show elsewhere)."""
        for labels in list(self._current):
            self._remove(labels)
        self._alerted.clear()
        self.rate_alert.clear()

    def _remove(self, labels: tuple[str, ...]) -> None:
        _, codes = self._current.pop(labels)
        self.start.remove(*labels)
        for stage in _STAGES:
            self.messages.remove(*labels, stage)
        for rate in _RATES:
            self.rate.remove(*labels, rate)
        for q in QUANTILES:
            self.time_to_deliver.remove(*labels, str(q))
            self.time_to_read.remove(*labels, str(q))
        for code in codes:
            self.undelivered.remove(*labels, code)


def _labels(key: WindowKey) -> tuple[str, ...]:
    return (key.size, *(value or "unknown" for value in
                        (key.sub_account_id, key.country, key.template_category)))  # fmt: skip


def _over(size: str, start: str, now: datetime) -> bool:
    """Whether a window of `size` starting at `start` ended more than a window ago."""
    length = timedelta(seconds=WINDOW_SECONDS[size])
    return canonical.parse_timestamp(start, "windowStart") + 2 * length < now
