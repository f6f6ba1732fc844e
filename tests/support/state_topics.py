"""Feeding typed records to a topic and following a job's state topic and alerts, for
the worker tests of the stateful jobs (templates, phones)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from stream_times import assert_job_stream_times

import schemas
from processors.normalize import canonical
from processors.normalize.records import record_value
from wapipe import topics
from wapipe.settings import Settings
from wapipe.topics import TopicSpec


async def feed(settings: Settings, spec: TopicSpec, records: Sequence[Any],
               key: Callable[[Any], str]) -> None:  # fmt: skip
    """Write normalize-style records to `spec`, keyed by `key(record)`, in order, each
    stamped with its event time as the normalize job stamps it (the jobs' stream time)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        deliveries = [
            await producer.send(spec.name(settings.topic_prefix),
                                orjson.dumps(record_value(record)), key=key(record).encode(),
                                timestamp_ms=canonical.timestamp_ms(record.occurred_at))
            for record in records
        ]  # fmt: skip
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


class StateAndAlerts:
    """Follows a state topic (latest record per key) and `whatsapp.alerts` (every
    record), validating each record against its topic's schema."""

    def __init__(self, settings: Settings, state: TopicSpec,
                 state_id: Callable[[Any, dict[str, Any]], str] | None = None) -> None:  # fmt: skip
        """`state_id(record, value)` names a state; by default its Kafka key."""
        self.state_topic = state.name(settings.topic_prefix)
        self.state_id = state_id or (lambda record, _: record.key.decode())
        self.consumer = AIOKafkaConsumer(
            self.state_topic, topics.ALERTS.name(settings.topic_prefix),
            bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest",
            isolation_level="read_committed",
            enable_auto_commit=False,
        )  # fmt: skip
        self.states: dict[str, dict[str, Any]] = {}
        self.alerts: list[dict[str, Any]] = []
        # A state record equal to its key's previous one: only a replay writes one (a job
        # sends a state only when it changed).
        self.repeated_states = 0
        self.validators = {True: schemas.validator(f"topics/{state.suffix}"),
                           False: schemas.validator("topics/alerts")}  # fmt: skip

    async def __aenter__(self) -> StateAndAlerts:
        await self.consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()

    @property
    def alert_ids(self) -> set[str]:
        return {alert["alertId"] for alert in self.alerts}

    @property
    def alert_counts(self) -> Counter[str]:
        return Counter(alert["alertId"] for alert in self.alerts)

    async def until(self, condition: Callable[[], Any], worker: Any, log: Path, what: str,
                    timeout: float = 120.0) -> None:  # fmt: skip
        """Read until `condition()` holds; fail if the worker exits or time runs out."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert worker.poll() is None, _tail(log)
            assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
            await self._read()

    async def drain(self, timeout: float = 60.0) -> None:
        """Read to the current end of both topics (after the worker has stopped)."""
        partitions = self.consumer.assignment()
        ends = await self.consumer.end_offsets(list(partitions))
        deadline = time.monotonic() + timeout
        while [tp for tp, end in ends.items() if await self.consumer.position(tp) < end]:
            assert time.monotonic() < deadline, f"could not read to the end in {timeout:.0f} s"
            await self._read()

    async def _read(self) -> None:
        for records in (await self.consumer.getmany(timeout_ms=200)).values():
            for record in records:
                value = orjson.loads(record.value)
                validator = self.validators[record.topic == self.state_topic]
                assert validator.is_valid(value), next(validator.iter_errors(value)).message
                if record.topic == self.state_topic:
                    state_id = self.state_id(record, value)
                    self.repeated_states += self.states.get(state_id) == value
                    self.states[state_id] = value
                else:
                    self.alerts.append(value)


async def run_with_sigkills(
    settings: Settings, job: str, state: TopicSpec, start_worker: Callable[..., Any], log: Path,
    expected_states: dict[str, dict[str, Any]], expected_alerts: Counter[str],
    kills_at: tuple[float, ...] = (0.25, 0.5, 0.75), **environment: str,
) -> StateAndAlerts:  # fmt: skip
    """Run `wapipe process <job>`, SIGKILL it and restart it when the given shares of
    the expected states have arrived, read until the states are the expected ones and
    every expected alert came, stop the worker and read to the end: every alert came
    exactly as often as the rules raise it, and no state record was written twice."""
    started = starts(log)
    worker = start_worker(job, settings, **environment)
    async with StateAndAlerts(settings, state) as outputs:
        for share in kills_at:
            await outputs.until(lambda s=share: len(outputs.states) >= s * len(expected_states),
                                worker, log, f"{share:.0%} of the states")  # fmt: skip
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            started = starts(log)
            worker = start_worker(job, settings, **environment)
        await outputs.until(
            lambda: outputs.states == expected_states and outputs.alert_ids >= set(expected_alerts),
            worker, log, "the exact final states and every alert",
        )  # fmt: skip
        await until_started(log, started + 1, worker)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, _tail(log)
        await outputs.drain()
    repeated_alerts = (outputs.alert_counts - expected_alerts).total()
    print(f"\n{job} after {len(kills_at)} SIGKILLs: {len(outputs.states)} states, "
          f"{len(outputs.alerts)} alerts; {outputs.repeated_states} state records and "
          f"{repeated_alerts} alerts written twice")  # fmt: skip
    assert outputs.states == expected_states
    assert outputs.alert_counts == expected_alerts, f"{repeated_alerts} alerts written twice"
    assert outputs.repeated_states == 0, f"{outputs.repeated_states} state records written twice"
    assert_job_stream_times(settings, job)
    return outputs


def starts(log: Path) -> int:
    """How many workers writing to `log` have started (logged "worker started")."""
    return log.read_text(errors="replace").count('"worker started"') if log.exists() else 0


async def until_started(log: Path, count: int, worker: Any, timeout: float = 60.0) -> None:
    """Wait until `log` says "worker started" `count` times (see `starts`): `worker`, the
    last one started, then stops on SIGTERM. The outputs can be complete before a
    restarted worker has started (its predecessor committed them before the SIGKILL),
    and a SIGTERM before its handler is installed ends it at once (exit -15)."""
    deadline = time.monotonic() + timeout
    while starts(log) < count:
        assert worker.poll() is None, _tail(log)
        assert time.monotonic() < deadline, f"{log}: not {count} starts in {timeout:.0f} s"
        await asyncio.sleep(0.1)


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]
