"""The topic JSON Schemas (schemas/topics/*.schema.json) against the records normalize writes.

The schemas are the contract of our own output, so they are strict: every property of
the record dataclass is required (null when unknown) and no other property is allowed.
That way these tests catch drift between `processors/normalize/records.py` and the
schemas: a field added, renamed or retyped on one side only fails here. Records are
validated in their wire form, `orjson.loads(orjson.dumps(record_value(record)))`: what
really goes on the topic (tuples become arrays, StrEnums strings). No Kafka involved.

The regression cases at the end are bodies the webhook schemas accept that once broke
the code (a record off its schema, or an exception instead of a dead letter).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message
from example_bodies import (
    EXAMPLE_NAMES,
    EXAMPLE_PATHS,
    EXAMPLES_DIR,
    Body,
    Mutation,
    derive,
    drop,
    put,
)

import schemas
from processors.dead_letters import poison_letter
from processors.normalize.records import (
    AccountEvent,
    DeadLetter,
    DeadLetterKind,
    InboundMessage,
    PhoneEvent,
    Receipt,
    TemplateEvent,
    record_value,
)
from processors.normalize.rules import Normalized, Rejected, dead_letter, normalize
from wapipe import topics

RECEIVED_AT = "2026-03-14T10:00:00.000Z"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
BSUID = "US.13491208655302741918"

# Each record dataclass and the topic it is written to (suffix after the prefix).
RECORD_TOPICS: dict[type, str] = {
    InboundMessage: topics.INBOUND.suffix,
    Receipt: topics.STATUS.suffix,
    TemplateEvent: topics.TEMPLATE.suffix,
    PhoneEvent: topics.PHONE.suffix,
    AccountEvent: topics.ACCOUNT.suffix,
    DeadLetter: topics.DEADLETTER.suffix,
}
# The topics/*.schema.json files: the normalized records', common, and the funnel's outputs
# (tested in test_funnel_schemas.py).
TOPIC_SCHEMA_NAMES = {f"topics/{suffix}" for suffix in RECORD_TOPICS.values()} | {
    "topics/common",
    "topics/message_state",
    "topics/funnel",
    "topics/billing",
    "topics/service_windows",
    "topics/messaging_limits",
    "topics/template_state",
    "topics/alerts",
    "topics/phone_state",
}
RECEIPT_STATES = ("queued", "rejected", "sent", "delivered", "undelivered", "read", "failed")

# The JSON type(s) of each annotation used in records.py (`from __future__ import
# annotations`: dataclass field types are these strings).
ANNOTATION_TYPES: dict[str, str | list[str]] = {
    "str": "string",
    "str | None": ["string", "null"],
    "int": "integer",
    "int | None": ["integer", "null"],
    "bool": "boolean",
    "dict[str, Any]": "object",
    "dict[str, Any] | None": ["object", "null"],
    "tuple[str, ...]": "array",
    "DeadLetterKind": "string",
}

Record = Any


# --------------------------------------------------------------------------- helpers


def wire(record: Record) -> dict[str, Any]:
    """The record as it goes on the topic: `record_value` through orjson and back."""
    value: dict[str, Any] = orjson.loads(orjson.dumps(record_value(record)))
    return value


def topic_validator(suffix: str) -> Any:
    return schemas.validator(f"topics/{suffix}")


def errors(validator: Any, value: Any) -> list[tuple[tuple[str | int, ...], str]]:
    return [(tuple(error.instance_path), error.message) for error in validator.iter_errors(value)]


def assert_valid_record(record: Record) -> dict[str, Any]:
    """The record's wire form validates against its topic's schema; returns the wire form."""
    value = wire(record)
    validator = topic_validator(RECORD_TOPICS[type(record)])
    assert validator.is_valid(value), errors(validator, value)
    return value


def normalized(raw: bytes) -> Normalized:
    result = normalize(raw, RECEIVED_AT)
    assert isinstance(result, Normalized), result
    assert result.topic.suffix == RECORD_TOPICS[type(result.record)]
    return result


def field_names(record_type: type) -> list[str]:
    """The record's camelCase wire names, by `record_value` of an instance (all fields None)."""
    blank = record_type(**{field.name: None for field in dataclasses.fields(record_type)})
    return list(record_value(blank))


