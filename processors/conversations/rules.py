"""The 24-hour customer-service window of each (sub-account, customer) pair, and the
free-form messages sent outside it.

A customer's inbound message at `a` opens the window `[a, a + 24h)`: inside, the
business may send free-form messages; outside, only templates are delivered and a
free-form send fails (8x8 errorCode 1022, Meta's 131047). Events arrive in any
order, repeated and days late, so a pair's `Conversation` is not advanced step by
step: it is the *merge* of everything observed, commutative, associative and
idempotent:

- the open intervals are the union of `[a, a + 24h)` over the inbound messages,
  kept as sorted, disjoint half-open intervals with overlapping or touching ones
  merged: a set union written one canonical way, whatever order built it;
- `last_inbound_at` is the latest inbound time (a maximum);
- each outbound message's facts merge per umid: its first-known time is its
  earliest receipt, its sent time its earliest sent-or-later one (minimums); it is
  free-form until any receipt shows it was business-initiated (an AND); it failed for
  the window once any failure receipt says so (an OR); its dimensions are the first
  non-null value by (time, value), as in funnel/state.py.

Minimum, maximum, AND, OR, union and a total-order choice are each commutative,
associative and idempotent, so the state, and every pure function of it
(`service_window_value`, `outside_window_contributions`), is the same for any
order and repetition of the same observations.
tests/processors/conversations/test_rules.py checks this with hypothesis.

Bounds: `prune(state, horizon)` drops what ended before the horizon: the intervals
are then at most retention / 24 h + 2, the messages those sent within retention. The
job refuses events older than its horizon (stale), so what prune drops can no longer
change (`prune` says so precisely, with its one limit).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import lru_cache
from typing import NamedTuple

import orjson

from processors.funnel.state import FAILURE_STATES, Attribute, earliest
from processors.funnel.windows import (
    FREEFORM_OUTSIDE,
    FREEFORM_OUTSIDE_FAILED,
    UNKNOWN,
    WINDOW_SECONDS,
    Counts,
    WindowKey,
    dimension,
    encode_id,
    window_start,
)
from processors.normalize import canonical
from processors.normalize.records import InboundMessage, Receipt

SERVICE_WINDOW = timedelta(hours=24)
SENT_STATES = frozenset({"sent", "delivered", "read"})
SERVICE_PRICING = "service"  # the one pricing category of a customer-initiated conversation
WHATSAPP = "whatsapp"

Interval = tuple[str, str]  # [start, end): canonical times


class ErrorCodes(NamedTuple):
    error_codes: frozenset[int]  # 8x8's errorCode
    provider_error_codes: frozenset[str]  # Meta's, as 8x8 relays it in providerErrorCode


WINDOW_EXPIRED_ERRORS = ErrorCodes(frozenset({1022}), frozenset({"131047"}))


def customer_of(msisdn: str | None, channel_user_id: str | None) -> str | None:
    """The customer of a pair: the msisdn, else the channel user id (a BSUID-only
    customer has no number)."""
    return msisdn or channel_user_id or None


def is_business_initiated(
    template_name: str | None, template_category: str | None, pricing_category: str | None
) -> bool:
    """Whether a receipt shows a template: template content, or a pricing category other
    than `service` (a null pricing category says nothing)."""
    if template_name is not None or template_category is not None:
        return True
    return pricing_category is not None and pricing_category.strip().casefold() != SERVICE_PRICING


def failed_for_window(error_code: int | None, provider_error_code: str | None) -> bool:
    """Whether a failure's codes say the 24-hour customer window had expired."""
    provider = provider_error_code.strip() if provider_error_code is not None else None
    return (
        error_code in WINDOW_EXPIRED_ERRORS.error_codes
        or provider in WINDOW_EXPIRED_ERRORS.provider_error_codes
    )


@dataclass(frozen=True)
class OutboundObservation:
    """One receipt of one outbound message, reduced to what classification uses."""

    at: str
    template_name: str | None = None
    template_category: str | None = None
    pricing_category: str | None = None
    error_code: int | None = None
    provider_error_code: str | None = None
    failed: bool = False  # the receipt's state is rejected, undelivered or failed
    sent: bool = False  # its state is sent, delivered or read: the message went out
    sub_account_id: str | None = None
    country: str | None = None


