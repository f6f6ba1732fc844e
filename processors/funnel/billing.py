"""Billable messages: what a delivered message adds to the billing windows, and the
record of `whatsapp.billing`.

Meta charges a message when it is delivered, at the rate of its pricing category
(marketing, utility, authentication, service...) and the customer's country. So a
message counts once, in the 1-hour and the 1-day window holding its `deliveredAt`,
under its sub-account, country and pricing category, all taken from its merged state
(`state.merge`). Like the funnel's windows, that is a pure function of the state: a
window's total is the sum over messages, whatever order and repetition the receipts
came in, and a change of a state changes its windows by `after - before`
(`windows.changes`). A message delivered before its pricing category was known
moves from the unknown category to its own when the receipt that carries it comes.

The estimated cost is computed when a record is written, from the rate card the
worker started with (`rate_card`); it is an estimate, never an invoice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from processors.funnel.rate_card import RateCard
from processors.funnel.state import MessageState
from processors.funnel.windows import (
    Counts,
    add_counts,
    decode_id,
    dimension,
    encode_id,
    window_end,
    window_start,
)

BILLING_SIZES = ("1h", "1d")
DELIVERED = "delivered"


class BillingKey(NamedTuple):
    """One billing window: its size and start, the sub-account, the customer's country and
    the pricing category (each `UNKNOWN` when not known)."""

    size: str  # "1h" or "1d"
    start: str  # canonical ISO time
    sub_account_id: str
    country: str
    pricing_category: str

    def encode(self) -> str:
        """The window's id, e.g. `1d|2026-11-25T00:00:00.000Z|acme|ID|marketing`."""
        return encode_id(*self)

    @classmethod
    def decode(cls, text: str) -> BillingKey:
        return cls(*decode_id(text))


def billing_contributions(state: MessageState) -> dict[BillingKey, Counts]:
    """What `state` adds to the billing windows: one delivered message in each size's
    window of its `deliveredAt`, nothing while it is not delivered."""
    delivered_at = state.delivered_at
    if delivered_at is None:
        return {}
    sub_account, country = dimension(state.sub_account_id), dimension(state.country)
    dims = (sub_account, country, dimension(state.pricing_category))
    return {BillingKey(size, window_start(delivered_at, size), *dims): {DELIVERED: 1}
            for size in BILLING_SIZES}  # fmt: skip


def billed_as(state: MessageState) -> tuple[object, ...]:
    """What `billing_contributions` depends on: when it is equal for two states, so are
    their contributions."""
    return (state.delivered_at, state.sub_account_id, state.country, state.pricing_category)


def sum_deltas(
    stored: Mapping[str, Counts], deltas: Iterable[tuple[str, Mapping[str, int]]]
) -> dict[str, Counts]:
    """Each billing window the deltas changed (window id -> its new total): its stored
    total plus its deltas. Each delta is written once (in its batch's transaction), so
    the sum is exact. A window whose deltas cancel out (one message moving in as another
    moves out) is left out: its record would repeat the last one."""
    totals: dict[str, Counts] = {}
    for window_id, delta in deltas:
        totals[window_id] = add_counts(totals.get(window_id, stored.get(window_id, {})), delta)
    return {window_id: total for window_id, total in totals.items()
            if total != stored.get(window_id, {})}  # fmt: skip


def billing_record(
    key: BillingKey, counts: Mapping[str, int], rate_card: RateCard | None
) -> dict[str, object]:
    """The record of `whatsapp.billing` for one window (camelCase, absolute values)."""
    delivered = counts.get(DELIVERED, 0)
    rate = None
    if rate_card is not None and key.country and key.pricing_category:
        rate = rate_card.rate(key.country, key.pricing_category)
    return {
        "windowId": key.encode(),
        "window": key.size,
        "windowStart": key.start,
        "windowEnd": window_end(key.start, key.size),
        "subAccountId": key.sub_account_id or None,
        "country": key.country or None,
        "pricingCategory": key.pricing_category or None,
        "delivered": delivered,
        "pricePerMessage": str(rate.price) if rate else None,
        "currency": rate.currency if rate else None,
        "estimatedCost": str(rate.price * delivered) if rate else None,
    }
