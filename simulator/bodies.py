"""The webhook body of each story event, in the shapes of 8x8's webhook documentation. Pure.

Real 8x8 bodies differ in more than their values, and the pipeline must take
them all (8x8's webhook documentation, "What real bodies add"), so the bodies vary as real ones
do: with or without a `version` (3 for inbound, 8 or 9 for receipts), `channel`
and `state` in mixed case, 0, 1, 2, 3 or 7 fractional digits, `channelUserId`
with a `+`, a BSUID, or missing (on `queued`), `description` missing, extra
fields (`batchId`, `clientMessageId`, `whatsapp.pricingCategory`,
`providerErrorCode`, v9's `outboundContent`), `templateId` as a number,
deprecated tier fields beside `maxDailyConversationsPerBusiness`.

Each event's style is drawn from its own `variant` seed (and a message's version
and channel spelling from its umid, so one message's receipts look alike): the
same event always gives the same bytes, which a retry repeats exactly.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import orjson

from simulator.plan import seeded
from simulator.population import Population, Template
from simulator.stories import (
    QUEUED,
    SENT,
    UNDELIVERED,
    Event,
    Fact,
    Inbound,
    PhoneChange,
    Receipt,
    TemplateCategory,
    TemplateQuality,
    TemplateStatus,
    Timeline,
)

Body = dict[str, Any]

_TEXTS = (
    "Is my order shipped?",
    "Hi, I need help with my account",
    "Thanks!",
    "STOP",
    "When does the sale end?",
    "Can I change my delivery address?",
    "👍",
    "Obrigado!",
    "Terima kasih",
    "Danke, passt so",
    "What are your opening hours?",
)
_BUTTONS = (
    ("yes", "Yes, please"),
    ("no", "No, thanks"),
    ("talk-to-sales", "Talk to Sales"),
    ("track", "Track my order"),
    ("reschedule", "Reschedule"),
)
_LIST_ROWS = (
    ("plan-basic", "Basic plan", "For one person"),
    ("plan-premium", "Premium plan", "For the whole family"),
    ("slot-am", "Morning", "08:00-12:00"),
    ("slot-pm", "Afternoon", "12:00-18:00"),
)
_MEDIA_TYPES = {"image": "Image", "video": "Video", "audio": "Audio", "document": "Document"}
_STATUS_DESCRIPTIONS = {
    "FIRST_PAUSE": "Your template has been paused for 3 hours due to low quality.",
    "SECOND_PAUSE": "Your template has been paused for 6 hours due to low quality.",
    "UNPAUSE": "Your template is active again.",
    "DISABLED": "Your template has been disabled due to repeated low quality.",
}


def encode(body: Body) -> bytes:
    """The bytes posted (and repeated by every retry)."""
    return orjson.dumps(body)


def event_bytes(timeline: Timeline, event: Event) -> bytes:
    return encode(body(timeline, event))


def timeline_bodies(timeline: Timeline) -> list[bytes]:
    """Every body of the timeline, in posting order."""
    return [event_bytes(timeline, event) for event in timeline.events]


def body(timeline: Timeline, event: Event) -> Body:
    """The webhook body of `event` of `timeline` (its time counts from the anchor)."""
    style = seeded(event.variant)
    moment = timeline.anchor + timedelta(seconds=event.at)
    fact = event.fact
    if isinstance(fact, Receipt):
        return _receipt(fact, moment, style)
    if isinstance(fact, Inbound):
        return _inbound(fact, moment, style)
    return _account_event(event.key, fact, moment, style, timeline.population)


# --- timestamps -------------------------------------------------------------------------------
def timestamp(moment: datetime, digits: int) -> str:
    """ISO 8601 UTC with `digits` fractional digits (truncated), as 8x8 writes them."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{moment.microsecond:06d}{'0' * 3}"[:digits]
    return text + "Z"


