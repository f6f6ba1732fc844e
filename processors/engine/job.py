"""What a job is to the engine: its source topics, its tables, its timers, and a
function from one partition's records (with a view of that partition's tables) to
outputs and table writes. The engine knows nothing else of any job.

A job's `process` sees one `PartitionBatch`: the records of one source partition in
offset order, the tables of that partition, and `send` for its outputs. Tables are
partitioned as the sources: partition p of every table goes with partition p of
every source (co-partitioned: a key must be in the same partition of each topic it
is read from, as murmur2 on the same key and partition count gives), and the
records of all of them see the same state within a round. Whatever it
sends and writes commits in the batch's Kafka transaction, with the input offsets, or
not at all; a job never waits for Kafka and never needs to be idempotent towards a
replay (a replay only follows an abort, which left no trace downstream).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import confluent_kafka
import orjson
from confluent_kafka import Message

from processors.engine.state.view import TableView

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Output:
    """One record a job sends; the key decides its partition (murmur2, as Java's clients),
    or it goes to every partition of the topic (`PartitionBatch.broadcast`)."""

    topic: str
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None  # None: the time it is produced
    headers: Headers | None = None
    every_partition: bool = False


def origin(record: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed record (always set on one)."""
    return cast(str, record.topic()), cast(int, record.partition()), cast(int, record.offset())


def headers_of(record: Message) -> Headers:
    """A consumed record's headers: a list of (name, bytes), empty when it has none."""
    return cast(Headers, record.headers() or [])


def header(record: Message, name: str) -> str | None:
    """A header's value as text (the last one of that name), None when absent."""
    found = None
    for key, value in headers_of(record):
        if key == name:
            found = value.decode(errors="replace")
    return found


def key_text(record: Message) -> str:
    """A consumed record's key as text ("" when it has none)."""
    return (record.key() or b"").decode()


def json_value(record: Message) -> dict[str, Any]:
    """A consumed record's value, a JSON object (as every job's topics hold)."""
    value: dict[str, Any] = orjson.loads(record.value() or b"")
    return value


def record_time_ms(record: Message) -> int | None:
    """A source record's Kafka timestamp (epoch ms), None when it has none."""
    kind, at = record.timestamp()
    return at if kind != confluent_kafka.TIMESTAMP_NOT_AVAILABLE and at >= 0 else None


def running_stream_times(first_ms: int | None, records: Iterable[Message]) -> list[int | None]:
    """The stream time (epoch ms) at each record, from `first_ms` before them: the
    highest record timestamp up to and including it."""
    latest, times = first_ms, []
    for record in records:
        at = record_time_ms(record)
        if at is not None and (latest is None or at > latest):
            latest = at
        times.append(latest)
    return times


class Countable(Protocol):
    """A Prometheus counter, or one of its labelled children."""

    def inc(self, amount: float = 1) -> None: ...


@dataclass
class PartitionBatch:
    """One partition's share of a batch: its records, its tables, what it sends, and the
    stream time of its source partition (`processors.engine.stream_time`): the highest
    event time of its records so far, this batch's included (epoch ms; None before any
    record with a timestamp). Rules decide with it, never with the wall clock.
    `source_times` holds the stream time of each source's partition of this number, for
    a rule that follows another hop's clock; in a wall-clock timer's batches,
    `read_to_end` names the sources whose partition of this number has been read to its
    end, and `caught_up` says whether all of them have."""

    topic: str
    partition: int
    records: list[Message]
    tables: dict[str, TableView]
    stream_time_ms: int | None = None
    source_times: Mapping[str, int] = field(default_factory=dict)
    caught_up: bool = False
    first_stream_time_ms: int | None = None  # the source partition's, before these records
    read_to_end: frozenset[str] = frozenset()
    outputs: list[Output] = field(default_factory=list)
    counts: list[tuple[Countable, float]] = field(default_factory=list)

    @property
    def stream_time(self) -> datetime | None:
        return _datetime(self.stream_time_ms)

    def record_stream_times(self) -> list[datetime | None]:
        """The stream time at each record, in order: the highest event time up to and
        including it (Kafka Streams' stream time as each record is processed). A rule
        that decides per record with it decides alike however the records are batched."""
        times = running_stream_times(self.first_stream_time_ms, self.records)
        return [_datetime(at) for at in times]

    def stream_time_of(self, topic: str) -> datetime | None:
        """The stream time of `topic`'s partition of this number (None before any record)."""
        return _datetime(self.source_times.get(topic))

    def table(self, name: str) -> TableView:
        return self.tables[name]

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, *,
        timestamp_ms: int | None = None, headers: Headers | None = None,
    ) -> None:  # fmt: skip
        """Send a record; without `timestamp_ms`, it is stamped with the stream time (as
        Kafka Streams stamps a punctuator's records), so that a replay stamps it alike."""
        at = self.stream_time_ms if timestamp_ms is None else timestamp_ms
        self.outputs.append(Output(topic, key, value, at, headers))

    def broadcast(self, topic: str, key: bytes, value: bytes, *, timestamp_ms: int) -> None:
        """Send a record to every partition of `topic`, after what this batch sent there:
        a hop's progress, which its readers need on each partition (Flink broadcasts
        its watermarks downstream alike)."""
        self.outputs.append(Output(topic, key, value, timestamp_ms, every_partition=True))

    def count(self, counter: Countable, amount: float = 1) -> None:
        """Count `amount` on `counter` once the batch commits: a batch processed again
        (after an abort, or record by record around a poison record) counts once."""
        if amount:
            self.counts.append((counter, amount))

    def fork(self, records: list[Message]) -> PartitionBatch:
        """A batch over some of these records that reads this one's writes and keeps its
        own apart until `merge_into_parent` (a record retried alone after a failure)."""
        tables = {name: view.fork() for name, view in self.tables.items()}
        return replace(self, records=records, tables=tables, outputs=[], counts=[])

    def merge_into(self, parent: PartitionBatch) -> None:
        for view in self.tables.values():
            view.merge_into_parent()
        parent.outputs.extend(self.outputs)
        parent.counts.extend(self.counts)


