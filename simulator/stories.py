"""The story of a simulation: every event, when it happened and when 8x8 posts it.

A pure function of a `Plan` and an anchor time: the same seed gives the same
timeline. Each kind of event follows a small story with realistic timing:

- an outbound message: sometimes `queued`, then `sent`, `delivered` (seconds
  later; now and then hours later, a phone that was off), `read` (minutes later,
  hours later, or never), and sometimes a reply; or a failure (`undelivered`)
  with a real-looking error code, at once or after `sent`. Some read messages
  arrive with no `delivered` before them (Meta sends `read` alone when delivery
  and reading happen together), and some receipts are posted out of order;
- customers' inbound messages: text, media, locations, button and list replies,
  some replying to one of our messages (`replyToUmid`, what the funnel counts
  as a reply), some to a message already replied to;
- templates: approval, quality drifting GREEN -> YELLOW and back, and one
  MARKETING template walking into RED three times (strike 1: paused 3 h,
  strike 2: paused 6 h, strike 3: disabled), its quality recovering in between;
  a category change; messages that still use a paused template fail;
- business numbers: onboarding, tier upgrades and a downgrade, a quality flag
  raised and cleared.

Times are story seconds after the anchor (`Event.at`); `Event.post_at` is when
8x8 posts the webhook, a moment after the event, and never after the story's
end: events that would be posted later are not part of this run (a read that
comes after the run is a message never read, as far as the run can tell).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from simulator.plan import Plan, seeded
from simulator.population import (
    BusinessPhone,
    Customer,
    Population,
    SubAccount,
    Template,
    make_population,
    random_uuid,
)

MINUTE, HOUR = 60.0, 3600.0

QUEUED, SENT, DELIVERED, READ, UNDELIVERED = "queued", "sent", "delivered", "read", "undelivered"


# --- the facts a webhook reports ------------------------------------------------------------
@dataclass(frozen=True)
class Failure:
    """Why a message was not delivered: 8x8's error (an integer: 1-61 general, 1000-1054
    WhatsApp) and Meta's own code (`whatsapp.providerErrorCode`, a string)."""

    code: int
    message: str
    provider_code: str | None
    detail: str  # rejected_by_operator (refused at once) or undelivered_to_recipient


# 15 and 1022 are 8x8's documented examples (8x8's webhook documentation); the others are codes in
# 8x8's WhatsApp range paired with Meta's published error codes of the same meaning.
# Weights: how often each occurs among failures.
FAILURES: tuple[tuple[int, Failure, bool], ...] = (
    # (weight, failure, comes after `sent`)
    (
        30,
        Failure(1022, "24-hour customer care window has expired", "131047", "rejected_by_operator"),
        False,
    ),
    (20, Failure(15, "Invalid destination", "131026", "rejected_by_operator"), False),
    (
        20,
        Failure(
            1049,
            "Not delivered to maintain healthy ecosystem engagement",
            "131049",
            "undelivered_to_recipient",
        ),
        True,
    ),
    (
        15,
        Failure(1050, "Recipient stopped marketing messages", "131050", "undelivered_to_recipient"),
        True,
    ),
    (10, Failure(1026, "Message undeliverable", "131026", "undelivered_to_recipient"), True),
    (5, Failure(1009, "Parameter value is not valid", "131009", "rejected_by_operator"), False),
)
TEMPLATE_PAUSED = Failure(1015, "Template is paused", "132015", "rejected_by_operator")
TEMPLATE_DISABLED = Failure(1016, "Template is disabled", "132016", "rejected_by_operator")


@dataclass(frozen=True)
class Receipt:
    """`outbound_message_status_changed`: a delivery receipt of one of our messages."""

    umid: str
    sub_account: SubAccount
    customer: Customer
    state: str  # queued, sent, delivered, read, undelivered
    template: Template | None  # None: a free-form message (no template)
    category: str  # the template's category when sent; SERVICE for a free-form answer
    failure: Failure | None = None
    batch_id: str | None = None
    # Its body carries every optional field the jobs read (`whatsapp.pricingCategory`:
    # a v8 or v9 body), as the guard-rails story needs; else some bodies lack them.
    complete: bool = False


@dataclass(frozen=True)
class Inbound:
    """`inbound_message_received` (or, `echo`, an `external_app_message`)."""

    umid: str
    sub_account: SubAccount
    customer: Customer
    kind: str  # text, image, video, audio, document, location, button_reply, list_reply
    reply_to: str | None = None  # the umid of our message it answers
    echo: bool = False
    complete: bool = False  # its body always carries `timestamp` and `recipient`


