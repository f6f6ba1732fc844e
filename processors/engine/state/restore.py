"""Bringing a table partition's store up to its changelog's end before the partition is
processed: from the store's checkpoint (a clean restart reads nothing, or only what a
crash between commit and store left), or from the start (a lost disk).

Reads read_committed, so records of aborted transactions are skipped, and waits for
a predecessor's open transaction to end (the end offset is read after the input's
committed offsets are stable: see `engine.loop`). One RocksDB write batch per fetch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import confluent_kafka

from processors.engine.state.store import Store

_FETCH_RECORDS = 10_000
_WATERMARKS_SECONDS = 10.0  # a leader that does not answer: retried (engine.loop)
_POLL_SECONDS = 0.1  # a consume waits this long at the changelog's end


@dataclass(frozen=True)
class RestoreReport:
    records: int
    seconds: float
    start: int
    end: int  # the offset restored up to (the changelog's end when done)
    left: int = 0  # records left to restore when the deadline came first

    @property
    def done(self) -> bool:
        return self.left == 0


class RestoreError(Exception):
    pass


class CheckpointAhead(RestoreError):
    """The store holds more than the changelog: the changelog was deleted and made anew.
    The store must be wiped and restored from the start."""


def restore(
    store: Store,
    consumer: confluent_kafka.Consumer,
    changelog: confluent_kafka.TopicPartition,
    progress: Callable[[int, int], None],
    timeout_seconds: float,
    deadline: float | None = None,
    fetch_records: int = _FETCH_RECORDS,
) -> RestoreReport:
    """Apply `changelog` from `store`'s checkpoint to its end; `progress(records so far,
    records left)` after every fetch. Stops early at `deadline` (time.monotonic()), the
    report saying how much is left: the store holds what was applied, up to its
    checkpoint, and a later call goes on from there. Raises RestoreError when the
    changelog stops moving for `timeout_seconds` before its end (a predecessor's
    transaction never ends, or the broker is gone)."""
    started = time.monotonic()
    low, end = consumer.get_watermark_offsets(
        changelog, timeout=min(timeout_seconds, _WATERMARKS_SECONDS), cached=False
    )
    checkpoint = store.checkpoint
    if checkpoint is not None and checkpoint > end:
        raise CheckpointAhead(f"{changelog.topic} [{changelog.partition}] ends at {end}, "
                              f"the store's checkpoint is {checkpoint}")  # fmt: skip
    start = low if checkpoint is None else max(checkpoint, low)
    if start >= end:
        return RestoreReport(0, 0.0, start, end)
    consumer.assign([confluent_kafka.TopicPartition(changelog.topic, changelog.partition, start)])
    position, applied = start, 0
    stuck_since = time.monotonic()
    try:
        while position < end:
            if position > start and deadline is not None and time.monotonic() >= deadline:
                return RestoreReport(applied, time.monotonic() - started, start, position,
                                     left=end - position)  # fmt: skip
            messages = consumer.consume(fetch_records, _POLL_SECONDS)
            writes: dict[bytes, bytes | None] = {}
            for message in messages:
                error = message.error()
                if error is None:
                    # The latest of a key wins; a tombstone (None) deletes it.
                    writes[cast(bytes, message.key())] = message.value()
                    applied += 1
                elif error.code() != confluent_kafka.KafkaError._PARTITION_EOF:
                    raise RestoreError(f"reading {changelog.topic}: {error}")
            reached = consumer.position([changelog])[0].offset
            if reached > position:
                store.apply(writes, checkpoint=reached)
                position, stuck_since = reached, time.monotonic()
                progress(applied, max(0, end - position))
            elif time.monotonic() - stuck_since > timeout_seconds:
                raise RestoreError(
                    f"{changelog.topic} [{changelog.partition}] stopped at offset {position} "
                    f"of {end} for {timeout_seconds:.0f} s"
                )
    finally:
        consumer.unassign()
    return RestoreReport(applied, time.monotonic() - started, start, end)
