"""The phones worker's topic schema (phone_state) against the records the worker writes.

Like the other topics' schemas (test_topic_schemas.py, test_funnel_schemas.py), this is
the contract of our own output and strict: every key of `phone_state_value` is required,
no other is allowed. Records are validated in their wire form (through orjson and back).
The records come from hypothesis: phone states folded from random phone events with
`rules.apply`, as the worker folds them, and from the example webhook bodies through
normalize. No Kafka involved.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from example_bodies import EXAMPLE_NAMES, EXAMPLE_PATHS, Mutation
from hypothesis import given, settings
from hypothesis import strategies as st
from topic_records import (
    assert_valid,
    errors,
    properties_without_description,
    remove_at,
    set_at,
    topic_validator,
    wire,
)
from typed_events import phone_event

import schemas
from processors.alerts import WITHDRAWN, Alert, alert_value
from processors.normalize import canonical
from processors.normalize.records import PhoneEvent
from processors.normalize.rules import Normalized, normalize
from processors.phones.rules import (
    HISTORY_LENGTH,
    TIER_RANK,
    PhoneState,
    TierChange,
    apply,
    phone_state_value,
)
from wapipe import topics

PHONE_STATE = topics.PHONE_STATE.suffix
ALERTS = topics.ALERTS.suffix
NUMBER = "4930901820"
BUSINESS_ACCOUNT = "104233889912345"
START = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
# Meta's events (8x8's webhook docs), one it may add, and none (the webhook schema requires one).
EVENTS = ("UPGRADE", "DOWNGRADE", "FLAGGED", "UNFLAGGED", "ONBOARDING", "THROUGHPUT_UPGRADE")
# Every tier we rank, and names we do not know (kept as sent).
TIERS = (*TIER_RANK, "TIER_5K", "TIER_25K")
PHONE_EXAMPLES = [
    name
    for name, path in zip(EXAMPLE_NAMES, EXAMPLE_PATHS, strict=True)
    if orjson.loads(path.read_bytes()).get("eventType") == "phone_number_quality_update"
]
PATHS = dict(zip(EXAMPLE_NAMES, EXAMPLE_PATHS, strict=True))


# --------------------------------------------------------------------------- helpers


def at(milliseconds: int) -> str:
    return canonical.format_timestamp(START + timedelta(milliseconds=milliseconds))


def phone(
    milliseconds: int,
    event: str | None,
    current: str | None = None,
    old: str | None = None,
    reason: str | None = None,
    *,
    event_id: str | None = None,
    number: str = NUMBER,
    business_account_id: str | None = BUSINESS_ACCOUNT,
    occurred: bool = True,
) -> PhoneEvent:
    """A phone event at `milliseconds` after START: its occurredAt, or only its receivedAt
    when not `occurred`."""
    ids = {"event_id": event_id} if event_id else {}
    return phone_event(at(milliseconds), event, current, old, reason, **ids,
                       display_phone_number=number, business_account_id=business_account_id,
                       occurred_at=at(milliseconds) if occurred else None)  # fmt: skip


def fold(events: list[PhoneEvent], number: str = NUMBER) -> list[PhoneState]:
    """The state after each event, as the worker goes (an ignored event leaves it)."""
    return fold_with_alerts(events, number)[0]


def fold_with_alerts(
    events: list[PhoneEvent], number: str = NUMBER
) -> tuple[list[PhoneState], list[Alert]]:
    """The state after each event, and every alert sent (corrections included)."""
    states, alerts, state = [], [], PhoneState(number)
    for event in events:
        outcome = apply(state, event)
        state = outcome.state
        states.append(state)
        alerts += outcome.alerts
    return states, alerts


def assert_promises(record: dict[str, Any]) -> None:
    """What the descriptions promise beyond the schema."""
    history = record["tierHistory"]
    times = [change["at"] for change in history]
    assert times == sorted(times)
    assert record["updatedAt"] is not None
    assert all(time <= record["updatedAt"] for time in times)
    assert (history == []) == (record["currentLimit"] is None)
    if history:
        assert history[-1]["tier"] == record["currentLimit"]
    tiers = [change["tier"] for change in history]
    assert all(a != b for a, b in itertools.pairwise(tiers))
    if not record["flagged"]:
        assert record["flagReason"] is None


# --------------------------------------------------------------------------- schema file


def test_schema_header() -> None:
    document = schemas.load(f"topics/{PHONE_STATE}")
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["$id"] == f"{schemas.BASE_URI}topics/{PHONE_STATE}{schemas.SUFFIX}"
    assert document["title"].startswith(f"whatsapp.{PHONE_STATE}: ")


def test_schema_describes_key_timestamp_and_evolution() -> None:
    document = schemas.load(f"topics/{PHONE_STATE}")
    description = document["description"]
    for needle in ("Kafka key", "Kafka timestamp", "tolerate", "compacted"):
        assert needle in description, needle
    assert document["type"] == "object"
    assert document["additionalProperties"] is False


def test_every_property_has_a_description() -> None:
    assert properties_without_description(schemas.load(f"topics/{PHONE_STATE}")) == []


def test_tier_change_is_closed() -> None:
    document = schemas.load(f"topics/{PHONE_STATE}")
    history = document["properties"]["tierHistory"]
    assert history["items"] == {"$ref": "#/$defs/tierChange"}
    change = document["$defs"]["tierChange"]
    assert change["additionalProperties"] is False
    assert set(change["required"]) == set(change["properties"]) == {"at", "tier"}


# --------------------------------------------------------------------------- schema == code


def test_required_are_the_record_keys() -> None:
    document = schemas.load(f"topics/{PHONE_STATE}")
    keys = list(phone_state_value(PhoneState(NUMBER)))
    assert len(document["required"]) == len(set(document["required"]))
    assert set(document["required"]) == set(keys)
    assert set(document["properties"]) == set(keys)


def test_tier_change_required_are_the_history_item_keys() -> None:
    change = schemas.load(f"topics/{PHONE_STATE}")["$defs"]["tierChange"]
    (state,) = fold([phone(0, "ONBOARDING", "TIER_10K")])
    items = wire(phone_state_value(state))["tierHistory"]
    assert [set(item) for item in items] == [set(change["required"])]
    assert [TierChange(**item) for item in items] == list(state.tier_history)


def test_history_length_is_the_code_s() -> None:
    history = schemas.load(f"topics/{PHONE_STATE}")["properties"]["tierHistory"]
    assert history["maxItems"] == HISTORY_LENGTH
    assert str(HISTORY_LENGTH) in history["description"]


def test_the_known_tiers_are_listed() -> None:
    document = schemas.load(f"topics/{PHONE_STATE}")
    current = document["properties"]["currentLimit"]
    tier = document["$defs"]["tierChange"]["properties"]["tier"]
    for schema in (current, tier):
        assert set(schema["examples"]) == set(TIER_RANK)
    for name in TIER_RANK:
        assert name in current["description"], name


def test_last_event_lists_meta_s_events() -> None:
    last = schemas.load(f"topics/{PHONE_STATE}")["properties"]["lastEvent"]
    assert last["examples"] == list(EVENTS)
    for name in EVENTS:
        assert name in last["description"], name


@pytest.mark.parametrize(
    ("name", "phone_name"),
    [
        ("displayPhoneNumber", "displayPhoneNumber"),
        ("businessAccountId", "businessAccountId"),
        ("currentLimit", "currentLimit"),
        ("flagReason", "reason"),
        ("lastEvent", "event"),
    ],
)
def test_copies_the_phone_field_spelling(name: str, phone_name: str) -> None:
    event = schemas.load(f"topics/{topics.PHONE.suffix}")["properties"][phone_name]
    state = schemas.load(f"topics/{PHONE_STATE}")["properties"][name]
    assert state.get("$ref") == event.get("$ref")
    assert state["type"] == event["type"]


# --------------------------------------------------------------------------- generated records

# Times within a day of START, few enough to tie (events at the same time) and to arrive
# late (stale); ids from a small pool, so that some events repeat.
phone_events = st.builds(
    phone,
    st.integers(0, 86_400_000) | st.integers(0, 10).map(lambda n: n * 3_600_000),
    st.sampled_from([None, *EVENTS, "SOMETHING_NEW"]),
    st.sampled_from([None, *TIERS]),
    st.sampled_from([None, "TIER_10K", "TIER_1K"]),
    st.sampled_from([None, "QUALITY_DECREASE", "NONE"]),
    event_id=st.sampled_from([None, "p-a", "p-b"]),
    business_account_id=st.sampled_from([None, BUSINESS_ACCOUNT, "<BusinessAccountId>"]),
    occurred=st.booleans(),
)


@settings(deadline=None)
@given(
    st.lists(phone_events, min_size=1, max_size=60),
    st.sampled_from([NUMBER, "15550783881", ""]),
)
def test_every_phone_state_is_valid(events: list[PhoneEvent], number: str) -> None:
    for state in fold(events, number):
        record = assert_valid(PHONE_STATE, phone_state_value(state))
        assert record["displayPhoneNumber"] == number
        assert_promises(record)


@settings(deadline=None)
@given(st.lists(phone_events, min_size=1, max_size=40))
def test_every_phone_alert_and_correction_is_valid(events: list[PhoneEvent]) -> None:
    """Events arrive in any order here, so corrections come too: all valid alerts."""
    _, alerts = fold_with_alerts(events)
    for alert in alerts:
        record = assert_valid(ALERTS, alert_value(alert))
        assert record["alertId"].startswith(f"{record['type']}|{NUMBER}|")
        assert record["subject"]["displayPhoneNumber"] == NUMBER
        if record["type"] == WITHDRAWN:
            assert record["supersedes"] == [record["details"]["withdrawnAlertId"]]


def test_a_long_history_is_valid_and_capped() -> None:
    tiers = itertools.cycle(["TIER_1K", "TIER_10K", "TIER_NEW"])
    events = [phone(n * 60_000, "UPGRADE", next(tiers)) for n in range(HISTORY_LENGTH + 5)]
    record = assert_valid(PHONE_STATE, phone_state_value(fold(events)[-1]))
    assert len(record["tierHistory"]) == HISTORY_LENGTH
    assert record["tierHistory"][0]["at"] == at(5 * 60_000)
    assert_promises(record)


# --------------------------------------------------------------------------- examples


def test_there_are_phone_examples() -> None:
    assert len(PHONE_EXAMPLES) >= 3
    assert any(name.startswith("8x8-docs/") for name in PHONE_EXAMPLES)


def normalized_phone(name: str) -> PhoneEvent:
    result = normalize(PATHS[name].read_bytes(), None)
    assert isinstance(result, Normalized), result
    assert isinstance(result.record, PhoneEvent)
    return result.record


@pytest.mark.parametrize("name", PHONE_EXAMPLES)
def test_example_gives_a_valid_record(name: str) -> None:
    event = normalized_phone(name)
    (state,) = fold([event], event.display_phone_number)
    record = assert_valid(PHONE_STATE, phone_state_value(state))
    assert record["updatedAt"] == event.occurred_at
    assert record["lastEvent"] == event.event
    assert_promises(record)


def test_examples_folded_per_number_give_valid_records() -> None:
    events = [normalized_phone(name) for name in PHONE_EXAMPLES]
    by_number: dict[str, list[PhoneEvent]] = {}
    for event in sorted(events, key=lambda e: e.occurred_at or ""):  # in event time
        by_number.setdefault(event.display_phone_number, []).append(event)
    for number, story in by_number.items():
        for state in fold(story, number):
            assert_promises(assert_valid(PHONE_STATE, phone_state_value(state)))


# --------------------------------------------------------------------------- wrong values


def _phone_state_record() -> dict[str, Any]:
    states = fold(
        [
            phone(0, "ONBOARDING", "TIER_10K"),
            phone(60_000, "DOWNGRADE", "TIER_1K", old="TIER_10K"),
            phone(120_000, "FLAGGED", reason="QUALITY_DECREASE"),
        ]
    )
    return wire(phone_state_value(states[-1]))


def _history_of(length: int) -> Mutation:
    def mutate(record: dict[str, Any]) -> None:
        record["tierHistory"] = [{"at": at(n), "tier": "TIER_1K"} for n in range(length)]

    return mutate


WRONG_RECORDS = [
    pytest.param(remove_at("tierHistory/0/tier"), "tierHistory/0", id="history-item-without-tier"),
    pytest.param(remove_at("tierHistory/1/at"), "tierHistory/1", id="history-item-without-at"),
    pytest.param(set_at("tierHistory/0/extra", 1), "tierHistory/0", id="history-item-extra"),
    pytest.param(set_at("tierHistory/0/tier", None), "tierHistory/0/tier", id="history-tier-null"),
    pytest.param(
        set_at("tierHistory/0/tier", "tier_10k"), "tierHistory/0/tier", id="history-tier-lower"
    ),
    pytest.param(
        set_at("tierHistory/0/at", "2026-11-25T08:00:00Z"),
        "tierHistory/0/at",
        id="history-at-without-milliseconds",
    ),
    pytest.param(_history_of(HISTORY_LENGTH + 1), "tierHistory", id="history-too-long"),
    pytest.param(set_at("tierHistory", None), "tierHistory", id="history-null"),
    pytest.param(set_at("flagged", "true"), "flagged", id="flagged-string"),
    pytest.param(set_at("flagged", None), "flagged", id="flagged-null"),
    pytest.param(set_at("extra", 1), "", id="extra-property"),
    pytest.param(remove_at("flagReason"), "", id="missing-property"),
    pytest.param(set_at("displayPhoneNumber", None), "displayPhoneNumber", id="number-null"),
    pytest.param(set_at("currentLimit", "tier_1k"), "currentLimit", id="currentLimit-lower"),
    pytest.param(set_at("lastEvent", "flagged"), "lastEvent", id="lastEvent-lower"),
    pytest.param(
        set_at("updatedAt", "2026-11-25T08:02:00.000+00:00"), "updatedAt", id="updatedAt-offset"
    ),
]


@pytest.mark.parametrize(("mutate", "path"), WRONG_RECORDS)
def test_wrong_value_is_invalid(mutate: Mutation, path: str) -> None:
    check = topic_validator(PHONE_STATE)
    record = _phone_state_record()
    assert check.is_valid(record), errors(check, record)  # valid before the mutation
    mutate(record)
    assert check.is_valid(record) is False
    found = errors(check, record)
    assert any("/".join(map(str, where)) == path for where, _ in found), found