def _dead_letter(raw: bytes, key: bytes | None = b"k") -> DeadLetter:
    rejected = normalize(raw, RECEIVED_AT)
    assert isinstance(rejected, Rejected), rejected
    return dead_letter(
        rejected,
        raw,
        source_topic="whatsapp.webhooks.raw",
        source_partition=0,
        source_offset=7,
        key=key,
        received_at=RECEIVED_AT,
    )


def raw(body: Body) -> bytes:
    return orjson.dumps(body)


INBOUND = "inbound_text.json"
RECEIPT = "status_sent.json"
ECHO = "8x8-docs/external_app_message_v9.json"
RECEIPT_V9_TEMPLATE = "8x8-docs/dr_v9_whatsapp_delivered_outboundcontent_template.json"
TEMPLATE_STATUS = "template_status_paused.json"
TEMPLATE_QUALITY = "template_quality_red.json"
PHONE = "phone_flagged.json"
PHONE_MAX_DAILY = "8x8-docs/phone_quality_onboarding_max_daily.json"
ACCOUNT_UPDATE = "8x8-docs/account_update_restriction_calling.json"
LINE_BODY = {
    "namespace": "ChatApps",
    "eventType": "inbound_message_received",
    "inboundMessage": {
        "umid": "L1",
        "channel": "LINE",
        "type": "text",
        "content": {"text": "hi"},
    },
}


# --------------------------------------------------------------------------- schema files


def test_every_topic_schema_file_exists() -> None:
    present = {name for name in schemas.schema_files() if name.startswith("topics/")}
    assert present == TOPIC_SCHEMA_NAMES


@pytest.mark.parametrize("name", sorted(TOPIC_SCHEMA_NAMES))
def test_topic_schema_header(name: str) -> None:
    document = schemas.load(name)
    assert document["$schema"] == DRAFT_2020_12
    assert document["$id"] == f"{schemas.BASE_URI}{name}{schemas.SUFFIX}"
    assert document["title"].strip()
    assert document["description"].strip()


@pytest.mark.parametrize("suffix", sorted(RECORD_TOPICS.values()))
def test_topic_schema_describes_key_timestamp_and_evolution(suffix: str) -> None:
    document = schemas.load(f"topics/{suffix}")
    description = document["description"]
    for needle in ("Kafka key", "Kafka timestamp", "tolerate"):
        assert needle in description, needle
    assert document["type"] == "object"
    assert document["additionalProperties"] is False


@pytest.mark.parametrize("suffix", sorted(RECORD_TOPICS.values()))
def test_every_property_has_a_description(suffix: str) -> None:
    properties = schemas.load(f"topics/{suffix}")["properties"]
    undescribed = [
        name for name, node in properties.items() if not str(node.get("description", "")).strip()
    ]
    assert undescribed == []


@pytest.mark.parametrize("name", sorted(schemas.load("topics/common")["$defs"]))
def test_common_definition_is_described(name: str) -> None:
    definition = schemas.load("topics/common")["$defs"][name]
    assert definition["title"].strip()
    assert definition["description"].strip()


# --------------------------------------------------------------------------- schema == dataclass


@pytest.mark.parametrize(
    "record_type", list(RECORD_TOPICS), ids=[cls.__name__ for cls in RECORD_TOPICS]
)
def test_properties_and_required_are_the_record_fields(record_type: type) -> None:
    document = schemas.load(f"topics/{RECORD_TOPICS[record_type]}")
    names = field_names(record_type)
    assert set(document["properties"]) == set(names)
    assert len(document["required"]) == len(set(document["required"]))
    assert set(document["required"]) == set(names)


@pytest.mark.parametrize(
    "record_type", list(RECORD_TOPICS), ids=[cls.__name__ for cls in RECORD_TOPICS]
)
def test_property_types_are_the_field_annotations(record_type: type) -> None:
    properties = schemas.load(f"topics/{RECORD_TOPICS[record_type]}")["properties"]
    names = field_names(record_type)
    for field, name in zip(dataclasses.fields(record_type), names, strict=True):
        assert properties[name]["type"] == ANNOTATION_TYPES[str(field.type)], name


def test_receipt_state_is_the_lower_case_states() -> None:
    state = schemas.load("topics/status")["properties"]["state"]
    assert sorted(state["enum"]) == sorted(RECEIPT_STATES)


