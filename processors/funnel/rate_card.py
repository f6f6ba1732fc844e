"""The rate card: the price of one delivered message per country and pricing category,
for `whatsapp.billing`'s estimated costs (WAPIPE_BILLING_RATE_CARD).

A CSV file with the header `country,category,price,currency`, one rate per line:
- `country`: ISO 3166-1 alpha-2 (as `country` in the topics), or `*` for every
  country the card does not name for that category (Meta's "rest of world");
- `category`: a pricing category as in `whatsapp.status` (`marketing`, `utility`,
  `authentication`, `authentication_international`, `marketing_lite`, `service`,
  `referral_conversion`), compared case-insensitively;
- `price`: per message, a decimal number of digits and a point (`0.0400`);
- `currency`: three upper-case letters (ISO 4217).
Lines starting with `#` and blank lines are ignored. The card is read once at
start-up, and every bad line is reported at once, by its line number: a card with a
mistake is refused whole, never half-used.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

HEADER = ("country", "category", "price", "currency")
ANY_COUNTRY = "*"
PRICING_CATEGORIES = frozenset({
    "authentication", "authentication_international", "marketing", "marketing_lite",
    "referral_conversion", "service", "utility",
})  # fmt: skip
_COUNTRY = re.compile(r"[A-Z]{2}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_PRICE = re.compile(r"\d+(\.\d+)?")


class RateCardError(ValueError):
    """A rate card that cannot be used; the message names every bad line."""


@dataclass(frozen=True)
class Rate:
    price: Decimal
    currency: str


@dataclass(frozen=True)
class RateCard:
    rates: dict[tuple[str, str], Rate]  # (country or "*", category) -> its rate

    def rate(self, country: str, category: str) -> Rate | None:
        """The rate of a message to `country` in `category`: the country's own, else the
        card's `*` line for the category, else None (the cost is then unknown)."""
        category = category.lower()
        return self.rates.get((country, category)) or self.rates.get((ANY_COUNTRY, category))


def load_rate_card(path: Path) -> RateCard:
    """The rate card in `path`; RateCardError naming every bad line when it has any."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RateCardError(f"rate card {path}: cannot be read: {error}") from None
    numbered = [(number, line) for number, line in enumerate(text.splitlines(), start=1)
                if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip
    if not numbered:
        raise RateCardError(f"rate card {path}: no lines (expected the header {','.join(HEADER)})")
    header = tuple(cell.strip().lower() for cell in _cells(numbered[0][1]))
    if header != HEADER:
        raise RateCardError(f"rate card {path} line {numbered[0][0]}: the header must be "
                            f"{','.join(HEADER)}, not {','.join(header)}")  # fmt: skip
    rates: dict[tuple[str, str], Rate] = {}
    seen_on: dict[tuple[str, str], int] = {}
    problems: list[str] = []
    for number, line in numbered[1:]:
        try:
            key, rate = _parse_row([cell.strip() for cell in _cells(line)])
        except RateCardError as error:
            problems.append(f"line {number}: {error}")
            continue
        if key in seen_on:
            problems.append(f"line {number}: {key[0]},{key[1]} again (first on line "
                            f"{seen_on[key]}): one rate per country and category")  # fmt: skip
            continue
        rates[key], seen_on[key] = rate, number
    if problems:
        bad = f"{len(problems)} bad lines" if len(problems) > 1 else "a bad line"
        raise RateCardError(f"rate card {path} has {bad}:\n    " + "\n    ".join(problems))
    if not rates:
        raise RateCardError(f"rate card {path}: a header and no rate")
    return RateCard(rates)


def _cells(line: str) -> list[str]:
    return next(csv.reader([line]), [])


def _parse_row(cells: list[str]) -> tuple[tuple[str, str], Rate]:
    if len(cells) != len(HEADER):
        raise RateCardError(f"{len(cells)} fields, expected {len(HEADER)} ({','.join(HEADER)})")
    country, category, price_text, currency = cells
    country, category = country.upper(), category.lower()
    if country != ANY_COUNTRY and not _COUNTRY.fullmatch(country):
        raise RateCardError(f"country {country!r} is not two letters (ISO 3166-1) or *")
    if category not in PRICING_CATEGORIES:
        raise RateCardError(f"pricing category {category!r} is not one of "
                            f"{', '.join(sorted(PRICING_CATEGORIES))}")  # fmt: skip
    if not _PRICE.fullmatch(price_text):  # digits and a point: no sign, exponent or NaN
        raise RateCardError(f"price {price_text!r} is not a decimal number like 0.0400")
    if not _CURRENCY.fullmatch(currency):
        raise RateCardError(f"currency {currency!r} is not three upper-case letters (ISO 4217)")
    return (country, category), Rate(Decimal(price_text), currency)
