"""One partition batch of a job whose state is one record per key (templates, phones):
read the batch's states in one multi-get, apply the events in order, then send each
changed state once (to its compacted state topic) and every alert, and write the
states to the table. All of it commits in the batch's transaction, or none of it.

The table holds more than the topic's record (the events the state is derived from,
the alerts standing), so a state may change in the table only: its record is sent
when the record changed, so a compacted topic never gets the same record twice.
Decoding a state with its events is most of a batch's work, so the states last read or
written are kept decoded beside their stored bytes (`Decoded`), and a batch that reads
the same bytes again takes the state as it is.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import orjson

from processors.alerts import Alert, alert_value
from processors.engine.job import PartitionBatch
from processors.normalize import canonical

State = TypeVar("State")


@dataclass(frozen=True)
class StateRecords(Generic[State]):
    """How a job's states are stored and published."""

    table: str
    topic: str  # the compacted state topic
    value: Callable[[State], dict[str, object]]  # the topic's record
    event_time: Callable[[State], str | None]  # its Kafka timestamp
    load: Callable[[str, bytes | None], State]  # (key, table value or None)
    alerts_topic: str
    decoded: Decoded[State] = field(default_factory=lambda: Decoded())


class Decoded(Generic[State]):
    """The states last read or written, by key, each with the bytes it is stored as: the
    same bytes read again are the same state (states are immutable), and other bytes (a
    transaction aborted, the key's partition processed elsewhere meanwhile) are decoded.
    The least recently used go first."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.entries: OrderedDict[str, tuple[bytes, object]] = OrderedDict()

    def get(self, key: str, data: bytes, load: Callable[[str, bytes], State]) -> State:
        entry = self.entries.get(key)
        if entry is not None and entry[0] == data:
            self.entries.move_to_end(key)
            return entry[1]  # type: ignore[return-value]  # stored by remember() as a State
        state = load(key, data)
        self.remember(key, data, state)
        return state

    def remember(self, key: str, data: bytes, state: State) -> None:
        self.entries[key] = (data, state)
        self.entries.move_to_end(key)
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)


class KeyedBatch(Generic[State]):
    """The states of one partition batch's keys, as its events change them."""

    def __init__(self, batch: PartitionBatch, records: StateRecords[State], keys: Iterable[str]):
        self.batch, self.records = batch, records
        self.view = batch.table(records.table)
        stored = self.view.get_many({key.encode() for key in keys})
        self.states = {key.decode(): records.decoded.get(key.decode(), value, records.load)
                       for key, value in stored.items() if value is not None}  # fmt: skip
        # Each key's record as its topic has it (that of the state stored), to send only news.
        self.published = {key: records.value(state) for key, state in self.states.items()}
        self.changed: dict[str, State] = {}
        self.alerts: list[tuple[str, Alert]] = []

    def state(self, key: str) -> State:
        """The state of `key` as this batch has it so far."""
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = self.records.load(key, None)
            self.published[key] = self.records.value(state)
        return state

    def update(self, key: str, after: State) -> None:
        if after != self.states.get(key):
            self.states[key] = self.changed[key] = after

    def alert(self, key: str, alerts: Iterable[Alert]) -> None:
        self.alerts.extend((key, alert) for alert in alerts)

    def send(self) -> None:
        """Send the changed states and the alerts; write the states."""
        records, batch = self.records, self.batch
        for key, state in self.changed.items():
            encoded, value = key.encode(), records.value(state)
            if value != self.published.get(key):
                at = canonical.timestamp_ms(records.event_time(state))
                batch.send(records.topic, encoded, orjson.dumps(value), timestamp_ms=at)
            data = orjson.dumps(state)  # orjson writes dataclasses natively
            self.view.put(encoded, data)
            records.decoded.remember(key, data, state)
        for key, alert in self.alerts:
            batch.send(records.alerts_topic, key.encode(), orjson.dumps(alert_value(alert)),
                       timestamp_ms=canonical.timestamp_ms(alert.occurred_at))  # fmt: skip
