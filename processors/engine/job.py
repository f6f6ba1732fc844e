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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import confluent_kafka
import orjson
from confluent_kafka import Message

from processors.engine.state.view import TableView

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Output:
    """One record a job sends; the key decides its partition (murmur2, as Java's clients)."""

    topic: str
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None  # None: the time it is produced
    headers: Headers | None = None


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


@dataclass
class PartitionBatch:
    """One partition's share of a batch: its records, its tables, what it sends."""

    topic: str
    partition: int
    records: list[Message]
    tables: dict[str, TableView]
    outputs: list[Output] = field(default_factory=list)

    def table(self, name: str) -> TableView:
        return self.tables[name]

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, *,
        timestamp_ms: int | None = None, headers: Headers | None = None,
    ) -> None:  # fmt: skip
        self.outputs.append(Output(topic, key, value, timestamp_ms, headers))

    def fork(self, records: list[Message]) -> PartitionBatch:
        """A batch over some of these records that reads this one's writes and keeps its
        own apart until `merge_into_parent` (a record retried alone after a failure)."""
        tables = {name: view.fork() for name, view in self.tables.items()}
        return PartitionBatch(self.topic, self.partition, records, tables)

    def merge_into(self, parent: PartitionBatch) -> None:
        for view in self.tables.values():
            view.merge_into_parent()
        parent.outputs.extend(self.outputs)


@dataclass(frozen=True)
class Table:
    """A table of the job: bytes to bytes, partitioned as the job's source, kept in RocksDB
    and in a compacted changelog topic."""

    name: str
    ttl_days: int | None = None  # RocksDB drops keys not written for this long


@dataclass(frozen=True)
class Timer:
    """Work that runs every `every_seconds` inside the loop, in the same transaction as
    what it sends and writes: `run(batches, now)` gets a batch without records for each
    partition of this worker whose tables are restored (partition -> its batch, whose
    tables hold this round's writes), and the wall-clock time (epoch seconds). The
    partitions are all of the worker's, so a timer may also reset gauges over them."""

    every_seconds: float
    run: Callable[[Mapping[int, PartitionBatch], float], None]


class Job(Protocol):
    name: str  # the consumer group is `<prefix>.<name>`
    sources: tuple[str, ...]  # of equal partition counts when the job has tables
    tables: tuple[Table, ...]
    timers: tuple[Timer, ...]

    def process(self, batch: PartitionBatch) -> None:
        """Handle `batch.records` (one topic partition, in offset order): send and write."""

    def dead_letter(self, record: Message, error: BaseException) -> Output:
        """The record for a source record that made `process` raise (a poison record)."""
