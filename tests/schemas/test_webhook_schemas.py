"""The webhook JSON Schemas (schemas/webhooks/*.schema.json) against example and derived bodies.

Every example body must be of a recognised shape; variants of them that real traffic
produces (other letter case, missing optional fields, newer versions, other channels,
unknown extra fields...) must stay valid; broken bodies must be invalid, with an error
that points at the broken field.
"""

from __future__ import annotations

from typing import Any

import pytest
from example_bodies import (
    EXAMPLE_NAMES,
    Body,
    derive,
    drop,
    example,
    put,
)

import schemas

KNOWN_EVENT_TYPES = (
    "inbound_message_received",
    "outbound_message_status_changed",
    "external_app_message",
    "template_status_update",
    "template_quality_update",
    "template_category_update",
    "template_correct_category_detection",
    "phone_number_quality_update",
    "account_update",
    "whatsapp_user_id_update",
    "whatsapp_contact",
    "whatsapp_preference",
)
WEBHOOK_SCHEMA_NAMES = {
    f"webhooks/{name}"
    for name in (*KNOWN_EVENT_TYPES, "common", "chatapps_envelope", "account_envelope", "webhook")
}
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


# --------------------------------------------------------------------------- helpers


def webhook_validator() -> Any:
    return schemas.validator("webhooks/webhook")


def event_validator(body: Body) -> Any:
    return schemas.validator(f"webhooks/{body['eventType']}")


def errors(validator: Any, body: Body) -> list[tuple[tuple[str | int, ...], str]]:
    return [(tuple(error.instance_path), error.message) for error in validator.iter_errors(body)]


def assert_valid(body: Body) -> None:
    validator = webhook_validator()
    assert validator.is_valid(body), errors(validator, body)
    own = event_validator(body)
    assert own.is_valid(body), errors(own, body)


def add_unknown_fields(node: Any) -> None:
    """Add an unknown scalar and an unknown object field to every object, recursively."""
    if isinstance(node, dict):
        for value in list(node.values()):
            add_unknown_fields(value)
        node["xUnknownField"] = "added without notice"
        node["x_unknown_object"] = {"nested": [1, "two", None], "flag": True}
    elif isinstance(node, list):
        for item in node:
            add_unknown_fields(item)


INBOUND = "inbound_text.json"
RECEIPT = "status_sent.json"
ECHO = "8x8-docs/external_app_message_v9.json"
TEMPLATE_STATUS = "template_status_paused.json"
TEMPLATE_QUALITY = "template_quality_red.json"
TEMPLATE_CATEGORY = "8x8-docs/template_category_update.json"
PHONE = "phone_flagged.json"
PHONE_LIMIT = "phone_limit_downgrade.json"
ACCOUNT_UPDATE = "8x8-docs/account_update_restriction_calling.json"
BSUID = "US.13491208655302741918"


# --------------------------------------------------------------------------- schema files


@pytest.mark.parametrize("name", sorted(schemas.schema_files()))
def test_schema_file_loads_and_compiles(name: str) -> None:
    document = schemas.load(name)
    assert document["$id"] == f"{schemas.BASE_URI}{name}{schemas.SUFFIX}"
    for keyword in ("title", "description"):
        assert isinstance(document.get(keyword), str), keyword
        assert document[keyword].strip(), keyword
    if name.startswith("webhooks/"):
        assert document["$schema"] == DRAFT_2020_12
    assert schemas.validator(name) is not None


def test_all_webhook_schema_files_exist() -> None:
    present = {name for name in schemas.schema_files() if name.startswith("webhooks/")}
    assert present >= WEBHOOK_SCHEMA_NAMES, sorted(WEBHOOK_SCHEMA_NAMES - present)


def test_entry_point_dispatches_every_known_event_type() -> None:
    document = schemas.load("webhooks/webhook")
    assert set(document["properties"]["eventType"]["enum"]) == set(KNOWN_EVENT_TYPES)
    branches = {
        branch["if"]["properties"]["eventType"]["const"]: branch["then"]["$ref"]
        for branch in document["allOf"]
    }
    assert branches == {name: f"{name}.schema.json" for name in KNOWN_EVENT_TYPES}