def test_dead_letter_kind_is_the_dead_letter_kinds() -> None:
    kind = schemas.load("topics/deadletter")["properties"]["kind"]
    assert kind["enum"] == [member.value for member in DeadLetterKind]


def test_dead_letter_errors_are_strings() -> None:
    errors_node = schemas.load("topics/deadletter")["properties"]["errors"]
    assert errors_node["items"] == {"type": "string"}


# --------------------------------------------------------------------------- examples


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_gives_a_valid_record(name: str) -> None:
    result = normalized((EXAMPLES_DIR / name).read_bytes())
    validator = topic_validator(result.topic.suffix)
    value = wire(result.record)
    assert validator.is_valid(value), errors(validator, value)


def test_examples_cover_every_typed_topic() -> None:
    suffixes = {normalized(path.read_bytes()).topic.suffix for path in EXAMPLE_PATHS}
    assert suffixes == set(RECORD_TOPICS.values()) - {topics.DEADLETTER.suffix}


# --------------------------------------------------------------------------- valid variants


def _variant(body: Body, expected: dict[str, Any], id: str) -> Any:
    """A body whose record must be valid and have the `expected` wire values."""
    return pytest.param(body, expected, id=id)


VALID_VARIANTS = [
    _variant(
        derive("status_read_mixed_case.json", put("payload.status.state", "READ")),
        {"state": "read"},
        id="receipt-state-READ",
    ),
    _variant(
        derive(RECEIPT, put("payload.status.state", "Delivered")),
        {"state": "delivered"},
        id="receipt-state-Delivered",
    ),
    _variant(
        derive(RECEIPT, put("payload.channel", "whatsApp")),
        {"channel": "whatsapp"},
        id="receipt-channel-whatsApp",
    ),
    _variant(
        derive(INBOUND, put("payload.recipient.channel", "whatsApp")),
        {"channel": "whatsapp"},
        id="inbound-recipient-channel-whatsApp",
    ),
    _variant(
        derive(ECHO, put("payload.channel", "WhatsApp")),
        {"channel": "whatsapp", "echo": True},
        id="echo-channel-WhatsApp",
    ),
    *(
        _variant(
            derive(RECEIPT, put("payload.status.timestamp", stamp)),
            {"occurredAt": expected},
            id=f"receipt-timestamp-{label}",
        )
        for stamp, expected, label in (
            ("2026-03-14T10:00:01Z", "2026-03-14T10:00:01.000Z", "0-digits"),
            ("2026-03-14T10:00:01.51Z", "2026-03-14T10:00:01.510Z", "2-digits"),
            ("2026-03-14T10:00:01.512Z", "2026-03-14T10:00:01.512Z", "3-digits"),
            ("2026-03-14T10:00:01.5129999Z", "2026-03-14T10:00:01.512Z", "7-digits"),
            ("2026-03-14T11:00:01.5+01:00", "2026-03-14T10:00:01.500Z", "offset"),
        )
    ),
    _variant(
        derive(INBOUND, put("payload.timestamp", "2026-03-14T09:26:53.1234567Z")),
        {"occurredAt": "2026-03-14T09:26:53.123Z"},
        id="inbound-timestamp-7-digits",
    ),
    _variant(
        derive(PHONE, put("timestamp", "2026-03-16T01:12:40.00Z")),
        {"occurredAt": "2026-03-16T01:12:40.000Z"},
        id="phone-timestamp-2-digits",
    ),
    _variant(
        derive(INBOUND, drop("payload.user.msisdn"), put("payload.user.channelUserId", BSUID)),
        {"msisdn": None, "channelUserId": BSUID, "country": "US"},
        id="inbound-bsuid-without-msisdn",
    ),
    _variant(
        derive(RECEIPT, drop("payload.user.msisdn"), put("payload.user.channelUserId", BSUID)),
        {"msisdn": None, "country": "US"},
        id="receipt-bsuid-without-msisdn",
    ),
    _variant(
        derive(INBOUND, put("payload.user.msisdn", "4915112345678")),
        {"msisdn": "+4915112345678", "country": "DE"},
        id="inbound-msisdn-without-plus",
    ),
    _variant(
        derive(INBOUND, put("payload.user.msisdn", "<USER_PHONE_NUMBER>")),
        {"msisdn": None},
        id="inbound-msisdn-placeholder",
    ),
    _variant(
        derive(INBOUND, drop("payload.timestamp")),
        {"occurredAt": None},
        id="inbound-no-timestamp",
    ),
    _variant(
        derive(INBOUND, drop("payload.recipient")),
        {"channel": None, "channelId": None},
        id="inbound-no-recipient",
    ),
    _variant(
        derive(
            INBOUND,
            put("payload.type", "Sticker"),
            put("payload.content", {"sticker": {"id": "st-1"}}),
        ),
        {"type": "sticker", "rawType": "Sticker"},
        id="inbound-unknown-type-sticker",
    ),
    _variant(
        derive(
            TEMPLATE_QUALITY,
            put("eventDetails.templateId", 951847263015),
            put("eventDetails.meta.newQualityScore", "red"),
        ),
        {"templateId": "951847263015", "newQuality": "RED"},
        id="template-integer-templateId",
    ),
    _variant(
        derive(
            TEMPLATE_STATUS,
            put("eventDetails.meta.status", "flagged"),
            put("eventDetails.meta.disableInfo", {"disableDate": 1774137600}),
        ),
        {"status": "FLAGGED", "disableDate": "1774137600"},
        id="template-flagged-integer-disable-date",
    ),
    _variant(
        derive(TEMPLATE_STATUS, drop("timestamp")),
        {"occurredAt": None},
        id="template-no-timestamp",
    ),
    _variant(
        derive(
            PHONE_MAX_DAILY, put("eventDetails.meta.maxDailyConversationsPerBusiness", "tier_2k")
        ),
        {"currentLimit": "TIER_2K"},
        id="phone-max-daily-lower-case",
    ),
    _variant(
        derive(PHONE, drop("eventDetails.displayPhoneNumber")),
        {"displayPhoneNumber": ""},
        id="phone-without-display-number",
    ),
    _variant(
        derive(ACCOUNT_UPDATE, drop("businessAccountId")),
        {"businessAccountId": None, "event": "ACCOUNT_RESTRICTION"},
        id="account-update-without-business-account",
    ),
    _variant(
        derive(
            RECEIPT_V9_TEMPLATE,
            put("payload.whatsapp", {"pricingCategory": "Utility", "providerErrorCode": 131009}),
        ),
        {"pricingCategory": "utility", "providerErrorCode": "131009"},
        id="receipt-integer-provider-error-code",
    ),
    _variant(
        derive("status_undelivered.json", put("payload.status.errorCode", "1022")),
        {"errorCode": 1022},
        id="receipt-string-error-code",
    ),
    _variant(
        LINE_BODY,
        {"umid": "L1", "channel": "line", "type": "text", "occurredAt": None, "msisdn": None},
        id="line-flat-inbound-message",
    ),
]


