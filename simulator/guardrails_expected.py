"""What the guard-rail jobs (conversations, limits, the funnel's billing) must end with
after a timeline was posted: the guard-rails story's oracle. Pure.

Like expected.py, computed from the story's facts and the contract's words, never with
the jobs' own rules (processors/conversations, processors/limits, funnel/billing.py):

- a message is *business-initiated* when it has a template or a pricing category other
  than `service`; else it is *free-form*. A customer is *reached* by the number its
  sub-account sends from at each business-initiated message's first sent-or-later
  receipt, and counts for 24 h from then; the number's limit is its tier's (TIER_1K:
  1,000), and it crosses a threshold (80% of the limit, rounded up, and the limit) at
  the time the count first reaches it. Whilst every contact lies within 24 h of the
  others (the story spans 12 h at most) and the count is evaluated within a day of the
  first, the count is the distinct customers, and the crossing of N the N-th earliest
  first contact;
- a sub-account's number is the `recipient.channelId` of its latest inbound message
  when that is digits (no WAPIPE_SENDER_NUMBERS assumed);
- a customer's inbound message at `a` opens `[a, a + 24 h)`; overlapping or touching
  windows make one. Its `whatsapp.service_windows` record: the latest inbound, and the
  start and end of the latest window;
- a free-form message whose first receipt (any state) is in no open window of its
  (sub-account, customer) counts once in `freeformOutsideWindow` of the funnel's 1 h
  window of that time (dimensions: sub-account, country, no template category), and in
  `freeformOutsideWindowFailed` too when a failure names the window (errorCode 1022 or
  providerErrorCode 131047);
- a delivered message counts once in the billing 1 d window of its first delivered (or
  read) receipt, under its sub-account, country and pricing category.

Events the sender gave up on (`lost`) count for nothing.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from simulator.stories import (
    DELIVERED,
    READ,
    SENT,
    UNDELIVERED,
    Inbound,
    PhoneChange,
    Receipt,
    Timeline,
)

DAY = timedelta(hours=24)
NEAR_SHARE = 0.8  # WAPIPE_MESSAGING_LIMIT_NEAR_SHARE's default
NEAR, REACHED = "MESSAGING_LIMIT_NEAR", "MESSAGING_LIMIT_REACHED"
WINDOW_EXPIRED_CODES, WINDOW_EXPIRED_PROVIDER_CODES = frozenset({1022}), frozenset({"131047"})
_SENT_OR_LATER = frozenset({SENT, DELIVERED, READ})
_TIER = re.compile(r"TIER_([0-9]+)(K?)")


@dataclass(frozen=True)
class LimitResult:
    """The last `whatsapp.messaging_limits` record of a subject (but its time)."""

    subject: str
    subject_kind: str  # number, or sub_account when its number is unknown
    tier: str | None
    limit: int | None
    reached: int
    headroom: int | None
    oldest_leaves_at: str | None


@dataclass(frozen=True)
class GuardrailsExpected:
    limits: dict[str, LimitResult]  # by subject
    alerts: frozenset[str]  # the standing MESSAGING_LIMIT_* alert ids
    service_windows: dict[str, dict[str, str | None]]  # `<sub-account>|<customer>` -> record
    freeform_outside: dict[str, tuple[int, int]]  # 1 h window id -> (outside, failed)
    billing: dict[str, int]  # 1 d billing window id -> delivered

    def to_json(self) -> dict[str, Any]:
        return {
            "limits": {key: asdict(value) for key, value in self.limits.items()},
            "alerts": sorted(self.alerts),
            "serviceWindows": self.service_windows,
            "freeformOutsideWindow": {
                key: {"outside": outside, "failed": failed}
                for key, (outside, failed) in self.freeform_outside.items()
            },
            "billing": self.billing,
        }


def expected_guardrails(
    timeline: Timeline, *, lost: Collection[str] = (), near_share: float = NEAR_SHARE
) -> GuardrailsExpected:
    """The final guard-rail outputs of `timeline` without the events whose keys are in
    `lost`."""
    lost_keys = frozenset(lost)
    events = [event for event in timeline.events if event.key not in lost_keys]
    anchor = timeline.anchor

    def time(at: float) -> datetime:
        return anchor + timedelta(seconds=at)

    receipts: dict[str, list[tuple[datetime, Receipt]]] = {}
    inbound: dict[tuple[str, str], list[datetime]] = {}
    channels: dict[str, tuple[datetime, str]] = {}  # sub-account -> its latest channel
    tiers: dict[str, tuple[datetime, str]] = {}  # number -> its latest tier
    for event in events:
        fact, moment = event.fact, time(event.at)
        if isinstance(fact, Receipt):
            receipts.setdefault(fact.umid, []).append((moment, fact))
        elif isinstance(fact, Inbound) and not fact.echo:
            sub_account = fact.sub_account.sub_account_id
            inbound.setdefault((sub_account, fact.customer.msisdn), []).append(moment)
            latest = (moment, fact.sub_account.channel_id)
            channels[sub_account] = max(channels.get(sub_account, latest), latest)
        elif isinstance(fact, PhoneChange) and fact.tier is not None:
            number = fact.phone.display_phone_number
            tiers[number] = max(tiers.get(number, (moment, fact.tier)), (moment, fact.tier))
    windows = {pair: _merged(times) for pair, times in inbound.items()}
    limits, alerts = _limits(receipts, channels, tiers, near_share)
    return GuardrailsExpected(
        limits=limits,
        alerts=frozenset(alerts),
        service_windows={
            f"{sub_account}|{customer}": {
                "subAccountId": sub_account,
                "customer": customer,
                "lastInboundAt": canonical(max(inbound[(sub_account, customer)])),
                "openedAt": canonical(intervals[-1][0]),
                "closesAt": canonical(intervals[-1][1]),
            }
            for (sub_account, customer), intervals in sorted(windows.items())
        },
        freeform_outside=_freeform_outside(receipts, windows),
        billing=_billing(receipts),
    )


def canonical(moment: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.mmmZ`, the pipeline's canonical time."""
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def business_initiated(receipt: Receipt) -> bool:
    return receipt.template is not None or receipt.category.lower() != "service"


