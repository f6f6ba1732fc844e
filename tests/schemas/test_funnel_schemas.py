"""The funnel's topic schemas (message_state, funnel, billing) against the records the funnel
writes.

Like the normalized topics' schemas (test_topic_schemas.py), these are the contract of our
own output and strict: every key of `message_state_value` / `funnel_record` is required,
no other is allowed. Records are validated in their wire form (through orjson and back).
The records come from hypothesis: message states folded from random receipts and replies
with `state.merge`, and window totals summed from those states' `windows.contributions`,
as the worker computes them. No Kafka involved.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import reduce
from typing import Any

import pytest
from example_bodies import Mutation
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

import schemas
from processors.funnel import windows
from processors.funnel.billing import BillingKey, billing_contributions, billing_record
from processors.funnel.rate_card import Rate, RateCard
from processors.funnel.state import (
    FAILURE_STATES,
    REPLIED,
    MessageState,
    Observation,
    Stage,
    merge,
    message_state_value,
)
from processors.funnel.windows import Counts, WindowKey, add_counts, contributions, funnel_record
from processors.normalize import canonical
from wapipe import topics

MESSAGE_STATE = topics.MESSAGE_STATE.suffix
FUNNEL = topics.FUNNEL.suffix
BILLING = topics.BILLING.suffix
SUFFIXES = (MESSAGE_STATE, FUNNEL, BILLING)
CARD = RateCard({("ID", "marketing"): Rate(Decimal("0.0400"), "USD"),
                 ("*", "utility"): Rate(Decimal("0"), "EUR")})  # fmt: skip
RECEIPT_STATES = ("queued", "sent", "delivered", "read", "undelivered", "rejected", "failed")
BUCKET_LABELS = [*(str(bound) for bound in windows.TIME_BUCKETS), "+Inf"]
START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- helpers


def fold(observations: list[Observation], umid: str = "m-1") -> MessageState:
    return reduce(merge, observations, MessageState(umid=umid))


def window_totals(states: list[MessageState]) -> dict[WindowKey, Counts]:
    """Every window's total over `states`: the sum of their contributions."""
    totals: dict[WindowKey, Counts] = {}
    for state in states:
        for key, counts in contributions(state).items():
            totals[key] = add_counts(totals.get(key, {}), counts)
    return totals


def published(key: WindowKey, counts: Counts) -> dict[str, Any]:
    """The funnel record as the worker builds it: from the window id it stores (app.py)."""
    return wire(funnel_record(WindowKey.decode(key.encode()), counts))


def at(milliseconds: int) -> str:
    return canonical.format_timestamp(START + timedelta(milliseconds=milliseconds))


# --------------------------------------------------------------------------- schema files


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_schema_describes_key_timestamp_and_evolution(suffix: str) -> None:
    document = schemas.load(f"topics/{suffix}")
    assert document["title"].startswith(f"whatsapp.{suffix}: ")
    description = document["description"]
    for needle in ("Kafka key", "Kafka timestamp", "tolerate"):
        assert needle in description, needle
    assert document["type"] == "object"
    assert document["additionalProperties"] is False


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_property_has_a_description(suffix: str) -> None:
    assert properties_without_description(schemas.load(f"topics/{suffix}")) == []


def test_funnel_objects_are_closed() -> None:
    document = schemas.load(f"topics/{FUNNEL}")
    distribution = document["$defs"]["distribution"]
    assert distribution["additionalProperties"] is False
    assert distribution["properties"]["buckets"]["additionalProperties"] is False


# --------------------------------------------------------------------------- schema == code


def test_message_state_required_are_the_record_keys() -> None:
    document = schemas.load(f"topics/{MESSAGE_STATE}")
    keys = list(message_state_value(MessageState(umid="m-1")))
    assert len(document["required"]) == len(set(document["required"]))
    assert set(document["required"]) == set(keys)
    assert set(document["properties"]) == set(keys)


def test_funnel_required_are_the_record_keys() -> None:
    document = schemas.load(f"topics/{FUNNEL}")
    keys = list(funnel_record(WindowKey("1m", at(0), "", "", ""), {}))
    assert len(document["required"]) == len(set(document["required"]))
    assert set(document["required"]) == set(keys)
    assert set(document["properties"]) == set(keys)