@dataclass(frozen=True)
class TemplateQuality:
    template: Template
    previous: str
    new: str


@dataclass(frozen=True)
class TemplateStatus:
    template: Template
    status: str
    title: str | None = None  # meta.otherInfo.title: Meta's own strike count
    reason: str | None = None


@dataclass(frozen=True)
class TemplateCategory:
    template: Template
    previous: str
    new: str


@dataclass(frozen=True)
class PhoneChange:
    phone: BusinessPhone
    event: str  # ONBOARDING, UPGRADE, DOWNGRADE, FLAGGED, UNFLAGGED
    tier: str | None = None
    old_tier: str | None = None
    reason: str | None = None


Fact: TypeAlias = (
    Receipt | Inbound | TemplateQuality | TemplateStatus | TemplateCategory | PhoneChange
)


@dataclass(frozen=True)
class Event:
    """One webhook of the story."""

    at: float  # event time: story seconds after the anchor
    post_at: float  # when 8x8 posts it: story seconds after the start (>= at)
    fact: Fact
    key: str  # unique in the timeline: "<umid>|<state>", an inbound umid, an eventId
    variant: int  # seeds the body's style (version, letter case, fractional digits...)
    group: str | None = None  # events of a group are posted one after another, in order


@dataclass(frozen=True)
class Timeline:
    plan: Plan
    population: Population
    anchor: datetime  # the event time of story second 0
    events: tuple[Event, ...]  # in posting order (post_at, then generation order)

    def __len__(self) -> int:
        return len(self.events)


# --- the timeline -----------------------------------------------------------------------------
def make_timeline(plan: Plan, anchor: datetime) -> Timeline:
    """The whole story of `plan`, its event times counted from `anchor`."""
    if plan.story == "guardrails":
        from simulator.guardrails import guardrails_timeline  # it builds on this module

        return guardrails_timeline(plan, anchor)
    # One RNG per concern, each seeded from the plan's seed: changing how many
    # templates there are does not reshuffle every message.
    population = make_population(
        seeded(plan.seed, "population"),
        sub_accounts=plan.sub_accounts,
        customers=plan.customers,
        templates=plan.templates,
    )
    builder = _Builder(plan.span)
    availability = _templates(seeded(plan.seed, "templates"), population, plan, builder)
    _phones(seeded(plan.seed, "phones"), population, plan.span, builder)
    _messages(seeded(plan.seed, "messages"), population, plan, availability, builder)
    _inbound(seeded(plan.seed, "inbound"), population, plan, builder)
    return Timeline(plan, population, anchor, builder.timeline())


class _Builder:
    """Collects events; drops those posted after the story's end."""

    def __init__(self, span: float) -> None:
        self.span = span
        self._events: list[tuple[float, int, Event]] = []

    def add(self, event: Event) -> None:
        if event.post_at <= self.span:
            self._events.append((event.post_at, len(self._events), event))

    def timeline(self) -> tuple[Event, ...]:
        return tuple(event for _, _, event in sorted(self._events, key=lambda e: e[:2]))


def _post_lag(rng: random.Random) -> float:
    """8x8's delay between an event and its webhook (story seconds)."""
    return rng.uniform(0.05, 1.5)


# --- outbound messages ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Availability:
    """When each template cannot be used (paused intervals, the disabling time), and
    when Meta changed its category."""

    paused: dict[str, tuple[tuple[float, float], ...]]
    disabled_from: dict[str, float]
    recategorized: dict[str, tuple[float, str]]  # templateId -> (when, new category)

    def category(self, template: Template, at: float) -> str:
        when, new = self.recategorized.get(template.template_id, (float("inf"), ""))
        return new if at >= when else template.category

    def problem(self, template: Template, at: float) -> Failure | None:
        if at >= self.disabled_from.get(template.template_id, float("inf")):
            return TEMPLATE_DISABLED
        for start, end in self.paused.get(template.template_id, ()):
            if start <= at < end:
                return TEMPLATE_PAUSED
        return None


@dataclass(frozen=True)
class _Outcome:
    """What happens to one message, drawn before its receipts are timed."""

    failure: Failure | None
    failure_after_sent: bool
    read: bool
    skip_delivered: bool  # `read` with no `delivered` before it
    replies: int


