"""The templates worker on the real broker: the three-strike story with a late event
that renumbers a strike, a pause that ends, and SIGKILLs mid-run that change neither the
final states nor the alert ids."""

from __future__ import annotations

import itertools
import random
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from state_topics import StateAndAlerts, feed, run_with_sigkills
from typed_events import template_event

from processors.normalize import canonical
from processors.normalize.records import TemplateEvent
from processors.templates.rules import StrikePolicy, TemplateState, apply, template_state_value
from wapipe import topics
from wapipe.topics import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

NOW = datetime.now(UTC).replace(microsecond=0)  # event times near now (retention)
_ids = itertools.count()


def at(hours: float) -> str:
    return canonical.format_timestamp(NOW + timedelta(hours=hours))


def event(template_id: str, hours: float, **fields: object) -> TemplateEvent:
    return template_event(at(hours), template_id=template_id,
                          template_name=f"name_{template_id}", **fields)  # fmt: skip


def quality(template_id: str, hours: float, previous: str, new: str) -> TemplateEvent:
    return event(template_id, hours, previous_quality=previous, new_quality=new)


def status(template_id: str, hours: float, value: str, title: str | None = None) -> TemplateEvent:
    return event(template_id, hours, event_type="template_status_update", status=value,
                 other_info_title=title)  # fmt: skip


def expected(events: list[TemplateEvent]) -> tuple[dict[str, dict[str, Any]], Counter[str]]:
    """Final states and alert ids (each as often as raised) by the pure rules, in each
    template's partition order."""
    states: dict[str, TemplateState] = {}
    alert_ids: Counter[str] = Counter()
    for item in events:
        before = states.get(item.template_id, TemplateState(item.template_id))
        outcome = apply(before, item, StrikePolicy())
        states[item.template_id] = outcome.state
        alert_ids.update(alert.alert_id for alert in outcome.alerts)
    return {tid: template_state_value(state) for tid, state in states.items()}, alert_ids


async def test_the_three_strike_story_and_a_pause_that_ends(kafka_settings, start_worker, tmp_path):
    t, b = "951847263015", "777000111"
    first_red = quality(t, -20, "GREEN", "RED")
    story = [
        status(t, -30, "PAUSED", "FIRST_PAUSE"),  # Meta's strike 1, which we never saw: 1 vs 0
        quality(t, -26, "RED", "GREEN"),
        first_red,  # our strike 2
        first_red,  # a retry
        status(t, -19.9, "PAUSED", "SECOND_PAUSE"),  # agrees
        quality(t, -19.5, "RED", "RED"),  # no strike
        # Late, placed in event time: strike 2 (paused 6 h); the drop at -20 becomes
        # strike 3 (a correction supersedes its strike-2 alert) and disables the template.
        quality(t, -25, "GREEN", "RED"),
        quality(t, -12, "RED", "YELLOW"),
        quality(t, -5, "YELLOW", "RED"),  # strike 3: disabled
        status(t, -4.9, "DISABLED", "DISABLED"),
        quality(b, -4, "GREEN", "RED"),  # strike 1: paused until an hour ago
    ]
    await feed(kafka_settings, topics.TEMPLATE, story, key=lambda item: item.template_id)
    worker = start_worker("templates", kafka_settings, WAPIPE_TEMPLATE_PAUSE_CHECK_SECONDS="1")
    async with StateAndAlerts(kafka_settings, topics.TEMPLATE_STATE) as outputs:
        await outputs.until(
            lambda: outputs.states.get(t, {}).get("disabled")
            and outputs.states.get(b, {}).get("redStrikes") == 1
            and outputs.states[b]["pausedUntil"] is None
            and any(alert["type"] == "TEMPLATE_UNPAUSED" and alert["subject"]["templateId"] == b
                    for alert in outputs.alerts),
            worker, tmp_path / "templates.log", "final states with the pause ended",
        )  # fmt: skip

    state = outputs.states[t]
    assert (state["redStrikes"], state["disabled"], state["status"]) == (3, True, "DISABLED")
    assert (state["quality"], state["pausedUntil"], state["templateName"]) == (
        "RED", None, f"name_{t}",
    )  # fmt: skip
    mine = [alert for alert in outputs.alerts if alert["subject"]["templateId"] == t]
    assert len({alert["alertId"] for alert in mine}) == len(mine), "an alert came twice"
    superseded = {alert_id for alert in mine for alert_id in alert["supersedes"]}
    assert superseded == {f"TEMPLATE_QUALITY_RED|{t}|strike-2|{at(-20)}"}
    standing = [alert for alert in mine if alert["alertId"] not in superseded]
    reds = [alert for alert in standing if alert["type"] == "TEMPLATE_QUALITY_RED"]
    assert sorted((red["occurredAt"], red["details"]["strike"], red["details"]["action"])
                  for red in reds) == [(at(-25), 2, "PAUSE"), (at(-20), 3, "DISABLE")]  # fmt: skip
    assert sorted(alert["type"] for alert in standing) == sorted(
        ["TEMPLATE_PAUSED", "TEMPLATE_PAUSED", "TEMPLATE_QUALITY_RED", "TEMPLATE_QUALITY_RED",
         "TEMPLATE_DISABLED", "TEMPLATE_UNPAUSED"]
    )  # fmt: skip
    ended = [alert for alert in outputs.alerts if alert["type"] == "TEMPLATE_UNPAUSED"]
    # t's Meta pause ended before its next event (in the fold); b's by the timer.
    assert sorted((a["subject"]["templateId"], a["occurredAt"]) for a in ended) == [
        (b, at(-1)), (t, at(-27))]  # fmt: skip
    assert all(alert["severity"] == "info" for alert in ended)
    assert expected(story)[0][t] == state


