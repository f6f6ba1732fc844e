"""One partition batch of a job whose state is one record per key (templates, phones):
read the batch's states in one multi-get, apply the events in order, then send each
changed state once (to its compacted state topic) and every alert, and write the
states to the table. All of it commits in the batch's transaction, or none of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
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


class KeyedBatch(Generic[State]):
    """The states of one partition batch's keys, as its events change them."""

    def __init__(self, batch: PartitionBatch, records: StateRecords[State], keys: Iterable[str]):
        self.batch, self.records = batch, records
        self.view = batch.table(records.table)
        stored = self.view.get_many({key.encode() for key in keys})
        self.states = {key.decode(): records.load(key.decode(), value)
                       for key, value in stored.items()}  # fmt: skip
        self.changed: dict[str, State] = {}
        self.alerts: list[tuple[str, Alert]] = []

    def state(self, key: str) -> State:
        """The state of `key` as this batch has it so far."""
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = self.records.load(key, None)
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
            encoded = key.encode()
            batch.send(records.topic, encoded, orjson.dumps(records.value(state)),
                       timestamp_ms=canonical.timestamp_ms(records.event_time(state)))  # fmt: skip
            self.view.put(encoded, orjson.dumps(state))  # orjson writes dataclasses natively
        for key, alert in self.alerts:
            batch.send(records.alerts_topic, key.encode(), orjson.dumps(alert_value(alert)),
                       timestamp_ms=canonical.timestamp_ms(alert.occurred_at))  # fmt: skip
