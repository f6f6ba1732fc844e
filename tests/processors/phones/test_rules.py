"""Phone-number tiers, flags and account alerts as plain functions (no Kafka)."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typed_events import NUMBER, phone_event

from processors.normalize import canonical
from processors.normalize.records import AccountEvent, PhoneEvent
from processors.phones.rules import PhoneState, account_alerts, apply, phone_state_value

BASE = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
_ids = itertools.count()


def at(hours: float) -> str:
    return canonical.format_timestamp(BASE + timedelta(hours=hours))


def phone(
    hours: float,
    event: str | None,
    current: str | None = None,
    old: str | None = None,
    reason: str | None = None,
) -> PhoneEvent:
    return phone_event(at(hours), event, current, old, reason)


def run(events: list[PhoneEvent]) -> tuple[PhoneState, list]:
    state, alerts = PhoneState(NUMBER), []
    for item in events:
        outcome = apply(state, item)
        state, alerts = outcome.state, alerts + list(outcome.alerts)
    return state, alerts


def test_flagged_then_unflagged() -> None:
    state, alerts = run([phone(0, "FLAGGED", reason="QUALITY_DECREASE"), phone(5, "UNFLAGGED")])
    assert [(a.type, a.severity) for a in alerts] == [
        ("PHONE_NUMBER_FLAGGED", "warning"),
        ("PHONE_NUMBER_UNFLAGGED", "info"),
    ]
    assert alerts[0].details == {"reason": "QUALITY_DECREASE"}
    assert (state.flagged, state.flag_reason) == (False, None)


@pytest.mark.parametrize(
    ("old", "new", "kind", "severity"),
    [
        ("TIER_10K", "TIER_1K", "MESSAGING_LIMIT_DOWNGRADED", "warning"),
        ("TIER_1K", "TIER_250", "MESSAGING_LIMIT_DOWNGRADED", "critical"),
        ("TIER_2K", "TIER_UNLIMITED", "MESSAGING_LIMIT_UPGRADED", "info"),
    ],
)
def test_tier_changes_by_rank(old: str, new: str, kind: str, severity: str) -> None:
    state, alerts = run([phone(0, "ONBOARDING", old), phone(1, "THROUGHPUT_UPGRADE", new)])
    assert [(a.type, a.severity) for a in alerts] == [(kind, severity)]
    assert alerts[0].details == {"oldLimit": old, "currentLimit": new}
    assert [change.tier for change in state.tier_history] == [old, new]


def test_the_first_event_compares_with_its_old_limit() -> None:
    _, alerts = run([phone(0, "DOWNGRADE", "TIER_1K", old="TIER_10K")])
    assert [a.type for a in alerts] == ["MESSAGING_LIMIT_DOWNGRADED"]


def test_unknown_tiers_are_kept_and_follow_what_the_event_says() -> None:
    state, alerts = run(
        [
            phone(0, "ONBOARDING", "TIER_5K"),
            phone(1, "UPGRADE", "TIER_25K"),
            phone(2, None, "TIER_XL"),
        ]
    )
    assert state.tier == "TIER_XL"
    assert [a.type for a in alerts] == ["MESSAGING_LIMIT_UPGRADED"]


def test_a_renamed_tier_is_no_change_and_the_same_tier_no_alert() -> None:
    _, alerts = run(
        [
            phone(0, None, "UNLIMITED"),
            phone(1, None, "TIER_UNLIMITED"),
            phone(2, "UPGRADE", "TIER_UNLIMITED"),
        ]
    )
    assert alerts == []


def test_a_duplicate_changes_nothing_and_a_late_event_takes_its_place() -> None:
    first = phone(1, "DOWNGRADE", "TIER_1K", old="TIER_10K")
    state, alerts = run([first, first])
    assert len(alerts) == 1
    assert apply(state, first).ignored == "duplicate"
    # Flagged before the downgrade, which does not unflag: the number is flagged.
    late = apply(state, phone(0, "FLAGGED"))
    assert (late.ignored, late.reordered, late.state.flagged) == (None, True, True)
    assert [a.type for a in late.alerts] == ["PHONE_NUMBER_FLAGGED"]
    assert late.state.updated_at == at(1)


def test_a_reused_event_id_with_other_content_counts_and_a_retry_does_not() -> None:
    onboarding = phone(0, "ONBOARDING", "TIER_10K")
    flagged = replace(onboarding, event="FLAGGED", current_limit=None, reason="QUALITY_DECREASE")
    retry = replace(flagged, received_at=at(0.5))
    state, alerts = run([onboarding, flagged, retry])
    assert state.flagged
    assert [a.type for a in alerts] == ["PHONE_NUMBER_FLAGGED"]
    assert apply(state, retry).ignored == "duplicate"


def test_the_record() -> None:
    state, _ = run([phone(0, "ONBOARDING", "TIER_10K"), phone(1, "FLAGGED", reason="X")])
    assert phone_state_value(state) == {
        "displayPhoneNumber": NUMBER,
        "businessAccountId": "104233889912345",
        "currentLimit": "TIER_10K",
        "tierHistory": [{"at": at(0), "tier": "TIER_10K"}],
        "flagged": True,
        "flagReason": "X",
        "lastEvent": "FLAGGED",
        "updatedAt": at(1),
    }


def account(event: str, **details: object) -> AccountEvent:
    return AccountEvent(
        event_id=f"a-{next(_ids)}",
        event_type="account_update",
        occurred_at=at(0),
        received_at=at(0),
        business_account_id="950523421983857",
        account_id="acme",
        event=event,
        details={"event": event, **details},
    )


def test_account_restriction_is_critical_with_what_and_until_when() -> None:
    restriction = account(
        "ACCOUNT_RESTRICTION",
        phoneNumber="16505552771",
        restrictionInfo=[
            {
                "restrictionType": "RESTRICTED_USER_INITIATED_CALLING",
                "expiration": "2022-01-10T20:54:17.00Z",
            }
        ],
    )
    (alert,) = account_alerts(restriction)
    assert (alert.type, alert.severity) == ("ACCOUNT_RESTRICTED", "critical")
    assert "RESTRICTED_USER_INITIATED_CALLING until 2022-01-10T20:54:17.00Z" in alert.summary
    assert account_alerts(restriction) == (alert,)  # the same event, the same alert id
    other = replace(restriction, details={"event": "ACCOUNT_RESTRICTION"})  # a reused id
    assert account_alerts(other)[0].alert_id != alert.alert_id


def test_violation_and_failed_verification_alert_and_other_events_do_not() -> None:
    assert [a.type for a in account_alerts(account("ACCOUNT_VIOLATION", violationInfo={}))] == [
        "ACCOUNT_VIOLATION"
    ]
    failed = account(
        "BUSINESS_VERIFICATION_STATUS_UPDATE",
        businessVerificationInfo={"status": "rejected", "rejectionReasons": ["X"]},
    )
    assert account_alerts(failed)[0].details == {"status": "REJECTED", "rejectionReasons": ["X"]}
    verified = account(
        "BUSINESS_VERIFICATION_STATUS_UPDATE", businessVerificationInfo={"status": "VERIFIED"}
    )
    assert account_alerts(verified) == ()
    assert account_alerts(account("SOMETHING_NEW")) == ()


_TIERS = ("TIER_50", "TIER_250", "TIER_1K", "TIER_2K", "TIER_10K", "UNLIMITED", "TIER_NEW")
phone_events = st.builds(
    phone,
    st.integers(0, 48).map(float),
    st.sampled_from([None, "UPGRADE", "DOWNGRADE", "FLAGGED", "UNFLAGGED"]),
    st.sampled_from([None, *_TIERS]),
)


@settings(max_examples=300, deadline=None)
@given(story=st.lists(phone_events, min_size=1, max_size=20), seed=st.integers(0, 2**32 - 1))
def test_repetitions_change_nothing(story: list[PhoneEvent], seed: int) -> None:
    """Any repetition of the same events (a retry: received again later; a replay after a
    crash) gives the same state and alert ids. Late events are no repetitions:
    test_order.py."""
    rng = random.Random(seed)
    state, alerts = run(story)
    noisy: list[PhoneEvent] = []
    for item in story:
        noisy.append(item)
        for _ in range(rng.randint(0, 2)):
            earlier = rng.choice(noisy)
            if rng.random() < 0.5:  # a retry: only its receive time differs
                earlier = replace(earlier, received_at=at(48 + rng.random()))
            noisy.append(earlier)
    noisy_state, noisy_alerts = run(noisy)
    assert noisy_state == state
    assert [a.alert_id for a in noisy_alerts] == [a.alert_id for a in alerts]