def _messages(
    rng: random.Random,
    population: Population,
    plan: Plan,
    availability: _Availability,
    builder: _Builder,
) -> None:
    span = plan.span
    # Some sub-accounts send much more than others (marketing campaigns vs OTPs).
    weights = [1.0 / (index + 1) for index in range(len(population.sub_accounts))]
    for _ in range(plan.message_count):
        sent_at = rng.uniform(0, span)
        sub_account = rng.choices(population.sub_accounts, weights=weights)[0]
        customer = rng.choice(population.customers)
        template = rng.choice(population.templates)
        problem = availability.problem(template, sent_at)
        if problem is not None and rng.random() < 0.7:
            # Most senders know the template is paused and pick another one.
            usable = [t for t in population.templates if availability.problem(t, sent_at) is None]
            if usable:
                template, problem = rng.choice(usable), None
        category = availability.category(template, sent_at)
        _message(rng, sent_at, sub_account, customer, template, category, problem, builder)


def _message(
    rng: random.Random,
    start: float,
    sub_account: SubAccount,
    customer: Customer,
    template: Template,
    category: str,
    problem: Failure | None,
    builder: _Builder,
) -> None:
    umid = random_uuid(rng)
    batch_id = random_uuid(rng) if rng.random() < 0.3 else None
    outcome = _outcome(rng, problem)
    times: list[tuple[float, str]] = []  # (event time, state)
    at = start
    if rng.random() < 0.3:
        times.append((at, QUEUED))
        at += rng.uniform(0.1, 1.0)
    failure = outcome.failure
    if failure is not None and not outcome.failure_after_sent:
        times.append((at + rng.uniform(0.2, 2.0), UNDELIVERED))
    else:
        at += rng.uniform(0.2, 2.0)
        times.append((at, SENT))
        if failure is not None:
            times.append((at + _failure_delay(rng), UNDELIVERED))
        else:
            at += _delivery_delay(rng)
            delivered_at = at
            if not outcome.skip_delivered:
                times.append((at, DELIVERED))
            if outcome.read:
                at += 0.0 if outcome.skip_delivered else _read_delay(rng)
                times.append((at, READ))
            reply_at = at if outcome.read else delivered_at + _read_delay(rng)
            for _ in range(outcome.replies):
                reply_at += rng.lognormvariate(3.0, 0.9)  # median ~20 s of typing
                inbound = Inbound(
                    random_uuid(rng), sub_account, customer, _reply_kind(rng), reply_to=umid
                )
                builder.add(
                    Event(
                        reply_at,
                        reply_at + _post_lag(rng),
                        inbound,
                        inbound.umid,
                        rng.getrandbits(32),
                    )
                )
    posts = [at_ + _post_lag(rng) for at_, _ in times]
    if len(posts) > 1 and rng.random() < 0.08:
        # Out of order: 8x8 posts one receipt after the next one (e.g. read before
        # delivered), as happens when its workers race.
        index = rng.randrange(len(posts) - 1)
        posts[index], posts[index + 1] = posts[index + 1] + 0.01, posts[index]
    for (event_at, state), post_at in zip(times, posts, strict=True):
        receipt = Receipt(
            umid,
            sub_account,
            customer,
            state,
            template,
            category,
            failure if state == UNDELIVERED else None,
            batch_id,
        )
        builder.add(
            Event(event_at, max(post_at, event_at), receipt, f"{umid}|{state}", rng.getrandbits(32))
        )


def _outcome(rng: random.Random, problem: Failure | None) -> _Outcome:
    if problem is not None:
        return _Outcome(problem, False, False, False, 0)
    if rng.random() < 0.07:
        weights = [weight for weight, _, _ in FAILURES]
        _, failure, after_sent = rng.choices(FAILURES, weights=weights)[0]
        return _Outcome(failure, after_sent, False, False, 0)
    read = rng.random() < 0.6  # the rest never read (or have read receipts off)
    skip_delivered = read and rng.random() < 0.04
    if read:
        replies = 0 if rng.random() >= 0.2 else (2 if rng.random() < 0.1 else 1)
    else:  # read receipts switched off: a reply without a read
        replies = 1 if rng.random() < 0.04 else 0
    return _Outcome(None, False, read, skip_delivered, replies)


def _delivery_delay(rng: random.Random) -> float:
    if rng.random() < 0.05:  # the phone was off: delivered when it comes back
        return rng.uniform(10 * MINUTE, 12 * HOUR)
    return rng.lognormvariate(0.7, 0.8)  # median ~2 s


def _read_delay(rng: random.Random) -> float:
    if rng.random() < 0.25:  # read hours later
        return rng.uniform(1 * HOUR, 20 * HOUR)
    return rng.lognormvariate(3.4, 1.3)  # median ~30 s, most within a quarter of an hour


