"""Rate alerts on a sub-account's funnel window, as plain functions."""

from __future__ import annotations

from processors.funnel.batch import TotalsFold
from processors.funnel.rate_alerts import RateThresholds, rate_alerts, subaccount_key
from processors.funnel.windows import WindowKey

LIMITS = RateThresholds(window="1h", failure_rate=0.2, read_rate=0.3, min_volume=50)
HOUR = WindowKey("1h", "2026-11-25T10:00:00.000Z", "acme", "", "")


def test_a_sub_accounts_window_sums_its_countries_and_categories() -> None:
    part = WindowKey("1h", HOUR.start, "acme", "ID", "MARKETING")
    assert subaccount_key(part) == HOUR
    totals = TotalsFold({}, {}, LIMITS)
    totals.add(part, {"sent": 2, "error:1": 1})
    totals.add(WindowKey("1h", HOUR.start, "acme", "DE", ""), {"sent": 3})
    totals.add(WindowKey("1m", HOUR.start, "acme", "DE", ""), {"sent": 3})  # not the alerts' size
    assert totals.touched_subaccounts[HOUR.encode()].counts == {"sent": 5, "error:1": 1}


def test_each_condition_is_alerted_once_across_batches() -> None:
    spike = {"delivered": 40, "undelivered": 20}
    first = TotalsFold({}, {}, LIMITS)
    first.add(HOUR, spike)
    [(window, alert)] = first.alerts()
    assert (window, alert.type) == (HOUR, "DELIVERY_FAILURE_SPIKE")
    second = TotalsFold(first.totals, first.touched_subaccounts, LIMITS)  # as committed
    second.add(HOUR, {"undelivered": 5})
    assert second.alerts() == []
    assert second.touched_subaccounts[HOUR.encode()].alerted == (alert.alert_id,)


def test_a_failure_spike_and_a_read_rate_drop() -> None:
    counts = {"sent": 80, "delivered": 60, "read": 6, "undelivered": 20, "error:1022": 20}
    alerts = rate_alerts(HOUR, counts, LIMITS)
    assert [(a.type, a.severity) for a in alerts] == [("DELIVERY_FAILURE_SPIKE", "critical"),
                                                      ("READ_RATE_DROP", "warning")]  # fmt: skip
    spike, drop = alerts
    assert spike.alert_id == f"DELIVERY_FAILURE_SPIKE|acme|1h|{HOUR.start}"
    assert spike.details["undeliveredByErrorCode"] == {"1022": 20}
    assert spike.subject == {"subAccountId": "acme"}
    assert (drop.details["readRate"], drop.details["delivered"]) == (0.1, 60)
    assert rate_alerts(HOUR, counts, LIMITS)[0].alert_id == spike.alert_id  # deterministic


def test_below_the_minimum_volume_or_the_thresholds_no_alert() -> None:
    assert rate_alerts(HOUR, {"delivered": 1, "undelivered": 1}, LIMITS) == []
    assert rate_alerts(HOUR, {"delivered": 90, "read": 50, "undelivered": 10}, LIMITS) == []


def test_only_the_configured_window_size() -> None:
    minute = WindowKey("1m", HOUR.start, "acme", "", "")
    assert rate_alerts(minute, {"delivered": 40, "undelivered": 60}, LIMITS) == []


def test_more_free_form_failures_outside_the_service_window_than_the_threshold() -> None:
    limits = RateThresholds(service_window_failures=10)
    at_threshold = {"freeform_outside": 30, "freeform_outside_failed": 10}
    assert rate_alerts(HOUR, at_threshold, limits) == []  # more than 10, not 10
    [alert] = rate_alerts(HOUR, {"freeform_outside": 30, "freeform_outside_failed": 11}, limits)
    assert (alert.type, alert.severity) == ("SERVICE_WINDOW_FAILURES", "warning")
    assert alert.alert_id == f"SERVICE_WINDOW_FAILURES|acme|1h|{HOUR.start}"
    assert (alert.details["failed"], alert.details["sentOutsideWindow"]) == (11, 30)
    # No minimum volume: each such failure is a message the customer never got.
    assert rate_alerts(HOUR, {"freeform_outside_failed": 1},
                       RateThresholds(service_window_failures=0)) != []  # fmt: skip
