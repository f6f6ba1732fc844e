"""Rate alerts on a sub-account's funnel window, as plain functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from processors.funnel.batch import TotalsFold, decide
from processors.funnel.rate_alerts import RateThresholds, rate_alerts, subaccount_key
from processors.funnel.windows import SIZE_SECONDS, WindowKey
from processors.normalize import canonical

LIMITS = RateThresholds(window="1h", failure_rate=0.2, read_rate=0.3, min_volume=50)
HOUR = WindowKey("1h", "2026-11-25T10:00:00.000Z", "acme", "", "")


def ms(at: str) -> int:
    return canonical.epoch_ms(canonical.parse_timestamp(at, "at"))


def test_a_sub_accounts_window_sums_its_countries_and_categories_of_the_alerts_size() -> None:
    part = WindowKey("1h", HOUR.start, "acme", "ID", "MARKETING")
    assert subaccount_key(part) == HOUR
    horizon = LIMITS.horizon()
    assert horizon.key(part) == horizon.key(WindowKey("1h", HOUR.start, "acme", "DE", "")) == HOUR
    assert horizon.key(WindowKey("1m", HOUR.start, "acme", "DE", "")) is None
    assert (horizon.after, horizon.size) == (LIMITS.delay, "1h")


def test_a_window_is_decided_at_its_end_plus_the_delay() -> None:
    limits = RateThresholds(window="1h", delay=timedelta(minutes=10))
    assert limits.decides_at(HOUR) == ms("2026-11-25T11:10:00.000Z")


@given(st.sampled_from(["1m", "1h"]), st.integers(0, 1_440),
       st.integers(ms("2020-01-01T00:00:00.000Z"), ms("2030-01-01T00:00:00.000Z")))  # fmt: skip
def test_progress_goes_down_to_the_last_decision_point(size: str, delay: int, at: int) -> None:
    """What a hop sends as its progress (`to_decision`): the last point at or before its
    stream time where some window of the alerts' size is decided, so the deltas hop
    decides exactly what the stream time itself would have let it."""
    limits = RateThresholds(window=size, delay=timedelta(minutes=delay))
    point = limits.to_decision(at)
    size_ms = SIZE_SECONDS[size] * 1000
    start = datetime.fromtimestamp((point - delay * 60_000 - size_ms) / 1000, UTC)
    window = WindowKey(size, canonical.format_timestamp(start), "acme", "", "")
    assert limits.decides_at(window) == point <= at
    assert at - point < size_ms  # no later decision point in between


def test_deltas_count_toward_the_alerts_until_the_window_is_decided_and_not_after() -> None:
    first = TotalsFold({}, {}, LIMITS)
    first.add_for_alerts(HOUR.encode(), {"delivered": 40})
    first.add_for_alerts(HOUR.encode(), {"undelivered": 1})
    assert first.touched_subaccounts[HOUR.encode()].counts == {"delivered": 40, "undelivered": 1}
    assert first.totals == {}  # the funnel's windows take the window deltas
    decided, alerts = decide(HOUR, first.touched_subaccounts[HOUR.encode()], LIMITS)
    assert alerts == []  # 1 of 41 failed; the 40 delivered are not read, but too few
    second = TotalsFold(first.totals, {HOUR.encode(): decided}, LIMITS)  # as committed
    second.add_for_alerts(HOUR.encode(), {"undelivered": 50})  # a decided window takes no more
    assert (second.touched_subaccounts, second.late_for_alerts) == ({}, 1)


def test_a_window_is_alerted_once_when_decided_whatever_its_running_totals() -> None:
    totals = TotalsFold({}, {}, LIMITS)
    totals.add_for_alerts(HOUR.encode(), {"delivered": 60})  # none read yet: no alert so early
    totals.add_for_alerts(HOUR.encode(), {"read": 40})
    totals.add_for_alerts(HOUR.encode(), {"undelivered": 20})
    decided, [spike] = decide(HOUR, totals.touched_subaccounts[HOUR.encode()], LIMITS)
    assert (spike.type, spike.details["failureRate"]) == ("DELIVERY_FAILURE_SPIKE", 0.25)
    assert decided.decided
    assert decided.alerted == (spike.alert_id,)
    assert decide(HOUR, decided, LIMITS)[1] == []  # decided again (a timer run twice): none


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
