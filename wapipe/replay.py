"""`wapipe replay`: copy the raw topic into another topic prefix, to re-derive everything.

Kappa-style reprocessing: every derived topic is a function of `<prefix>.webhooks.raw`,
so a fresh pipeline run on a new prefix whose raw topic holds the same records derives
them all again (with fixed code, or new settings). This module makes that copy:

- the range is fixed at the start (per partition: `offsets_for_times(--from)` or the low
  watermark, up to `offsets_for_times(--to)` or the high watermark), so the copy ends
  even while the ingesters keep writing;
- each record keeps its partition, key, value, timestamp (CreateTime, set on produce)
  and headers, in its order: the jobs' keys, dedupe and event-time rules meet exactly
  what the old pipeline met;
- a target raw topic that holds a record, or ever did, is refused: nothing is copied twice.

The operator's procedure is in docs/operations.md ("Replaying the raw events").
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, TextIO, TypeVar

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from pydantic import TypeAdapter, ValidationError

from processors.engine.kafka import client_config
from wapipe.logs import get_logger
from wapipe.preflight import kafka_problem
from wapipe.settings import Settings
from wapipe.topics import RAW, create_topics

log = get_logger(__name__)
T = TypeVar("T")

USAGE, FAILED = 2, 1
_KAFKA_TIMEOUT_SECONDS = 10.0
_CLIENT_ID = "wapipe-replay"
# Nothing read from the source for this long: the broker is gone; say so rather than hang.
_STALL_SECONDS = 60.0
_BATCH = 5_000
_AGE = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
# The settings' own rule for a prefix, so that the two never disagree.
_PREFIX = TypeAdapter(Annotated[str, Settings.model_fields["topic_prefix"]])


class ReplayError(Exception):
    """The replay cannot go on; the message says why and what to do. `status`: exit code."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ReplayRequest:
    """`wapipe replay`'s arguments, as typed."""

    to_prefix: str
    since: str | None = None  # --from, inclusive
    until: str | None = None  # --to, exclusive
    confirmed: bool = False  # --yes


@dataclass(frozen=True)
class Slice:
    """The offsets of one source partition to copy: from `start` up to, not including, `end`."""

    partition: int
    start: int
    end: int


@dataclass(frozen=True)
class Plan:
    source: str
    target: str
    target_settings: Settings  # the current settings with the target's prefix
    slices: tuple[Slice, ...]  # one per partition, in partition order
    since_ms: int | None
    until_ms: int | None

    @property
    def total(self) -> int:
        return sum(piece.end - piece.start for piece in self.slices)

    def describe(self) -> str:
        since = "the oldest record" if self.since_ms is None else utc(self.since_ms)
        until = "the newest" if self.until_ms is None else f"before {utc(self.until_ms)}"
        return (f"replay: {self.total:,} records of {self.source} ({len(self.slices)} "
                f"partitions), from {since} to {until}, into {self.target}")  # fmt: skip


@dataclass
class Copied:
    """What the target acknowledged, counted from the delivery reports."""

    per_partition: dict[int, int]
    earliest_ms: int | None = None
    latest_ms: int | None = None
    failed: int = 0
    first_failure: str | None = None
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.per_partition.values())

    def delivered(self, error: KafkaError | None, message: Message) -> None:
        kind, timestamp = message.timestamp()
        if error is None and kind == confluent_kafka.TIMESTAMP_LOG_APPEND_TIME:
            # The broker replaced the timestamp: the jobs' event times would be wrong.
            error = KafkaError(KafkaError._INVALID_ARG, "the target topic stamps records "
                               "with the broker's clock (LogAppendTime)")  # fmt: skip
        if error is not None:
            self.failed += 1
            self.first_failure = self.first_failure or str(error)
            return
        self.per_partition[message.partition() or 0] += 1
        self.earliest_ms = min(
            timestamp, timestamp if self.earliest_ms is None else self.earliest_ms
        )
        self.latest_ms = max(timestamp, timestamp if self.latest_ms is None else self.latest_ms)


# --------------------------------------------------------------------------- the request


