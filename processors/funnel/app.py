"""The funnel worker: receipts and replies in, each outbound message's state out.

Two agents, thin wiring around `state.merge`:
- `reply_links` reads `whatsapp.inbound` and re-keys each customer reply by the
  umid it answers (`<prefix>.funnel.replies`), so that the reply meets the state
  of that message in its partition;
- `message_states` reads `whatsapp.status` and the replies (both keyed by umid,
  so co-partitioned), merges each into the message's state, sends each changed
  state to `whatsapp.message_state` once per batch (the latest; the topic is
  compacted), waits for Kafka's acknowledgement, then stores the states.

Exact under crashes by construction (README, "Exact under crashes"): the merge is
idempotent, so events re-delivered after a crash change nothing, and a state
re-sent after a crash is the same absolute value.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

import faust
import orjson
from prometheus_client import CollectorRegistry, Counter

from processors import runtime
from processors.funnel.state import (
    MessageState,
    Observation,
    dump_state,
    load_state,
    merge,
    message_state_value,
    observe_receipt,
    observe_reply,
)
from processors.normalize import canonical
from processors.normalize.records import InboundMessage, Receipt, record_from_value
from wapipe import topics
from wapipe.settings import Settings


class FunnelMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.observations = Counter(
            "wapipe_funnel_observations",
            "Receipts and replies merged into message states, by source.",
            ["source"],
            registry=registry,
        )
        self.state_changes = Counter(
            "wapipe_funnel_state_changes",
            "message_state records written (one per changed message and batch).",
            registry=registry,
        )


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> faust.App:
    registry = registry or CollectorRegistry()
    metrics = FunnelMetrics(registry)
    app = runtime.create_app(settings, "funnel", registry)
    prefix = settings.topic_prefix
    inbound = runtime.raw_topic(app, topics.INBOUND.name(prefix))
    replies_name = topics.FUNNEL_REPLIES.name(prefix)
    replies = runtime.raw_topic(app, replies_name)
    sources = runtime.raw_topic(app, topics.STATUS.name(prefix), replies_name)
    message_state = runtime.raw_topic(app, topics.MESSAGE_STATE.name(prefix))
    # umid -> the message's state as JSON text. RocksDB, with a TTL of
    # WAPIPE_MESSAGE_STATE_DAYS: every change rewrites the key, so it counts from
    # the last event.
    states = app.Table(
        "messages", key_type=str, value_type=str, default=None,
        options=runtime.ttl_options(settings.message_state_days),
    )  # fmt: skip

    @app.agent(inbound, name="reply_links")
    async def reply_links(stream: Any) -> None:
        async def handle(events: list[Any]) -> None:
            deliveries = []
            for event in events:
                message = record_from_value(InboundMessage, orjson.loads(event.message.value))
                link = observe_reply(message)
                if link is not None:
                    umid, observation = link
                    deliveries.append(await replies.send(
                        key=umid.encode(), value=orjson.dumps(asdict(observation)),
                        timestamp=event.message.timestamp,
                    ))  # fmt: skip
            await asyncio.gather(*deliveries)

        await runtime.handle_batches(stream, settings, "funnel", handle)

    @app.agent(sources, name="message_states")
    async def message_states(stream: Any) -> None:
        async def handle(events: list[Any]) -> None:
            await _merge_batch(events, states, message_state, replies_name, metrics)

        await runtime.handle_batches(stream, settings, "funnel", handle)

    return app


async def _merge_batch(
    events: list[Any], states: Any, output: Any, replies_name: str, metrics: FunnelMetrics
) -> None:
    changed: dict[bytes, tuple[MessageState, Any]] = {}  # umid -> (state, its last event)
    for event in events:
        message = event.message
        umid: bytes = message.key
        value = orjson.loads(message.value)
        if message.topic == replies_name:
            observation = Observation(**value)
            metrics.observations.labels("reply").inc()
        else:
            observation = observe_receipt(record_from_value(Receipt, value))
            metrics.observations.labels("status").inc()
        before = changed[umid][0] if umid in changed else _stored(states, umid)
        after = merge(before, observation)
        if after != before:
            changed[umid] = (after, event)
    deliveries = [
        await output.send(
            key=umid, value=orjson.dumps(message_state_value(state)),
            timestamp=_event_time(state),
        )
        for umid, (state, _) in changed.items()
    ]  # fmt: skip
    # Acknowledged first, stored after: a crash in between re-sends the same states.
    await asyncio.gather(*deliveries)
    metrics.state_changes.inc(len(changed))
    for umid, (state, event) in changed.items():
        with runtime.as_current_event(event):
            states[umid.decode()] = dump_state(state).decode()


def _stored(states: Any, umid: bytes) -> MessageState:
    data = states.get(umid.decode())
    return load_state(data) if data is not None else MessageState(umid=umid.decode())


def _event_time(state: MessageState) -> float | None:
    """The Kafka timestamp of a state record: its latest event, in epoch seconds."""
    if state.last_event_at is None:
        return None
    return canonical.parse_timestamp(state.last_event_at, "lastEventAt").timestamp()
