"""Arrival order (issue 21): a template's quality story and a phone number's tier story,
posted to the ingester as fast as it takes them, shuffled, some bodies retried, for many
subjects at once, on 3 partitions, through normalize to the templates and phones
workers. Every subject ends with the state and the standing alerts of its events in
event-time order: the strikes, pause and disabled flag of the story, the tier, flag and
tier history of the number.

Before issue 21, raw records were keyed by eventId (one subject's events spread over
the partitions) and the jobs refused events older than their state's latest as stale:
the same six quality events posted quickly ended with 2 strikes and no disabling.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from alert_corrections import conditions
from state_topics import StateAndAlerts

from processors.normalize import canonical
from processors.normalize.records import PhoneEvent, TemplateEvent
from processors.normalize.rules import Normalized, normalize
from processors.phones import rules as phone_rules
from processors.templates import rules as template_rules
from wapipe.topics import PHONE_STATE, TEMPLATE_STATE

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TEMPLATES = 16  # half walk the whole story (disabled), half stop at strike 2 (paused)
NUMBERS = 8
RETRIED = 0.3  # share of bodies posted a second time (8x8 retries after a timeout)
# GREEN, then GREEN->RED (strike 1), RED->YELLOW, YELLOW->RED (strike 2), RED->GREEN,
# GREEN->RED (strike 3: disabled).
QUALITY_STORY = [(None, "GREEN"), ("GREEN", "RED"), ("RED", "YELLOW"), ("YELLOW", "RED"),
                 ("RED", "GREEN"), ("GREEN", "RED")]  # fmt: skip
TIER_STORY: list[dict[str, str]] = [
    {"event": "ONBOARDING", "maxDailyConversationsPerBusiness": "TIER_250"},
    {"event": "UPGRADE", "currentLimit": "TIER_1K", "oldLimit": "TIER_250"},
    {"event": "FLAGGED", "reason": "QUALITY_DECREASE"},
    {"event": "DOWNGRADE", "currentLimit": "TIER_250", "oldLimit": "TIER_1K"},
    {"event": "UPGRADE", "currentLimit": "TIER_10K", "oldLimit": "TIER_250"},
]
# Event times a few minutes before now: within retention, and no 3 h pause ends during
# the test (the templates worker's timer would end it).
START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)


def _at(minutes: float) -> str:
    return canonical.format_timestamp(START + timedelta(minutes=minutes))


def _envelope(event_type: str, minutes: float, details: dict[str, Any]) -> dict[str, Any]:
    return {"eventId": str(uuid.uuid4()), "timestamp": _at(minutes), "provider": "WhatsApp",
            "businessAccountId": "104233889912345", "accountId": "acme",
            "eventType": event_type, "eventDetails": details}  # fmt: skip


def template_story(n: int) -> list[dict[str, Any]]:
    steps = QUALITY_STORY if n % 2 == 0 else QUALITY_STORY[:4]
    return [_envelope("template_quality_update", n * 0.01 + step, {
        "templateId": f"9518{n:06d}", "templateName": f"sale_{n}", "templateLanguage": "en_US",
        "meta": {"newQualityScore": new, **({"previousQualityScore": old} if old else {})},
    }) for step, (old, new) in enumerate(steps)]  # fmt: skip


def phone_story(n: int) -> list[dict[str, Any]]:
    return [_envelope("phone_number_quality_update", n * 0.01 + step,
                      {"displayPhoneNumber": f"49309018{n:03d}", "meta": meta})
            for step, meta in enumerate(TIER_STORY)]  # fmt: skip


def expected_outcome(
    bodies: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    """The states and alert ids of the pure rules over each subject's events in event time."""
    events = []
    for body in bodies:
        result = normalize(orjson.dumps(body), None)
        assert isinstance(result, Normalized), result
        events.append(result.record)
    events.sort(key=lambda event: event.occurred_at or "")
    templates: dict[str, template_rules.TemplateState] = {}
    phones: dict[str, phone_rules.PhoneState] = {}
    alert_ids: set[str] = set()
    for event in events:
        if isinstance(event, TemplateEvent):
            before = templates.get(
                event.template_id, template_rules.TemplateState(event.template_id)
            )
            outcome = template_rules.apply(before, event, template_rules.StrikePolicy())
            templates[event.template_id] = outcome.state
            alert_ids |= {alert.alert_id for alert in outcome.alerts}
        else:
            assert isinstance(event, PhoneEvent)
            number = event.display_phone_number
            result = phone_rules.apply(phones.get(number, phone_rules.PhoneState(number)), event)
            phones[number] = result.state
            alert_ids |= {alert.alert_id for alert in result.alerts}
    return (
        {key: template_rules.template_state_value(state) for key, state in templates.items()},
        {key: phone_rules.phone_state_value(state) for key, state in phones.items()},
        alert_ids,
    )


