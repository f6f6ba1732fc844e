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
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import orjson
from prometheus_client import CollectorRegistry

from processors import runtime
from processors.funnel.batch import Batch, Slot, slot_id
from processors.funnel.metrics import FunnelMetrics, WindowGauges
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
    observations = runtime.raw_topic(app, topics.FUNNEL_OBSERVATIONS.name(prefix))
    partials_topic = runtime.raw_topic(app, topics.FUNNEL_PARTIALS.name(prefix))
    outputs = _Outputs(
        message_state=runtime.raw_topic(app, topics.MESSAGE_STATE.name(prefix)),
        partials=partials_topic,
        funnel=runtime.raw_topic(app, topics.FUNNEL.name(prefix)),
    )
    window_ttl = runtime.ttl_options(settings.funnel_window_days + 1)
    # umid -> the message's state (JSON). The TTL counts from the last write, i.e.
    # from the message's last event.
    states = app.Table("messages", key_type=str, value_type=str, default=None,
                       options=runtime.ttl_options(settings.message_state_days))  # fmt: skip
    # "<source partition>|<window id>" -> that partition's Partial of the window.
    partials = app.Table("partials", key_type=str, value_type=str, default=None,
                         options=window_ttl)  # fmt: skip
    # window id -> {source partition: Partial}, the windows' parts.
    window_parts = app.Table("windows", key_type=str, value_type=str, default=None,
                             options=window_ttl)  # fmt: skip
    final_after = timedelta(days=settings.funnel_window_days)

    @app.agent(sources, name="observations")
    async def observe(stream: Any) -> None:
        async def handle(events: list[Any]) -> None:
            deliveries = []
            for event in events:
                message = event.message
                link = _observation(message.topic == status_name, message.value, metrics)
                if link is not None:
                    umid, observation = link
                    deliveries.append(await observations.send(
                        key=umid.encode(), value=orjson.dumps(observation),
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

    @app.agent(partials_topic, name="windows")
    async def windows(stream: Any) -> None:
        async def handle(events: list[Any]) -> None:
            await _publish_windows(events, window_parts, outputs, metrics, gauges)

        await runtime.handle_batches(stream, settings, "funnel", handle)

    @app.timer(_GAUGE_SWEEP_SECONDS)  # type: ignore[untyped-decorator]
    async def sweep_gauges() -> None:
        gauges.sweep(datetime.now(UTC))

    return app


class _Outputs:
    def __init__(self, message_state: Any, partials: Any, funnel: Any) -> None:
        self.message_state, self.partials, self.funnel = message_state, partials, funnel


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

    def merge(self, event: Any) -> None:
        message = event.message
        umid: str = message.key.decode()
        observation = Observation(**orjson.loads(message.value))
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


async def _publish_windows(
    events: list[Any], window_parts: Any, outputs: _Outputs, metrics: FunnelMetrics,
    gauges: WindowGauges,
) -> None:  # fmt: skip
    """Take each partial into its window, send every touched window's totals, then
    store the windows (a replay re-sends the same totals)."""
    touched: dict[str, tuple[dict[str, Any], Any]] = {}  # window id -> (parts, an event)
    for event in events:
        value = orjson.loads(event.message.value)
        window_id, partition = value["window"], str(value["partition"])
        partial = Partial.from_value(value)
        if window_id in touched:
            parts = touched[window_id][0]
        else:
            with runtime.as_current_event(event):
                stored = window_parts.get(window_id)
            parts = orjson.loads(stored) if stored is not None else {}
        current = parts.get(partition)
        if partial.supersedes(Partial.from_value(current) if current is not None else None):
            parts[partition] = partial.value()
        touched[window_id] = (parts, event)
    deliveries = []
    for window_id, (parts, _) in touched.items():
        key = WindowKey.decode(window_id)
        record = funnel_record(key, window_total(Partial.from_value(p) for p in parts.values()))
        deliveries.append(await outputs.funnel.send(
            key=key.sub_account_id.encode(), value=orjson.dumps(record),
            timestamp=runtime.event_timestamp(key.start),
        ))  # fmt: skip
        gauges.show(key, record)
    await asyncio.gather(*deliveries)
    metrics.window_records.inc(len(touched))
    for window_id, (parts, event) in touched.items():
        with runtime.as_current_event(event):
            window_parts[window_id] = orjson.dumps(parts).decode()
