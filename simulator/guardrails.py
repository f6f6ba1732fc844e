"""The guard-rails story: a business number walked to its messaging limit, customers'
service windows and free-form messages outside them, and billable deliveries. Pure.

`wapipe simulate --story guardrails` (a `Plan` with `story="guardrails"`). It uses the
plan's seed and span only (60 s to 12 h of story time; a few hours make it realistic),
and every event lies in that span, which ends about now:

- one sub-account (`SUB_ACCOUNT`) sends from the number `NUMBER`, whose phone-number
  event (ONBOARDING) sets TIER_1K: at most 1,000 distinct customers a rolling 24 h. Its
  customers write to a channel id equal to the number, so the limits job learns the
  number from the inbound messages alone (no WAPIPE_SENDER_NUMBERS);
- 1,000 distinct customers (+49 DE and +62 ID mobiles) each get a MARKETING template
  (sent, then delivered), one after another over most of the span: the number walks
  through 80% and 100% of its limit. Some get a second marketing message later, and
  some a UTILITY or an AUTHENTICATION one after their first: the distinct count stays
  1,000, and billing sees three pricing categories in two countries;
- `SERVICE_CUSTOMERS` other customers write (some twice) and get a free-form answer
  (pricing category `service`, no template) minutes later, inside their 24 h window;
- `COLD_CUSTOMERS` others, who never wrote, get a free-form message outside any window:
  some are delivered, some fail with errorCode 1022 / providerErrorCode 131047 (at
  once, or after `sent`).

Every event time is a whole second after a whole-second anchor, so that each body's
timestamp, whatever its fractional digits, is exactly the fact's time, and every
receipt and inbound message is `complete` (pricing category, timestamp and recipient
always present): the oracle (`guardrails_expected`) is exact.
"""

from __future__ import annotations

import math
import random
from datetime import datetime

import phonenumbers

from simulator.plan import Plan, seeded
from simulator.population import (
    COUNTRIES,
    BusinessPhone,
    Customer,
    Population,
    SubAccount,
    Template,
    random_uuid,
    valid_number,
)
from simulator.stories import (
    DELIVERED,
    FAILURES,
    SENT,
    UNDELIVERED,
    Event,
    Fact,
    Failure,
    Inbound,
    PhoneChange,
    Receipt,
    Timeline,
)

NUMBER = "4930901820"  # the business number: digits, as Meta's phone events name it
TIER = "TIER_1K"
LIMIT = 1_000  # TIER_1K's distinct customers per rolling 24 h
ACCOUNT = "acme"
SUB_ACCOUNT = "acme_wa_marketing"
CUSTOMER_COUNTRIES = ("DE", "ID")
SERVICE_CUSTOMERS = 30  # write, and get a free-form answer inside their window
COLD_CUSTOMERS = 20  # never wrote; get a free-form message outside any window
COLD_FAILED_AT_ONCE, COLD_FAILED_AFTER_SENT = 6, 2  # of the cold ones
REPEATS = 50  # of the 1,000 get a second marketing message
UTILITY_MESSAGES, AUTHENTICATION_MESSAGES = 60, 40  # to some of the 1,000, after theirs
FREE_FORM = "SERVICE"  # a free-form message's pricing category (a service conversation)
WINDOW_EXPIRED = next(failure for _, failure, _ in FAILURES if failure.code == 1022)
_TEMPLATES = (
    ("spring_sale_2026", "en_US", "MARKETING"),
    ("order_shipped", "de", "UTILITY"),
    ("otp_login", "id", "AUTHENTICATION"),
)


def guardrails_population(rng: random.Random) -> Population:
    """The one sub-account on `NUMBER`, its three templates, and 1,000 + service + cold
    customers with distinct, valid msisdns."""
    phone = BusinessPhone(NUMBER, TIER)
    seen: set[str] = set()
    customers: list[Customer] = []
    while len(customers) < LIMIT + SERVICE_CUSTOMERS + COLD_CUSTOMERS:
        country = rng.choice(CUSTOMER_COUNTRIES)
        msisdn = valid_number(rng, country, phonenumbers.PhoneNumberType.MOBILE)
        if msisdn in seen:
            continue
        seen.add(msisdn)
        customers.append(Customer(msisdn, country, rng.choice(COUNTRIES[country][1]), None))
    ids = rng.sample(range(10**14, 10**15), len(_TEMPLATES))
    return Population(
        account_id=ACCOUNT,
        business_account_id=str(rng.randrange(10**14, 10**15)),
        # The channel its customers write to is the number itself.
        sub_accounts=(SubAccount(SUB_ACCOUNT, NUMBER, phone),),
        customers=tuple(customers),
        templates=tuple(
            Template(str(template_id), name, language, category)
            for template_id, (name, language, category) in zip(ids, _TEMPLATES, strict=True)
        ),
    )


def guardrails_timeline(plan: Plan, anchor: datetime) -> Timeline:
    """The guard-rails story of `plan` (its seed and span), counted from `anchor` floored
    to a whole second."""
    population = guardrails_population(seeded(plan.seed, "guardrails", "population"))
    story = _Story(seeded(plan.seed, "guardrails", "events"), plan.span, population)
    story.phone()
    story.templates()
    story.service_windows()
    story.cold_messages()
    return Timeline(plan, population, anchor.replace(microsecond=0), story.timeline())