def standing(alerts: list[dict[str, Any]]) -> set[str]:
    """What a consumer holds as standing: every id sent, less those superseded and the
    withdrawals themselves, each as its condition."""
    superseded = {old for alert in alerts for old in alert["supersedes"]}
    sent = {alert["alertId"] for alert in alerts if alert["type"] != "ALERT_WITHDRAWN"}
    return conditions(sent - superseded)


@pytest.mark.timeout(600)
async def test_shuffled_concurrent_retried_posts_end_in_the_story_of_event_time(
    fresh_topics, start_ingester, start_worker, tmp_path
):
    settings = await fresh_topics(3)
    bodies = [body for n in range(TEMPLATES) for body in template_story(n)]
    bodies += [body for n in range(NUMBERS) for body in phone_story(n)]
    templates, phones, alert_ids = expected_outcome(bodies)
    rng = random.Random(21)
    posts = bodies + [body for body in bodies if rng.random() < RETRIED]
    rng.shuffle(posts)
    workers = {job: start_worker(job, settings) for job in ("normalize", "templates", "phones")}
    async with start_ingester(settings) as ingester:
        limit = asyncio.Semaphore(32)

        async def post(body: dict[str, Any]) -> int:
            async with limit:
                return (await ingester.post(orjson.dumps(body)))[0]

        answers = await asyncio.gather(*(post(body) for body in posts))
    assert Counter(answers) == {200: len(posts)}

    seen: list[dict[str, Any]] = []
    for job, spec, expected in (("templates", TEMPLATE_STATE, templates),
                                ("phones", PHONE_STATE, phones)):  # fmt: skip
        async with StateAndAlerts(settings, spec) as outputs:
            mine = {alert_id for alert_id in alert_ids if alert_id.split("|")[1] in expected}
            try:
                await outputs.until(
                    lambda o=outputs, e=expected, m=mine: o.states == e
                    and standing(o.alerts) & conditions(m) == m,
                    workers[job], tmp_path / f"{job}.log", f"the story's {spec.suffix}", 180,
                )  # fmt: skip
            except AssertionError as error:
                wrong = {key: (outputs.states.get(key), value) for key, value in expected.items()
                         if outputs.states.get(key) != value}  # fmt: skip
                standing_now = sorted(standing(outputs.alerts))[:6]
                raise AssertionError(f"{error}; (found, expected): {list(wrong.items())[:2]}; "
                                     f"standing: {standing_now}") from None  # fmt: skip
            await outputs.drain()
            seen = outputs.alerts  # every alert, read with either state topic

    full, short = (0, 2), (1, 3)
    for n in (*full, *short):
        state = templates[f"9518{n:06d}"]
        assert (state["redStrikes"], state["disabled"]) == ((3, True) if n % 2 == 0 else (2, False))
        assert (state["pausedUntil"] is None) == (n % 2 == 0)
    assert {state["currentLimit"] for state in phones.values()} == {"TIER_10K"}
    assert all(state["flagged"] for state in phones.values())
    assert standing(seen) == alert_ids, (
        f"missing {alert_ids - standing(seen)}, invented {standing(seen) - alert_ids}"
    )
    repeated = Counter(alert["alertId"] for alert in seen)
    assert [alert_id for alert_id, count in repeated.items() if count > 1] == []
    corrections = sum(bool(alert["supersedes"]) or alert["type"] == "ALERT_WITHDRAWN"
                      for alert in seen)  # fmt: skip
    print(f"\nFIGURES arrival order: {len(posts)} posts ({len(posts) - len(bodies)} retries), "
          f"{len(templates)} templates and {len(phones)} numbers exact, {len(alert_ids)} alerts "
          f"standing, {corrections} corrections sent on the way")  # fmt: skip
