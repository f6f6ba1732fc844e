"""The normalize worker: raw webhooks in, typed records (or dead letters) out, retries dropped.

Thin wiring around `rules.normalize`. Per batch of raw events:
1. normalize each; drop those whose dedupe key was seen (in the table, or earlier
   in the same batch);
2. send every typed record and dead letter, and wait for Kafka's acknowledgements;
3. only then remember the batch's dedupe keys.

A crash between 2 and 3 re-sends those records after the restart: a duplicate on
a typed topic, never a loss. Every record carries its dedupe key in the header
`wapipe-dedupe-key`, and the jobs downstream merge idempotently (README, "Exact
under crashes").
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import orjson
from prometheus_client import CollectorRegistry, Counter

from processors import runtime
from processors.normalize import rules
from processors.normalize.records import record_value
from processors.normalize.seen import SWEEP_MARGIN_DAYS, SeenSweep, digest_of, seen_value
from wapipe import topics
from wapipe.logs import get_logger
from wapipe.settings import Settings

log = get_logger(__name__)

_SINKS = (topics.INBOUND, topics.STATUS, topics.TEMPLATE, topics.PHONE, topics.ACCOUNT,
          topics.DEADLETTER)  # fmt: skip


class NormalizeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "wapipe_normalize_events",
            "Raw events by outcome: the topic they went to, `duplicate`, or `deadletter_<kind>`.",
            ["outcome"],
            registry=registry,
        )
        self.expired = Counter(
            "wapipe_normalize_expired_keys",
            "Dedupe and id keys deleted after WAPIPE_DEDUPE_DAYS (tombstones in the changelog).",
            registry=registry,
        )
        self.id_reuse = Counter(
            "wapipe_normalize_id_reuse",
            "Events whose id was seen before with other content (a new event, kept).",
            registry=registry,
        )


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> faust.App:
    registry = registry or CollectorRegistry()
    metrics = NormalizeMetrics(registry)
    app = runtime.create_app(settings, "normalize", registry)
    prefix = settings.topic_prefix
    raw = runtime.raw_topic(app, topics.RAW.name(prefix))
    sinks = {spec.suffix: runtime.Sink(app, spec.name(prefix)) for spec in _SINKS}
    # dedupe key or id key -> when first seen (and the id's content digest): see seen.py.
    seen = app.Table(
        "seen", key_type=str, value_type=str, default=None,
        options=runtime.table_options(settings, ttl_days=settings.dedupe_days + SWEEP_MARGIN_DAYS),
    )  # fmt: skip
    sweep = SeenSweep(seen, max_age_ms=settings.dedupe_days * 86_400_000)
    ahead = timedelta(seconds=settings.event_time_max_ahead_seconds)

    @app.agent(raw, name="normalize")
    async def normalize_raw(stream: Any) -> None:
        async def handle(events: list[Any]) -> None:
            await _handle_batch(events, seen, sweep, sinks, metrics, ahead)

        await runtime.handle_batches(stream, settings, "normalize", handle)

    return app


async def _handle_batch(
    events: list[Any], seen: Any, sweep: SeenSweep, sinks: dict[str, runtime.Sink],
    metrics: NormalizeMetrics, ahead: timedelta,
) -> None:  # fmt: skip
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    deliveries = []
    remembered: dict[str, tuple[str, Any]] = {}  # table key -> (value, its event)
    for event in events:
        message = event.message
        headers = {name: value for name, value in (message.headers or ())}
        received_at = headers.get("wapipe-received-at", b"").decode() or None
        latest = rules.event_time_limit(received_at, now, ahead)
        result = rules.normalize(message.value, received_at, latest)
        if isinstance(result, rules.Rejected):
            letter = rules.dead_letter(
                result, message.value, source_topic=message.topic,
                source_partition=message.partition, source_offset=message.offset,
                key=message.key, received_at=received_at,
            )  # fmt: skip
            deliveries.append(await sinks[topics.DEADLETTER.suffix].send(
                key=message.key, value=orjson.dumps(record_value(letter)),
                timestamp=message.timestamp, headers=list(headers.items()),
            ))  # fmt: skip
            metrics.events.labels(f"deadletter_{result.kind.value}").inc()
            continue
        if result.dedupe_key in remembered or seen.get(result.dedupe_key) is not None:
            metrics.events.labels("duplicate").inc()
            continue
        if result.id_key is not None:
            earlier = remembered.get(result.id_key)
            known = earlier[0] if earlier is not None else seen.get(result.id_key)
            if known is not None and digest_of(known) != result.digest:
                metrics.id_reuse.inc()
                log.info("id reused for other content", id_key=result.id_key)
            remembered[result.id_key] = (seen_value(now_ms, result.digest), event)
        remembered[result.dedupe_key] = (seen_value(now_ms), event)
        occurred = result.occurred_at
        deliveries.append(await sinks[result.topic.suffix].send(
            key=result.key.encode(), value=orjson.dumps(record_value(result.record)),
            timestamp=occurred.timestamp() if occurred is not None else message.timestamp,
            headers=[*headers.items(), ("wapipe-dedupe-key", result.dedupe_key.encode())],
        ))  # fmt: skip
        metrics.events.labels(result.topic.suffix).inc()
    # Acknowledged first, remembered after: a crash in between re-sends, never loses.
    await asyncio.gather(*deliveries)
    for key, (value, event) in remembered.items():
        with runtime.as_current_event(event):
            seen[key] = value
    last_of_partition = {event.message.partition: event for event in events}
    for partition, event in last_of_partition.items():
        metrics.expired.inc(sweep.sweep(partition, event, now_ms))
