"""normalize's rules: one raw webhook body in, one typed record (or a rejection) out.

Pure functions, no Kafka: `normalize(raw, received_at)` parses and validates the
body against `schemas/webhooks`, canonicalizes it (`canonical`), and says where
it goes (`Normalized.topic`, `.key`) and how to recognise a retry of it
(`.dedupe_key`):

- a receipt is identified by `(umid, state, detail)`: the same triple again is
  a retry, whatever else differs;
- an inbound message or an account-level event by its id *and* its content:
  8x8's own examples reuse one id for different events, so the same id with
  other content is a new event (`.id_key` lets the caller notice and count that).

Content is compared as canonical JSON (sorted keys), so a re-send that only
re-spaces or re-orders the body is still recognised as the same event.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

import schemas
from processors.normalize import canonical
from processors.normalize.records import (
    AccountEvent,
    DeadLetter,
    DeadLetterKind,
    InboundMessage,
    PhoneEvent,
    Receipt,
    TemplateEvent,
)
from wapipe import topics

TypedRecord = InboundMessage | Receipt | TemplateEvent | PhoneEvent | AccountEvent

INBOUND_TYPES = frozenset({"inbound_message_received", "external_app_message"})
TEMPLATE_TYPES = frozenset({
    "template_status_update", "template_quality_update",
    "template_category_update", "template_correct_category_detection",
})  # fmt: skip
ACCOUNT_TYPES = frozenset(
    {"account_update", "whatsapp_user_id_update", "whatsapp_contact", "whatsapp_preference"}
)
_MAX_ERRORS = 5


@dataclass(frozen=True)
class Normalized:
    """A body that goes to a typed topic."""

    topic: topics.TopicSpec
    key: str
    record: TypedRecord
    occurred_at: datetime | None  # event time: the Kafka timestamp of the record
    dedupe_key: str  # the same key again is a retry of this event
    id_key: str | None  # the event's id alone, to notice an id reused for other content
    digest: str  # content digest, stored under `id_key`


@dataclass(frozen=True)
class Rejected:
    """A body that goes to the dead-letter topic, and why."""

    kind: DeadLetterKind
    reason: str
    errors: tuple[str, ...] = ()
    event_type: str | None = None


def normalize(
    raw: bytes, received_at: str | None, latest: datetime | None = None
) -> Normalized | Rejected:
    """`raw` as a typed record, or why not. An event time after `latest` (if given,
    see `event_time_limit`) is rejected: Kafka would refuse it as a timestamp."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        return Rejected(DeadLetterKind.INVALID_BODY, f"not JSON: {error}")
    if not isinstance(body, dict):
        return Rejected(DeadLetterKind.INVALID_BODY, f"not a JSON object: {type(body).__name__}")
    event_type = body.get("eventType")
    if not isinstance(event_type, str) or event_type not in schemas.known_event_types():
        return Rejected(
            DeadLetterKind.UNKNOWN_EVENT_TYPE,
            f"unknown event type {event_type!r}: kept for a later version to replay",
            event_type=event_type if isinstance(event_type, str) else None,
        )
    validator = schemas.validator("webhooks/webhook")
    if not validator.is_valid(body):  # the errors only when there are some: they cost
        errors = tuple(
            f"{'/'.join(map(str, error.instance_path)) or '(body)'}: {error.message}"
            for error in validator.iter_errors(body)
        )
        return Rejected(
            DeadLetterKind.SCHEMA_VIOLATION,
            f"{event_type} does not match its schema",
            errors[:_MAX_ERRORS],
            event_type,
        )
    try:
        canonical_body = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as error:
        # orjson reads 1,024 levels of nesting but writes only 255: a body nested
        # deeper (valid JSON, and valid for the schema through an extension field)
        # cannot be digested or re-encoded, and raising here would stop the worker
        # on every restart. No 8x8 body comes near that depth.
        return Rejected(DeadLetterKind.INVALID_BODY, f"cannot be re-encoded: {error}",
                        event_type=event_type)  # fmt: skip
    digest = hashlib.sha256(canonical_body).hexdigest()[:32]
    try:
        if event_type == "outbound_message_status_changed":
            result = _receipt(body, received_at)
        elif event_type in INBOUND_TYPES:
            result = _inbound(body, event_type, received_at, digest)
        else:
            result = _account_level(body, event_type, received_at, digest)
    except canonical.InvalidValue as error:
        return Rejected(DeadLetterKind.INVALID_VALUE, str(error), (str(error),), event_type)
    occurred = result.occurred_at
    if latest is not None and occurred is not None and occurred > latest:
        reason = (f"event time {canonical.format_timestamp(occurred)} is after "
                  f"{canonical.format_timestamp(latest)}, the latest accepted "
                  f"(received at {received_at})")  # fmt: skip
        return Rejected(DeadLetterKind.INVALID_VALUE, reason, (reason,), event_type)
    return result


