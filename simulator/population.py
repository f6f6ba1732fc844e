"""Who takes part in a simulation: one business, its sub-accounts, numbers and
templates, and customers in several countries. A pure function of a seeded RNG.

Customers' msisdns are real-looking *and valid* (libphonenumber says so): the
pipeline derives each message's country from its msisdn, and a made-up number
that fails validation would be counted under no country.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

import phonenumbers

# Countries of the customers, with weights (a business selling in Europe,
# Latin America, South and South-East Asia and Africa), and display names.
COUNTRIES: dict[str, tuple[int, tuple[str, ...]]] = {
    "DE": (14, ("Lena", "Jonas", "Mia", "Lukas")),
    "BR": (16, ("Ana", "João", "Beatriz", "Rafael")),
    "ID": (16, ("Budi", "Siti", "Putri", "Agus")),
    "IN": (18, ("Priya", "Rahul", "Ananya", "Arjun")),
    "GB": (8, ("Olivia", "Harry", "Amelia", "George")),
    "MX": (10, ("Sofía", "Diego", "Valentina", "Mateo")),
    "ZA": (6, ("Thandi", "Sipho", "Naledi", "Pieter")),
    "ES": (6, ("Lucía", "Hugo", "Martina", "Pablo")),
    "NG": (6, ("Chioma", "Emeka", "Aisha", "Tunde")),
}
_COMPANIES = ("acme", "globex", "initech", "umbrella", "hooli", "stark")
_PURPOSES = ("marketing", "support", "otp", "notify", "billing", "sales")
# Template names, the category Meta approved each in, and the languages it exists in.
_TEMPLATES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("spring_sale_2026", "MARKETING", ("en_US", "pt_BR", "id")),
    ("order_shipped", "UTILITY", ("en_US", "de", "es_MX")),
    ("otp_login", "AUTHENTICATION", ("en_US", "pt_BR")),
    ("cart_reminder", "MARKETING", ("en_GB", "de")),
    ("appointment_reminder", "UTILITY", ("en_US", "id")),
    ("payment_due", "UTILITY", ("en_US", "es_MX", "pt_BR")),
    ("welcome_offer", "MARKETING", ("en_US", "de", "id")),
    ("delivery_update", "UTILITY", ("en_GB", "pt_BR")),
)
STARTING_TIER = "TIER_1K"


@dataclass(frozen=True)
class Customer:
    msisdn: str  # E.164, valid
    country: str  # ISO 3166 alpha-2, what the pipeline must derive from the msisdn
    name: str | None  # WhatsApp profile name; some customers have none
    bsuid: str | None  # business-scoped user id, carried instead of the number by some


@dataclass(frozen=True)
class BusinessPhone:
    display_phone_number: str  # digits, no `+`
    tier: str  # messaging limit at the start


@dataclass(frozen=True)
class SubAccount:
    sub_account_id: str
    channel_id: str  # our WhatsApp channel in 8x8
    phone: BusinessPhone


@dataclass(frozen=True)
class Template:
    template_id: str  # digits (8x8's schema: a number; sent as a string or a number)
    name: str
    language: str
    category: str  # MARKETING, UTILITY or AUTHENTICATION


@dataclass(frozen=True)
class Population:
    account_id: str
    business_account_id: str
    sub_accounts: tuple[SubAccount, ...]
    customers: tuple[Customer, ...]
    templates: tuple[Template, ...]

    @property
    def phones(self) -> tuple[BusinessPhone, ...]:
        return tuple(sub_account.phone for sub_account in self.sub_accounts)


def make_population(
    rng: random.Random, *, sub_accounts: int, customers: int, templates: int
) -> Population:
    company = rng.choice(_COMPANIES)
    home = rng.choice(("DE", "GB", "ES"))  # where the business's numbers are
    return Population(
        account_id=company,
        business_account_id=str(rng.randrange(10**14, 10**15)),
        sub_accounts=tuple(
            SubAccount(
                sub_account_id=_sub_account_name(company, index),
                channel_id=random_uuid(rng),
                phone=BusinessPhone(
                    valid_number(rng, home, phonenumbers.PhoneNumberType.FIXED_LINE)[1:],
                    STARTING_TIER,
                ),
            )
            for index in range(sub_accounts)
        ),
        customers=tuple(_customer(rng) for _ in range(customers)),
        templates=_templates(rng, templates),
    )


def _sub_account_name(company: str, index: int) -> str:
    purpose = _PURPOSES[index % len(_PURPOSES)]
    round_ = index // len(_PURPOSES)
    return f"{company}_wa_{purpose}" + (f"_{round_ + 1}" if round_ else "")


def _customer(rng: random.Random) -> Customer:
    regions = list(COUNTRIES)
    country = rng.choices(regions, weights=[COUNTRIES[r][0] for r in regions])[0]
    msisdn = valid_number(rng, country, phonenumbers.PhoneNumberType.MOBILE)
    name = rng.choice(COUNTRIES[country][1]) if rng.random() < 0.8 else None
    # Some customers already have a BSUID (8x8's webhook docs: "Users without a phone number").
    bsuid = f"{country}.{rng.randrange(10**19, 10**20)}" if rng.random() < 0.1 else None
    return Customer(msisdn=msisdn, country=country, name=name, bsuid=bsuid)


def _templates(rng: random.Random, count: int) -> tuple[Template, ...]:
    variants = [
        (name, category, language)
        for name, category, languages in _TEMPLATES
        for language in languages
    ]
    # The first template is always a MARKETING one: the strike story walks it to RED.
    marketing = [v for v in variants if v[1] == "MARKETING"]
    first = rng.choice(marketing)
    rest = [v for v in variants if v != first]
    rng.shuffle(rest)
    chosen = [first, *rest][:count]
    while len(chosen) < count:  # more templates than names: numbered copies
        name, category, language = rng.choice(variants)
        chosen.append((f"{name}_v{len(chosen)}", category, language))
    ids = rng.sample(range(10**14, 10**15), len(chosen))
    return tuple(
        Template(str(template_id), name, language, category)
        for template_id, (name, category, language) in zip(ids, chosen, strict=True)
    )


def valid_number(rng: random.Random, region: str, kind: int) -> str:
    """A random valid number of `region` in E.164: libphonenumber's example number of
    that kind (a `phonenumbers.PhoneNumberType`) with its last digits drawn at random
    until the result is valid."""
    example = phonenumbers.example_number_for_type(region, kind)
    if example is None:
        raise ValueError(f"libphonenumber has no example {kind} number for {region}")
    national = str(example.national_number)
    free = min(6, len(national) - 3)
    for _ in range(100):
        digits = national[:-free] + "".join(str(rng.randrange(10)) for _ in range(free))
        number = phonenumbers.parse(f"+{example.country_code}{digits}")
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)


def random_uuid(rng: random.Random) -> str:
    """A version-4 UUID drawn from `rng` (so a seed repeats it)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
