"""The phones worker: phone-number and account events in; each number's state and the
alerts out.

One agent over `whatsapp.phone` (keyed by displayPhoneNumber) and
`whatsapp.account` (keyed by businessAccountId), thin wiring around `rules`: a
phone event updates its number's state (`whatsapp.phone_state`, compacted) and may
raise alerts; an account event raises its alert and keeps no state. States and
alerts are sent, acknowledged, and only then the states stored (`keyed_state`).
"""

from __future__ import annotations

from typing import Any

import faust
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from processors import runtime
from processors.event_order import Applied
from processors.keyed_state import KeyedBatch, StateRecords
from processors.normalize.records import AccountEvent, PhoneEvent, record_from_value
from processors.phones.rules import (
    TIER_RANK,
    PhoneState,
    TierChange,
    account_alerts,
    apply,
    phone_state_value,
)
from wapipe import topics
from wapipe.settings import Settings

_GAUGE_SECONDS = 15.0


class PhoneMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "wapipe_phones_events",
            "Phone and account events by outcome: applied, duplicate, stale, account.",
            ["outcome"],
            registry=registry,
        )
        self.alerts = Counter(
            "wapipe_phones_alerts", "Alerts sent, by type.", ["type"], registry=registry
        )
        self.flagged = Gauge(
            "wapipe_phone_flagged", "1 while a phone number is flagged for quality.",
            ["display_phone_number"], registry=registry,
        )  # fmt: skip
        self.tier = Gauge(
            "wapipe_phone_messaging_tier_rank",
            "A phone number's current messaging tier (label) and its rank as the value: "
            "TIER_50 = 1, TIER_250 = 2, TIER_1K = 3, TIER_2K = 4, TIER_10K = 5, "
            "TIER_100K = 6, unlimited = 7; 0 for a tier name we cannot rank.",
            ["display_phone_number", "tier"], registry=registry,
        )  # fmt: skip

    def show_all(self, states: list[PhoneState]) -> None:
        self.flagged.clear()
        self.tier.clear()
        for state in states:
            self.flagged.labels(state.display_phone_number).set(int(state.flagged))
            if state.tier is not None:
                rank = TIER_RANK.get(state.tier, 0)
                self.tier.labels(state.display_phone_number, state.tier).set(rank)


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> faust.App:
    registry = registry or CollectorRegistry()
    metrics = PhoneMetrics(registry)
    app = runtime.create_app(settings, "phones", registry)
    prefix = settings.topic_prefix
    account_name = topics.ACCOUNT.name(prefix)
    sources = runtime.raw_topic(app, topics.PHONE.name(prefix), account_name)
    alerts_topic = runtime.Sink(app, topics.ALERTS.name(prefix))
    # displayPhoneNumber -> its state (JSON). No TTL: numbers are few and live for years.
    states = app.Table("phones", key_type=str, value_type=str, default=None,
                       options=runtime.table_options(settings))  # fmt: skip
    records = StateRecords(
        topic=runtime.Sink(app, topics.PHONE_STATE.name(prefix)),
        value=phone_state_value, event_time=lambda state: state.updated_at,
        dump=orjson.dumps, load=_load,  # orjson writes dataclasses natively
    )  # fmt: skip

    @app.agent(sources, name="phone_states")
    async def phone_states(stream: Any) -> None:
        async def handle(events: list[Any]) -> None:
            batch = KeyedBatch(states, records, alerts_topic, metrics.alerts)
            for event in events:
                key = event.message.key.decode()
                value = orjson.loads(event.message.value)
                if event.message.topic == account_name:
                    alerts = account_alerts(record_from_value(AccountEvent, value))
                    metrics.events.labels("account").inc()
                else:
                    before = batch.state(key, event)
                    outcome = apply(before, record_from_value(PhoneEvent, value))
                    metrics.events.labels(outcome.ignored or "applied").inc()
                    batch.update(key, before, outcome.state, event)
                    alerts = outcome.alerts
                batch.alert(key, alerts)
            await batch.publish_then_store()

        await runtime.handle_batches(stream, settings, "phones", handle)

    @app.timer(_GAUGE_SECONDS)  # type: ignore[untyped-decorator]
    async def show_states() -> None:
        """Every number of this worker's partitions in the gauges."""
        metrics.show_all([_load(number, data) for number, data in list(states.items())])

    return app


def _load(number: str, data: str | bytes | None) -> PhoneState:
    if data is None:
        return PhoneState(display_phone_number=number)
    raw = orjson.loads(data)
    raw["tier_history"] = tuple(TierChange(**change) for change in raw["tier_history"])
    raw["applied"] = Applied(raw["applied"]["at"], tuple(raw["applied"]["event_ids"]))
    return PhoneState(**raw)
