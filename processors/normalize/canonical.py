"""One canonical form for the values that arrive in several: times, phones, countries, cases.

8x8's bodies write the same thing differently: timestamps with 0 to 7
fractional digits, `WhatsApp`/`whatsApp`/`whatsapp`, `Text`/`text`, msisdns with
or without `+`, customers identified by a BSUID instead of a number. Everything
downstream compares these, so they are written one way here, and only here.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import phonenumbers

# A BSUID is an ISO country code, a dot and an opaque id: `US.13491208655302741918`.
_BSUID_SEPARATOR = "."
_E164_MAX_DIGITS = 15
_PHONE_CACHE = 65_536  # numbers: a few MB


class InvalidValue(ValueError):
    """A value that cannot be put in canonical form; the message says which and why."""


def parse_timestamp(value: object, field: str) -> datetime:
    """An ISO 8601 timestamp of any fractional precision, as an aware UTC datetime."""
    if not isinstance(value, str):
        raise InvalidValue(f"{field}: expected an ISO 8601 timestamp, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidValue(f"{field}: {value!r} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise InvalidValue(f"{field}: {value!r} has no time zone (8x8 always sends UTC, `Z`)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidValue(f"{field}: {value!r} is out of range") from None


def format_timestamp(moment: datetime) -> str:
    """UTC ISO 8601 with milliseconds: `2026-03-14T10:01:37.400Z`, the topics' one format."""
    # isoformat, not strftime: %Y does not zero-pad years before 1000. Ends in +00:00.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch: the Kafka timestamp of the record about `moment`."""
    return int(moment.timestamp() * 1000)


def timestamp_ms(at: str | None) -> int | None:
    """`epoch_ms` of a canonical time (a derived record's event time), None for None."""
    return None if at is None else epoch_ms(parse_timestamp(at, "at"))


def lower(value: object) -> str | None:
    """Enumerated values (channel, state, type, detail) are compared and written lower-case
    (casefolded, as the schemas' case-insensitive matching compares them)."""
    return value.strip().casefold() if isinstance(value, str) and value.strip() else None


def upper(value: object) -> str | None:
    """Meta's own enumerations (template status, quality, tiers, phone events): upper-case."""
    return value.strip().upper() if isinstance(value, str) and value.strip() else None


def e164(msisdn: object) -> str | None:
    """The msisdn in E.164 (`+` and digits), or None when it is not a phone number."""
    if not isinstance(msisdn, str | int):
        return None
    text = str(msisdn).strip()
    return _e164(text) if text else None


# A customer's number comes with every receipt of every message to them: parsing it
# is most of normalize's work, and the same few numbers repeat (bounded caches).
@functools.lru_cache(maxsize=_PHONE_CACHE)
def _e164(text: str) -> str | None:
    try:
        number = phonenumbers.parse(text if text.startswith("+") else f"+{text}", None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    # libphonenumber calls some longer numbers "possible"; E.164 allows 15 digits.
    return formatted if len(formatted) <= _E164_MAX_DIGITS + 1 else None


def country_of(msisdn_e164: str | None, channel_user_id: object) -> str | None:
    """ISO 3166 alpha-2 country of a customer: the msisdn's, else the BSUID's prefix.

    A number that is possible but not assigned (e.g. fictional +1 555 ... numbers)
    still tells its country by its calling code: we take the code's main country.
    """
    if msisdn_e164 is not None and (region := _region(msisdn_e164)) is not None:
        return region
    if isinstance(channel_user_id, str) and _BSUID_SEPARATOR in channel_user_id:
        prefix = channel_user_id.split(_BSUID_SEPARATOR, 1)[0]
        if len(prefix) == 2 and prefix.isascii() and prefix.isalpha() and prefix.isupper():
            return prefix
    return None


@functools.lru_cache(maxsize=_PHONE_CACHE)
def _region(msisdn_e164: str) -> str | None:
    number = phonenumbers.parse(msisdn_e164, None)
    region = phonenumbers.region_code_for_number(number)
    if region in (None, "ZZ", "001") and number.country_code is not None:
        region = phonenumbers.region_code_for_country_code(number.country_code)
    return None if region in (None, "ZZ", "001") else str(region)


def is_bsuid(channel_user_id: object) -> bool:
    return country_of(None, channel_user_id) is not None
