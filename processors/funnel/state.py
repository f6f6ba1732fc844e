"""The funnel state of one outbound message, built from its receipts and replies.

Receipts arrive late, out of order and repeated (read before delivered, a
`delivered` weeks after `sent`, retries of everything). So the state is not
advanced step by step; it is the *merge* of everything observed about the
message, and `merge` is commutative, associative and idempotent:

- the time of a stage (`queuedAt` ... `readAt`) is the earliest time by which
  the message is known to have reached it: the earliest receipt that implies
  it (a `read` implies `delivered`, `sent` and `queued`;
  `delivered_to_operator` is not yet delivered to the customer, so it implies
  only `sent`);
- the state is the furthest stage reached (queued < sent < delivered < read),
  or the failure state when a failure was reported and the customer's phone
  never got the message;
- a failure's state, detail and error fields come from the first failure by
  time, ties broken by the values themselves (a total order);
- descriptive fields (sub-account, msisdn, country, channel, template
  category, pricing) take the value of the first observation, by time then
  value, that has one.

Hence any order and any repetition of the same observations give the same
state: a duplicate or a late older receipt changes nothing it should not,
which is what makes the funnel exact under retries and redelivery after a
crash. tests/processors/funnel/test_state.py checks this with hypothesis.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import IntEnum

import orjson

from processors.normalize.records import InboundMessage, Receipt

FAILURE_STATES = frozenset({"rejected", "undelivered", "failed"})
REPLIED = "replied"  # the state of an observation that is a customer's reply
DELIVERED_TO_OPERATOR = "delivered_to_operator"


class Stage(IntEnum):
    """How far a message got towards the customer."""

    NONE = 0
    QUEUED = 1
    SENT = 2
    DELIVERED = 3
    READ = 4


_STAGE_OF_STATE = {
    "queued": Stage.QUEUED,
    "sent": Stage.SENT,
    "delivered": Stage.DELIVERED,
    "read": Stage.READ,
}


@dataclass(frozen=True)
class Observation:
    """One receipt (or reply) about one message, reduced to what the funnel uses.

    Timestamps are canonical ISO strings (`...T10:00:01.512Z`): they sort as times.
    The field order is the tie-break order of merges: time first.
    """

    at: str
    state: str  # a receipt's state, or "replied" for a customer's reply naming the umid
    detail: str | None = None
    error_code: int | None = None
    provider_error_code: str | None = None
    error_message: str | None = None
    sub_account_id: str | None = None
    msisdn: str | None = None
    country: str | None = None
    channel: str | None = None
    template_category: str | None = None
    pricing_category: str | None = None

    def sort_key(self) -> tuple[tuple[bool, str], ...]:
        """A total order: time first, then every field, None after any value."""
        return tuple(
            (value is None, "" if value is None else str(value))
            for value in (getattr(self, f.name) for f in fields(self))
        )

    @property
    def stage(self) -> Stage:
        stage = _STAGE_OF_STATE.get(self.state, Stage.NONE)
        if stage is Stage.DELIVERED and self.detail == DELIVERED_TO_OPERATOR:
            return Stage.SENT
        return stage


@dataclass(frozen=True, order=True)
class Attribute:
    """A descriptive value and the time of the observation it came from."""

    at: str
    value: str


@dataclass(frozen=True)
class MessageState:
    """What we know of one outbound message: the record of `whatsapp.message_state`."""

    umid: str
    queued_at: str | None = None
    sent_at: str | None = None
    delivered_at: str | None = None
    read_at: str | None = None
    replied_at: str | None = None
    failure: Observation | None = None  # the first failure reported
    furthest: Observation | None = None  # the first receipt at the furthest stage
    # Descriptive: the first non-null value by (time, value) of the observations.
    sub_account_id: Attribute | None = None
    msisdn: Attribute | None = None
    country: Attribute | None = None
    channel: Attribute | None = None
    template_category: Attribute | None = None
    pricing_category: Attribute | None = None
    last_event_at: str | None = None  # the latest observation: state lives 30 days past it

    @property
    def stage(self) -> Stage:
        for stage, at in ((Stage.READ, self.read_at), (Stage.DELIVERED, self.delivered_at),
                          (Stage.SENT, self.sent_at), (Stage.QUEUED, self.queued_at)):  # fmt: skip
            if at is not None:
                return stage
        return Stage.NONE

    @property
    def state(self) -> str | None:
        """The contract's `state`: the furthest stage, or the failure when the phone never
        got the message."""
        if self.failure is not None and self.stage < Stage.DELIVERED:
            return self.failure.state
        return None if self.stage is Stage.NONE else self.stage.name.lower()

    @property
    def detail(self) -> str | None:
        if self.failure is not None and self.stage < Stage.DELIVERED:
            return self.failure.detail
        return self.furthest.detail if self.furthest is not None else None


DESCRIPTIVE_FIELDS = ("sub_account_id", "msisdn", "country", "channel", "template_category",
                      "pricing_category")  # fmt: skip


def merge(state: MessageState, observation: Observation) -> MessageState:
    """`state` with `observation` taken into account (commutative, associative, idempotent)."""
    changes: dict[str, object] = {"last_event_at": _latest(state.last_event_at, observation.at)}
    if observation.state == REPLIED:
        changes["replied_at"] = earliest(state.replied_at, observation.at)
    elif observation.state in FAILURE_STATES:
        changes["failure"] = _first_observation(state.failure, observation)
    stage = observation.stage
    for reached, field in ((Stage.QUEUED, "queued_at"), (Stage.SENT, "sent_at"),
                           (Stage.DELIVERED, "delivered_at"), (Stage.READ, "read_at")):  # fmt: skip
        if stage >= reached:
            changes[field] = earliest(getattr(state, field), observation.at)
    if stage is not Stage.NONE:
        current = state.furthest
        if current is None or stage > current.stage:
            changes["furthest"] = observation
        elif stage == current.stage:
            changes["furthest"] = _first_observation(current, observation)
    for field in DESCRIPTIVE_FIELDS:
        value = getattr(observation, field)
        if value is not None:
            known = getattr(state, field)
            # Attribute's own order, without building one per field and event.
            if known is None or (observation.at, value) < (known.at, known.value):
                changes[field] = Attribute(observation.at, value)
    return replace(state, **changes)  # type: ignore[arg-type]


def earliest(current: str | None, candidate: str) -> str:
    """The earlier of two canonical times, the first when there is none."""
    return candidate if current is None or candidate < current else current


def _latest(current: str | None, candidate: str) -> str:
    return candidate if current is None or candidate > current else current


def _first_observation(current: Observation | None, candidate: Observation) -> Observation:
    if current is None or candidate.sort_key() < current.sort_key():
        return candidate
    return current


# --- from normalize's records, to the message_state topic ----------------------------------------
def observe_receipt(receipt: Receipt) -> Observation:
    """What the funnel takes from a normalized receipt (`whatsapp.status`)."""
    return Observation(
        at=receipt.occurred_at,
        state=receipt.state,
        detail=receipt.detail,
        error_code=receipt.error_code,
        provider_error_code=receipt.provider_error_code,
        error_message=receipt.error_message,
        sub_account_id=receipt.sub_account_id,
        msisdn=receipt.msisdn,
        country=receipt.country,
        channel=receipt.channel,
        template_category=receipt.template_category,
        pricing_category=receipt.pricing_category,
    )


def observe_reply(message: InboundMessage) -> tuple[str, Observation] | None:
    """The umid of our message a customer's message replies to, and the reply; None if
    it replies to nothing (or is an echo of our own)."""
    if message.reply_to_umid is None or message.echo:
        return None
    at = message.occurred_at or message.received_at
    if at is None:
        return None
    return message.reply_to_umid, Observation(at=at, state=REPLIED)


def message_state_value(state: MessageState) -> dict[str, object]:
    """The record of `whatsapp.message_state` for `state` (camelCase, docs/interface.md)."""
    failure = state.failure
    return {
        "umid": state.umid,
        "subAccountId": _value(state.sub_account_id),
        "msisdn": _value(state.msisdn),
        "country": _value(state.country),
        "channel": _value(state.channel),
        "state": state.state,
        "detail": state.detail,
        "queuedAt": state.queued_at,
        "sentAt": state.sent_at,
        "deliveredAt": state.delivered_at,
        "readAt": state.read_at,
        "failedAt": failure.at if failure else None,
        "repliedAt": state.replied_at,
        "errorCode": failure.error_code if failure else None,
        "providerErrorCode": failure.provider_error_code if failure else None,
        "errorMessage": failure.error_message if failure else None,
        "pricingCategory": _value(state.pricing_category),
        "templateCategory": _value(state.template_category),
        "lastEventAt": state.last_event_at,
    }


def _value(attribute: Attribute | None) -> str | None:
    return attribute.value if attribute is not None else None


# --- storage: the funnel table keeps each state as compact JSON ---------------------------
def dump_state(state: MessageState) -> bytes:
    # orjson writes dataclasses natively, as `asdict` would, 30 times faster.
    return orjson.dumps(state)


def load_state(data: bytes | str) -> MessageState:
    raw = orjson.loads(data)
    for field in ("failure", "furthest"):
        if raw[field] is not None:
            raw[field] = Observation(**raw[field])
    for field in DESCRIPTIVE_FIELDS:
        if raw[field] is not None:
            raw[field] = Attribute(**raw[field])
    return MessageState(**raw)
