"""The normalize job: raw webhooks in, typed records (or dead letters) out, retries dropped.

Thin wiring around `rules.normalize`, on the stream engine. Per partition's batch:
1. normalize each raw record;
2. look up the batch's dedupe and id keys in the `seen` table (one multi-get);
3. drop the records whose dedupe key was seen (in the table, or earlier in the batch),
   send every typed record and dead letter, remember the new keys with the time the
   ingester received their event (the raw record's timestamp);
4. sweep a slice of the table for keys expired by stream time.

No wall clock: a replay of the raw topic (its timestamps and headers kept) drops,
accepts and expires exactly what the live run did.

Outputs, the table's changelog and the input offsets commit in one transaction
(processors/engine/loop.py): a record is written once, and its dedupe key is
remembered exactly when it is written.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from confluent_kafka import Message
from prometheus_client import CollectorRegistry, Counter

from processors.dead_letters import dead_letter, poison_letter
from processors.engine.job import (
    Output,
    PartitionBatch,
    Table,
    Timer,
    header,
    headers_of,
    record_time_ms,
)
from processors.normalize import canonical, rules
from processors.normalize.records import record_value
from processors.normalize.seen import SWEEP_MARGIN_DAYS, SeenSweep, digest_of, seen_value
from wapipe import topics
from wapipe.logs import get_logger
from wapipe.settings import Settings

log = get_logger(__name__)

_DAY_MS = 86_400_000
_SEEN = "seen"


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


@dataclass(frozen=True)
class _Read:
    """A raw record read and normalized, before the dedupe decision."""

    record: Message
    headers: list[tuple[str, bytes]]
    received_at: str | None
    received_ms: int  # the raw record's timestamp (epoch ms)
    result: rules.Normalized | rules.Rejected


class NormalizeJob:
    name = "normalize"
    aligned = False  # every typed record keeps its raw partition and order
    timers: tuple[Timer, ...] = ()

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.metrics = NormalizeMetrics(registry)
        prefix = settings.topic_prefix
        self.sources = (topics.RAW.name(prefix),)
        self.tables = (Table(_SEEN, ttl_days=settings.dedupe_days + SWEEP_MARGIN_DAYS),)
        self.topic_names = {spec.suffix: spec.name(prefix) for spec in topics.NORMALIZED}
        self.deadletter = topics.DEADLETTER.name(prefix)
        self.sweeper = SeenSweep(max_age_ms=settings.dedupe_days * _DAY_MS)
        self.ahead = timedelta(seconds=settings.event_time_max_ahead_seconds)

    def process(self, batch: PartitionBatch) -> None:
        reads = [self._read(record) for record in batch.records]
        seen = batch.table(_SEEN)
        known = seen.get_many({key for read in reads for key in _keys(read.result)})
        outcomes: collections.Counter[str] = collections.Counter()  # once per batch: labels cost
        for read in reads:
            result = read.result
            if isinstance(result, rules.Rejected):
                batch.outputs.append(dead_letter(read.record, result, self.deadletter,
                                                 read.received_at))  # fmt: skip
                outcomes[f"deadletter_{result.kind.value}"] += 1
                continue
            dedupe_key = result.dedupe_key.encode()
            if known.get(dedupe_key) is not None:
                outcomes["duplicate"] += 1
                continue
            if result.id_key is not None:
                id_key = result.id_key.encode()
                earlier = known.get(id_key)
                if earlier is not None and digest_of(earlier) != result.digest:
                    self.metrics.id_reuse.inc()
                    log.info("id reused for other content", id_key=result.id_key)
                known[id_key] = first_seen = seen_value(read.received_ms, result.digest)
                seen.put(id_key, first_seen)
            known[dedupe_key] = first_seen = seen_value(read.received_ms)
            seen.put(dedupe_key, first_seen)
            occurred = result.occurred_at
            batch.send(
                self.topic_names[result.topic.suffix], result.key.encode(),
                orjson.dumps(record_value(result.record)),
                timestamp_ms=(canonical.epoch_ms(occurred) if occurred is not None
                              else record_time_ms(read.record)),
                headers=[*read.headers, ("wapipe-dedupe-key", dedupe_key)],
            )  # fmt: skip
            outcomes[result.topic.suffix] += 1
        for outcome, count in outcomes.items():
            batch.count(self.metrics.events.labels(outcome), count)
        if batch.stream_time_ms is not None:
            expired = self.sweeper.sweep(batch.partition, seen, batch.stream_time_ms)
            batch.count(self.metrics.expired, expired)

    def dead_letter(self, record: Message, error: BaseException) -> Output:
        return poison_letter(record, error, self.deadletter)

    def partitions_revoked(self, partitions: frozenset[int]) -> None:
        self.sweeper.forget(partitions)

    def _read(self, record: Message) -> _Read:
        received_at = header(record, "wapipe-received-at")
        # The raw record's timestamp: when the ingester wrote it (kept by a replay).
        received_ms = record_time_ms(record) or 0
        appended = datetime.fromtimestamp(received_ms / 1000, UTC)
        latest = rules.event_time_limit(received_at, appended, self.ahead)
        return _Read(record, headers_of(record), received_at, received_ms,
                     rules.normalize(_value(record), received_at, latest))  # fmt: skip


def _value(record: Message) -> bytes:
    return record.value() or b""


def _keys(result: rules.Normalized | rules.Rejected) -> tuple[bytes, ...]:
    if isinstance(result, rules.Rejected):
        return ()
    if result.id_key is None:
        return (result.dedupe_key.encode(),)
    return result.dedupe_key.encode(), result.id_key.encode()


def create_job(settings: Settings, registry: CollectorRegistry) -> NormalizeJob:
    return NormalizeJob(settings, registry)