# --- message events ---------------------------------------------------------------------------
def _receipt(fact: Receipt, moment: datetime, style: random.Random) -> Body:
    per_message = seeded(fact.umid)
    # A complete receipt is a v8 or v9 body: only those carry `whatsapp.pricingCategory`.
    version = per_message.choice((8, 9, 9) if fact.complete else (None, None, 8, 9, 9))
    channel = per_message.choice(("whatsapp", "whatsapp", "whatsapp", "WhatsApp", "whatsApp"))
    state = fact.state
    if style.random() < 0.15:
        state = style.choice((state.upper(), state.title()))
    status: Body = {"state": state}
    detail = _detail(fact, style)
    if detail is not None:
        status["detail"] = detail
    status["timestamp"] = timestamp(moment, style.choice((0, 1, 2, 3, 3, 7)))
    if fact.failure is not None:
        status["errorCode"] = fact.failure.code
        status["errorMessage"] = fact.failure.message
    user: Body = {"msisdn": fact.customer.msisdn}
    if fact.state != QUEUED:  # missing on queued (8x8's webhook documentation)
        user["channelUserId"] = _channel_user_id(fact, style)
    payload: Body = {"umid": fact.umid}
    if version is not None and fact.batch_id is not None:
        payload["batchId"] = fact.batch_id
        payload["clientMessageId"] = f"crm-{fact.umid[:8]}"
        payload["clientBatchId"] = f"campaign-{fact.batch_id[:6]}"
    payload.update(
        subAccountId=fact.sub_account.sub_account_id, channel=channel, user=user, status=status
    )
    whatsapp: Body = {}
    if version is not None and fact.state not in (QUEUED, UNDELIVERED):
        whatsapp["pricingCategory"] = fact.category.lower()
    if fact.failure is not None and fact.failure.provider_code and style.random() < 0.8:
        whatsapp["providerErrorCode"] = fact.failure.provider_code
    if whatsapp:
        payload["whatsapp"] = whatsapp
    if version == 9 and fact.state == "delivered" and fact.template is not None:
        payload["outboundContent"] = _outbound_content(fact, fact.template)
    return _chatapps(
        "outbound_message_status_changed",
        "ChatApps outbound message delivery receipt",
        payload,
        version,
        style,
    )


def _detail(fact: Receipt, style: random.Random) -> str | None:
    if fact.failure is not None:
        return fact.failure.detail
    if fact.state == "delivered":
        return "delivered_to_recipient"
    if fact.state == SENT and style.random() < 0.5:
        return "sent_from_channel"
    return None  # always absent on queued and read


def _channel_user_id(fact: Receipt | Inbound, style: random.Random) -> str:
    customer = fact.customer
    if customer.bsuid is not None:
        return customer.bsuid
    digits = customer.msisdn.removeprefix("+")
    return customer.msisdn if style.random() < 0.1 else digits  # sometimes with its `+`


def _outbound_content(fact: Receipt, template: Template) -> Body:
    return {
        "channel": "whatsapp",
        "contentType": "template",
        "template": {
            "name": template.name,
            "language": template.language,
            "category": fact.category,
        },
        "body": {"text": f"Hi {fact.customer.name or 'there'}, this is {template.name}."},
        "actions": {
            "buttons": [
                {"type": "quick_reply", "label": label, "value": None} for _, label in _BUTTONS[:2]
            ]
        },
    }


def _inbound(fact: Inbound, moment: datetime, style: random.Random) -> Body:
    version = 9 if fact.echo else style.choice((None, 3))
    user: Body = {"msisdn": fact.customer.msisdn, "channelUserId": _channel_user_id(fact, style)}
    if fact.customer.name is not None and not fact.echo:
        user["name"] = fact.customer.name
    if version == 3 and fact.customer.bsuid is not None and style.random() < 0.5:
        user["username"] = (fact.customer.name or "user").lower() + str(style.randrange(100))
    payload: Body = {"umid": fact.umid, "subAccountId": fact.sub_account.sub_account_id}
    # A reply's time is the funnel's `repliedAt`: always sent with replies; only some
    # other messages come without one (8x8's webhook documentation: even `timestamp` is missing).
    if fact.reply_to is not None or fact.complete or style.random() > 0.05:
        payload["timestamp"] = timestamp(moment, style.choice((0, 0, 2)))
    payload["user"] = user
    if fact.echo:
        payload["channel"] = "whatsapp"
    elif fact.reply_to is not None or fact.complete or style.random() > 0.05:
        payload["recipient"] = {"channel": "whatsapp", "channelId": fact.sub_account.channel_id}
    kind_type, content = _content(fact, style)
    payload["type"] = kind_type if style.random() < 0.8 else kind_type.lower()
    payload["content"] = content
    if fact.reply_to is not None:
        payload["replyToUmid"] = fact.reply_to
    if fact.echo:
        return _chatapps("external_app_message", "External App Message", payload, version, style)
    return _chatapps(
        "inbound_message_received", "ChatApps inbound message", payload, version, style
    )