def point_in_time(text: str, now: datetime) -> datetime:
    """ISO 8601 (UTC when it names no offset), or an age such as `3d` or `12h`: now minus it."""
    age = _AGE.fullmatch(text.strip())
    if age:
        return now - timedelta(seconds=int(age[1]) * _UNIT_SECONDS[age[2]])
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO 8601 time (e.g. 2026-12-01T00:00:00Z) "
                         "nor an age such as 3d or 12h (s, m, h, d or w)") from None  # fmt: skip
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def window(request: ReplayRequest, now: datetime) -> tuple[int | None, int | None]:
    """--from and --to in epoch ms; ReplayError(USAGE) naming the bad one."""
    bounds: list[int | None] = []
    for option, text in (("--from", request.since), ("--to", request.until)):
        try:
            at = None if text is None else point_in_time(text, now)
        except ValueError as error:
            raise ReplayError(f"{option}: {error}", USAGE) from None
        # Never negative: offsets_for_times reads -1 and -2 as "latest" and "earliest".
        bounds.append(None if at is None else max(0, int(at.timestamp() * 1000)))
    since, until = bounds
    if since is not None and until is not None and since >= until:
        raise ReplayError(f"--from ({utc(since)}) must be before --to ({utc(until)})", USAGE)
    return since, until


def target_settings(settings: Settings, prefix: str) -> Settings:
    """The settings of the prefix to replay into; ReplayError(USAGE) when it cannot be one."""
    try:
        _PREFIX.validate_python(prefix)
    except ValidationError:
        raise ReplayError(f"--to-prefix {prefix!r} is not a topic prefix (1 to 100 letters, "
                          "digits, '.', '_' or '-')", USAGE) from None  # fmt: skip
    if prefix == settings.topic_prefix:
        raise ReplayError(f"--to-prefix {prefix!r} is the current prefix "
                          "(WAPIPE_TOPIC_PREFIX): replay into a new one", USAGE)  # fmt: skip
    return settings.model_copy(update={"topic_prefix": prefix})


# --------------------------------------------------------------------------- the plan


def plan_replay(
    client: confluent_kafka.Consumer, settings: Settings, target: Settings,
    since: int | None, until: int | None,
) -> Plan:  # fmt: skip
    """Check what can be checked before a topic is created, and fix the range."""
    source, target_topic = RAW.name(settings.topic_prefix), RAW.name(target.topic_prefix)
    count = _partitions(client, source)
    if count is None:
        raise ReplayError(f"{source} does not exist: nothing to replay (WAPIPE_TOPIC_PREFIX "
                          f"is {settings.topic_prefix!r}; `wapipe topics list` names its "
                          "topics)")  # fmt: skip
    check_target(client, source, count, target_topic, will_get=target.topic_partitions)
    # The watermarks first: whatever the ingesters write after them is not copied.
    marks = _watermarks(client, source, count)
    starts, ends = [low for low, _ in marks], [high for _, high in marks]
    if since is not None:  # at < 0: no record stamped at or after it
        starts = [high if at < 0 else max(at, low)
                  for at, (low, high) in zip(_offsets_at(client, source, count, since), marks,
                                             strict=True)]  # fmt: skip
    if until is not None:
        ends = [high if at < 0 else min(at, high)
                for at, (_, high) in zip(_offsets_at(client, source, count, until), marks,
                                         strict=True)]  # fmt: skip
    slices = tuple(Slice(p, starts[p], max(starts[p], ends[p])) for p in range(count))
    return Plan(source, target_topic, target, slices, since, until)


def check_target(
    client: confluent_kafka.Consumer, source: str, count: int, target: str, will_get: int
) -> None:
    """The target raw topic is empty and has the source's `count` of partitions, or does not
    exist yet and will get it (`will_get`: WAPIPE_TOPIC_PARTITIONS)."""
    has = _partitions(client, target)
    if has is None:
        if will_get != count:
            raise ReplayError(f"{source} has {count} partitions and {target} would get "
                              f"{will_get} (WAPIPE_TOPIC_PARTITIONS): each record must keep its "
                              f"partition; run with WAPIPE_TOPIC_PARTITIONS={count}")  # fmt: skip
        return
    marks = _watermarks(client, target, has)
    if any(high > 0 for _, high in marks):
        held = sum(high - low for low, high in marks)
        what = f"already holds {held:,} records" if held else "held records (deleted since)"
        fresh = f"{target.removesuffix('.' + RAW.suffix)}-{datetime.now(UTC):%Y%m%d%H%M}"
        raise ReplayError(f"{target} {what}: replaying into it would hand the new pipeline "
                          f"events twice; replay into a fresh prefix (e.g. --to-prefix "
                          f"{fresh})")  # fmt: skip
    if has != count:
        raise ReplayError(f"{source} has {count} partitions and {target} has {has}: each "
                          "record must keep its partition; replay into a fresh prefix with "
                          f"WAPIPE_TOPIC_PARTITIONS={count}")  # fmt: skip