class _Story:
    def __init__(self, rng: random.Random, span: float, population: Population) -> None:
        self.rng, self.span, self.population = rng, span, population
        self.sub_account = population.sub_accounts[0]
        self.marketing, self.utility, self.authentication = population.templates
        self.reached = population.customers[:LIMIT]
        self.service = population.customers[LIMIT : LIMIT + SERVICE_CUSTOMERS]
        self.cold = population.customers[LIMIT + SERVICE_CUSTOMERS :]
        self.last = math.floor(span) - 2  # the latest event time: posted within the span
        self._events: list[Event] = []

    def at(self, share: float) -> int:
        """The whole second at `share` of the span (within it)."""
        return max(0, min(self.last, round(share * self.span)))

    def phone(self) -> None:
        change = PhoneChange(self.sub_account.phone, "ONBOARDING", tier=TIER)
        self._add(0, change, random_uuid(self.rng), f"phone:{NUMBER}")

    def templates(self) -> None:
        """The 1,000 customers reached one after another, a few twice, some with a UTILITY
        or AUTHENTICATION message after their MARKETING one."""
        sends = sorted(self.at(self.rng.uniform(0.02, 0.8)) for _ in self.reached)
        first = dict(zip(self.reached, sends, strict=True))
        for customer, sent_at in first.items():
            self._delivered(customer, self.marketing, sent_at)
        later = self.rng.sample(self.reached, REPEATS + UTILITY_MESSAGES + AUTHENTICATION_MESSAGES)
        kinds = [self.marketing] * REPEATS + [self.utility] * UTILITY_MESSAGES
        kinds += [self.authentication] * AUTHENTICATION_MESSAGES
        for customer, template in zip(later, kinds, strict=True):
            gap = max(2, round(self.rng.uniform(0.01, 0.1) * self.span))
            self._delivered(customer, template, min(self.last - 4, first[customer] + gap))

    def service_windows(self) -> None:
        """Customers who write (a third of them twice) and get a free-form answer inside
        their window, minutes later."""
        for index, customer in enumerate(self.service):
            wrote = self.at(self.rng.uniform(0.05, 0.7))
            self._inbound(customer, wrote)
            if index % 3 == 0:
                self._inbound(customer, self.at(wrote / self.span + self.rng.uniform(0.02, 0.15)))
            answer = wrote + max(2, round(self.rng.uniform(0.002, 0.02) * self.span))
            self._delivered(customer, None, min(self.last - 4, answer))

    def cold_messages(self) -> None:
        """Free-form messages to customers who never wrote: outside any window. Some fail
        as the window rule says (at once, or after `sent`), the rest are delivered."""
        for index, customer in enumerate(self.cold):
            sent_at = self.at(self.rng.uniform(0.1, 0.9))
            umid = random_uuid(self.rng)
            if index < COLD_FAILED_AT_ONCE:
                self._receipt(umid, customer, None, UNDELIVERED, sent_at + 1, WINDOW_EXPIRED)
            elif index < COLD_FAILED_AT_ONCE + COLD_FAILED_AFTER_SENT:
                self._receipt(umid, customer, None, SENT, sent_at)
                self._receipt(umid, customer, None, UNDELIVERED, sent_at + 2, WINDOW_EXPIRED)
            else:
                self._receipt(umid, customer, None, SENT, sent_at)
                self._receipt(umid, customer, None, DELIVERED, sent_at + 1)

    def timeline(self) -> tuple[Event, ...]:
        order = sorted(range(len(self._events)), key=lambda i: (self._events[i].post_at, i))
        return tuple(self._events[i] for i in order)

    # --- one message, one event ---------------------------------------------------------------
    def _delivered(self, customer: Customer, template: Template | None, sent_at: int) -> None:
        umid = random_uuid(self.rng)
        self._receipt(umid, customer, template, SENT, sent_at)
        self._receipt(umid, customer, template, DELIVERED, sent_at + self.rng.randint(1, 3))

    def _receipt(
        self,
        umid: str,
        customer: Customer,
        template: Template | None,
        state: str,
        at: int,
        failure: Failure | None = None,
    ) -> None:
        category = template.category if template is not None else FREE_FORM
        receipt = Receipt(
            umid,
            self.sub_account,
            customer,
            state,
            template,
            category,
            failure=failure,
            complete=True,
        )
        self._add(at, receipt, f"{umid}|{state}")

    def _inbound(self, customer: Customer, at: int) -> None:
        inbound = Inbound(random_uuid(self.rng), self.sub_account, customer, "text", complete=True)
        self._add(at, inbound, inbound.umid)

    def _add(self, at: int, fact: Fact, key: str, group: str | None = None) -> None:
        at = min(at, self.last)
        post_at = min(self.span, at + self.rng.uniform(0.05, 1.5))
        self._events.append(Event(float(at), post_at, fact, key, self.rng.getrandbits(32), group))