def test_billing_required_are_the_record_keys() -> None:
    document = schemas.load(f"topics/{BILLING}")
    keys = list(billing_record(BillingKey("1h", at(0), "", "", ""), {}, None))
    assert set(document["required"]) == set(document["properties"]) == set(keys)
    assert document["properties"]["window"]["enum"] == ["1h", "1d"]


def test_distribution_required_are_the_distribution_keys() -> None:
    distribution = schemas.load(f"topics/{FUNNEL}")["$defs"]["distribution"]
    assert set(distribution["required"]) == set(windows.distribution({}, "ttd"))
    assert set(distribution["properties"]) == set(distribution["required"])
    buckets = distribution["properties"]["buckets"]
    assert buckets["required"] == BUCKET_LABELS
    assert list(buckets["properties"]) == BUCKET_LABELS
    assert list(windows.distribution({}, "ttr")["buckets"]) == BUCKET_LABELS  # type: ignore[call-overload]


def test_message_state_state_is_the_stages_and_failures_or_null() -> None:
    state = schemas.load(f"topics/{MESSAGE_STATE}")["properties"]["state"]
    stages = {stage.name.lower() for stage in Stage if stage is not Stage.NONE}
    assert set(state["enum"]) == stages | FAILURE_STATES | {None}
    assert set(state["enum"]) - {None} == set(RECEIPT_STATES)
    assert state["type"] == ["string", "null"]


def test_funnel_window_is_the_window_sizes() -> None:
    window = schemas.load(f"topics/{FUNNEL}")["properties"]["window"]
    assert window["enum"] == list(windows.WINDOW_SECONDS)


@pytest.mark.parametrize(
    "name", ["msisdn", "country", "channel", "detail", "pricingCategory", "templateCategory"]
)
def test_message_state_copies_the_receipt_field_spelling(name: str) -> None:
    receipt = schemas.load(f"topics/{topics.STATUS.suffix}")["properties"][name]
    message = schemas.load(f"topics/{MESSAGE_STATE}")["properties"][name]
    assert message["$ref"] == receipt["$ref"]
    assert message["type"] == ["string", "null"]


# --------------------------------------------------------------------------- generated records

# Canonical times within three hours (windows shared, ties) or twelve days (reads after the
# largest time bucket) of START.
times = st.one_of(st.integers(0, 3 * 3_600_000), st.integers(0, 12 * 86_400_000)).map(at)
receipts = st.builds(
    Observation,
    at=times,
    state=st.sampled_from(RECEIPT_STATES),
    detail=st.sampled_from(
        [
            None,
            "delivered_to_recipient",
            "delivered_to_operator",
            "rejected_by_operator",
            "undelivered_to_recipient",
            "sent_from_channel",
        ]
    ),
    error_code=st.sampled_from([None, 0, 15, 1022]),
    provider_error_code=st.sampled_from([None, "131009", "131047"]),
    error_message=st.sampled_from([None, "Invalid destination", "Re-engagement message"]),
    sub_account_id=st.sampled_from([None, "acme", "acme_wa_support"]),
    msisdn=st.sampled_from([None, "+6281234567890", "+4915112345678"]),
    country=st.sampled_from([None, "ID", "DE"]),
    channel=st.sampled_from([None, "whatsapp"]),
    template_category=st.sampled_from([None, "MARKETING", "UTILITY", "AUTHENTICATION"]),
    pricing_category=st.sampled_from([None, "marketing", "utility", "authentication"]),
)
replies = st.builds(Observation, at=times, state=st.just(REPLIED))
observations = st.one_of(receipts, receipts, replies)
message_states = st.builds(
    fold,
    st.lists(observations, min_size=1, max_size=10),
    umid=st.sampled_from(["m-1", "3f1c2a9e-7b41-4d0c-9a55-2e8f61d0b7aa"]),
)


@settings(deadline=None)
@given(message_states)
def test_every_message_state_is_valid(state: MessageState) -> None:
    record = assert_valid(MESSAGE_STATE, message_state_value(state))
    assert record["lastEventAt"] is not None


@settings(deadline=None)
@given(st.lists(message_states, min_size=1, max_size=8), st.sampled_from([None, CARD]))
def test_every_billing_total_is_valid(states: list[MessageState], card: RateCard | None) -> None:
    totals: dict[BillingKey, Counts] = {}
    for state in states:
        for key, counts in billing_contributions(state).items():
            totals[key] = add_counts(totals.get(key, {}), counts)
    for key, counts in totals.items():
        record = assert_valid(
            BILLING, billing_record(BillingKey.decode(key.encode()), counts, card)
        )
        assert record["windowId"] == key.encode()
        assert (record["estimatedCost"] is None) == (record["pricePerMessage"] is None)


