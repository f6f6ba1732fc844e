"""Normalized template and phone-number events, as normalize writes them to
`whatsapp.template` and `whatsapp.phone`, for the tests of the rules, the workers and
the schemas: every field present, those a test does not name null or a sample value,
each event with an id of its own."""

from __future__ import annotations

import itertools

from processors.normalize.records import PhoneEvent, TemplateEvent

_ids = itertools.count()
TEMPLATE_ID = "951847263015"
NUMBER = "4930901820"


def template_event(at: str, **fields: object) -> TemplateEvent:
    """A `template_quality_update` of template TEMPLATE_ID at event time `at`, with
    `fields` (snake_case) instead of the defaults."""
    values: dict[str, object] = {
        "event_id": f"e-{next(_ids)}", "event_type": "template_quality_update",
        "template_id": TEMPLATE_ID, "template_name": "spring_sale_2026",
        "template_language": "en_US", "occurred_at": at, "received_at": at,
        "business_account_id": "104233889912345", "account_id": "acme", "status": None,
        "reason": None, "other_info_title": None, "other_info_description": None,
        "disable_date": None, "previous_quality": None, "new_quality": None,
        "previous_category": None, "new_category": None, "category": None,
        "correct_category": None,
    }  # fmt: skip
    return TemplateEvent(**{**values, **fields})  # type: ignore[arg-type]


def phone_event(
    at: str,
    event: str | None,
    current: str | None = None,
    old: str | None = None,
    reason: str | None = None,
    **fields: object,
) -> PhoneEvent:
    """A `phone_number_quality_update` of number NUMBER at event time `at`: Meta's
    `event`, the current and old tiers, the reason, and `fields` instead of the rest."""
    values: dict[str, object] = {
        "event_id": f"p-{next(_ids)}", "display_phone_number": NUMBER, "occurred_at": at,
        "received_at": at, "business_account_id": "104233889912345", "account_id": "acme",
        "event": event, "current_limit": current, "old_limit": old, "reason": reason,
    }  # fmt: skip
    return PhoneEvent(**{**values, **fields})  # type: ignore[arg-type]