async def test_a_pause_stored_before_the_schedule_of_pause_ends_existed_ends_too(
    kafka_settings, start_worker, tmp_path
):
    """An upgrade: the table holds a paused template, written by a version that kept no
    schedule of pause ends; the timers index it once and end its pause."""
    template_id = "123987456000"
    paused = apply(TemplateState(template_id), quality(template_id, -4, "GREEN", "RED"),
                   StrikePolicy()).state  # fmt: skip
    assert paused.paused_until == at(-1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka_bootstrap)
    await producer.start()
    try:
        changelog = topics.changelog("templates", "templates").name(kafka_settings.topic_prefix)
        await producer.send_and_wait(changelog, orjson.dumps(paused), key=template_id.encode())
    finally:
        await producer.stop()
    worker = start_worker("templates", kafka_settings, WAPIPE_TEMPLATE_PAUSE_CHECK_SECONDS="1")
    async with StateAndAlerts(kafka_settings, topics.TEMPLATE_STATE) as outputs:
        await outputs.until(
            lambda: any(alert["type"] == "TEMPLATE_UNPAUSED" for alert in outputs.alerts),
            worker, tmp_path / "templates.log", "the stored pause ended",
        )  # fmt: skip
    assert outputs.states[template_id]["pausedUntil"] is None
    assert [alert["occurredAt"] for alert in outputs.alerts] == [at(-1)]


async def test_sigkills_change_neither_the_states_nor_the_alert_ids(
    kafka_bootstrap, settings_for, start_worker, tmp_path
):
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}.whatsapp",
        topic_partitions=3,
    )  # fmt: skip
    await create_topics(settings)
    rng = random.Random(11)
    events: list[TemplateEvent] = []
    for n in range(300):
        template_id, hours, score = f"tpl-{n}", -40.0, "GREEN"
        for _ in range(12):
            hours += rng.uniform(0.1, 3)
            if rng.random() < 0.7:
                new = rng.choice(["GREEN", "YELLOW", "RED"])
                events.append(quality(template_id, hours, score, new))
                score = new
            else:
                title = rng.choice([None, "FIRST_PAUSE", "SECOND_PAUSE", "RATE_LIMITING_PAUSE"])
                events.append(status(template_id, hours, "PAUSED", title))
            if rng.random() < 0.15:
                events.append(events[-1])  # a retry
            if rng.random() < 0.1:  # late news: placed in event time, maybe correcting alerts
                events.append(replace(events[-1], event_id=f"late-{next(_ids)}",
                                      occurred_at=at(hours - 5)))  # fmt: skip
    rng.shuffle(events)  # arrival order is not event order (issue 21)
    final_states, alert_ids = expected(events)
    await feed(settings, topics.TEMPLATE, events, key=lambda item: item.template_id)
    environment = {
        "WAPIPE_PROCESSOR_BATCH_SIZE": "50",
        "WAPIPE_TEMPLATE_PAUSE_CHECK_SECONDS": "86400",
    }  # no ticks: fold order only (a day of stream time or wall clock; the story spans 36 h)
    await run_with_sigkills(settings, "templates", topics.TEMPLATE_STATE, start_worker,
                            tmp_path / "templates.log", final_states, alert_ids,
                            **environment)  # fmt: skip
    assert sum(state["redStrikes"] for state in final_states.values()) > 100