@dataclass(frozen=True)
class Outbound:
    """What the pair knows of one outbound message."""

    first_at: str  # its earliest receipt of any state: when it was sent, as far as we know
    free_form: bool  # no receipt showed it was business-initiated
    window_failure: bool  # a failure receipt said the customer window had expired
    # Its earliest sent-or-later receipt: when a business-initiated message reached its
    # customer, as the messaging limit counts it (processors/limits).
    sent_at: str | None = None
    # The funnel windows' dimensions: the first non-null value by (time, value). The
    # template category is always unknown: a message that has one is no free-form one.
    sub_account_id: Attribute | None = None
    country: Attribute | None = None


@dataclass(frozen=True)
class Conversation:
    """One pair's state. Never mutated: each merge builds a new one (and a new dict)."""

    intervals: tuple[Interval, ...] = ()  # sorted, disjoint, not touching
    last_inbound_at: str | None = None
    outbound: Mapping[str, Outbound] = field(default_factory=dict)  # umid -> its facts


def merge_inbound(state: Conversation, at: str) -> Conversation:
    """`state` with a customer's inbound message at `at`: it opens `[at, at + 24h)`."""
    start, end = at, _window_end(at)
    kept: list[Interval] = []
    for interval in state.intervals:
        # The existing intervals do not touch each other, so whatever touches the new one
        # is absorbed by it, and the rest stays apart from the union.
        if interval[1] < start or interval[0] > end:
            kept.append(interval)
        else:
            start, end = min(start, interval[0]), max(end, interval[1])
    kept.append((start, end))
    last = at if state.last_inbound_at is None else max(state.last_inbound_at, at)
    return replace(state, intervals=tuple(sorted(kept)), last_inbound_at=last)


def merge_outbound(
    state: Conversation, umid: str, observation: OutboundObservation
) -> Conversation:
    """`state` with one receipt of the outbound message `umid`."""
    free_form = not is_business_initiated(
        observation.template_name, observation.template_category, observation.pricing_category
    )
    window_failure = observation.failed and failed_for_window(
        observation.error_code, observation.provider_error_code
    )
    # A message first seen starts from the identities of min, AND and OR.
    known = state.outbound.get(umid)
    base = known or Outbound(observation.at, free_form=True, window_failure=False)
    at = observation.at
    merged = Outbound(
        first_at=min(base.first_at, at),
        free_form=base.free_form and free_form,
        window_failure=base.window_failure or window_failure,
        sent_at=earliest(base.sent_at, at) if observation.sent else base.sent_at,
        sub_account_id=_first(base.sub_account_id, at, observation.sub_account_id),
        country=_first(base.country, at, observation.country),
    )
    if merged == known:
        return state  # a repetition: spare the copy
    return replace(state, outbound={**state.outbound, umid: merged})


def prune(state: Conversation, horizon: str) -> Conversation:
    """`state` without what ended before `horizon` (the job's `now - retention`): the
    intervals that end before it, except the latest (so that pruning never changes
    `service_window_value`), and the messages first known before it.

    The job refuses events older than the horizon as stale, so none can reach what was
    dropped: an interval ending before the horizon holds no time at or after it and
    cannot merge with an inbound at or after it. Every query at or after the horizon,
    the record and the contributions of the messages kept are unchanged; what is older
    counts nowhere. One limit: a receipt at or after the horizon of a message dropped
    starts it again, counted at that receipt, so retention must outlast the receipts of
    one message (WhatsApp retries delivery for 30 days).
    """
    latest = state.intervals[-1:]
    intervals = tuple(i for i in state.intervals if i[1] >= horizon or i in latest)
    outbound = {umid: o for umid, o in state.outbound.items() if o.first_at >= horizon}
    if intervals == state.intervals and len(outbound) == len(state.outbound):
        return state
    return replace(state, intervals=intervals, outbound=outbound)


# --- queries --------------------------------------------------------------------------------------
def is_open(state: Conversation, at: str) -> bool:
    """Whether the customer window is open at `at` (`start <= at < end`)."""
    return _holding(state, at) is not None


def closes_at(state: Conversation, at: str) -> str | None:
    """When the window open at `at` closes, None if it is closed at `at`."""
    interval = _holding(state, at)
    return None if interval is None else interval[1]


def opened_at(state: Conversation, at: str) -> str | None:
    """When the window open at `at` opened (its first inbound), None if closed at `at`."""
    interval = _holding(state, at)
    return None if interval is None else interval[0]


def _holding(state: Conversation, at: str) -> Interval | None:
    # The interval starting last at or before `at` is the only one that can hold it.
    index = bisect.bisect_right(state.intervals, at, key=lambda interval: interval[0]) - 1
    if index >= 0 and at < state.intervals[index][1]:
        return state.intervals[index]
    return None


