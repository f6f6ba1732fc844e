"""Canonical forms: one way to write each time, phone, country and enumerated value."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from processors.normalize import canonical


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-03-14T10:01:37Z", "2026-03-14T10:01:37.000Z"),
        ("2026-03-14T10:01:37.4Z", "2026-03-14T10:01:37.400Z"),
        ("2026-03-14T10:01:37.40Z", "2026-03-14T10:01:37.400Z"),
        ("2026-03-14T10:01:37.512Z", "2026-03-14T10:01:37.512Z"),
        ("2026-03-14T10:01:37.1234567Z", "2026-03-14T10:01:37.123Z"),
        ("2026-03-14T10:01:37.999999999Z", "2026-03-14T10:01:37.999Z"),
        ("2026-03-14T12:01:37.5+02:00", "2026-03-14T10:01:37.500Z"),
    ],
    ids=["0-digits", "1-digit", "2-digits", "3-digits", "7-digits", "9-digits", "offset"],
)
def test_timestamps_of_any_precision_become_utc_milliseconds(raw, expected):
    assert canonical.format_timestamp(canonical.parse_timestamp(raw, "t")) == expected


def test_epoch_ms_of_a_parsed_timestamp():
    moment = canonical.parse_timestamp("1970-01-01T00:00:01.5Z", "t")
    assert canonical.epoch_ms(moment) == 1500
    assert moment == datetime(1970, 1, 1, 0, 0, 1, 500_000, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw",
    ["yesterday", "2026-02-30T10:00:00Z", "2026-03-14T10:01:37", 1773482497, None],
    ids=["prose", "no-such-day", "no-zone", "number", "null"],
)
def test_unusable_timestamps_are_refused_with_the_field_named(raw):
    with pytest.raises(canonical.InvalidValue, match=r"^status\.timestamp: "):
        canonical.parse_timestamp(raw, "status.timestamp")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+5511987654321", "+5511987654321"),
        ("5511987654321", "+5511987654321"),
        (" +4915112345678 ", "+4915112345678"),
        (6281234567890, "+6281234567890"),
        ("+447700900123", "+447700900123"),
        ("<USER_PHONE_NUMBER>", None),
        ("", None),
        ("+12", None),
        (None, None),
    ],
    ids=["e164", "no-plus", "spaces", "integer", "fictional-uk", "placeholder", "empty",
         "too-short", "null"],
)  # fmt: skip
def test_msisdn_in_e164_or_none(raw, expected):
    assert canonical.e164(raw) == expected


@pytest.mark.parametrize(
    ("msisdn", "channel_user_id", "expected"),
    [
        ("+5511987654321", "5511987654321", "BR"),
        ("+4915112345678", None, "DE"),
        ("+447700900123", "+447700900123", "GB"),  # unassigned drama range: by calling code
        ("+15551234567", "US.13491208655302741918", "US"),
        ("+5511987654321", "US.13491208655302741918", "BR"),  # the msisdn wins
        (None, "US.13491208655302741918", "US"),
        (None, "IN.998877", "IN"),
        (None, "us.13491208655302741918", None),
        (None, "<WHATSAPP_BSUID>", None),
        (None, "5511987654321", None),
        (None, None, None),
    ],
    ids=["brazil", "germany", "uk-fictional", "us-555", "msisdn-over-bsuid", "bsuid-us",
         "bsuid-in", "bsuid-lowercase", "placeholder", "digits-only", "nothing"],
)  # fmt: skip
def test_country_from_msisdn_else_bsuid(msisdn, channel_user_id, expected):
    assert canonical.country_of(msisdn, channel_user_id) == expected


def test_case_canonicalization():
    assert canonical.lower(" WhatsApp ") == "whatsapp"
    assert canonical.upper("tier_1k") == "TIER_1K"
    assert canonical.lower("") is None
    assert canonical.upper(None) is None
    assert canonical.lower(3) is None