def _content(fact: Inbound, style: random.Random) -> tuple[str, Body]:
    kind = fact.kind
    if kind in _MEDIA_TYPES:
        expires = style.randrange(1_700_000_000, 1_900_000_000)
        url = (
            f"https://media.8x8.example.invalid/inbound/{fact.umid}"
            f"?sig={style.getrandbits(64):016x}&expires={expires}"
        )
        return _MEDIA_TYPES[kind], {"url": url}
    if kind == "location":
        return "Location", {
            "location": {
                "latitude": round(style.uniform(-34, 53), 6),
                "longitude": round(style.uniform(-47, 107), 6),
            }
        }
    if kind == "button_reply":
        if fact.reply_to is not None and style.random() < 0.25:
            # A tap on a template's quick-reply button can arrive as Text with its label.
            return "Text", {"text": style.choice(_BUTTONS)[1]}
        option, title = style.choice(_BUTTONS)
        return "Interactive", {
            "interactive": {"type": "button_reply", "button_reply": {"id": option, "title": title}}
        }
    if kind == "list_reply":
        option, title, description = style.choice(_LIST_ROWS)
        row = {"id": option, "title": title, "description": description}
        return "Interactive", {"interactive": {"type": "list_reply", "list_reply": row}}
    return "Text", {"text": style.choice(_TEXTS)}


def _chatapps(
    event_type: str, description: str, payload: Body, version: int | None, style: random.Random
) -> Body:
    body: Body = {}
    if version is not None:
        body["version"] = version
    body["namespace"] = "ChatApps"
    body["eventType"] = event_type
    if style.random() > 0.1:  # missing from some bodies
        body["description"] = description
    body["payload"] = payload
    return body


# --- account events ---------------------------------------------------------------------------
def _account_event(
    event_id: str, fact: Fact, moment: datetime, style: random.Random, population: Population
) -> Body:
    if isinstance(fact, PhoneChange):
        event_type, details = "phone_number_quality_update", _phone(fact, style)
    else:
        event_type, details = _template(fact, style)
    return {
        "eventId": event_id,
        # Account events carry whole seconds and two zero digits (`...T18:20:05.00Z`).
        "timestamp": timestamp(moment, 0)[:-1] + ".00Z",
        "provider": "WhatsApp",
        "businessAccountId": population.business_account_id,
        "accountId": population.account_id,
        "eventType": event_type,
        "eventDetails": details,
    }


def _template(fact: Fact, style: random.Random) -> tuple[str, Body]:
    assert isinstance(fact, TemplateQuality | TemplateStatus | TemplateCategory)
    template = fact.template
    details: Body = {
        # A number in 8x8's schema, a string in its examples: both occur.
        "templateId": int(template.template_id) if style.random() < 0.2 else template.template_id,
        "templateName": template.name,
        "templateLanguage": template.language,
    }
    if isinstance(fact, TemplateQuality):
        details["meta"] = {"previousQualityScore": fact.previous, "newQualityScore": fact.new}
        return "template_quality_update", details
    if isinstance(fact, TemplateCategory):
        details["meta"] = {"previousCategory": fact.previous, "newCategory": fact.new}
        return "template_category_update", details
    meta: Body = {"status": fact.status}
    if fact.reason is not None:
        meta["reason"] = fact.reason
    if fact.title is not None:
        meta["otherInfo"] = {
            "title": fact.title,
            "description": _STATUS_DESCRIPTIONS.get(fact.title, fact.title),
        }
    details["meta"] = meta
    return "template_status_update", details


def _phone(fact: PhoneChange, style: random.Random) -> Body:
    meta: Body = {"event": fact.event}
    if fact.tier is not None:
        meta["maxDailyConversationsPerBusiness"] = fact.tier
        if fact.old_tier is not None and style.random() < 0.5:
            # The deprecated pair, still sent beside the new field by older set-ups.
            meta["currentLimit"] = fact.tier
            meta["oldLimit"] = fact.old_tier
    if fact.reason is not None:
        meta["reason"] = fact.reason
    return {"displayPhoneNumber": fact.phone.display_phone_number, "meta": meta}