@settings(deadline=None)
@given(st.lists(message_states, min_size=1, max_size=8))
def test_every_window_total_is_valid(states: list[MessageState]) -> None:
    for key, counts in window_totals(states).items():
        record = assert_valid(FUNNEL, published(key, counts))
        # What the descriptions promise beyond the schema.
        assert record["windowId"] == key.encode()
        assert sum(record["undeliveredByErrorCode"].values()) == record["undelivered"]
        for name, total in (("timeToDeliverSeconds", "delivered"), ("timeToReadSeconds", "read")):
            distribution = record[name]
            counts_by_bound = list(distribution["buckets"].values())
            assert counts_by_bound == sorted(counts_by_bound)
            assert distribution["count"] == counts_by_bound[-1] == record[total]
        if record["failureRate"] is not None:
            assert record["failureRate"] <= 1


def test_delivery_rate_can_exceed_one_in_a_short_window() -> None:
    # Two messages sent in the 10:00 minute are delivered in the 10:01 minute, in which
    # one message is sent: 2 deliveries for 1 send.
    delivered = "delivered_to_recipient"
    states = [
        fold([Observation(at(58_000), "sent"), Observation(at(60_000), "delivered", delivered)]),
        fold([Observation(at(59_000), "sent"), Observation(at(62_000), "delivered", delivered)]),
        fold([Observation(at(61_000), "sent")]),
    ]
    minute = WindowKey("1m", at(60_000), "", "", "")
    record = assert_valid(FUNNEL, published(minute, window_totals(states)[minute]))
    assert (record["sent"], record["delivered"], record["deliveryRate"]) == (1, 2, 2.0)
    assert (record["readRate"], record["failureRate"]) == (0.0, 0.0)


@pytest.mark.parametrize("sub_account_id", ["acme|eu", "acme%7C", "%|%"])
def test_sub_account_with_a_separator_gives_a_valid_record(sub_account_id: str) -> None:
    # The webhook schema allows any non-blank sub-account id; the window id escapes it.
    state = fold([Observation(at(0), "sent", sub_account_id=sub_account_id, country="DE")])
    for key, counts in window_totals([state]).items():
        record = assert_valid(FUNNEL, published(key, counts))
        assert record["subAccountId"] == sub_account_id


# --------------------------------------------------------------------------- wrong values


def _message_state_record() -> dict[str, Any]:
    return wire(message_state_value(fold([
        Observation(at(0), "sent", "sent_from_channel", sub_account_id="acme",
                    msisdn="+6281234567890", country="ID", channel="whatsapp",
                    template_category="MARKETING", pricing_category="marketing"),
        Observation(at(2_000), "undelivered", "undelivered_to_recipient", error_code=1022,
                    provider_error_code="131047", error_message="Re-engagement message"),
        Observation(at(9_000), REPLIED),
    ])))  # fmt: skip


def _funnel_record() -> dict[str, Any]:
    states = [
        fold([Observation(at(0), "sent", country="ID", template_category="MARKETING"),
              Observation(at(3_000), "read")]),
        fold([Observation(at(1_000), "sent", country="ID", template_category="MARKETING"),
              Observation(at(40_000), "delivered", "delivered_to_recipient")]),
        fold([Observation(at(2_000), "undelivered", country="ID", template_category="MARKETING",
                          error_code=1022)]),
    ]  # fmt: skip
    key = WindowKey("1m", at(0), "", "ID", "MARKETING")
    record = published(key, window_totals(states)[key])
    assert record["undeliveredByErrorCode"] == {"1022": 1}
    return record


def _wrong(suffix: str, mutate: Mutation, path: str, id: str) -> Any:
    """A valid record of topic `suffix` made invalid by `mutate`: an error must point at
    `path`."""
    build = _message_state_record if suffix == MESSAGE_STATE else _funnel_record
    return pytest.param(suffix, build, mutate, path, id=id)


