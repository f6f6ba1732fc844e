"""A pipeline's derived topics read to their end as comparable views, and the wait until
a pipeline has settled (every job caught up, nothing written any more): for tests that
compare two runs of the pipeline, e.g. a live run and its replay
(tests/reliability/test_replay_equivalence.py)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import confluent_kafka
import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from processors.alerts import WITHDRAWN
from wapipe import topics
from wapipe.settings import Settings
from wapipe.status import job_sources, read_groups

_KAFKA_TIMEOUT_SECONDS = 10.0

Json = dict[str, Any]


# --------------------------------------------------------------------------- settled


def _high_watermarks(bootstrap: str, names: Iterable[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> its high watermark, for every partition of `names` that exists:
    it moves with every record and transaction marker written."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-never-joined",
                         "enable.auto.commit": False, "log_level": 0})  # fmt: skip
    try:
        metadata = consumer.list_topics(timeout=_KAFKA_TIMEOUT_SECONDS).topics
        return {
            (name, p): consumer.get_watermark_offsets(TopicPartition(name, p),
                                                      _KAFKA_TIMEOUT_SECONDS)[1]
            for name in names if name in metadata for p in metadata[name].partitions
        }  # fmt: skip
    finally:
        consumer.close()


async def until_settled(
    settings: Settings, jobs: Iterable[str], alive: Callable[[], str | None], timeout: float,
    quiet: float = 4.0,
) -> None:  # fmt: skip
    """Wait until the pipeline of `settings` has processed everything and stopped writing:
    every job's consumer group at lag 0 on all its source topics (read_committed, what
    `wapipe status` shows), and no topic of the prefix written to, for `quiet` seconds in
    a row (timers that act on the wall clock once a partition is caught up, such as the
    end of a template's pause, run within them). Fails after `timeout` seconds, saying
    which jobs lag and which topics still moved, or at once when `alive()` names a dead
    process."""
    sources = {job: job_sources(settings, job) for job in jobs}
    names = [spec.name(settings.topic_prefix) for spec in topics.TOPICS]
    deadline = time.monotonic() + timeout
    steady_since: float | None = None
    ends: dict[tuple[str, int], int] = {}
    moved: set[str] = set()
    while True:
        dead = alive()
        assert dead is None, f"a process died before the pipeline settled: {dead}"
        groups = await asyncio.to_thread(read_groups, settings, sources)
        behind = {job: lag for job, group in groups.items()
                  if (lag := sum(p.lag for p in group.partitions))}  # fmt: skip
        now_ends = await asyncio.to_thread(_high_watermarks, settings.kafka_bootstrap, names)
        now = time.monotonic()
        moved = {topic for (topic, p), end in now_ends.items() if ends.get((topic, p)) != end}
        ends = now_ends
        if behind:
            steady_since = None
        elif moved or steady_since is None:
            steady_since = now
        elif now - steady_since >= quiet:
            return
        assert now < deadline, (
            f"{settings.topic_prefix}: not settled within {timeout:.0f} s: records behind per "
            f"job {behind or 'none'}; topics written in the last poll: {sorted(moved)}"
        )
        await asyncio.sleep(0.5)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Record:
    key: str | None
    value: Json | None  # None: a tombstone


def read_to_end(bootstrap: str, topic: str, timeout: float = 60.0) -> list[Record]:
    """Every record of `topic` (read_committed), partition by partition in offset order, up
    to its end: call it once nothing writes to the topic any more."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "unused-never-joined",
        "isolation.level": "read_committed", "enable.auto.commit": False,
        "enable.partition.eof": True, "log_level": 0,
    })  # fmt: skip
    try:
        partitions = consumer.list_topics(topic, timeout=_KAFKA_TIMEOUT_SECONDS).topics[topic]
        assert partitions.error is None, f"{topic}: {partitions.error}"
        reading = set(partitions.partitions)
        consumer.assign([TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                         for p in reading])  # fmt: skip
        records: dict[int, list[Record]] = {p: [] for p in reading}
        deadline = time.monotonic() + timeout
        while reading:
            assert time.monotonic() < deadline, (
                f"{topic}: partitions {sorted(reading)} not read to their end in {timeout:.0f} s"
            )
            for message in consumer.consume(5_000, timeout=0.5):
                error = message.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, f"{topic}: {error}"
                    reading.discard(message.partition() or 0)
                    continue
                key, value = message.key(), message.value()
                records[message.partition() or 0].append(Record(
                    None if key is None else key.decode(),
                    None if value is None else orjson.loads(value),
                ))  # fmt: skip
        return [record for p in sorted(records) for record in records[p]]
    finally:
        consumer.close()


def latest(records: Iterable[Record], identify: Callable[[Record], str]) -> dict[str, Json]:
    """identity -> the value of its last record (a tombstone deletes it)."""
    found: dict[str, Json] = {}
    for record in records:
        if record.value is None:
            if record.key is not None:
                found.pop(record.key, None)
            continue
        found[identify(record)] = record.value
    return found


def by_key(record: Record) -> str:
    assert record.key is not None, f"a record without a key: {record.value}"
    return record.key


