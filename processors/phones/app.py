"""The phones job: phone-number and account events in; each number's state and the
alerts out.

On the stream engine, over `whatsapp.phone` (keyed by displayPhoneNumber) and
`whatsapp.account` (keyed by businessAccountId), thin wiring around `rules`: a
phone event updates its number's state (`whatsapp.phone_state`, compacted) and may
raise alerts, or correct those a late event showed wrong (`keyed_state`); the table
holds each number's recent events and alerts standing besides its record
(`processors.history`). An account event raises its alert and keeps no state, so the
account topic's partitions need no table.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import Message
from prometheus_client import CollectorRegistry, Counter, Gauge

from processors.alerts import Alert, alert_value
from processors.dead_letters import poison_letter
from processors.engine.job import (
    Output,
    PartitionBatch,
    Table,
    WallClockTimer,
    json_value,
    key_text,
)
from processors.history import load_state
from processors.keyed_state import KeyedBatch, StateRecords
from processors.normalize import canonical
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
_TABLE = "phones"


class PhoneMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "wapipe_phones_events",
            "Phone and account events by outcome: applied, reordered (applied, placed before "
            "a newer event of its number), duplicate, stale (older than every event still "
            "held), account.",
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


class PhonesJob:
    name = "phones"
    aligned = False  # keyed as its source: each partition in its own order

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.metrics = PhoneMetrics(registry)
        prefix = settings.topic_prefix
        # The table is partitioned as the phone topic; account events keep no state.
        self.account_topic = topics.ACCOUNT.name(prefix)
        self.sources = (topics.PHONE.name(prefix), self.account_topic)
        # displayPhoneNumber -> its state (JSON). No TTL: numbers are few and live for years.
        self.tables = (Table(_TABLE),)
        self.timers = (WallClockTimer(_GAUGE_SECONDS, self.show_states),)
        self.records = StateRecords(
            table=_TABLE, topic=topics.PHONE_STATE.name(prefix), value=phone_state_value,
            event_time=lambda state: state.updated_at, load=_load,
            alerts_topic=topics.ALERTS.name(prefix),
        )  # fmt: skip
        self.alerts_topic = self.records.alerts_topic
        self.deadletter = topics.DEADLETTER.name(prefix)

    def process(self, batch: PartitionBatch) -> None:
        if batch.topic == self.account_topic:
            self._account_alerts(batch)
            return
        keyed = KeyedBatch(batch, self.records, (key_text(record) for record in batch.records))
        for record in batch.records:
            number = key_text(record)
            event = record_from_value(PhoneEvent, json_value(record))
            outcome = apply(keyed.state(number), event)
            label = outcome.ignored or ("reordered" if outcome.reordered else "applied")
            batch.count(self.metrics.events.labels(label))
            keyed.update(number, outcome.state)
            keyed.alert(number, outcome.alerts)
            self._count(batch, outcome.alerts)
        keyed.send()

    def show_states(self, batches: Mapping[int, PartitionBatch], _now: datetime) -> None:
        """Every number of this worker's partitions in the gauges."""
        # The record's fields suffice for the gauges: the events are not loaded.
        self.metrics.show_all([load_state(orjson.loads(value), _phone, PhoneEvent, events=False)
                               for batch in batches.values()
                               for _, value in batch.table(_TABLE).items()])  # fmt: skip

    def dead_letter(self, record: Message, error: BaseException) -> Output:
        return poison_letter(record, error, self.deadletter)

    def partitions_revoked(self, partitions: frozenset[int]) -> None:
        self.metrics.show_all([])  # shown again, for the partitions kept, by the next run

    def _account_alerts(self, batch: PartitionBatch) -> None:
        for record in batch.records:
            event = record_from_value(AccountEvent, json_value(record))
            alerts = account_alerts(event)
            batch.count(self.metrics.events.labels("account"))
            for alert in alerts:
                batch.send(self.alerts_topic, record.key(), orjson.dumps(alert_value(alert)),
                           timestamp_ms=canonical.timestamp_ms(alert.occurred_at))  # fmt: skip
            self._count(batch, alerts)

    def _count(self, batch: PartitionBatch, alerts: tuple[Alert, ...]) -> None:
        for alert in alerts:
            batch.count(self.metrics.alerts.labels(alert.type))


def create_job(settings: Settings, registry: CollectorRegistry) -> PhonesJob:
    return PhonesJob(settings, registry)


def _load(number: str, data: str | bytes | None) -> PhoneState:
    """A number's state as the table has it (its events, its alerts standing)."""
    if data is None:
        return PhoneState(display_phone_number=number)
    return load_state(orjson.loads(data), _phone, PhoneEvent)


def _phone(raw: dict[str, Any]) -> PhoneState:
    return PhoneState(
        display_phone_number=raw["display_phone_number"],
        business_account_id=raw["business_account_id"],
        tier=raw["tier"],
        tier_history=tuple(TierChange(**change) for change in raw["tier_history"]),
        flagged=raw["flagged"],
        flag_reason=raw["flag_reason"],
        last_event=raw["last_event"],
    )