@pytest.mark.parametrize(("body", "expected"), VALID_VARIANTS)
def test_variant_gives_a_valid_record(body: Body, expected: dict[str, Any]) -> None:
    value = assert_valid_record(normalized(raw(body)).record)
    assert {name: value[name] for name in expected} == expected


# --------------------------------------------------------------------------- dead letters


DEAD_LETTERS = [
    pytest.param(
        raw(derive(RECEIPT, put("eventType", "something_new"))),
        DeadLetterKind.UNKNOWN_EVENT_TYPE,
        id="unknown-event-type",
    ),
    pytest.param(
        raw(derive(RECEIPT, drop("payload.status"))),
        DeadLetterKind.SCHEMA_VIOLATION,
        id="schema-violation-receipt-without-status",
    ),
    pytest.param(
        raw(derive(RECEIPT, put("payload.status.timestamp", "2026-02-30T10:00:00Z"))),
        DeadLetterKind.INVALID_VALUE,
        id="invalid-value-february-30",
    ),
    pytest.param(b"{not json", DeadLetterKind.INVALID_BODY, id="invalid-body-not-json"),
    pytest.param(b"[1, 2]", DeadLetterKind.INVALID_BODY, id="invalid-body-array"),
]


@pytest.mark.parametrize(("body", "kind"), DEAD_LETTERS)
def test_dead_letter_is_valid(body: bytes, kind: DeadLetterKind) -> None:
    letter = _dead_letter(body)
    assert letter.kind is kind
    value = assert_valid_record(letter)
    assert value["original"] == body.decode()
    assert value["kind"] == kind.value