def by_window(record: Record) -> str:
    assert record.value is not None
    return str(record.value["windowId"])


def standing_alerts(alerts: Iterable[Json]) -> dict[str, Json]:
    """alertId -> the alert, for the alerts standing: every id received minus every id a
    later alert superseded (`supersedes`) minus every id an ALERT_WITHDRAWN names
    (`details.withdrawnAlertId`, also in its `supersedes`); a withdrawal is no condition."""
    alerts = list(alerts)
    superseded = {alert_id for alert in alerts for alert_id in alert["supersedes"]}
    withdrawn = {alert["details"]["withdrawnAlertId"] for alert in alerts
                 if alert["type"] == WITHDRAWN}  # fmt: skip
    gone = superseded | withdrawn
    return {alert["alertId"]: alert for alert in alerts
            if alert["type"] != WITHDRAWN and alert["alertId"] not in gone}  # fmt: skip


@dataclass(frozen=True)
class Derived:
    """What a pipeline derived, as views two runs can be compared on: view name ->
    identity -> value."""

    views: dict[str, dict[str, Json]]
    alerts: list[Json]  # every record of `whatsapp.alerts`, in partition and offset order
    records: Counter[str]  # topic suffix -> records read
    dropped: Counter[str]  # view -> values left out of it (`read_derived`'s `drop`)


# The state topics (compacted): the last record per key.
KEYED = (topics.MESSAGE_STATE, topics.TEMPLATE_STATE, topics.PHONE_STATE,
         topics.SERVICE_WINDOWS, topics.MESSAGING_LIMITS)  # fmt: skip
# The window topics: the last record per window id.
WINDOWED = (topics.FUNNEL, topics.BILLING)


def read_derived(
    settings: Settings, left_out: Mapping[str, Iterable[str]] | None = None,
    drop: Mapping[str, Callable[[Json], bool]] | None = None,
) -> Derived:  # fmt: skip
    """Read the derived topics of `settings`' prefix to their end (the pipeline stopped):
    views (named by topic suffix) of the last record per key of the state topics and
    `messaging_limits`, per window id of `funnel` and `billing`, and the standing alerts
    by id (`alerts`). `left_out`: view -> fields left out of its values; `drop`: view ->
    which values to leave out of it altogether (counted in `Derived.dropped`)."""
    bootstrap, prefix = settings.kafka_bootstrap, settings.topic_prefix
    views: dict[str, dict[str, Json]] = {}
    records: Counter[str] = Counter()
    for spec, identify in [*((s, by_key) for s in KEYED), *((s, by_window) for s in WINDOWED)]:
        read = read_to_end(bootstrap, spec.name(prefix))
        records[spec.suffix] = len(read)
        views[spec.suffix] = latest(read, identify)
    alerts = [record.value for record in read_to_end(bootstrap, topics.ALERTS.name(prefix))
              if record.value is not None]  # fmt: skip
    records[topics.ALERTS.suffix] = len(alerts)
    views[topics.ALERTS.suffix] = standing_alerts(alerts)
    for view, fields in (left_out or {}).items():
        gone = set(fields)
        views[view] = {k: {f: v for f, v in value.items() if f not in gone}
                       for k, value in views[view].items()}  # fmt: skip
    dropped: Counter[str] = Counter()
    for view, unwanted in (drop or {}).items():
        kept = {k: value for k, value in views[view].items() if not unwanted(value)}
        dropped[view] = len(views[view]) - len(kept)
        views[view] = kept
    return Derived(views, alerts, records, dropped)


# --------------------------------------------------------------------------- comparing


def differences(
    first: Mapping[str, Json], second: Mapping[str, Json],
    names: tuple[str, str] = ("live", "replay"), show: int = 4,
) -> str | None:  # fmt: skip
    """None when equal; else what differs: counts, then a few identities of each kind with
    both values (for values both have, only the fields that differ)."""
    a, b = names
    only_first = sorted(first.keys() - second.keys())
    only_second = sorted(second.keys() - first.keys())
    changed = sorted(k for k in first.keys() & second.keys() if first[k] != second[k])
    if not (only_first or only_second or changed):
        return None
    lines = [f"{len(first)} {a}, {len(second)} {b}: {len(only_first)} only {a}, "
             f"{len(only_second)} only {b}, {len(changed)} differ"]  # fmt: skip
    lines += [f"  only {a}: {k}: {_short(first[k])}" for k in only_first[:show]]
    lines += [f"  only {b}: {k}: {_short(second[k])}" for k in only_second[:show]]
    for k in changed[:show]:
        fields = sorted(first[k].keys() | second[k].keys())
        diff = {f: (first[k].get(f), second[k].get(f)) for f in fields
                if first[k].get(f) != second[k].get(f)}  # fmt: skip
        lines.append(f"  differs: {k}: " + "; ".join(
            f"{f}: {a} {_short(x)}, {b} {_short(y)}" for f, (x, y) in diff.items()))  # fmt: skip
    return "\n".join(lines)


def _short(value: object, characters: int = 400) -> str:
    text = repr(value)
    return text if len(text) <= characters else text[: characters - 5] + " ...}"
