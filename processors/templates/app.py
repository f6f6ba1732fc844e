"""The templates worker: template events in; each template's state and its alerts out.

One agent, thin wiring around `rules.apply` and `rules.end_pause`: it reads
`whatsapp.template` and the internal `<prefix>.templates.ticks` (both keyed by
templateId), applies each event to its template's state, sends the changed states
to `whatsapp.template_state` (compacted) and the alerts to `whatsapp.alerts`,
waits for Kafka's acknowledgement, then stores the states.

A timer looks for pauses that have ended. It does not change the state itself (a
table write belongs to an event of the key's partition): it sends a tick for the
template, which the agent applies like any event.

Exact under crashes like the other jobs (README, "Exact under crashes"): a
replayed event is either applied again to the state before it, giving the same
state and the same alert ids, or, when that state was stored, is a duplicate or
older than the state and changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from processors import runtime
from processors.event_order import Applied
from processors.keyed_state import KeyedBatch, StateRecords
from processors.normalize import canonical
from processors.normalize.records import TemplateEvent, record_from_value
from processors.templates.rules import (
    StrikePolicy,
    TemplateState,
    apply,
    end_pause,
    template_state_value,
)
from wapipe import topics
from wapipe.logs import get_logger
from wapipe.settings import Settings

log = get_logger(__name__)


class TemplateMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "wapipe_templates_events",
            "Template events by outcome: applied, duplicate, stale (older than the state), tick.",
            ["outcome"],
            registry=registry,
        )
        self.disagreements = Counter(
            "wapipe_templates_strike_disagreements",
            "Meta's strike count (otherInfo.title) differed from ours; Meta's was taken.",
            registry=registry,
        )
        self.alerts = Counter(
            "wapipe_templates_alerts", "Alerts sent, by type.", ["type"], registry=registry
        )
        labels = ["template_id", "template_name", "template_language"]
        self.red_strikes = Gauge(
            "wapipe_template_red_strikes", "RED strikes of a template (3 disables it).", labels,
            registry=registry,
        )  # fmt: skip
        self.paused = Gauge(
            "wapipe_template_paused", "1 while a template is paused.", labels, registry=registry
        )
        self.disabled = Gauge(
            "wapipe_template_disabled", "1 once a template is disabled.", labels, registry=registry
        )

    def show(self, state: TemplateState, now: str) -> None:
        labels = (state.template_id, state.template_name or "", state.template_language or "")
        paused = state.paused_until is not None and state.paused_until > now
        self.red_strikes.labels(*labels).set(state.red_strikes)
        self.paused.labels(*labels).set(int(paused and not state.disabled))
        self.disabled.labels(*labels).set(int(state.disabled))

    def clear_states(self) -> None:
        for gauge in (self.red_strikes, self.paused, self.disabled):
            gauge.clear()


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> faust.App:
    registry = registry or CollectorRegistry()
    metrics = TemplateMetrics(registry)
    app = runtime.create_app(settings, "templates", registry)
    prefix = settings.topic_prefix
    ticks_name = topics.TEMPLATE_TICKS.name(prefix)
    sources = runtime.raw_topic(app, topics.TEMPLATE.name(prefix), ticks_name)
    ticks = runtime.Sink(app, ticks_name)
    alerts_topic = runtime.Sink(app, topics.ALERTS.name(prefix))
    policy = StrikePolicy(settings.template_pause_hours, settings.template_disabling_strike)
    # templateId -> its state (JSON). No TTL: templates are few and live for years.
    states = app.Table("templates", key_type=str, value_type=str, default=None,
                       options=runtime.table_options(settings))  # fmt: skip

    records = StateRecords(
        topic=runtime.Sink(app, topics.TEMPLATE_STATE.name(prefix)),
        value=template_state_value, event_time=lambda state: state.updated_at,
        dump=orjson.dumps, load=_load,  # orjson writes dataclasses natively
    )  # fmt: skip

    @app.agent(sources, name="template_states")
    async def template_states(stream: Any) -> None:
        async def handle(events: list[Any]) -> None:
            batch = KeyedBatch(states, records, alerts_topic, metrics.alerts)
            for event in events:
                template_id = event.message.key.decode()
                before = batch.state(template_id, event)
                value = orjson.loads(event.message.value)
                if event.message.topic == ticks_name:
                    outcome = end_pause(before, value["now"])
                    metrics.events.labels("tick").inc()
                else:
                    outcome = apply(before, record_from_value(TemplateEvent, value), policy)
                    metrics.events.labels(outcome.ignored or "applied").inc()
                if outcome.disagreement is not None:
                    metrics.disagreements.inc()
                    log.warning("Meta's strike count differs from ours; taking Meta's",
                                template_id=template_id, ours=outcome.disagreement.ours,
                                metas=outcome.disagreement.metas,
                                title=outcome.disagreement.title)  # fmt: skip
                batch.update(template_id, before, outcome.state, event)
                batch.alert(template_id, outcome.alerts)
            await batch.publish_then_store()
            now = canonical.format_timestamp(datetime.now(UTC))
            for state, _ in batch.changed.values():
                metrics.show(state, now)

        await runtime.handle_batches(stream, settings, "templates", handle)

    @app.timer(settings.template_pause_check_seconds)  # type: ignore[untyped-decorator]
    async def notice_ended_pauses() -> None:
        """Tick the templates whose pause has ended, and show every template's state in
        the gauges (this worker's partitions)."""
        now = canonical.format_timestamp(datetime.now(UTC))
        metrics.clear_states()
        for template_id, data in list(states.items()):
            state = _load(template_id, data)
            metrics.show(state, now)
            if state.paused_until is not None and not state.disabled and state.paused_until <= now:
                await ticks.send(template_id.encode(), orjson.dumps({"now": now}))

    return app


def _load(template_id: str, data: str | bytes | None) -> TemplateState:
    if data is None:
        return TemplateState(template_id=template_id)
    raw = orjson.loads(data)
    raw["applied"] = Applied(raw["applied"]["at"], tuple(raw["applied"]["event_ids"]))
    return TemplateState(**raw)
