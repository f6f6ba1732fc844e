"""What the pipeline must end with after a timeline was posted: the test oracle.

Computed *independently* of the pipeline's own rules (processors/funnel/state.py,
processors/templates/rules.py): an oracle that called them would repeat their
bugs and agree with them whatever they do. It is written from the contract's
words instead (docs/interface.md, 8x8's webhook docs), and from the story's facts rather than
from the bodies, so that a body the pipeline misreads shows up as a difference:

- a message was *sent* when any receipt says sent, delivered or read; *delivered*
  when one says delivered or read (a read message was also delivered); *read*
  when one says read; *replied* when a customer's message names it in
  `replyToUmid`; *undelivered* when a failure was reported and it was never
  delivered. Its `state` is the furthest of queued < sent < delivered < read, or
  the failure when it never reached the phone.
- funnel totals per sub-account are the number of messages that made each
  transition, whatever the order and repetition of their receipts (the funnel's
  windows sum transitions: over all windows, each message counts once per
  transition). Valid while every transition lands in a window the funnel still
  takes (events no older than WAPIPE_FUNNEL_WINDOW_DAYS when posted).
- a template's RED strike is a quality event to RED from another score; strike
  `disabling_strike` disables it, as does a DISABLED status; Meta's own count
  (`otherInfo.title` on PAUSED/DISABLED) wins where it differs.
- a phone number's tier is the latest tier announced, its flag the latest
  FLAGGED/UNFLAGGED.

Events the sender gave up on (`lost`) never reached the pipeline and count for
nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from simulator.stories import (
    DELIVERED,
    QUEUED,
    READ,
    SENT,
    UNDELIVERED,
    Inbound,
    PhoneChange,
    Receipt,
    TemplateCategory,
    TemplateQuality,
    TemplateStatus,
    Timeline,
)

UNKNOWN_SUB_ACCOUNT = ""  # the funnel's key for messages whose sub-account it never learnt
_REACHES = {QUEUED: 1, SENT: 2, DELIVERED: 3, READ: 4}
_STAGES = {1: QUEUED, 2: SENT, 3: DELIVERED, 4: READ}
_META_STRIKES = {"FIRST_PAUSE": 1, "SECOND_PAUSE": 2, "DISABLED": 3}


@dataclass(frozen=True)
class MessageResult:
    umid: str
    sub_account_id: str | None
    country: str | None
    state: str | None  # queued, sent, delivered, read, undelivered; None: only replies seen
    sent: bool
    delivered: bool
    read: bool
    replied: bool
    undelivered: bool
    error_code: int | None


@dataclass(frozen=True)
class FunnelTotals:
    sent: int = 0
    delivered: int = 0
    read: int = 0
    replied: int = 0
    undelivered: int = 0


@dataclass(frozen=True)
class TemplateResult:
    template_id: str
    template_name: str
    template_language: str
    status: str | None
    quality: str | None
    category: str
    red_strikes: int
    disabled: bool


@dataclass(frozen=True)
class PhoneResult:
    display_phone_number: str
    tier: str | None
    flagged: bool


@dataclass(frozen=True)
class Expected:
    seed: int
    anchor: str
    events: int  # webhooks that reached the pipeline (posted and not lost)
    lost: tuple[str, ...]
    event_types: dict[str, int]
    messages: dict[str, MessageResult]
    funnel: dict[str, FunnelTotals]  # by subAccountId ("" when unknown)
    templates: dict[str, TemplateResult]
    phones: dict[str, PhoneResult]
    inbound: int = 0  # customers' messages (echoes excluded)
    replies: int = 0  # of which name one of our umids
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def funnel_total(self) -> FunnelTotals:
        totals = Counter[str]()
        for counts in self.funnel.values():
            totals.update(asdict(counts))
        return FunnelTotals(**totals)

    def to_json(self) -> dict[str, Any]:
        """camelCase, like the pipeline's topics, so a test compares field for field."""
        value: dict[str, Any] = _camel(asdict(self))
        return value

    def write(self, path: Path) -> None:
        path.write_bytes(orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2) + b"\n")


def expected_results(
    timeline: Timeline, *, lost: Collection[str] = (), disabling_strike: int = 3
) -> Expected:
    """The final results the pipeline must reach once `timeline` was posted, without
    the events whose keys are in `lost` (given up by the sender)."""
    lost_keys = frozenset(lost)
    events = [event for event in timeline.events if event.key not in lost_keys]
    receipts: dict[str, list[Receipt]] = {}
    replied: set[str] = set()
    inbound = replies = 0
    event_types = Counter[str]()
    for event in events:
        fact = event.fact
        event_types[_event_type(fact)] += 1
        if isinstance(fact, Receipt):
            receipts.setdefault(fact.umid, []).append(fact)
        elif isinstance(fact, Inbound) and not fact.echo:
            inbound += 1
            if fact.reply_to is not None:
                replies += 1
                replied.add(fact.reply_to)
    messages = {
        umid: _message(umid, receipts.get(umid, []), umid in replied)
        for umid in sorted(receipts.keys() | replied)
    }
    return Expected(
        seed=timeline.plan.seed,
        anchor=timeline.anchor.isoformat(),
        events=len(events),
        lost=tuple(sorted(lost_keys)),
        event_types=dict(sorted(event_types.items())),
        messages=messages,
        funnel=_funnel(messages.values()),
        templates=_templates(events, disabling_strike),
        phones=_phones(events),
        inbound=inbound,
        replies=replies,
    )