def test_poison_letter_is_valid_and_keeps_the_record_to_replay() -> None:
    body = b'{"eventType": "outbound_message_status_changed"}'
    record = Message(topic="whatsapp.webhooks.raw", partition=3, offset=41, key=b"umid-1",
                     value=body, headers=[("wapipe-received-at", RECEIVED_AT.encode())],
                     timestamp=(TIMESTAMP_CREATE_TIME, 1_700_000_000_000))  # fmt: skip
    output = poison_letter(record, KeyError("payload"), "whatsapp.deadletter")
    value = orjson.loads(output.value or b"")
    validator = topic_validator("deadletter")
    assert validator.is_valid(value), errors(validator, value)
    assert (output.topic, output.key, output.timestamp_ms) == (
        "whatsapp.deadletter", b"umid-1", 1_700_000_000_000)  # fmt: skip
    assert value["kind"] == DeadLetterKind.PROCESSING_ERROR.value
    assert (value["sourcePartition"], value["sourceOffset"], value["original"]) == (
        3, 41, body.decode())  # fmt: skip
    assert "KeyError" in value["reason"]


def test_dead_letters_cover_every_kind() -> None:
    ruled = {param.values[1] for param in DEAD_LETTERS}
    assert ruled | {DeadLetterKind.PROCESSING_ERROR} == set(DeadLetterKind)


def test_dead_letter_without_key_or_with_a_binary_key_is_valid() -> None:
    body = raw(derive(RECEIPT, put("eventType", "something_new")))
    assert assert_valid_record(_dead_letter(body, key=None))["key"] is None
    assert assert_valid_record(_dead_letter(body, key=b"\xff\xfe"))["key"] == "\ufffd\ufffd"


def test_schema_violation_errors_are_an_array_of_strings_on_the_wire() -> None:
    letter = _dead_letter(raw(derive(RECEIPT, drop("payload.status"))))
    assert isinstance(letter.errors, tuple)
    assert letter.errors
    value = assert_valid_record(letter)
    assert value["errors"] == list(letter.errors)


# --------------------------------------------------------------------------- wrong values


def _status_record() -> dict[str, Any]:
    return wire(normalized((EXAMPLES_DIR / "status_undelivered.json").read_bytes()).record)


def _set(name: str, value: Any) -> Mutation:
    def mutate(record: dict[str, Any]) -> None:
        record[name] = value

    return mutate


def _remove(name: str) -> Mutation:
    def mutate(record: dict[str, Any]) -> None:
        del record[name]

    return mutate


def _wrong(
    suffix: str, build: Callable[[], dict[str, Any]], mutate: Mutation, path: str, id: str
) -> Any:
    """A record of topic `suffix` made invalid by `mutate`: an error must point at `path`."""
    return pytest.param(suffix, build, mutate, path, id=id)


def _inbound_record() -> dict[str, Any]:
    return wire(normalized((EXAMPLES_DIR / INBOUND).read_bytes()).record)


def _template_record() -> dict[str, Any]:
    return wire(normalized((EXAMPLES_DIR / TEMPLATE_STATUS).read_bytes()).record)


def _phone_record() -> dict[str, Any]:
    return wire(normalized((EXAMPLES_DIR / PHONE).read_bytes()).record)


def _account_record() -> dict[str, Any]:
    return wire(normalized((EXAMPLES_DIR / ACCOUNT_UPDATE).read_bytes()).record)


def _dead_letter_record() -> dict[str, Any]:
    return wire(_dead_letter(raw(derive(RECEIPT, drop("payload.status")))))