def _failure_delay(rng: random.Random) -> float:
    if rng.random() < 0.2:  # Meta gives up after trying for a while
        return rng.uniform(1 * HOUR, 24 * HOUR)
    return rng.lognormvariate(1.0, 1.0)


def _reply_kind(rng: random.Random) -> str:
    return rng.choices(
        ("text", "button_reply", "list_reply", "image", "document"), weights=(45, 30, 15, 7, 3)
    )[0]


# --- inbound messages that answer nothing, and echoes --------------------------------------
def _inbound(rng: random.Random, population: Population, plan: Plan, builder: _Builder) -> None:
    span = plan.span
    kinds = ("text", "image", "video", "audio", "document", "location", "button_reply")
    weights = (60, 12, 4, 6, 6, 6, 6)
    for _ in range(round(plan.message_count * 0.12)):
        at = rng.uniform(0, span)
        inbound = Inbound(
            random_uuid(rng),
            rng.choice(population.sub_accounts),
            rng.choice(population.customers),
            rng.choices(kinds, weights)[0],
        )
        builder.add(Event(at, at + _post_lag(rng), inbound, inbound.umid, rng.getrandbits(32)))
    for _ in range(round(plan.message_count * 0.01)):
        at = rng.uniform(0, span)
        echo = Inbound(
            random_uuid(rng),
            rng.choice(population.sub_accounts),
            rng.choice(population.customers),
            "text",
            echo=True,
        )
        builder.add(Event(at, at + _post_lag(rng), echo, echo.umid, rng.getrandbits(32)))


# --- templates ----------------------------------------------------------------------------------
# Account events carry whole seconds (`...T18:20:05.00Z`): a template's or a
# number's events are 2 s apart at least, so that no two share a timestamp.
_MIN_GAP = 2.0


class _Walk:
    """One template's events, in order, with distinct increasing times: the pipeline
    applies a template's events in event time and ignores an older one as stale,
    so they are posted one after another (`Event.group`)."""

    def __init__(self, rng: random.Random, template: Template, builder: _Builder) -> None:
        self.rng, self.template, self.builder = rng, template, builder
        self.quality = "UNKNOWN"
        self.at = 0.0

    def wait(self, seconds: float) -> None:
        self.at += max(seconds, _MIN_GAP)

    def quality_to(self, new: str) -> None:
        self._add(TemplateQuality(self.template, self.quality, new))
        self.quality = new

    def status(self, status: str, title: str | None = None, reason: str | None = None) -> None:
        self._add(TemplateStatus(self.template, status, title, reason))

    def category(self, previous: str, new: str) -> None:
        self._add(TemplateCategory(self.template, previous, new))

    def _add(self, fact: Fact) -> None:
        event_id = random_uuid(self.rng)
        self.builder.add(
            Event(
                self.at,
                self.at + _post_lag(self.rng),
                fact,
                event_id,
                self.rng.getrandbits(32),
                f"template:{self.template.template_id}",
            )
        )


# The ideal strike walk (story seconds between steps); compressed to fit short runs.
_STRIKE_STEPS: tuple[tuple[float, str, str], ...] = (
    # (pause before, what, value)
    (0.0, "quality", "YELLOW"),
    (20 * MINUTE, "quality", "RED"),  # strike 1
    (5.0, "status", "PAUSED:FIRST_PAUSE"),
    (3 * HOUR, "status", "APPROVED:UNPAUSE"),
    (10 * MINUTE, "quality", "YELLOW"),
    (40 * MINUTE, "quality", "GREEN"),
    (1 * HOUR, "quality", "RED"),  # strike 2
    (5.0, "status", "PAUSED:SECOND_PAUSE"),
    (6 * HOUR, "status", "APPROVED:UNPAUSE"),
    (10 * MINUTE, "quality", "YELLOW"),
    (40 * MINUTE, "quality", "GREEN"),
    (1 * HOUR, "quality", "YELLOW"),
    (20 * MINUTE, "quality", "RED"),  # strike 3
    (5.0, "status", "DISABLED:DISABLED"),
)
_ONE_STRIKE_STEPS = _STRIKE_STEPS[:6]