def _event_type(fact: object) -> str:
    if isinstance(fact, Receipt):
        return "outbound_message_status_changed"
    if isinstance(fact, Inbound):
        return "external_app_message" if fact.echo else "inbound_message_received"
    if isinstance(fact, TemplateQuality):
        return "template_quality_update"
    if isinstance(fact, TemplateStatus):
        return "template_status_update"
    if isinstance(fact, TemplateCategory):
        return "template_category_update"
    return "phone_number_quality_update"


def _message(umid: str, receipts: list[Receipt], replied: bool) -> MessageResult:
    furthest = max((_REACHES.get(r.state, 0) for r in receipts), default=0)
    failures = [r for r in receipts if r.state == UNDELIVERED]
    delivered = furthest >= _REACHES[DELIVERED]
    undelivered = bool(failures) and not delivered
    if undelivered:
        state: str | None = UNDELIVERED
    else:
        state = _STAGES.get(furthest)
    first = receipts[0] if receipts else None
    failure = failures[0].failure if failures else None
    return MessageResult(
        umid=umid,
        sub_account_id=first.sub_account.sub_account_id if first else None,
        country=first.customer.country if first else None,
        state=state,
        sent=furthest >= _REACHES[SENT],
        delivered=delivered,
        read=furthest >= _REACHES[READ],
        replied=replied,
        undelivered=undelivered,
        error_code=failure.code if undelivered and failure is not None else None,
    )


def _funnel(messages: Collection[MessageResult]) -> dict[str, FunnelTotals]:
    counts: dict[str, Counter[str]] = {}
    for message in messages:
        totals = counts.setdefault(message.sub_account_id or UNKNOWN_SUB_ACCOUNT, Counter())
        for stage in ("sent", "delivered", "read", "replied", "undelivered"):
            totals[stage] += int(getattr(message, stage))
    return {key: FunnelTotals(**counts[key]) for key in sorted(counts)}


def _templates(events: list[Any], disabling_strike: int) -> dict[str, TemplateResult]:
    results: dict[str, TemplateResult] = {}
    # A template's events in event time: the order the pipeline applies them in.
    template_events = sorted(
        (
            e
            for e in events
            if isinstance(e.fact, TemplateQuality | TemplateStatus | TemplateCategory)
        ),
        key=lambda e: e.at,
    )
    for event in template_events:
        fact = event.fact
        template = fact.template
        current = results.get(template.template_id) or TemplateResult(
            template.template_id,
            template.name,
            template.language,
            None,
            None,
            template.category,
            0,
            False,
        )
        if isinstance(fact, TemplateQuality):
            strikes, disabled = current.red_strikes, current.disabled
            if fact.new == "RED" and fact.previous != "RED" and not disabled:
                strikes += 1
                disabled = strikes >= disabling_strike
            current = _replace(current, quality=fact.new, red_strikes=strikes, disabled=disabled)
        elif isinstance(fact, TemplateStatus):
            strikes = current.red_strikes
            metas = _META_STRIKES.get(fact.title or "")
            if fact.status in ("PAUSED", "DISABLED") and metas is not None and not current.disabled:
                strikes = metas
            disabled = current.disabled or fact.status == "DISABLED" or strikes >= disabling_strike
            current = _replace(current, status=fact.status, red_strikes=strikes, disabled=disabled)
        else:
            current = _replace(current, category=fact.new)
        results[template.template_id] = current
    return dict(sorted(results.items()))


def _phones(events: list[Any]) -> dict[str, PhoneResult]:
    results: dict[str, PhoneResult] = {}
    for event in sorted((e for e in events if isinstance(e.fact, PhoneChange)), key=lambda e: e.at):
        fact: PhoneChange = event.fact
        number = fact.phone.display_phone_number
        current = results.get(number) or PhoneResult(number, None, False)
        flagged = {"FLAGGED": True, "UNFLAGGED": False}.get(fact.event, current.flagged)
        results[number] = PhoneResult(number, fact.tier or current.tier, flagged)
    return dict(sorted(results.items()))


def _replace(result: TemplateResult, **changes: Any) -> TemplateResult:
    return TemplateResult(**{**asdict(result), **changes})


def _camel(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel_key(key): _camel(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_camel(item) for item in value]
    return value


def _camel_key(key: Any) -> Any:
    # Only field names are snake_case; ids used as keys (umids, sub-accounts) stay.
    if not isinstance(key, str) or key not in _FIELD_NAMES:
        return key
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


_FIELD_NAMES = frozenset(
    name
    for cls in (MessageResult, FunnelTotals, TemplateResult, PhoneResult, Expected)
    for name in cls.__dataclass_fields__
)