@dataclass(frozen=True)
class Table:
    """A table of the job: bytes to bytes, partitioned as the job's source, kept in RocksDB
    and in a compacted changelog topic."""

    name: str
    ttl_days: int | None = None  # RocksDB drops keys not written for this long


@dataclass(frozen=True)
class StreamTimer:
    """Work that decides with time (a window's finality, a retention horizon, a pause's
    end), run as stream time advances, in the same transaction as what it sends and
    writes: `run(batches)` gets a batch without records for each partition of this
    worker whose stream time (that of `source`, the job's first source by default)
    has moved `every_seconds` past the timer's last run there, or past the first
    stream time this worker saw there, with that stream time. Idle partitions do not
    run it: stream time moves only with records. What it does must follow from the
    state and the stream time alone: a restarted worker runs it at other points."""

    every_seconds: float
    run: Callable[[Mapping[int, PartitionBatch]], None]
    source: str | None = None


@dataclass(frozen=True)
class WallClockTimer:
    """Work that describes the present (gauges, a live view), run every `every_seconds`
    of the wall clock, in the same transaction as what it sends and writes: `run(batches,
    now)` gets a batch without records for every partition of this worker whose tables
    are restored (so it may also reset gauges over them all), and the wall-clock time.
    It must not decide an id, a count or a window's content: those follow from events.
    It may decide *when* a partition that is `caught_up` (every record read) emits what
    its events already imply (a pause's end whose time has come): a replay, still
    reading, leaves that to stream time until it has caught up too."""

    every_seconds: float
    run: Callable[[Mapping[int, PartitionBatch], datetime], None]


Timer = StreamTimer | WallClockTimer


def _datetime(epoch_ms: int | None) -> datetime | None:
    return None if epoch_ms is None else datetime.fromtimestamp(epoch_ms / 1000, UTC)


class Job(Protocol):
    name: str  # the consumer group is `<prefix>.<name>`
    sources: tuple[str, ...]  # of equal partition counts when the job has tables
    tables: tuple[Table, ...]
    timers: tuple[Timer, ...]
    # Whether the engine reads the sources in step (`alignment`): for a job that re-keys
    # records to a topic whose reader decides with time; reading in step costs a job that
    # only keeps each source partition's own order (its batches shrink at a backlog).
    aligned: bool

    def process(self, batch: PartitionBatch) -> None:
        """Handle `batch.records` (one topic partition, in offset order): send and write."""

    def dead_letter(self, record: Message, error: BaseException) -> Output:
        """The record for a source record that made `process` raise (a poison record)."""

    def partitions_revoked(self, partitions: frozenset[int]) -> None:
        """These partitions (numbers) left this worker: drop what is kept of them in
        memory (cursors, decoded states, gauges). Their tables are closed by the engine."""