def event_time_limit(received_at: str | None, appended: datetime, ahead: timedelta) -> datetime:
    """The latest event time `normalize` accepts: `ahead` after the ingester's receipt,
    or after the raw record's timestamp (`appended`) for a record without a readable
    one; both are kept by a replay, so it decides alike. The broker's clock is past the
    receipt, so it accepts that time as a timestamp."""
    try:
        base = (canonical.parse_timestamp(received_at, "received_at") if received_at
                else appended)  # fmt: skip
    except canonical.InvalidValue:
        base = appended
    return base + ahead


def dead_letter(
    rejected: Rejected,
    raw: bytes,
    *,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    key: bytes | None,
    received_at: str | None,
) -> DeadLetter:
    return DeadLetter(
        kind=rejected.kind,
        reason=rejected.reason,
        errors=rejected.errors,
        event_type=rejected.event_type,
        source_topic=source_topic,
        source_partition=source_partition,
        source_offset=source_offset,
        key=key.decode(errors="replace") if key is not None else None,
        received_at=received_at,
        **original_bytes(raw),
    )


def original_bytes(raw: bytes) -> dict[str, str]:
    # UTF-8 text when it is (always, from our ingester); else base64, never lossy.
    try:
        return {"original": raw.decode("utf-8"), "original_encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"original": base64.b64encode(raw).decode(), "original_encoding": "base64"}


# --- message events --------------------------------------------------------------------
def _receipt(body: dict[str, Any], received_at: str | None) -> Normalized:
    payload = body["payload"]
    status = payload["status"]
    user = _object(payload.get("user"))
    state = canonical.lower(status["state"])
    assert state is not None  # the schema requires a non-empty state
    detail = canonical.lower(status.get("detail"))
    occurred = canonical.parse_timestamp(status["timestamp"], "payload.status.timestamp")
    msisdn = canonical.e164(user.get("msisdn"))
    whatsapp = _object(payload.get("whatsapp"))
    template = _object(_object(payload.get("outboundContent")).get("template"))
    record = Receipt(
        umid=payload["umid"],
        sub_account_id=_text(payload.get("subAccountId")),
        channel=canonical.lower(payload.get("channel")),
        state=state,
        detail=detail,
        occurred_at=canonical.format_timestamp(occurred),
        received_at=received_at,
        msisdn=msisdn,
        channel_user_id=_text(user.get("channelUserId")),
        country=canonical.country_of(msisdn, user.get("channelUserId")),
        error_code=_integer(status.get("errorCode")),
        error_message=_text(status.get("errorMessage")),
        provider_error_code=_text(whatsapp.get("providerErrorCode")),
        pricing_category=canonical.lower(whatsapp.get("pricingCategory")),
        template_name=_text(template.get("name")),
        template_language=_text(template.get("language")),
        template_category=canonical.upper(template.get("category")),
        batch_id=_text(payload.get("batchId")),
        client_message_id=_text(payload.get("clientMessageId")),
        version=_integer(body.get("version")),
    )
    return Normalized(
        topic=topics.STATUS,
        key=record.umid,
        record=record,
        occurred_at=occurred,
        dedupe_key=f"status|{record.umid}|{state}|{detail or ''}",
        id_key=None,
        digest="",
    )


def _inbound(
    body: dict[str, Any], event_type: str, received_at: str | None, digest: str
) -> Normalized:
    # LINE's flat shape carries the message in `inboundMessage` instead of `payload`.
    payload = _object(body.get("payload")) or _object(body.get("inboundMessage"))
    user = _object(payload.get("user"))
    recipient = _object(payload.get("recipient"))
    content = payload.get("content")
    occurred = _optional_time(payload.get("timestamp"), "payload.timestamp")
    msisdn = canonical.e164(user.get("msisdn"))
    umid = _text(payload.get("umid"))
    if umid is None:  # LINE's flat shape is checked loosely by its schema
        raise canonical.InvalidValue("the message has no umid")
    record = InboundMessage(
        umid=umid,
        event_type=event_type,
        echo=event_type == "external_app_message",
        sub_account_id=_text(payload.get("subAccountId")),
        channel=canonical.lower(recipient.get("channel") or payload.get("channel")),
        occurred_at=canonical.format_timestamp(occurred) if occurred else None,
        received_at=received_at,
        msisdn=msisdn,
        channel_user_id=_text(user.get("channelUserId")),
        country=canonical.country_of(msisdn, user.get("channelUserId")),
        user_name=_text(user.get("name")),
        username=_text(user.get("username")),
        channel_id=_text(recipient.get("channelId")),
        type=canonical.lower(payload.get("type")),
        raw_type=_text(payload.get("type")),
        interactive_type=_text(_object(_object(content).get("interactive")).get("type")),
        reply_to_umid=_text(payload.get("replyToUmid")),
        content=content if isinstance(content, dict) else None,
        version=_integer(body.get("version")),
    )
    return Normalized(
        topic=topics.INBOUND,
        key=umid,
        record=record,
        occurred_at=occurred,
        dedupe_key=f"inbound|{umid}|{digest}",
        id_key=f"inbound|{umid}",
        digest=digest,
    )


# --- account-level events (flat envelope) ------------------------------------------------
def _account_level(
    body: dict[str, Any], event_type: str, received_at: str | None, digest: str
) -> Normalized:
    details = body["eventDetails"]
    meta = _object(details.get("meta"))
    event_id = str(body["eventId"])
    occurred = _optional_time(body.get("timestamp"), "timestamp")
    common = {
        "occurred_at": canonical.format_timestamp(occurred) if occurred else None,
        "received_at": received_at,
        "business_account_id": _text(body.get("businessAccountId")),
        "account_id": _text(body.get("accountId")),
    }
    record: TypedRecord
    if event_type in TEMPLATE_TYPES:
        other_info = _object(meta.get("otherInfo"))
        record = TemplateEvent(
            event_id=event_id,
            event_type=event_type,
            template_id=str(details["templateId"]),
            template_name=_text(details.get("templateName")),
            template_language=_text(details.get("templateLanguage")),
            status=canonical.upper(meta.get("status")),
            reason=canonical.upper(meta.get("reason")),
            other_info_title=canonical.upper(other_info.get("title")),
            other_info_description=_text(other_info.get("description")),
            disable_date=_text(_object(meta.get("disableInfo")).get("disableDate")),
            previous_quality=canonical.upper(meta.get("previousQualityScore")),
            new_quality=canonical.upper(meta.get("newQualityScore")),
            previous_category=canonical.upper(meta.get("previousCategory")),
            new_category=canonical.upper(meta.get("newCategory")),
            category=canonical.upper(meta.get("category")),
            correct_category=canonical.upper(meta.get("correctCategory")),
            **common,
        )
        topic, key = topics.TEMPLATE, record.template_id
    elif event_type == "phone_number_quality_update":
        record = PhoneEvent(
            event_id=event_id,
            display_phone_number=str(details.get("displayPhoneNumber") or ""),
            event=canonical.upper(meta.get("event")),
            current_limit=canonical.upper(
                meta.get("maxDailyConversationsPerBusiness") or meta.get("currentLimit")
            ),
            old_limit=canonical.upper(meta.get("oldLimit")),
            reason=canonical.upper(meta.get("reason")),
            **common,
        )
        topic, key = topics.PHONE, record.display_phone_number
    else:
        record = AccountEvent(
            event_id=event_id,
            event_type=event_type,
            event=canonical.upper(details.get("event")),
            details=details,
            **common,
        )
        topic = topics.ACCOUNT
        key = common["business_account_id"] or common["account_id"] or event_id
    return Normalized(
        topic=topic,
        key=key,
        record=record,
        occurred_at=occurred,
        dedupe_key=f"event|{event_id}|{digest}",
        id_key=f"event|{event_id}",
        digest=digest,
    )


# --- small helpers ---------------------------------------------------------------------------
def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    return str(value) if isinstance(value, str | int) and str(value) else None


def _integer(value: object) -> int | None:
    """An integer that fits a signed 64-bit field (what JSON consumers can hold), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return value
    return None


def _optional_time(value: object, field: str) -> datetime | None:
    return None if value is None else canonical.parse_timestamp(value, field)
