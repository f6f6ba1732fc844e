"""The records normalize writes: one frozen dataclass per typed topic, and the dead letter.

Fields are snake_case here and camelCase on the wire (`record_value`), the
source's own convention; timestamps are ISO 8601 UTC strings with milliseconds.
Every field is always present, null when the body did not say: analytics
queries can rely on the shape. The JSON Schemas under `schemas/topics/` are
these records' contract.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, TypeVar


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


_WIRE_NAMES: dict[type, tuple[tuple[str, str], ...]] = {}


def _wire_names(record_type: type) -> tuple[tuple[str, str], ...]:
    """(field name, camelCase name) of each field of a record type, computed once."""
    names = _WIRE_NAMES.get(record_type)
    if names is None:
        names = _WIRE_NAMES[record_type] = tuple(
            (f.name, _camel(f.name)) for f in fields(record_type)
        )
    return names


def record_value(record: Any) -> dict[str, Any]:
    """The record as the JSON object written to its topic (camelCase keys)."""
    return {wire: getattr(record, name) for name, wire in _wire_names(type(record))}


R = TypeVar("R")


def record_from_value(record_type: type[R], value: dict[str, Any]) -> R:
    """The inverse of `record_value`, for the jobs that read these topics. Fields a later
    version added are ignored; fields it lacks are None."""
    names = _wire_names(record_type)
    return record_type(**{name: value.get(wire) for name, wire in names})


@dataclass(frozen=True)
class InboundMessage:
    """`whatsapp.inbound`: a customer's message, or an echo of one the business sent
    from the WhatsApp Business app (`echo`)."""

    umid: str
    event_type: str
    echo: bool
    sub_account_id: str | None
    channel: str | None  # lower-case: whatsapp, viber, rcs, line, ...
    occurred_at: str | None
    received_at: str | None
    msisdn: str | None  # E.164, or null
    channel_user_id: str | None
    country: str | None
    user_name: str | None
    username: str | None
    channel_id: str | None
    type: str | None  # lower-case; `raw_type` keeps what was sent
    raw_type: str | None
    interactive_type: str | None
    reply_to_umid: str | None
    content: dict[str, Any] | None  # as sent: the text is customer data, handled with care
    version: int | None


@dataclass(frozen=True)
class Receipt:
    """`whatsapp.status`: one delivery receipt of one outbound message."""

    umid: str
    sub_account_id: str | None
    channel: str | None
    state: str  # lower-case: queued, sent, delivered, read, undelivered, rejected, failed
    detail: str | None  # lower-case, e.g. delivered_to_recipient
    occurred_at: str
    received_at: str | None
    msisdn: str | None
    channel_user_id: str | None
    country: str | None
    error_code: int | None
    error_message: str | None
    provider_error_code: str | None
    pricing_category: str | None
    template_name: str | None
    template_language: str | None
    template_category: str | None
    batch_id: str | None
    client_message_id: str | None
    version: int | None


@dataclass(frozen=True)
class TemplateEvent:
    """`whatsapp.template`: Meta's verdict on a template (status, quality, category)."""

    event_id: str
    event_type: str
    template_id: str
    template_name: str | None
    template_language: str | None
    occurred_at: str | None
    received_at: str | None
    business_account_id: str | None
    account_id: str | None
    status: str | None  # upper-case, Meta's spelling
    reason: str | None
    other_info_title: str | None  # FIRST_PAUSE, SECOND_PAUSE, ...: Meta's strike count
    other_info_description: str | None
    disable_date: str | None
    previous_quality: str | None
    new_quality: str | None
    previous_category: str | None  # template_category_update: from ...
    new_category: str | None  # ... to
    category: str | None  # template_correct_category_detection: the category it has ...
    correct_category: str | None  # ... and the one Meta says it should have


@dataclass(frozen=True)
class PhoneEvent:
    """`whatsapp.phone`: quality flag or messaging limit of one of our numbers."""

    event_id: str
    display_phone_number: str
    occurred_at: str | None
    received_at: str | None
    business_account_id: str | None
    account_id: str | None
    event: str | None  # upper-case: UPGRADE, DOWNGRADE, FLAGGED, UNFLAGGED, ...
    current_limit: str | None  # maxDailyConversationsPerBusiness, else the deprecated currentLimit
    old_limit: str | None
    reason: str | None


@dataclass(frozen=True)
class AccountEvent:
    """`whatsapp.account`: account updates and customers' id and contact events."""

    event_id: str
    event_type: str
    occurred_at: str | None
    received_at: str | None
    business_account_id: str | None
    account_id: str | None
    event: str | None  # account_update's `event`, upper-case
    details: dict[str, Any]  # eventDetails as sent


class DeadLetterKind(StrEnum):
    INVALID_BODY = "invalid_body"  # not a JSON object (the ingester refuses those; a bad replay)
    UNKNOWN_EVENT_TYPE = "unknown_event_type"  # kept for a later version to replay
    SCHEMA_VIOLATION = "schema_violation"  # a known type whose shape we do not recognise
    INVALID_VALUE = "invalid_value"  # valid shape, but a value we cannot canonicalize
    PROCESSING_ERROR = "processing_error"  # made a job fail (a bug): processors/dead_letters.py


@dataclass(frozen=True)
class DeadLetter:
    """`whatsapp.deadletter`: what normalize could not route, with why and the original."""

    kind: DeadLetterKind
    reason: str
    errors: tuple[str, ...]
    event_type: str | None
    source_topic: str
    source_partition: int
    source_offset: int
    key: str | None
    received_at: str | None
    original: str  # the raw body, byte for byte: as text, or base64 (see original_encoding)
    original_encoding: str  # "utf-8" (always, for what our ingester kept) or "base64"