def _forbidding_keywords(node: Any, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for keyword in ("additionalProperties", "unevaluatedProperties"):
            if node.get(keyword) is False:
                found.append(f"{path}/{keyword}")
        for key, value in node.items():
            found += _forbidding_keywords(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _forbidding_keywords(value, f"{path}/{index}")
    return found


@pytest.mark.parametrize("name", sorted(WEBHOOK_SCHEMA_NAMES))
def test_webhook_schema_never_forbids_extra_fields(name: str) -> None:
    assert _forbidding_keywords(schemas.load(name)) == []


def test_load_unknown_name_raises_key_error() -> None:
    with pytest.raises(KeyError):
        schemas.load("nope")


# --------------------------------------------------------------------------- examples


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_is_a_recognised_webhook(name: str) -> None:
    body = example(name)
    validator = webhook_validator()
    assert validator.is_valid(body), errors(validator, body)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_matches_its_event_type_schema(name: str) -> None:
    body = example(name)
    assert body["eventType"] in KNOWN_EVENT_TYPES
    own = event_validator(body)
    assert own.is_valid(body), errors(own, body)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_with_unknown_fields_at_every_level_is_valid(name: str) -> None:
    body = example(name)
    add_unknown_fields(body)
    assert body["xUnknownField"] == "added without notice"
    assert_valid(body)


def test_examples_cover_both_envelopes() -> None:
    event_types = {example(name)["eventType"] for name in EXAMPLE_NAMES}
    assert {"inbound_message_received", "outbound_message_status_changed"} <= event_types
    assert {"template_status_update", "phone_number_quality_update"} <= event_types


# --------------------------------------------------------------------------- valid variants


def _line_body() -> Body:
    """A LINE inbound message: ChatApps envelope, flat `inboundMessage` instead of `payload`."""
    body = example(INBOUND)
    payload = body.pop("payload")
    body["inboundMessage"] = {
        "umid": payload["umid"],
        "subAccountId": "acme_line",
        "timestamp": payload["timestamp"],
        "channel": "line",
        "lineUserId": "Ua12b345678c1de0fg1a1234567891011",
        "type": "Text",
        "text": "Is my order shipped?",
    }
    return body


def _cabm_body(event_type: str) -> Body:
    body = example("8x8-docs/cabm_whatsapp_user_id_update.json")
    body["eventType"] = event_type
    body["eventDetails"] = {"rawEvent": {"field": event_type, "value": {"anything": ["goes"]}}}
    return body


VALID_VARIANTS = [
    # inbound message type: compared case-insensitively, unknown types kept
    pytest.param(derive(INBOUND, put("payload.type", "text")), id="inbound-type-lower-case"),
    pytest.param(derive(INBOUND, put("payload.type", "TEXT")), id="inbound-type-upper-case"),
    pytest.param(
        derive("inbound_document.json", put("payload.type", "document")),
        id="inbound-document-lower-case",
    ),
    pytest.param(
        derive(
            INBOUND,
            put("payload.type", "Sticker"),
            put("payload.content", {"sticker": {"id": "st-1", "animated": True}, "url": {"x": 1}}),
        ),
        id="inbound-unknown-type-sticker-opaque-content",
    ),
    pytest.param(
        derive(
            INBOUND,
            put("payload.type", "Location"),
            put("payload.content", {"location": {"latitude": 52.52, "longitude": 13.405}}),
        ),
        id="inbound-location",
    ),
    pytest.param(
        derive(
            INBOUND,
            put("payload.type", "Buttons"),
            put("payload.content", {"text": "Yes", "payload": "btn-yes"}),
        ),
        id="inbound-buttons-content-payload",
    ),
    pytest.param(
        derive(
            "inbound_list_reply.json",
            put("payload.content.interactive", {"type": "button_reply"}),
            put("payload.content.interactive.button_reply", {"id": "yes", "title": "Yes"}),
        ),
        id="inbound-interactive-button-reply",
    ),
    pytest.param(
        derive(
            "inbound_list_reply.json",
            put("payload.content.interactive.list_reply.description", "Everything included"),
        ),
        id="inbound-list-reply-with-description",
    ),
    pytest.param(
        derive(
            "inbound_list_reply.json",
            put("payload.content.interactive", {"type": "productReply", "productReply": [1]}),
        ),
        id="inbound-unknown-interactive-kind",
    ),
    # optional fields missing
    pytest.param(derive(INBOUND, drop("description")), id="inbound-no-description"),
    pytest.param(derive(RECEIPT, drop("description")), id="receipt-no-description"),
    pytest.param(derive(INBOUND, drop("payload.recipient")), id="inbound-no-recipient"),
    pytest.param(derive(INBOUND, drop("payload.timestamp")), id="inbound-no-timestamp"),
    pytest.param(derive(INBOUND, drop("payload.user.name")), id="inbound-no-user-name"),
    pytest.param(derive(INBOUND, drop("namespace")), id="inbound-no-namespace"),
    pytest.param(derive(RECEIPT, drop("payload.status.detail")), id="receipt-no-detail"),
    # users without a phone number
    pytest.param(
        derive(INBOUND, drop("payload.user.msisdn"), put("payload.user.channelUserId", BSUID)),
        id="inbound-bsuid-without-msisdn",
    ),
    pytest.param(
        derive(
            INBOUND,
            drop("payload.user.msisdn"),
            put("payload.user.channelUserId", BSUID),
            put("payload.user.username", "lena.k"),
        ),
        id="inbound-bsuid-with-username",
    ),
    pytest.param(
        derive(RECEIPT, drop("payload.user.msisdn"), put("payload.user.channelUserId", BSUID)),
        id="receipt-bsuid-without-msisdn",
    ),
    # channel and state letter case
    pytest.param(
        derive(RECEIPT, put("payload.channel", "whatsApp")), id="receipt-channel-whatsApp"
    ),
    pytest.param(derive(ECHO, put("payload.channel", "whatsApp")), id="echo-channel-whatsApp"),
    pytest.param(
        derive(INBOUND, put("payload.recipient.channel", "whatsApp")),
        id="inbound-recipient-channel-whatsApp",
    ),
    pytest.param(
        derive("status_read_mixed_case.json", put("payload.status.state", "READ")),
        id="receipt-state-READ",
    ),
    pytest.param(
        derive(RECEIPT, put("payload.status.state", "Delivered")), id="receipt-state-Delivered"
    ),
    # receipt states and details
    pytest.param(
        derive(
            RECEIPT,
            put("payload.status.state", "queued"),
            drop("payload.status.detail"),
            drop("payload.user.channelUserId"),
        ),
        id="receipt-queued",
    ),
    pytest.param(
        derive("status_undelivered.json", put("payload.status.state", "rejected")),
        id="receipt-rejected",
    ),
    pytest.param(
        derive("status_undelivered.json", put("payload.status.state", "failed")),
        id="receipt-failed",
    ),
    pytest.param(
        derive(RECEIPT, put("payload.status.detail", "some_new_detail")),
        id="receipt-unknown-detail",
    ),
    pytest.param(
        derive("status_undelivered.json", put("payload.status.errorCode", "1022")),
        id="receipt-error-code-digit-string",
    ),
    pytest.param(
        derive(
            "8x8-docs/dr_v8_whatsapp_undelivered_provider_error.json",
            put("payload.whatsapp.providerErrorCode", 131009),
        ),
        id="receipt-provider-error-code-integer",
    ),
    # other channels on the same URL
    pytest.param(
        derive(
            RECEIPT,
            put("version", 9),
            put("payload.channel", "viber"),
            put("payload.status", {"state": "delivered", "detail": "delivered_to_operator"}),
            put("payload.status.timestamp", "2026-07-03T03:21:26.06Z"),
            drop("payload.user.channelUserId"),
        ),
        id="receipt-viber",
    ),
    pytest.param(
        derive(RECEIPT, put("version", 9), put("payload.channel", "rcs")),
        id="receipt-rcs",
    ),
    pytest.param(_line_body(), id="inbound-line-flat-inboundMessage"),
    # versions
    *(
        pytest.param(derive(name, put("version", version)), id=f"{label}-version-{version}")
        for name, label in ((INBOUND, "inbound"), (RECEIPT, "receipt"), (ECHO, "echo"))
        for version in (3, 8, 9)
    ),
    pytest.param(derive(ECHO, drop("version")), id="echo-no-version"),
    pytest.param(
        derive("8x8-docs/inbound_v3_whatsapp_text_all_user_fields.json", drop("version")),
        id="inbound-no-version",
    ),
    # timestamps: 0, 2, 3, 7 (and 9) fractional digits, Z or a numeric offset
    *(
        pytest.param(derive(RECEIPT, put("payload.status.timestamp", stamp)), id=f"receipt-{label}")
        for stamp, label in (
            ("2026-03-14T10:00:01Z", "timestamp-0-digits"),
            ("2026-03-14T10:00:01.51Z", "timestamp-2-digits"),
            ("2026-03-14T10:00:01.512Z", "timestamp-3-digits"),
            ("2026-03-14T10:00:01.5120000Z", "timestamp-7-digits"),
            ("2026-03-14T10:00:01.512000000Z", "timestamp-9-digits"),
            ("2026-03-14T11:00:01+01:00", "timestamp-offset"),
            ("2026-03-14T15:30:01.5+0530", "timestamp-basic-offset"),
        )
    ),
    pytest.param(
        derive(INBOUND, put("payload.timestamp", "2026-03-14T09:26:53.1234567Z")),
        id="inbound-timestamp-7-digits",
    ),
    pytest.param(
        derive(PHONE, put("timestamp", "2026-03-16T01:12:40Z")), id="account-timestamp-0-digits"
    ),
    pytest.param(
        derive(PHONE, put("timestamp", "2026-03-16T01:12:40.123Z")), id="account-timestamp-3-digits"
    ),
    # templates
    pytest.param(
        derive(TEMPLATE_QUALITY, put("eventDetails.templateId", 951847263015)),
        id="template-quality-integer-templateId",
    ),
    pytest.param(
        derive(TEMPLATE_STATUS, put("eventDetails.templateId", 951847263015)),
        id="template-status-integer-templateId",
    ),
    pytest.param(
        derive(
            TEMPLATE_STATUS,
            put("eventDetails.meta.status", "FLAGGED"),
            put("eventDetails.meta.disableInfo", {"disableDate": "2026-03-22T00:00:00Z"}),
        ),
        id="template-status-flagged-with-disable-date",
    ),
    pytest.param(
        derive(TEMPLATE_STATUS, put("eventDetails.meta.status", "PENDING_DELETION")),
        id="template-status-pending-deletion",
    ),
    pytest.param(
        derive(TEMPLATE_STATUS, put("eventDetails.meta.status", "approved")),
        id="template-status-lower-case",
    ),
    pytest.param(
        derive(
            TEMPLATE_STATUS,
            put("eventDetails.meta", {"status": "REJECTED", "reason": "SOME_NEW_REASON"}),
        ),
        id="template-status-rejected-unknown-reason",
    ),
    pytest.param(
        derive(
            "8x8-docs/template_status_paused_first_pause.json",
            put("eventDetails.meta.otherInfo.title", "THIRD_PAUSE_NEW_NAME"),
        ),
        id="template-status-unknown-other-info-title",
    ),
    pytest.param(
        derive(TEMPLATE_QUALITY, put("eventDetails.meta.newQualityScore", "unknown")),
        id="template-quality-lower-case-unknown",
    ),
    pytest.param(
        derive(
            TEMPLATE_CATEGORY,
            put("eventType", "template_correct_category_detection"),
            put("eventDetails.meta", {"category": "UTILITY", "correctCategory": "MARKETING"}),
        ),
        id="template-correct-category-detection",
    ),
    # phone number events and tiers
    *(
        pytest.param(derive(PHONE, put("eventDetails.meta.event", event)), id=f"phone-{event}")
        for event in ("UNFLAGGED", "ONBOARDING", "THROUGHPUT_UPGRADE", "upgrade")
    ),
    pytest.param(
        derive(
            PHONE_LIMIT,
            put("eventDetails.meta.currentLimit", "TIER_2K"),
            put("eventDetails.meta.oldLimit", "TIER_50"),
        ),
        id="phone-tiers-TIER_2K-TIER_50",
    ),
    pytest.param(
        derive(
            "8x8-docs/phone_quality_onboarding_max_daily.json",
            put("eventDetails.meta.maxDailyConversationsPerBusiness", "TIER_2K"),
        ),
        id="phone-max-daily-TIER_2K",
    ),
    pytest.param(
        derive(PHONE, put("eventDetails.meta", {"event": "UPGRADE", "currentLimit": "TIER_50"})),
        id="phone-tier-TIER_50",
    ),
    # account events
    pytest.param(
        derive(
            ACCOUNT_UPDATE,
            put(
                "eventDetails",
                {
                    "event": "BUSINESS_VERIFICATION_STATUS_UPDATE",
                    "businessVerificationInfo": {
                        "status": "REJECTED",
                        "rejectionReasons": ["LEGAL_NAME_NOT_MATCHING"],
                    },
                },
            ),
        ),
        id="account-update-business-verification",
    ),
    pytest.param(
        derive(
            ACCOUNT_UPDATE,
            put(
                "eventDetails",
                {"event": "ACCOUNT_VIOLATION", "violationInfo": {"violationType": "SCAM"}},
            ),
        ),
        id="account-update-violation",
    ),
    pytest.param(example(ACCOUNT_UPDATE), id="account-update-restriction"),
    pytest.param(
        derive(ACCOUNT_UPDATE, put("eventDetails", {"event": "SOME_NEW_ACCOUNT_EVENT"})),
        id="account-update-unknown-event",
    ),
    pytest.param(_cabm_body("whatsapp_contact"), id="whatsapp-contact"),
    pytest.param(_cabm_body("whatsapp_preference"), id="whatsapp-preference"),
    pytest.param(derive(PHONE, put("eventId", "health-xyz-789")), id="account-event-id-not-a-uuid"),
]


@pytest.mark.parametrize("body", VALID_VARIANTS)
def test_variant_is_valid(body: Body) -> None:
    assert_valid(body)


def test_account_update_variants_cover_all_three_events() -> None:
    events = {
        param.values[0]["eventDetails"]["event"]
        for param in VALID_VARIANTS
        if param.values[0].get("eventType") == "account_update"
    }
    assert events >= {
        "BUSINESS_VERIFICATION_STATUS_UPDATE",
        "ACCOUNT_VIOLATION",
        "ACCOUNT_RESTRICTION",
    }


# --------------------------------------------------------------------------- invalid bodies


def _invalid(body: Body, path: tuple[str | int, ...], needle: str, id: str) -> Any:
    """A body that must be invalid, an error at `path` whose message contains `needle`."""
    return pytest.param(body, path, needle, id=id)


INVALID_BODIES = [
    _invalid(
        derive(RECEIPT, put("eventType", "something_new")),
        ("eventType",),
        "something_new",
        id="unknown-event-type",
    ),
    _invalid(derive(RECEIPT, drop("eventType")), (), "eventType", id="missing-event-type"),
    _invalid(
        derive(PHONE, put("eventType", "Phone_Number_Quality_Update")),
        ("eventType",),
        "Phone_Number_Quality_Update",
        id="event-type-in-other-case",
    ),
    _invalid(
        derive(RECEIPT, drop("payload.umid")), ("payload",), "umid", id="receipt-without-umid"
    ),
    _invalid(
        derive(RECEIPT, drop("payload.subAccountId")),
        ("payload",),
        "subAccountId",
        id="receipt-without-sub-account",
    ),
    _invalid(
        derive(RECEIPT, put("payload.status.state", "exploded")),
        ("payload", "status", "state"),
        "exploded",
        id="receipt-state-exploded",
    ),
    _invalid(
        derive(RECEIPT, put("payload.status.state", 3)),
        ("payload", "status", "state"),
        "string",
        id="receipt-state-number",
    ),
    _invalid(
        derive(RECEIPT, drop("payload.status.timestamp")),
        ("payload", "status"),
        "timestamp",
        id="receipt-status-without-timestamp",
    ),
    _invalid(
        derive(RECEIPT, put("payload.status.timestamp", "yesterday")),
        ("payload", "status", "timestamp"),
        "yesterday",
        id="receipt-timestamp-yesterday",
    ),
    _invalid(
        derive(RECEIPT, put("payload.status.timestamp", "2026-03-14T10:00:01.1234567890Z")),
        ("payload", "status", "timestamp"),
        "1234567890",
        id="receipt-timestamp-10-digits",
    ),
    _invalid(
        derive(RECEIPT, put("payload.status.timestamp", "2026-03-14 10:00:01")),
        ("payload", "status", "timestamp"),
        "does not match",
        id="receipt-timestamp-without-zone",
    ),
    _invalid(
        derive("status_undelivered.json", put("payload.status.errorCode", "fifteen")),
        ("payload", "status", "errorCode"),
        "fifteen",
        id="receipt-error-code-not-digits",
    ),
    _invalid(
        derive(RECEIPT, put("payload", "not an object")),
        ("payload",),
        "object",
        id="receipt-payload-string",
    ),
    _invalid(
        derive(INBOUND, put("payload", ["not", "an", "object"])),
        ("payload",),
        "object",
        id="inbound-payload-array",
    ),
    _invalid(derive(INBOUND, drop("payload")), (), "payload", id="inbound-without-payload"),
    _invalid(
        derive(INBOUND, put("payload.umid", 12345)),
        ("payload", "umid"),
        "string",
        id="inbound-umid-integer",
    ),
    _invalid(
        derive(INBOUND, put("payload.umid", "")),
        ("payload", "umid"),
        '""',
        id="inbound-umid-empty",
    ),
    _invalid(
        derive(INBOUND, drop("payload.type")), ("payload",), "type", id="inbound-without-type"
    ),
    _invalid(
        derive(INBOUND, put("payload.content.text", 42)),
        ("payload", "content", "text"),
        "string",
        id="inbound-text-not-a-string",
    ),
    _invalid(
        derive(INBOUND, put("payload.timestamp", "yesterday")),
        ("payload", "timestamp"),
        "yesterday",
        id="inbound-timestamp-yesterday",
    ),
    _invalid(
        derive(INBOUND, put("version", "3")),
        ("version",),
        "integer",
        id="inbound-version-string",
    ),
    _invalid(derive(PHONE, drop("eventId")), (), "eventId", id="account-event-without-event-id"),
    _invalid(
        derive(TEMPLATE_STATUS, drop("eventDetails")),
        (),
        "eventDetails",
        id="account-event-without-event-details",
    ),
    _invalid(
        derive(TEMPLATE_STATUS, put("timestamp", "yesterday")),
        ("timestamp",),
        "yesterday",
        id="account-timestamp-yesterday",
    ),
    _invalid(
        derive(TEMPLATE_STATUS, drop("eventDetails.templateId")),
        ("eventDetails",),
        "templateId",
        id="template-status-without-template-id",
    ),
    _invalid(
        derive(TEMPLATE_QUALITY, drop("eventDetails.templateId")),
        ("eventDetails",),
        "templateId",
        id="template-quality-without-template-id",
    ),
    _invalid(
        derive(TEMPLATE_STATUS, put("eventDetails.templateId", "")),
        ("eventDetails", "templateId"),
        '""',
        id="template-id-empty",
    ),
    _invalid(
        derive(TEMPLATE_STATUS, put("eventDetails.meta.status", "EXPLODED")),
        ("eventDetails", "meta", "status"),
        "EXPLODED",
        id="template-status-unknown",
    ),
    _invalid(
        derive(TEMPLATE_QUALITY, put("eventDetails.meta.newQualityScore", "PURPLE")),
        ("eventDetails", "meta", "newQualityScore"),
        "PURPLE",
        id="template-quality-score-unknown",
    ),
    _invalid(
        derive(PHONE, put("eventDetails.meta.event", "EXPLODED")),
        ("eventDetails", "meta", "event"),
        "EXPLODED",
        id="phone-event-unknown",
    ),
    _invalid(
        derive(ACCOUNT_UPDATE, drop("eventDetails.event")),
        ("eventDetails",),
        "event",
        id="account-update-without-event",
    ),
    _invalid([example(INBOUND)], (), "object", id="top-level-array"),
    _invalid("ChatApps inbound message", (), "object", id="top-level-string"),
]


@pytest.mark.parametrize(("body", "path", "needle"), INVALID_BODIES)
def test_body_is_invalid(body: Body, path: tuple[str | int, ...], needle: str) -> None:
    validator = webhook_validator()
    assert validator.is_valid(body) is False
    found = errors(validator, body)
    assert any(at == path and needle in message for at, message in found), found


def test_unknown_event_type_is_invalid_even_with_a_known_shape() -> None:
    """An unknown eventType is never recognised, even when the rest looks like a receipt."""
    body = derive(RECEIPT, put("eventType", "something_new"))
    assert webhook_validator().is_valid(body) is False
    assert schemas.validator("webhooks/chatapps_envelope").is_valid(body) is True