def _patiently(ask: Callable[[], T | None], what: str) -> T:
    """`ask()` until it answers (not None), for a while: a topic created a moment ago may
    not have its partitions' leaders known yet. ReplayError naming `what` after that."""
    deadline = time.monotonic() + _KAFKA_TIMEOUT_SECONDS
    while True:
        try:
            answer = ask()
        except KafkaException as error:
            if time.monotonic() > deadline:
                raise ReplayError(f"Kafka does not tell {what}: {error.args[0]}") from None
        else:
            if answer is not None:
                return answer
            if time.monotonic() > deadline:
                raise ReplayError(f"Kafka does not tell {what}")
        time.sleep(0.2)


def _partitions(client: confluent_kafka.Consumer, topic: str) -> int | None:
    """The topic's partition count; None when it does not exist."""

    def ask() -> int | None:  # 0: it does not exist (no topic has 0 partitions)
        found = client.list_topics(topic, timeout=_KAFKA_TIMEOUT_SECONDS).topics.get(topic)
        error = None if found is None else found.error
        if found is None or (error and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            return 0
        return len(found.partitions) if error is None and found.partitions else None

    return _patiently(ask, f"the partitions of {topic}") or None


def _watermarks(client: confluent_kafka.Consumer, topic: str, count: int) -> list[tuple[int, int]]:
    """Per partition, the low and high watermarks (read_committed: the last stable offset)."""
    return _patiently(lambda: [client.get_watermark_offsets(TopicPartition(topic, p),
                                                            _KAFKA_TIMEOUT_SECONDS)
                               for p in range(count)], f"the offsets of {topic}")  # fmt: skip


def _offsets_at(client: confluent_kafka.Consumer, topic: str, count: int, at_ms: int) -> list[int]:
    """Per partition, the first offset stamped at or after `at_ms`; -1 where none is."""
    found = client.offsets_for_times([TopicPartition(topic, p, at_ms) for p in range(count)],
                                     _KAFKA_TIMEOUT_SECONDS)  # fmt: skip
    for tp in found:
        if tp.error is not None:
            raise ReplayError(f"Kafka finds no offset of {topic} at {utc(at_ms)}: {tp.error}")
    return [tp.offset for tp in sorted(found, key=lambda tp: tp.partition)]


# --------------------------------------------------------------------------- the copy


def copy_records(client: confluent_kafka.Consumer, plan: Plan, progress: Progress) -> Copied:
    """Copy the plan's slices, every record to its own partition, in order; what the target
    acknowledged is counted, what it did not is in `failed`."""
    copied = Copied(per_partition={piece.partition: 0 for piece in plan.slices})
    writer = confluent_kafka.Producer({
        **client_config(plan.target_settings.kafka_bootstrap, _CLIENT_ID),
        "enable.idempotence": True,  # no duplicate and no reordering on a retry
        "acks": "all",
        "compression.type": "lz4",  # webhook JSON compresses about 4x
        # Throughput, not latency: fill large batches before sending.
        "linger.ms": 50,
        "batch.size": 1_000_000,
        "queue.buffering.max.kbytes": 262_144,
    })  # fmt: skip
    reading = {piece.partition: piece for piece in plan.slices if piece.end > piece.start}
    client.assign([TopicPartition(plan.source, p, piece.start) for p, piece in reading.items()])
    started = last_read = time.monotonic()
    try:
        while reading:
            for message in client.consume(_BATCH, timeout=0.5):
                partition, offset = message.partition() or 0, message.offset() or 0
                piece, error = reading.get(partition), message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    if piece is not None and offset >= piece.end:
                        _done(client, plan.source, reading, partition)
                elif error is not None:
                    _read_error(plan.source, error)
                elif piece is not None and offset < piece.end:  # else fetched past the end
                    last_read = time.monotonic()
                    _produce(writer, plan.target, message, copied)
                    if offset + 1 >= piece.end:
                        _done(client, plan.source, reading, partition)
            writer.poll(0)  # serves the delivery reports
            # A range can end in a transaction's marker or aborted records, never handed out.
            for tp in client.position([TopicPartition(plan.source, p) for p in reading]):
                if tp.offset >= reading[tp.partition].end:
                    _done(client, plan.source, reading, tp.partition)
            if reading and time.monotonic() - last_read > _STALL_SECONDS:
                raise ReplayError(f"nothing came from {plan.source} for {_STALL_SECONDS:.0f} s "
                                  f"after {copied.total:,} records copied: is Kafka at "
                                  f"{plan.target_settings.kafka_bootstrap} still up?")  # fmt: skip
            progress.show(copied.total)
        # Bounded: librdkafka fails a record it could not deliver within message.timeout.ms.
        while writer.flush(1.0) > 0:
            progress.show(copied.total)
    finally:
        progress.finish()
    copied.seconds = time.monotonic() - started
    return copied


def _read_error(source: str, error: KafkaError) -> None:
    if error.code() == KafkaError._AUTO_OFFSET_RESET:  # auto.offset.reset=error: never skip
        raise ReplayError(f"records of {source} were deleted (retention) before they were "
                          f"copied ({error}): replay into a fresh prefix, with a later "
                          "--from")  # fmt: skip
    if error.fatal():
        raise ReplayError(f"reading {source} failed: {error}")
    # A passing error (a broker reconnecting): librdkafka retries; the stall timeout bounds it.
    log.warning("consumer error", topic=source, error=str(error))


def _produce(
    writer: confluent_kafka.Producer, topic: str, message: Message, copied: Copied
) -> None:
    kind, timestamp = message.timestamp()
    while True:
        try:
            writer.produce(
                topic, message.value(), message.key(), partition=message.partition() or 0,
                # 0 lets the producer stamp it: only a record of the old formats has none.
                timestamp=0 if kind == confluent_kafka.TIMESTAMP_NOT_AVAILABLE else timestamp,
                headers=message.headers(), on_delivery=copied.delivered,
            )  # fmt: skip
            return
        except BufferError:
            writer.poll(0.1)  # the local queue is full: let deliveries empty it


def _done(client: confluent_kafka.Consumer, source: str, reading: dict[int, Slice], p: int) -> None:
    # Paused, not unassigned: nothing more is fetched of what the ingesters write past the end.
    client.pause([TopicPartition(source, p)])
    reading.pop(p, None)


def reader(settings: Settings) -> confluent_kafka.Consumer:
    """A consumer of assigned partitions: no group joined, nothing committed."""
    return confluent_kafka.Consumer({
        **client_config(settings.kafka_bootstrap, _CLIENT_ID),
        "group.id": f"{settings.topic_prefix}.replay",  # required by the client; never joined
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        # A record deleted by retention before it was read fails the replay, not skipped.
        "auto.offset.reset": "error",
        "fetch.max.bytes": 64 << 20,
        "max.partition.fetch.bytes": 16 << 20,
        "queued.max.messages.kbytes": 65_536,
    })  # fmt: skip


class Progress:
    """A line on stderr: rewritten about every second on a terminal, else a line every 5 s
    (so that a log stays short)."""

    def __init__(self, stream: TextIO, total: int, interval: float | None = None) -> None:
        self._stream, self._total = stream, total
        self._terminal = stream.isatty()
        self._interval = interval or (1.0 if self._terminal else 5.0)
        self._started = self._shown = time.monotonic()

    def show(self, copied: int) -> None:
        now = time.monotonic()
        if now - self._shown < self._interval:
            return
        self._shown = now
        rate = copied / (now - self._started)
        eta = clock((self._total - copied) / rate) if rate > 0 else "--:--"
        line = (f"copied {copied:,} / {self._total:,} records  "
                f"{100 * copied / self._total:.1f}%  {rate:,.0f} records/s  ETA {eta}")  # fmt: skip
        self._stream.write(f"\r{line}\x1b[K" if self._terminal else f"{line}\n")
        self._stream.flush()

    def finish(self) -> None:
        if self._terminal:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


def clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{rest:02d}" if hours else f"{minutes}:{rest:02d}"


def utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


# --------------------------------------------------------------------------- the command


def run_replay(
    settings: Settings, request: ReplayRequest, *, out: TextIO | None = None,
    err: TextIO | None = None, progress_interval: float | None = None,
) -> int:  # fmt: skip
    """`wapipe replay`: check, plan, confirm, create the target's topics, copy, summarize.
    Exit status: 0 copied, 1 refused or failed, 2 bad usage."""
    out, err = out or sys.stdout, err or sys.stderr
    client: confluent_kafka.Consumer | None = None
    try:
        since, until = window(request, datetime.now(UTC))
        target = target_settings(settings, request.to_prefix)
        if not request.confirmed and not sys.stdin.isatty():
            raise ReplayError("no terminal to confirm on: pass --yes", USAGE)
        problem = kafka_problem(settings.kafka_bootstrap)
        if problem is not None:
            raise ReplayError(problem)
        client = reader(settings)
        plan = plan_replay(client, settings, target, since, until)
        print(plan.describe(), file=out, flush=True)
        if plan.total == 0:
            raise ReplayError("the range holds no records: nothing copied, no topic created")
        _confirm(request, plan, err)
        for report in asyncio.run(create_topics(target)):
            if report.problem is not None:
                print(f"warning: {report.name} {report.problem}", file=err)
        # Again, now that it exists: another replay may have created or filled it meanwhile.
        check_target(client, plan.source, len(plan.slices), plan.target, target.topic_partitions)
        copied = copy_records(client, plan, Progress(err, plan.total, progress_interval))
    except ReplayError as error:
        print(f"wapipe replay: {error}", file=err)
        return error.status
    except KafkaException as error:
        print(f"wapipe replay: Kafka at {settings.kafka_bootstrap}: {error.args[0]}", file=err)
        return FAILED
    finally:
        if client is not None:
            client.close()
    print(summary(plan, copied), file=out)
    if copied.failed:
        print(f"wapipe replay: {copied.failed:,} records were not delivered to {plan.target} "
              f"(the first: {copied.first_failure}); its copy is incomplete: replay into a "
              "fresh prefix", file=err)  # fmt: skip
        return FAILED
    print(next_steps(request.to_prefix), file=out)
    return 0


def _confirm(request: ReplayRequest, plan: Plan, err: TextIO) -> None:
    if request.confirmed:
        return
    print(f"create the topics of {request.to_prefix!r} and copy {plan.total:,} records into "
          f"{plan.target}? [y/N] ", end="", file=err, flush=True)  # fmt: skip
    if input().strip().lower() not in ("y", "yes"):
        raise ReplayError("not confirmed: nothing copied, no topic created")


def summary(plan: Plan, copied: Copied) -> str:
    rate = copied.total / copied.seconds if copied.seconds > 0 else 0.0
    lines = [f"copied {copied.total:,} records of {plan.source} into {plan.target} in "
             f"{copied.seconds:.1f} s ({rate:,.0f} records/s)"]  # fmt: skip
    lines += [f"  partition {p}: {n:,}" for p, n in sorted(copied.per_partition.items())]
    if copied.earliest_ms is not None and copied.latest_ms is not None:
        lines.append(f"  timestamps from {utc(copied.earliest_ms)} to {utc(copied.latest_ms)}")
    return "\n".join(lines)


def next_steps(prefix: str) -> str:
    return f"""
Next steps (docs/operations.md, "Replaying the raw events"):
  1. run a pipeline on the new prefix:   WAPIPE_TOPIC_PREFIX={prefix} wapipe run
     (beside a running pipeline: another WAPIPE_HOME, WAPIPE_INGEST_PORT and
     WAPIPE_PROCESSOR_WEB_PORT; or its workers: WAPIPE_TOPIC_PREFIX={prefix} wapipe process JOB)
  2. watch it catch up, until every lag is 0:   WAPIPE_TOPIC_PREFIX={prefix} wapipe status
  3. move the consumers to the {prefix}.* topics (read_committed, from the beginning),
     then retire the old prefix's topics"""