def tier_limit(tier: str | None) -> int | None:
    """TIER_<n> allows n customers a day, TIER_<n>K n thousand; others no known limit."""
    match = _TIER.fullmatch(tier) if tier is not None else None
    if match is None:
        return None
    return int(match[1]) * (1_000 if match[2] else 1) or None


def _merged(times: list[datetime]) -> list[tuple[datetime, datetime]]:
    intervals: list[tuple[datetime, datetime]] = []
    for start in sorted(set(times)):
        if intervals and start <= intervals[-1][1]:  # overlapping or touching
            intervals[-1] = (intervals[-1][0], start + DAY)
        else:
            intervals.append((start, start + DAY))
    return intervals


def _limits(
    receipts: dict[str, list[tuple[datetime, Receipt]]],
    channels: dict[str, tuple[datetime, str]],
    tiers: dict[str, tuple[datetime, str]],
    near_share: float,
) -> tuple[dict[str, LimitResult], list[str]]:
    # subject -> customer -> its contact times (first sent-or-later of each message)
    contacts: dict[tuple[str, str], dict[str, list[datetime]]] = {}
    for facts in receipts.values():
        moments = [moment for moment, fact in facts if fact.state in _SENT_OR_LATER]
        fact = facts[0][1]
        if not moments or not business_initiated(fact):
            continue
        sub_account = fact.sub_account.sub_account_id
        channel = channels.get(sub_account, (None, ""))[1]
        key = (channel, "number") if channel.isdigit() else (sub_account, "sub_account")
        contacts.setdefault(key, {}).setdefault(fact.customer.msisdn, []).append(min(moments))
    limits: dict[str, LimitResult] = {}
    alerts: list[str] = []
    for (subject, kind), customers in sorted(contacts.items()):
        tier = tiers[subject][1] if kind == "number" and subject in tiers else None
        limit = tier_limit(tier)
        reached = len(customers)
        leaves = min(max(times) + DAY for times in customers.values())
        limits[subject] = LimitResult(
            subject, kind, tier, limit, reached,
            None if limit is None else limit - reached, canonical(leaves),
        )  # fmt: skip
        if limit is None:
            continue
        firsts = sorted(min(times) for times in customers.values())
        near = max(1, math.ceil(round(near_share * limit, 9)))
        for alert, threshold in ((NEAR, near), (REACHED, limit)):
            if reached >= threshold:
                alerts.append(f"{alert}|{subject}|{limit}@{canonical(firsts[threshold - 1])}")
    return limits, alerts


def _freeform_outside(
    receipts: dict[str, list[tuple[datetime, Receipt]]],
    windows: dict[tuple[str, str], list[tuple[datetime, datetime]]],
) -> dict[str, tuple[int, int]]:
    counts: dict[str, Counter[str]] = {}
    for facts in receipts.values():
        if any(business_initiated(fact) for _, fact in facts):
            continue
        first_at = min(moment for moment, _ in facts)
        fact = facts[0][1]
        sub_account, customer = fact.sub_account.sub_account_id, fact.customer
        intervals = windows.get((sub_account, customer.msisdn), [])
        if any(start <= first_at < end for start, end in intervals):
            continue
        hour = first_at.replace(minute=0, second=0, microsecond=0)
        window = counts.setdefault(f"1h|{canonical(hour)}|{sub_account}|{customer.country}|",
                                   Counter())  # fmt: skip
        window["outside"] += 1
        window["failed"] += any(
            f.state == UNDELIVERED
            and f.failure is not None
            and (
                f.failure.code in WINDOW_EXPIRED_CODES
                or f.failure.provider_code in WINDOW_EXPIRED_PROVIDER_CODES
            )
            for _, f in facts
        )
    return {key: (c["outside"], c["failed"]) for key, c in sorted(counts.items())}


def _billing(receipts: dict[str, list[tuple[datetime, Receipt]]]) -> dict[str, int]:
    counts = Counter[str]()
    for facts in receipts.values():
        delivered = [moment for moment, fact in facts if fact.state in (DELIVERED, READ)]
        if not delivered:
            continue
        fact = facts[0][1]
        day = min(delivered).replace(hour=0, minute=0, second=0, microsecond=0)
        counts[
            f"1d|{canonical(day)}|{fact.sub_account.sub_account_id}|{fact.customer.country}|"
            f"{fact.category.lower()}"
        ] += 1
    return dict(sorted(counts.items()))