def contact_times(state: Conversation) -> list[str]:
    """When the business reached the pair's customer with a business-initiated message:
    each such message's earliest sent-or-later receipt (the messaging limit's contacts)."""
    return [message.sent_at for message in state.outbound.values()
            if not message.free_form and message.sent_at is not None]  # fmt: skip


# --- the record of whatsapp.service_windows -------------------------------------------------------
def service_window_key(sub_account_id: str, customer: str) -> str:
    """`<subAccountId>|<customer>`, a `|` or `%` inside a value percent-escaped (as
    `WindowKey.encode` does: sub-account ids are free text)."""
    return encode_id(sub_account_id, customer)


def service_window_value(
    sub_account_id: str, customer: str, state: Conversation
) -> dict[str, object]:
    """The record of `whatsapp.service_windows` for a pair (camelCase); the job
    publishes it when it changes (outbound receipts never change it):

    - `subAccountId`, `customer`: the pair (the customer's msisdn, else channel user id);
    - `lastInboundAt`: the customer's latest inbound message;
    - `openedAt`: the start of the latest window (its first inbound, when several
      inbound messages 24 h apart or less made one window);
    - `closesAt`: when the latest window closes: free-form messages are delivered
      until then (exclusive), templates only from then on.
    All times canonical; the last three null before the first inbound message.
    """
    latest = state.intervals[-1] if state.intervals else (None, None)
    return {
        "subAccountId": sub_account_id,
        "customer": customer,
        "lastInboundAt": state.last_inbound_at,
        "openedAt": latest[0],
        "closesAt": latest[1],
    }


# --- funnel contributions -------------------------------------------------------------------------
def outside_window_contributions(state: Conversation) -> dict[WindowKey, Counts]:
    """What the pair's free-form messages sent outside an open window add to the funnel
    windows (each size, the window holding the message's first-known time). A pure
    function of the state: the job sends `windows.changes(before, after)`."""
    windows: dict[WindowKey, Counts] = {}
    for message in state.outbound.values():
        if not message.free_form or is_open(state, message.first_at):
            continue
        counts = {FREEFORM_OUTSIDE: 1}
        if message.window_failure:
            counts[FREEFORM_OUTSIDE_FAILED] = 1
        dims = (dimension(message.sub_account_id), dimension(message.country), UNKNOWN)
        for size in WINDOW_SECONDS:
            key = WindowKey(size, window_start(message.first_at, size), *dims)
            window = windows.setdefault(key, {})
            for name, count in counts.items():
                window[name] = window.get(name, 0) + count
    return windows


# --- from normalize's records ---------------------------------------------------------------------
def inbound_at(message: InboundMessage) -> str | None:
    """When a customer's message opened a window; None for an echo of the business's own
    message or another channel's (only WhatsApp has the window)."""
    if message.echo or message.channel not in (None, WHATSAPP):
        return None
    return message.occurred_at or message.received_at


def observe_receipt(receipt: Receipt) -> OutboundObservation | None:
    """What classification takes from a normalized receipt; None for another channel's."""
    if receipt.channel not in (None, WHATSAPP):
        return None
    return OutboundObservation(
        at=receipt.occurred_at,
        template_name=receipt.template_name,
        template_category=receipt.template_category,
        pricing_category=receipt.pricing_category,
        error_code=receipt.error_code,
        provider_error_code=receipt.provider_error_code,
        failed=receipt.state in FAILURE_STATES,
        sent=receipt.state in SENT_STATES,
        sub_account_id=receipt.sub_account_id,
        country=receipt.country,
    )


# --- storage --------------------------------------------------------------------------------------
def dump_conversation(state: Conversation) -> bytes:
    return orjson.dumps(state)


def load_conversation(data: bytes | str) -> Conversation:
    raw = orjson.loads(data)
    outbound = {}
    for umid, facts in raw["outbound"].items():
        for name in ("sub_account_id", "country"):
            if facts[name] is not None:
                facts[name] = Attribute(**facts[name])
        outbound[umid] = Outbound(**facts)
    return Conversation(
        intervals=tuple((start, end) for start, end in raw["intervals"]),
        last_inbound_at=raw["last_inbound_at"],
        outbound=outbound,
    )


@lru_cache(maxsize=4096)  # an inbound message's time is merged once per redelivery
def _window_end(at: str) -> str:
    return canonical.format_timestamp(canonical.parse_timestamp(at, "at") + SERVICE_WINDOW)


def _first(known: Attribute | None, at: str, value: str | None) -> Attribute | None:
    """The first non-null value by (time, value): Attribute's own order."""
    if value is None or (known is not None and (known.at, known.value) <= (at, value)):
        return known
    return Attribute(at, value)