def _templates(
    rng: random.Random, population: Population, plan: Plan, builder: _Builder
) -> _Availability:
    span = plan.span
    paused: dict[str, list[tuple[float, float]]] = {}
    disabled_from: dict[str, float] = {}
    recategorized: dict[str, tuple[float, str]] = {}
    for index, template in enumerate(population.templates):
        walk = _Walk(rng, template, builder)
        walk.at = rng.uniform(0, min(60.0, 0.01 * span))
        walk.status("APPROVED", reason="NONE")
        walk.wait(rng.uniform(2, max(2.0, min(30.0, 0.01 * span))))
        walk.quality_to("GREEN")
        if index == 0 and plan.strike_template:
            steps = _STRIKE_STEPS
        elif index > 0 and rng.random() < 0.2:
            steps = _ONE_STRIKE_STEPS
        else:
            steps = ()
        if steps:
            start = max(walk.at, rng.uniform(0.05, 0.15) * span)
            _run_steps(walk, steps, start, 0.8 * span - start, paused, disabled_from)
        else:
            _drift(rng, walk, span)
        if not recategorized and template.category == "UTILITY" and index > 0:
            walk.wait(max(walk.at, rng.uniform(0.3, 0.9) * span) - walk.at)
            walk.category("UTILITY", "MARKETING")  # Meta re-classifies: every message costs more
            recategorized[template.template_id] = (walk.at, "MARKETING")
    return _Availability(
        {template_id: tuple(intervals) for template_id, intervals in paused.items()},
        disabled_from,
        recategorized,
    )


def _run_steps(
    walk: _Walk,
    steps: tuple[tuple[float, str, str], ...],
    start: float,
    room: float,
    paused: dict[str, list[tuple[float, float]]],
    disabled_from: dict[str, float],
) -> None:
    # Compress the walk into the room the run has (a 60 s test cannot wait 3 h for
    # a pause to end): each step keeps the shortest gap and a share of the rest in
    # proportion to its real pause. Strikes count the same, whatever pauses last.
    walk.wait(start - walk.at)
    gaps = [max(pause, _MIN_GAP) for pause, _, _ in steps]
    if sum(gaps) > room:
        total = sum(pause for pause, _, _ in steps)
        spare = max(0.0, room - _MIN_GAP * len(steps))
        gaps = [_MIN_GAP + spare * pause / total for pause, _, _ in steps]
    template_id = walk.template.template_id
    for gap, (_, what, value) in zip(gaps, steps, strict=True):
        walk.wait(gap)
        if what == "quality":
            walk.quality_to(value)
            continue
        status, _, title = value.partition(":")
        walk.status(status, title or None, "NONE" if status == "APPROVED" else None)
        if status == "PAUSED":
            paused.setdefault(template_id, []).append((walk.at, float("inf")))
        elif status == "APPROVED" and paused.get(template_id):
            begun, _ = paused[template_id][-1]
            paused[template_id][-1] = (begun, walk.at)
        elif status == "DISABLED":
            disabled_from[template_id] = walk.at


def _drift(rng: random.Random, walk: _Walk, span: float) -> None:
    """Quality that wobbles and recovers: GREEN -> YELLOW -> GREEN, now and then."""
    if rng.random() < 0.5:
        walk.wait(rng.uniform(0.1, 0.5) * span)
        walk.quality_to("YELLOW")
        if rng.random() < 0.7:
            walk.wait(rng.uniform(0.1, 0.4) * span)
            walk.quality_to("GREEN")


# --- business phone numbers ---------------------------------------------------------------------
def _phones(rng: random.Random, population: Population, span: float, builder: _Builder) -> None:
    for index, phone in enumerate(population.phones):
        at = rng.uniform(0, min(60.0, 0.01 * span))
        changes = [(at, PhoneChange(phone, "ONBOARDING", tier=phone.tier))]
        if index % 3 == 0:  # grows, gets flagged, recovers
            changes += [
                (0.2 * span, PhoneChange(phone, "UPGRADE", "TIER_10K", phone.tier)),
                (0.45 * span, PhoneChange(phone, "FLAGGED", reason="QUALITY_DECREASE")),
                (0.75 * span, PhoneChange(phone, "UNFLAGGED", reason="QUALITY_INCREASE")),
            ]
        elif index % 3 == 1:  # grows, then is limited again
            changes += [
                (0.3 * span, PhoneChange(phone, "UPGRADE", "TIER_10K", phone.tier)),
                (0.6 * span, PhoneChange(phone, "DOWNGRADE", "TIER_2K", "TIER_10K")),
            ]
        elif rng.random() < 0.5:
            changes.append((0.5 * span, PhoneChange(phone, "UPGRADE", "TIER_10K", phone.tier)))
        previous = -_MIN_GAP
        for at, change in changes:
            at = max(at, previous + _MIN_GAP)
            previous = at
            builder.add(
                Event(
                    at,
                    at + _post_lag(rng),
                    change,
                    random_uuid(rng),
                    rng.getrandbits(32),
                    f"phone:{phone.display_phone_number}",
                )
            )
