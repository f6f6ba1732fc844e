"""normalize's rules without Kafka: routing, canonical values, dedupe identity, rejections."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from processors.normalize.records import DeadLetterKind, InboundMessage, Receipt, record_value
from processors.normalize.rules import (
    Normalized,
    Rejected,
    dead_letter,
    event_time_limit,
    normalize,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "examples"
RECEIVED = "2026-03-14T10:00:00.000Z"

# Each example: the topic it goes to and its key.
ROUTES = {
    "inbound_document.json": ("inbound", "8d0e4b7c-1a2f-4c3d-b5e6-f7a8b9c0d1e2"),
    "inbound_list_reply.json": ("inbound", "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e"),
    "inbound_text.json": ("inbound", "3f1c2a9e-7b41-4d0c-9a55-2e8f61d0b7aa"),
    "phone_flagged.json": ("phone", "4930901820"),
    "phone_limit_downgrade.json": ("phone", "4930901820"),
    "status_read_mixed_case.json": ("status", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
    "status_sent.json": ("status", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
    "status_undelivered.json": ("status", "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"),
    "template_quality_red.json": ("template", "951847263015"),
    "template_status_paused.json": ("template", "951847263015"),
    "8x8-docs/account_update_restriction_calling.json": ("account", "950523421983857"),
    "8x8-docs/cabm_whatsapp_user_id_update.json": ("account", "<WHATSAPP_BUSINESS_ACCOUNT_ID>"),
    "8x8-docs/dr_delivered_bsuid_no_version.json": ("status", "<UNIQUE_MESSAGE_ID>"),
    "8x8-docs/dr_v8_whatsapp_undelivered_provider_error.json": ("status", "<UNIQUE_MESSAGE_ID>"),
    "8x8-docs/dr_v9_viber_delivered_to_operator.json": ("status", "<UNIQUE_MESSAGE_ID>"),
    "8x8-docs/dr_v9_whatsapp_delivered_outboundcontent_template.json": (
        "status", "<UNIQUE_MESSAGE_ID>"),
    "8x8-docs/dr_v9_whatsapp_queued_no_channeluserid.json": ("status", "<UNIQUE_MESSAGE_ID>"),
    "8x8-docs/external_app_message_v9.json": ("inbound", "<UNIQUE_MESSAGE_ID>"),
    "8x8-docs/inbound_v3_whatsapp_call_permission_reply.json": ("inbound", "<UNIQUE_MESSAGE_ID>"),
    "8x8-docs/inbound_v3_whatsapp_flow_nfmreply.json": ("inbound", "<UNIQUE_MESSAGE_ID>"),
    "8x8-docs/inbound_v3_whatsapp_text_all_user_fields.json": ("inbound", "<UNIQUE_MESSAGE_ID>"),
    "8x8-docs/phone_quality_onboarding_max_daily.json": ("phone", "15550783881"),
    "8x8-docs/template_category_update.json": ("template", "<TEMPLATE_ID>"),
    "8x8-docs/template_status_paused_first_pause.json": ("template", "<TEMPLATE_ID>"),
}  # fmt: skip


def _load(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_bytes())


def _normalize(body: dict | bytes) -> Normalized:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    result = normalize(raw, RECEIVED)
    assert isinstance(result, Normalized), result
    return result


def test_every_example_is_routed():
    assert sorted(ROUTES) == sorted(
        p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.json")
    )


@pytest.mark.parametrize(("name", "route"), ROUTES.items(), ids=list(ROUTES))
def test_each_example_goes_to_its_topic_with_its_key(name, route):
    result = _normalize((EXAMPLES / name).read_bytes())
    assert (result.topic.suffix, result.key) == route
    assert record_value(result.record)["receivedAt"] == RECEIVED


def test_receipt_values_are_canonical():
    receipt = _normalize(_load("status_read_mixed_case.json")).record
    assert isinstance(receipt, Receipt)
    assert (receipt.channel, receipt.state, receipt.detail) == ("whatsapp", "read", None)
    assert receipt.occurred_at == "2026-03-14T10:01:37.400Z"
    assert (receipt.msisdn, receipt.country) == ("+6281234567890", "ID")


def test_receipt_event_time_is_the_status_timestamp():
    result = _normalize(_load("status_sent.json"))
    assert result.occurred_at is not None
    assert result.occurred_at.isoformat() == "2026-03-14T10:00:01.512000+00:00"


def test_failure_receipt_keeps_error_codes():
    receipt = _normalize(_load("8x8-docs/dr_v8_whatsapp_undelivered_provider_error.json")).record
    assert isinstance(receipt, Receipt)
    assert (receipt.state, receipt.detail) == ("undelivered", "rejected_by_operator")
    assert (receipt.error_code, receipt.error_message) == (15, "Invalid destination")
    assert receipt.provider_error_code == "131009"
    assert receipt.msisdn is None  # the placeholder is no phone number
    assert (receipt.batch_id, receipt.client_message_id) == ("<BATCH_ID>", "<YOUR_MESSAGE_ID>")


def test_error_code_given_as_digits_becomes_an_integer():
    body = _load("status_undelivered.json")
    body["payload"]["status"]["errorCode"] = "1022"
    receipt = _normalize(body).record
    assert isinstance(receipt, Receipt)
    assert receipt.error_code == 1022


def test_delivered_receipt_carries_the_template_and_pricing():
    receipt = _normalize(
        _load("8x8-docs/dr_v9_whatsapp_delivered_outboundcontent_template.json")
    ).record
    assert isinstance(receipt, Receipt)
    assert (receipt.template_name, receipt.template_language, receipt.template_category) == (
        "marketing_welcome_template", "en_US", "MARKETING")  # fmt: skip
    assert receipt.pricing_category == "marketing"
    assert receipt.version == 9


def test_other_channels_are_kept_and_marked():
    receipt = _normalize(_load("8x8-docs/dr_v9_viber_delivered_to_operator.json")).record
    assert isinstance(receipt, Receipt)
    assert (receipt.channel, receipt.detail) == ("viber", "delivered_to_operator")


def test_bsuid_customer_gets_the_country_of_the_prefix():
    body = _load("8x8-docs/dr_delivered_bsuid_no_version.json")
    del body["payload"]["user"]["msisdn"]
    receipt = _normalize(body).record
    assert isinstance(receipt, Receipt)
    assert (receipt.msisdn, receipt.country) == (None, "US")


def test_inbound_values_are_canonical_and_the_original_type_kept():
    message = _normalize(_load("inbound_list_reply.json")).record
    assert isinstance(message, InboundMessage)
    assert (message.type, message.raw_type, message.interactive_type) == (
        "interactive", "Interactive", "list_reply")  # fmt: skip
    assert message.reply_to_umid == "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    assert (message.channel, message.country, message.echo) == ("whatsapp", "ID", False)
    assert message.occurred_at == "2026-03-14T10:02:44.000Z"


def test_echo_of_a_business_app_message_is_marked():
    message = _normalize(_load("8x8-docs/external_app_message_v9.json")).record
    assert isinstance(message, InboundMessage)
    assert message.echo is True
    assert message.channel == "whatsapp"


def test_inbound_without_timestamp_has_no_event_time():
    body = _load("inbound_text.json")
    del body["payload"]["timestamp"]
    result = _normalize(body)
    assert result.occurred_at is None
    assert result.record.occurred_at is None


def test_line_flat_shape_is_kept():
    result = _normalize(
        {"namespace": "ChatApps", "eventType": "inbound_message_received",
         "inboundMessage": {"umid": "L1", "channel": "LINE", "type": "text",
                            "content": {"text": "hi"}}}
    )  # fmt: skip
    assert (result.topic.suffix, result.key, result.record.channel) == ("inbound", "L1", "line")


def test_phone_tier_from_the_new_field_or_the_deprecated_one():
    onboarding = _normalize(_load("8x8-docs/phone_quality_onboarding_max_daily.json")).record
    downgrade = _normalize(_load("phone_limit_downgrade.json")).record
    assert (onboarding.event, onboarding.current_limit) == ("ONBOARDING", "TIER_10K")
    assert (downgrade.event, downgrade.current_limit, downgrade.old_limit) == (
        "DOWNGRADE", "TIER_1K", "TIER_10K")  # fmt: skip


def test_template_event_carries_metas_strike_title():
    event = _normalize(_load("8x8-docs/template_status_paused_first_pause.json")).record
    assert (event.status, event.reason, event.other_info_title) == ("PAUSED", "NONE", "FIRST_PAUSE")


def test_integer_template_id_is_a_string_key():
    body = _load("template_quality_red.json")
    body["eventDetails"]["templateId"] = 951847263015
    result = _normalize(body)
    assert result.key == "951847263015"
    assert (result.record.previous_quality, result.record.new_quality) == ("YELLOW", "RED")


# --- dedupe identity ------------------------------------------------------------------------
def test_a_retry_has_the_same_dedupe_key():
    raw = (EXAMPLES / "inbound_text.json").read_bytes()
    assert _normalize(raw).dedupe_key == _normalize(raw).dedupe_key


def test_a_resend_with_other_spacing_and_key_order_is_the_same_event():
    body = _load("inbound_text.json")
    respaced = orjson.dumps(dict(reversed(list(body.items()))), option=orjson.OPT_INDENT_2)
    assert _normalize(respaced).dedupe_key == _normalize(body).dedupe_key


def test_receipts_are_identified_by_umid_state_and_detail_only():
    first = _load("status_sent.json")
    later = copy.deepcopy(first)
    later["payload"]["status"]["timestamp"] = "2026-03-15T00:00:00Z"
    later["payload"]["user"]["channelUserId"] = "+6281234567890"
    other_detail = copy.deepcopy(first)
    other_detail["payload"]["status"]["detail"] = "something_else"
    upper_state = copy.deepcopy(first)
    upper_state["payload"]["status"]["state"] = "SENT"
    key = _normalize(first).dedupe_key
    assert key == "status|0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d|sent|sent_from_channel"
    assert _normalize(later).dedupe_key == key
    assert _normalize(upper_state).dedupe_key == key
    assert _normalize(other_detail).dedupe_key != key


def test_an_id_reused_for_other_content_is_a_new_event():
    # 8x8's own documentation reuses one eventId for three different events.
    names = ["template_category_update.json", "template_status_paused_first_pause.json",
             "phone_quality_onboarding_max_daily.json"]  # fmt: skip
    results = [_normalize(_load(f"8x8-docs/{name}")) for name in names]
    assert len({r.dedupe_key for r in results}) == 3
    assert len({r.id_key for r in results}) == 1
    assert len({r.digest for r in results}) == 3


def test_inbound_with_the_same_umid_and_other_content_is_a_new_event():
    body = _load("inbound_text.json")
    edited = copy.deepcopy(body)
    edited["payload"]["content"]["text"] = "Something else"
    first, second = _normalize(body), _normalize(edited)
    assert first.id_key == second.id_key
    assert first.dedupe_key != second.dedupe_key


# --- rejections -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "kind", "reason"),
    [
        (b"not json", DeadLetterKind.INVALID_BODY, "not JSON"),
        (b"[1, 2]", DeadLetterKind.INVALID_BODY, "not a JSON object"),
        (b'{"eventType": "something_new"}', DeadLetterKind.UNKNOWN_EVENT_TYPE, "something_new"),
        (b'{"hello": "world"}', DeadLetterKind.UNKNOWN_EVENT_TYPE, "None"),
        (b'{"namespace": "ChatApps", "eventType": "outbound_message_status_changed", '
         b'"payload": {"umid": "u", "subAccountId": "s"}}', DeadLetterKind.SCHEMA_VIOLATION,
         "does not match its schema"),
        (b'{"namespace": "ChatApps", "eventType": "outbound_message_status_changed", '
         b'"payload": {"umid": "u", "subAccountId": "s", "status": {"state": "sent", '
         b'"timestamp": "2026-02-30T10:00:00Z"}}}', DeadLetterKind.INVALID_VALUE,
         "payload.status.timestamp"),
    ],
    ids=["not-json", "array", "unknown-type", "no-type", "receipt-without-status",
         "impossible-date"],
)  # fmt: skip
def test_rejections_say_why(raw, kind, reason):
    result = normalize(raw, RECEIVED)
    assert isinstance(result, Rejected)
    assert result.kind is kind
    assert reason in result.reason


def test_schema_violation_lists_the_paths():
    result = normalize(
        b'{"namespace": "ChatApps", "eventType": "outbound_message_status_changed", '
        b'"payload": {"umid": "u", "subAccountId": "s", "status": {"state": "exploded", '
        b'"timestamp": "2026-03-14T10:00:00Z"}}}',
        RECEIVED,
    )
    assert isinstance(result, Rejected)
    assert any(error.startswith("payload/status/state:") for error in result.errors)


def test_dead_letter_keeps_the_original_bytes_and_where_they_came_from():
    raw = b'{"eventType": "something_new", "x": "\xc3\xa9"}'
    rejected = normalize(raw, RECEIVED)
    assert isinstance(rejected, Rejected)
    letter = dead_letter(rejected, raw, source_topic="whatsapp.webhooks.raw", source_partition=2,
                         source_offset=41, key=b"k-1", received_at=RECEIVED)  # fmt: skip
    value = record_value(letter)
    assert value["original"].encode() == raw
    source = (value["sourceTopic"], value["sourcePartition"], value["sourceOffset"], value["key"])
    assert source == ("whatsapp.webhooks.raw", 2, 41, "k-1")
    assert value["kind"] == "unknown_event_type"
    assert orjson.loads(orjson.dumps(value))["kind"] == "unknown_event_type"


def _receipt_at(timestamp: str) -> bytes:
    body = json.loads((EXAMPLES / "status_sent.json").read_text())
    body["payload"]["status"]["timestamp"] = timestamp
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("timestamp", "accepted"),
    [
        ("2026-03-14T10:50:00Z", True),  # on the limit
        ("2026-03-14T10:50:00.001Z", False),
        ("2026-03-14T09:00:00Z", True),
        ("9999-12-31T23:59:59Z", False),  # Kafka would refuse it as a timestamp
    ],
)
def test_an_event_time_after_the_limit_is_dead_lettered(timestamp, accepted):
    latest = event_time_limit(RECEIVED, datetime(2000, 1, 1, tzinfo=UTC), timedelta(minutes=50))
    assert latest == datetime(2026, 3, 14, 10, 50, tzinfo=UTC), "counted from the receipt"
    result = normalize(_receipt_at(timestamp), RECEIVED, latest)
    assert isinstance(result, Normalized) is accepted
    if not accepted:
        assert isinstance(result, Rejected)
        assert result.kind is DeadLetterKind.INVALID_VALUE
        assert "the latest accepted" in result.reason
        assert result.event_type == "outbound_message_status_changed"


def test_without_a_receipt_time_the_limit_counts_from_now():
    now = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
    for received_at in (None, "", "not a time"):
        assert event_time_limit(received_at, now, timedelta(0)) == now