WRONG_RECORDS = [
    _wrong(MESSAGE_STATE, set_at("state", "replied"), "state", id="state-replied"),
    _wrong(MESSAGE_STATE, set_at("state", "SENT"), "state", id="state-upper-case"),
    _wrong(MESSAGE_STATE, set_at("umid", None), "umid", id="umid-null"),
    _wrong(MESSAGE_STATE, set_at("lastEventAt", None), "lastEventAt", id="lastEventAt-null"),
    _wrong(
        MESSAGE_STATE,
        set_at("sentAt", "2026-11-25T10:00:00Z"),
        "sentAt",
        id="sentAt-without-milliseconds",
    ),
    _wrong(MESSAGE_STATE, set_at("errorCode", "1022"), "errorCode", id="errorCode-string"),
    _wrong(MESSAGE_STATE, set_at("channel", "WhatsApp"), "channel", id="channel-mixed-case"),
    _wrong(MESSAGE_STATE, set_at("country", "id"), "country", id="country-lower-case"),
    _wrong(MESSAGE_STATE, set_at("msisdn", "6281234567890"), "msisdn", id="msisdn-no-plus"),
    _wrong(
        MESSAGE_STATE,
        set_at("templateCategory", "marketing"),
        "templateCategory",
        id="templateCategory-lower-case",
    ),
    _wrong(MESSAGE_STATE, set_at("extra", 1), "", id="message-state-extra-property"),
    _wrong(MESSAGE_STATE, remove_at("detail"), "", id="message-state-missing-property"),
    _wrong(FUNNEL, set_at("sent", -1), "sent", id="sent-negative"),
    _wrong(FUNNEL, set_at("read", 1.5), "read", id="read-not-integer"),
    _wrong(FUNNEL, set_at("window", "1d"), "window", id="window-unknown-size"),
    _wrong(FUNNEL, set_at("deliveryRate", -0.5), "deliveryRate", id="deliveryRate-negative"),
    _wrong(FUNNEL, set_at("failureRate", "0.5"), "failureRate", id="failureRate-string"),
    _wrong(
        FUNNEL,
        set_at("windowStart", "2026-11-25T10:00:00+00:00"),
        "windowStart",
        id="windowStart-offset",
    ),
    _wrong(FUNNEL, set_at("windowEnd", None), "windowEnd", id="windowEnd-null"),
    _wrong(FUNNEL, set_at("country", "IDN"), "country", id="funnel-country-alpha-3"),
    _wrong(FUNNEL, set_at("extra", 1), "", id="funnel-extra-property"),
    _wrong(FUNNEL, remove_at("replyRate"), "", id="funnel-missing-property"),
    _wrong(
        FUNNEL,
        set_at("timeToDeliverSeconds/buckets/2", 0),
        "timeToDeliverSeconds/buckets",
        id="bucket-unknown-bound",
    ),
    _wrong(
        FUNNEL,
        remove_at("timeToDeliverSeconds/buckets/+Inf"),
        "timeToDeliverSeconds/buckets",
        id="bucket-missing-inf",
    ),
    _wrong(
        FUNNEL,
        set_at("timeToReadSeconds/buckets/60", -1),
        "timeToReadSeconds/buckets/60",
        id="bucket-negative",
    ),
    _wrong(
        FUNNEL, set_at("timeToReadSeconds/p50", "1.0"), "timeToReadSeconds/p50", id="p50-string"
    ),
    _wrong(FUNNEL, remove_at("timeToReadSeconds/p99"), "timeToReadSeconds", id="p99-missing"),
    _wrong(
        FUNNEL,
        set_at("timeToReadSeconds/mean", 1.0),
        "timeToReadSeconds",
        id="distribution-extra-property",
    ),
    _wrong(
        FUNNEL,
        set_at("undeliveredByErrorCode/1022", 0),
        "undeliveredByErrorCode/1022",
        id="error-code-count-zero",
    ),
    _wrong(
        FUNNEL,
        set_at("undeliveredByErrorCode/", 1),
        "undeliveredByErrorCode",
        id="error-code-empty",
    ),
]


@pytest.mark.parametrize(("suffix", "build", "mutate", "path"), WRONG_RECORDS)
def test_wrong_value_is_invalid(
    suffix: str, build: Callable[[], dict[str, Any]], mutate: Mutation, path: str
) -> None:
    check = topic_validator(suffix)
    record = build()
    assert check.is_valid(record), errors(check, record)  # valid before the mutation
    mutate(record)
    assert check.is_valid(record) is False
    found = errors(check, record)
    assert any("/".join(map(str, where)) == path for where, _ in found), found