WRONG_RECORDS = [
    _wrong("status", _status_record, _set("state", "SENT"), "state", id="status-state-SENT"),
    _wrong("status", _status_record, _set("state", "exploded"), "state", id="status-state-unknown"),
    _wrong("status", _status_record, _set("state", None), "state", id="status-state-null"),
    _wrong(
        "status",
        _status_record,
        _set("occurredAt", "2026-03-14T10:00:03Z"),
        "occurredAt",
        id="status-occurredAt-without-milliseconds",
    ),
    _wrong(
        "status",
        _status_record,
        _set("occurredAt", "2026-03-14T10:00:03.0000000Z"),
        "occurredAt",
        id="status-occurredAt-7-digits",
    ),
    _wrong(
        "status",
        _status_record,
        _set("occurredAt", "2026-03-14T11:00:03.000+01:00"),
        "occurredAt",
        id="status-occurredAt-with-offset",
    ),
    _wrong(
        "status",
        _status_record,
        _set("occurredAt", None),
        "occurredAt",
        id="status-occurredAt-null",
    ),
    _wrong(
        "status",
        _status_record,
        _set("receivedAt", "2026-03-14T10:00:00Z"),
        "receivedAt",
        id="status-receivedAt-without-milliseconds",
    ),
    _wrong("status", _status_record, _set("extra", "x"), "", id="status-extra-property"),
    _wrong("status", _status_record, _remove("detail"), "", id="status-missing-property"),
    _wrong(
        "status",
        _status_record,
        _set("msisdn", "447700900123"),
        "msisdn",
        id="status-msisdn-no-plus",
    ),
    _wrong(
        "status",
        _status_record,
        _set("msisdn", "+4411111111111111"),
        "msisdn",
        id="status-msisdn-16-digits",
    ),
    _wrong("status", _status_record, _set("country", "gb"), "country", id="status-country-lower"),
    _wrong(
        "status", _status_record, _set("country", "GBR"), "country", id="status-country-alpha-3"
    ),
    _wrong(
        "status", _status_record, _set("channel", "WhatsApp"), "channel", id="status-channel-mixed"
    ),
    _wrong(
        "status",
        _status_record,
        _set("templateCategory", "marketing"),
        "templateCategory",
        id="status-templateCategory-lower",
    ),
    _wrong(
        "status", _status_record, _set("errorCode", "15"), "errorCode", id="status-errorCode-str"
    ),
    _wrong("inbound", _inbound_record, _set("echo", "false"), "echo", id="inbound-echo-string"),
    _wrong("inbound", _inbound_record, _set("type", "Text"), "type", id="inbound-type-mixed-case"),
    _wrong(
        "inbound", _inbound_record, _set("content", "hi"), "content", id="inbound-content-string"
    ),
    _wrong(
        "inbound", _inbound_record, _set("version", "3"), "version", id="inbound-version-string"
    ),
    _wrong(
        "template", _template_record, _set("status", "paused"), "status", id="template-status-lower"
    ),
    _wrong(
        "template",
        _template_record,
        _set("templateId", 951847263015),
        "templateId",
        id="template-templateId-integer",
    ),
    _wrong(
        "phone",
        _phone_record,
        _set("displayPhoneNumber", None),
        "displayPhoneNumber",
        id="phone-displayPhoneNumber-null",
    ),
    _wrong("phone", _phone_record, _set("event", "flagged"), "event", id="phone-event-lower"),
    _wrong("account", _account_record, _set("details", None), "details", id="account-details-null"),
    _wrong(
        "deadletter",
        _dead_letter_record,
        _set("kind", "other"),
        "kind",
        id="deadletter-kind-unknown",
    ),
    _wrong(
        "deadletter",
        _dead_letter_record,
        _set("kind", "SCHEMA_VIOLATION"),
        "kind",
        id="deadletter-kind-enum-name",
    ),
    _wrong(
        "deadletter",
        _dead_letter_record,
        _set("errors", [1]),
        "errors/0",
        id="deadletter-errors-int",
    ),
    _wrong(
        "deadletter",
        _dead_letter_record,
        _set("sourceOffset", "7"),
        "sourceOffset",
        id="deadletter-sourceOffset-string",
    ),
]


@pytest.mark.parametrize(("suffix", "build", "mutate", "path"), WRONG_RECORDS)
def test_wrong_value_is_invalid(
    suffix: str, build: Callable[[], dict[str, Any]], mutate: Mutation, path: str
) -> None:
    validator = topic_validator(suffix)
    record = build()
    assert validator.is_valid(record), errors(validator, record)  # valid before the mutation
    mutate(record)
    assert validator.is_valid(record) is False
    found = errors(validator, record)
    assert any("/".join(map(str, at)) == path for at, _ in found), found


# --------------------------------------------------------------------------- regressions


def _regression(body: Body | bytes, reason: str, id: str) -> Any:
    """A body that once broke the code; `reason` says how (kept as its documentation)."""
    return pytest.param(body, id=id)


