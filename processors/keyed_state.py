"""One batch of a job whose state is one record per key (templates, phones): read
states, collect the changed ones and the alerts, send both, wait for Kafka's
acknowledgement, then store the states. A crash before the store re-applies the
events to the states before them: the same states and the same alert ids again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson

from processors import runtime
from processors.alerts import Alert, alert_value

State = TypeVar("State")


@dataclass
class StateRecords(Generic[State]):
    """How a job's states are stored and published."""

    topic: runtime.Sink  # the compacted state topic
    value: Callable[[State], dict[str, object]]  # the topic's record
    event_time: Callable[[State], str | None]  # its Kafka timestamp
    dump: Callable[[State], bytes]  # table value
    load: Callable[[str, str | bytes | None], State]  # (key, table value or None)


@dataclass
class KeyedBatch(Generic[State]):
    table: Any
    records: StateRecords[State]
    alerts_topic: runtime.Sink
    alerts_sent: Any  # the job's Counter of alerts, by type
    changed: dict[str, tuple[State, Any]] = field(default_factory=dict)  # key -> (state, event)
    alerts: list[tuple[str, Alert]] = field(default_factory=list)  # (Kafka key, alert)

    def state(self, key: str, event: Any) -> State:
        """The state of `key` as this batch has it so far."""
        if key in self.changed:
            return self.changed[key][0]
        with runtime.as_current_event(event):  # the read goes to the event's partition
            return self.records.load(key, self.table.get(key))

    def update(self, key: str, before: State, after: State, event: Any) -> None:
        if after != before:
            self.changed[key] = (after, event)

    def alert(self, key: str, alerts: tuple[Alert, ...]) -> None:
        for alert in alerts:
            self.alerts.append((key, alert))
            self.alerts_sent.labels(alert.type).inc()

    async def publish_then_store(self) -> None:
        deliveries = [
            await self.records.topic.send(
                key=key.encode(), value=orjson.dumps(self.records.value(state)),
                timestamp=runtime.event_timestamp(self.records.event_time(state)),
            )
            for key, (state, _) in self.changed.items()
        ]  # fmt: skip
        for key, alert in self.alerts:
            deliveries.append(await self.alerts_topic.send(
                key=key.encode(), value=orjson.dumps(alert_value(alert)),
                timestamp=runtime.event_timestamp(alert.occurred_at),
            ))  # fmt: skip
        await asyncio.gather(*deliveries)  # acknowledged first, stored after
        for key, (state, event) in self.changed.items():
            with runtime.as_current_event(event):
                self.table[key] = self.records.dump(state).decode()
