"""The funnel worker: receipts and replies in; each message's state and the funnel
windows out.

Three agents, thin wiring around `state` and `windows`:
- `observations` reads `whatsapp.status` and `whatsapp.inbound` and writes what
  the funnel takes from each (a receipt, or a customer's reply re-keyed by the
  umid it answers) to one topic keyed by umid, `<prefix>.funnel.observations`.
  One topic gives each partition one order, which a replay after a crash repeats:
  the window partials rely on it.
- `message_states` merges each observation into its message's state and each
  resulting change into the window partials of its partition, then sends the
  changed states to `whatsapp.message_state` and the touched partials to
  `<prefix>.funnel.partials` (keyed by sub-account), waits for Kafka's
  acknowledgement of those and of the partials' changelog, and only then stores
  the states.
- `windows` keeps, per window, the latest partial of every source partition and
  sends the totals to `whatsapp.funnel` (and to the window gauges).

Why this is exact under crashes: README, "Exact under crashes".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import orjson
from prometheus_client import CollectorRegistry

from processors import runtime
from processors.alerts import alert_value
from processors.funnel.batch import Batch, Slot, slot_id
from processors.funnel.metrics import FunnelMetrics, WindowGauges
from processors.funnel.rate_alerts import (
    RateThresholds,
    rate_alerts,
    subaccount_key,
    subaccount_total,
)
from processors.funnel.state import (
    MessageState,
    Observation,
    dump_state,
    load_state,
    message_state_value,
    observe_receipt,
    observe_reply,
)
from processors.funnel.windows import (
    EMPTY,
    Partial,
    WindowKey,
    funnel_record,
    window_total,
)
from processors.normalize.records import InboundMessage, Receipt, record_from_value
from wapipe import topics
from wapipe.settings import Settings

_GAUGE_SWEEP_SECONDS = 10.0


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> faust.App:
    registry = registry or CollectorRegistry()
    metrics, gauges = FunnelMetrics(registry), WindowGauges(registry)
    app = runtime.create_app(settings, "funnel", registry)
    prefix = settings.topic_prefix
    status_name = topics.STATUS.name(prefix)
    sources = runtime.raw_topic(app, status_name, topics.INBOUND.name(prefix))
    observations_name = topics.FUNNEL_OBSERVATIONS.name(prefix)
    observations = runtime.raw_topic(app, observations_name)
    partials_name = topics.FUNNEL_PARTIALS.name(prefix)
    outputs = _Outputs(
        observations=runtime.Sink(app, observations_name),
        message_state=runtime.Sink(app, topics.MESSAGE_STATE.name(prefix)),
        partials=runtime.Sink(app, partials_name),
        funnel=runtime.Sink(app, topics.FUNNEL.name(prefix)),
        alerts=runtime.Sink(app, topics.ALERTS.name(prefix)),
    )
    window_options = runtime.table_options(settings, ttl_days=settings.funnel_window_days + 1)
    # umid -> the message's state (JSON). The TTL counts from the last write, i.e.
    # from the message's last event.
    message_options = runtime.table_options(settings, ttl_days=settings.message_state_days)
    states = app.Table("messages", key_type=str, value_type=str, default=None,
                       options=message_options)  # fmt: skip
    # "<source partition>|<window id>" -> that partition's Partial of the window.
    partials = app.Table("partials", key_type=str, value_type=str, default=None,
                         options=window_options)  # fmt: skip
    # window id -> {source partition: Partial}, the windows' parts.
    window_parts = app.Table("windows", key_type=str, value_type=str, default=None,
                             options=window_options)  # fmt: skip
    # sub-account window id -> its parts' counts and the alerts sent (rate alerts' size only).
    subaccounts = app.Table("subaccount_windows", key_type=str, value_type=str, default=None,
                            options=window_options)  # fmt: skip
    final_after = timedelta(days=settings.funnel_window_days)
    limits = RateThresholds(
        window=settings.funnel_alert_window,
        failure_rate=settings.funnel_failure_rate_alert,
        read_rate=settings.funnel_read_rate_alert,
        min_volume=settings.funnel_alert_min_volume,
    )

    @app.agent(sources, name="observations")
    async def observe(stream: Any) -> None:
        async def handle(events: list[Any]) -> None:
            deliveries = []
            for event in events:
                message = event.message
                link = _observation(message.topic == status_name, message.value, metrics)
                if link is not None:
                    umid, observation = link
                    deliveries.append(await outputs.observations.send(
                        umid.encode(), orjson.dumps(observation),
                        timestamp=message.timestamp,
                    ))  # fmt: skip
            await asyncio.gather(*deliveries)

        await runtime.handle_batches(stream, settings, "funnel", handle)

    @app.agent(observations, name="message_states")
    async def message_states(stream: Any) -> None:
        async def handle(events: list[Any]) -> None:
            batch = _MessageBatch(states, partials, final_after, metrics)
            for event in events:
                batch.merge(event)
            await batch.publish(outputs)
            await app.producer.flush()  # the partials' changelog, before the states
            batch.store_states()

        await runtime.handle_batches(stream, settings, "funnel", handle)

    @app.agent(runtime.raw_topic(app, partials_name), name="windows")
    async def windows(stream: Any) -> None:
        async def handle(events: list[Any]) -> None:
            batch = _WindowBatch(window_parts, subaccounts, limits)
            for event in events:
                batch.take(event)
            await batch.publish(outputs, metrics, gauges)

        await runtime.handle_batches(stream, settings, "funnel", handle)

    @app.timer(_GAUGE_SWEEP_SECONDS)  # type: ignore[untyped-decorator]
    async def sweep_gauges() -> None:
        gauges.sweep(datetime.now(UTC))

    return app


@dataclass(frozen=True)
class _Outputs:
    observations: runtime.Sink
    message_state: runtime.Sink
    partials: runtime.Sink
    funnel: runtime.Sink
    alerts: runtime.Sink


def _observation(
    is_receipt: bool, value: bytes, metrics: FunnelMetrics
) -> tuple[str, Observation] | None:
    if is_receipt:
        receipt = record_from_value(Receipt, orjson.loads(value))
        metrics.observations.labels("status").inc()
        return receipt.umid, observe_receipt(receipt)
    link = observe_reply(record_from_value(InboundMessage, orjson.loads(value)))
    if link is not None:
        metrics.observations.labels("reply").inc()
    return link


class _MessageBatch:
    """`batch.Batch` with its I/O: the tables it reads and writes, and for each state
    and partial the event whose partition its table write belongs to."""

    def __init__(
        self, states: Any, partials: Any, final_after: timedelta, metrics: FunnelMetrics
    ) -> None:
        self.states, self.partials, self.metrics = states, partials, metrics
        self.fold = Batch(self._stored_state, self._stored_partial, final_after, datetime.now(UTC))
        self.events: dict[str | Slot, Any] = {}  # umid or slot -> its last event
        self.merged = 0

    def merge(self, event: Any) -> None:
        message = event.message
        umid: str = message.key.decode()
        observation = Observation(**orjson.loads(message.value))
        self.merged += 1
        with runtime.as_current_event(event):  # table reads go to the event's partition
            slots = self.fold.add(umid, observation, message.partition, message.offset)
        if umid in self.fold.changed:
            self.events[umid] = event
        for slot in slots:
            self.events[slot] = event

    async def publish(self, outputs: _Outputs) -> None:
        """Send the changed states and touched partials, store the partials, and wait
        for Kafka to acknowledge the records."""
        deliveries = [
            await outputs.message_state.send(
                key=umid.encode(), value=orjson.dumps(message_state_value(state)),
                timestamp=runtime.event_timestamp(state.last_event_at),
            )
            for umid, state in self.fold.changed.items()
        ]  # fmt: skip
        for slot, partial in self.fold.touched.items():
            partition, key = slot
            deliveries.append(await outputs.partials.send(
                key=key.sub_account_id.encode(),
                value=orjson.dumps({"window": key.encode(), "partition": partition,
                                    **partial.value()}),
                timestamp=runtime.event_timestamp(key.start),
            ))  # fmt: skip
            with runtime.as_current_event(self.events[slot]):
                self.partials[slot_id(slot)] = orjson.dumps(partial.value()).decode()
        await asyncio.gather(*deliveries)
        self.metrics.state_changes.inc(len(self.fold.changed))
        self.metrics.merged.inc(self.merged)
        self.metrics.late_changes.inc(self.fold.late_changes)

    def store_states(self) -> None:
        for umid, state in self.fold.changed.items():
            with runtime.as_current_event(self.events[umid]):
                self.states[umid] = dump_state(state).decode()

    def _stored_state(self, umid: str) -> MessageState:
        data = self.states.get(umid)
        return load_state(data) if data is not None else MessageState(umid=umid)

    def _stored_partial(self, slot: Slot) -> Partial:
        data = self.partials.get(slot_id(slot))
        return Partial.from_value(orjson.loads(data)) if data is not None else EMPTY


class _WindowBatch:
    """One batch of the windows agent: each partial taken into its window, every
    touched window's totals sent, the rate alerts of the sub-accounts' windows sent;
    then the windows stored (a replay re-sends the same totals and alert ids)."""

    def __init__(self, window_parts: Any, subaccounts: Any, limits: RateThresholds) -> None:
        self.window_parts, self.subaccounts, self.limits = window_parts, subaccounts, limits
        self.touched: dict[str, tuple[dict[str, Any], Any]] = {}  # window id -> (parts, event)
        # sub-account window id -> ({"parts": {window id: counts}, "alerted": [alert ids]},
        # an event)
        self.totals: dict[str, tuple[dict[str, Any], Any]] = {}

    def take(self, event: Any) -> None:
        value = orjson.loads(event.message.value)
        window_id, partition = value["window"], str(value["partition"])
        partial = Partial.from_value(value)
        parts = self._stored(self.window_parts, window_id, self.touched, event)
        current = parts.get(partition)
        if partial.supersedes(Partial.from_value(current) if current is not None else None):
            parts[partition] = partial.value()
        self.touched[window_id] = (parts, event)

    async def publish(
        self, outputs: _Outputs, metrics: FunnelMetrics, gauges: WindowGauges
    ) -> None:
        deliveries = []
        for window_id, (parts, event) in self.touched.items():
            key = WindowKey.decode(window_id)
            counts = window_total(Partial.from_value(p) for p in parts.values())
            record = funnel_record(key, counts)
            deliveries.append(await outputs.funnel.send(
                key=key.sub_account_id.encode(), value=orjson.dumps(record),
                timestamp=runtime.event_timestamp(key.start),
            ))  # fmt: skip
            gauges.show(key, record)
            if key.size == self.limits.window:
                whole = subaccount_key(key).encode()
                total = self._stored(self.subaccounts, whole, self.totals, event)
                total.setdefault("parts", {})[window_id] = counts
                self.totals[whole] = (total, event)
        for whole, (total, _) in self.totals.items():
            key = WindowKey.decode(whole)
            alerted = total.setdefault("alerted", [])
            for alert in rate_alerts(key, subaccount_total(total["parts"].values()), self.limits):
                if alert.alert_id in alerted:
                    continue  # the same condition is alerted once
                alerted.append(alert.alert_id)
                deliveries.append(await outputs.alerts.send(
                    key=key.sub_account_id.encode(), value=orjson.dumps(alert_value(alert)),
                    timestamp=runtime.event_timestamp(alert.occurred_at),
                ))  # fmt: skip
                metrics.alerts.labels(alert.type, key.sub_account_id or "unknown").inc()
                gauges.show_alert(alert.type, key)
        await asyncio.gather(*deliveries)
        metrics.window_records.inc(len(self.touched))
        for table, entries in ((self.window_parts, self.touched), (self.subaccounts, self.totals)):
            for key_id, (value, event) in entries.items():
                with runtime.as_current_event(event):
                    table[key_id] = orjson.dumps(value).decode()

    @staticmethod
    def _stored(table: Any, key_id: str, batch: dict[str, Any], event: Any) -> dict[str, Any]:
        """The value of `key_id` as this batch has it (a dict), registered in `batch`."""
        if key_id not in batch:
            with runtime.as_current_event(event):
                stored = table.get(key_id)
            batch[key_id] = (orjson.loads(stored) if stored is not None else {}, event)
        value: dict[str, Any] = batch[key_id][0]
        return value