# Bodies that the webhook schemas accept: each must give a valid record or a valid dead
# letter. Each of these once did not.
BUGGY_BODIES = [
    _regression(
        derive(RECEIPT, put("payload.status.timestamp", "0999-03-14T10:00:01Z")),
        "canonical.format_timestamp uses strftime('%Y'), which does not zero-pad years before"
        " 1000 on Linux: occurredAt '999-03-14T10:00:01.000Z' breaks the timestamp pattern",
        id="receipt-year-before-1000",
    ),
    _regression(
        derive(RECEIPT, put("payload.status.state", "\u017fent")),
        "the webhook schema's case-insensitive (?i:...sent...) matches '\\u017fent' (U+017F LATIN"
        " SMALL LETTER LONG S folds to 's'), but canonical.lower uses str.lower, which keeps it:"
        " state '\\u017fent' is not one of the states (str.casefold would give 'sent')",
        id="receipt-state-long-s",
    ),
    _regression(
        derive(INBOUND, drop("payload.user.msisdn"), put("payload.user.channelUserId", "ÄÖ.123")),
        "canonical.country_of takes any 2-letter str.isupper()/isalpha() BSUID prefix, also"
        " non-ASCII: country 'ÄÖ' is not an ISO 3166 alpha-2 code",
        id="inbound-bsuid-non-ascii-prefix",
    ),
    _regression(
        derive(INBOUND, put("payload.user.msisdn", "+49111111111111111")),
        "canonical.e164 accepts any libphonenumber 'possible' number, and German (also Japanese,"
        " Indonesian...) metadata allows national numbers longer than E.164's 15 digits in all:"
        " msisdn '+49111111111111111' (17 digits) is not E.164",
        id="inbound-msisdn-17-digits",
    ),
    _regression(
        {
            **LINE_BODY,
            "inboundMessage": {
                **LINE_BODY["inboundMessage"],
                "user": {"name": 42, "channelUserId": 7},
                "replyToUmid": 5,
            },
        },
        "the webhook schema does not check LINE's flat inboundMessage beyond umid, subAccountId,"
        " timestamp, channel and type, and rules._inbound copies user.name, user.channelUserId,"
        " replyToUmid (and recipient.channelId) without a type check: integers in string fields",
        id="line-non-string-user-fields",
    ),
    _regression(
        derive(
            RECEIPT_V9_TEMPLATE,
            put("payload.outboundContent.template", {"name": "t", "language": {"code": "en_US"}}),
        ),
        "payload.outboundContent is opaque to the webhook schema, and rules._receipt copies"
        " template.name and template.language without a type check: a language object (Meta's"
        " own send-API shape) becomes templateLanguage {'code': 'en_US'}",
        id="receipt-template-language-object",
    ),
    _regression(
        derive("status_undelivered.json", put("payload.status.errorCode", "9" * 20)),
        "the webhook schema accepts any string of digits as errorCode and rules._integer converts"
        " it without a range check: errorCode 99999999999999999999 exceeds 64 bits and orjson"
        " cannot serialize the record (TypeError)",
        id="receipt-error-code-beyond-64-bits",
    ),
    _regression(
        derive(RECEIPT, put("payload.status.timestamp", "0001-01-01T00:00:00+01:00")),
        "canonical.parse_timestamp converts to UTC without catching OverflowError: normalize"
        " raises instead of returning Rejected(INVALID_VALUE)",
        id="receipt-timestamp-before-year-1-utc",
    ),
    _regression(
        {"eventType": "inbound_message_received", "inboundMessage": {"text": "hi"}},
        "the webhook schema accepts a LINE inboundMessage without umid, but rules._inbound reads"
        " payload['umid']: normalize raises KeyError instead of returning a Rejected",
        id="line-without-umid",
    ),
    _regression(
        b"\xff\xfe{not json",
        "rules.dead_letter decodes the original with errors='surrogateescape': a body that is not"
        " UTF-8 gives lone surrogates, which orjson refuses to serialize (TypeError), so the dead"
        " letter cannot be written",
        id="dead-letter-of-non-utf8-bytes",
    ),
]


@pytest.mark.parametrize("body", BUGGY_BODIES)
def test_accepted_body_gives_a_valid_record_or_dead_letter(body: Body | bytes) -> None:
    data = body if isinstance(body, bytes) else raw(body)
    result = normalize(data, RECEIVED_AT)
    if isinstance(result, Normalized):
        assert_valid_record(result.record)
    else:
        assert_valid_record(_dead_letter(data))
