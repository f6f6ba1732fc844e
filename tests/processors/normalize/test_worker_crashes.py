"""normalize SIGKILLed mid-stream, three times, and restarted; and a second worker
joining and leaving mid-stream (partitions moving between workers): every event is
written exactly once, read read_committed, and the sender's retries never get through.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from consumer_groups import group_state, join_leave_join
from stream_times import assert_job_stream_times

from wapipe import topics
from wapipe.exit_codes import EXIT_BATCH_FAILED

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MESSAGES = 10_000  # 3 receipts each: 30,000 events
RETRIES = 3_000  # sender retries mixed in: the same bodies again
BATCH = 200
KILLS_AT = (0.25, 0.50, 0.75)  # fractions of the output when each SIGKILL lands


# Event times near now: the event time is the records' Kafka timestamp, and the
# broker's retention would delete a segment of months-old records at its next check.
_NOW = datetime.now(UTC).replace(microsecond=0)


def _receipt(n: int) -> tuple[bytes, bytes, str]:
    umid, state = f"m-{n // 3}", ("sent", "delivered", "read")[n % 3]
    at = (_NOW - timedelta(minutes=10 - (n % 3))).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    status = {"state": state, "timestamp": at}
    if state == "delivered":
        status["detail"] = "delivered_to_recipient"
    body = {"namespace": "ChatApps", "eventType": "outbound_message_status_changed",
            "payload": {"umid": umid, "subAccountId": "acme", "channel": "whatsapp",
                        "user": {"msisdn": "+6281234567890"}, "status": status}}  # fmt: skip
    dedupe_key = f"status|{umid}|{state}|{status.get('detail', '')}"
    return umid.encode(), orjson.dumps(body), dedupe_key


async def _feed(settings, events: list[tuple[bytes, bytes, str]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        deliveries = [
            await producer.send(topics.RAW.name(settings.topic_prefix), value, key=key)
            for key, value, _ in events
        ]
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


async def test_sigkilled_three_times_loses_nothing_and_keeps_dropping_retries(
    fresh_topics, start_worker, tmp_path
):
    settings = await fresh_topics(3)
    events = [_receipt(n) for n in range(MESSAGES * 3)]
    retries = [events[n] for n in range(0, len(events), len(events) // RETRIES)][:RETRIES]
    await _feed(settings, events + retries)
    expected = {dedupe_key for _, _, dedupe_key in events}

    output = _Output(settings)
    await output.start()
    worker = start_worker("normalize", settings, WAPIPE_PROCESSOR_BATCH_SIZE=str(BATCH))
    kills = 0
    try:
        for fraction in KILLS_AT:
            await output.wait_until(lambda f=fraction: len(output.distinct) >= f * len(expected),
                                    worker, tmp_path, f"{fraction:.0%} of the events")  # fmt: skip
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            kills += 1
            worker = start_worker("normalize", settings, WAPIPE_PROCESSOR_BATCH_SIZE=str(BATCH))
        await output.wait_until(lambda: expected <= output.distinct, worker, tmp_path,
                                "every event after the last restart", timeout=240)  # fmt: skip
    finally:
        await output.stop()
    assert kills == len(KILLS_AT)

    missing = expected - output.distinct
    duplicates = sum(count - 1 for count in output.counts.values())
    retried = sum(output.counts[key] > 1 for _, _, key in retries)
    print(f"\nnormalize after {kills} SIGKILLs: {len(expected)} events, {len(missing)} missing, "
          f"{duplicates} duplicated, {RETRIES} retries fed")  # fmt: skip
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"
    assert retried == 0, f"{retried} of the sender's retries went through"
    assert duplicates == 0, f"{duplicates} records written twice"
    assert_job_stream_times(settings, "normalize")


async def test_a_second_worker_joining_and_leaving_mid_stream_loses_nothing(
    fresh_topics, start_worker, tmp_path
):
    """Scaling out and in: each join and leave is a rebalance that moves partitions
    (and their unfinished batches) between the two workers. Receipts keep arriving
    throughout, as in production, so every rebalance lands mid-stream and the first
    worker must keep processing across it."""
    settings = await fresh_topics(6)
    group = f"{settings.topic_prefix}.normalize"
    batch = {"WAPIPE_PROCESSOR_BATCH_SIZE": str(BATCH)}
    # Each worker keeps its tables in a home of its own, as on its own machine.
    second_home = {"WAPIPE_HOME": str(tmp_path / "second"), "WAPIPE_PROCESSOR_INSTANCE": "second",
                   **batch}  # fmt: skip

    feeder = _Feeder(settings)
    output = _Output(settings)
    await output.start()
    first = start_worker("normalize", settings, **batch)
    feeding = asyncio.create_task(feeder.run())
    rebalances = 0
    try:
        await output.wait_until(lambda: len(output.distinct) >= 3_000, first, tmp_path,
                                "3,000 events")  # fmt: skip
        async for members in join_leave_join(
            lambda: start_worker("normalize", settings, **second_home)
        ):
            await output.wait_until_group(group, members, first, tmp_path)
            print(f"\ngroup of {members} stable after {len(output.distinct):,} events")
            rebalances += 1
            done = len(output.distinct)
            await output.wait_until(lambda d=done: len(output.distinct) >= d + 3_000, first,
                                    tmp_path, "progress after the rebalance")  # fmt: skip
        feeder.stop()
        await feeding
        expected = feeder.fed
        await output.wait_until(lambda: expected <= output.distinct, first, tmp_path,
                                "every event", timeout=240)  # fmt: skip
    finally:
        feeder.stop()
        await feeding
        await output.stop()

    missing = expected - output.distinct
    duplicates = sum(count - 1 for count in output.counts.values())
    print(f"normalize with a second worker joining, leaving and joining: {len(expected):,} "
          f"events, {len(missing)} missing, {duplicates} duplicated")  # fmt: skip
    assert rebalances == 3
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"
    assert duplicates == 0, f"{duplicates} records written twice"
    assert not output.distinct - expected, "records of events never fed"


async def test_a_stopped_worker_cannot_commit_once_its_partitions_moved_on(
    fresh_topics, start_worker, tmp_path
):
    """A zombie: the first worker is frozen (SIGSTOP) mid-stream, as a long pause or a
    frozen VM would freeze it, with a batch and perhaps an open transaction in hand.
    Its group session expires, and a second worker takes the partitions over (once
    the broker has aborted that transaction at its timeout). Continued (SIGCONT), the
    first still holds its old batch: the group coordinator refuses its offsets (an
    old generation), so its transaction aborts and it learns its partitions were lost.
    Nothing it did is seen twice by a read_committed reader."""
    settings = await fresh_topics(3)
    batch = {"WAPIPE_PROCESSOR_BATCH_SIZE": str(BATCH)}
    second_home = {"WAPIPE_HOME": str(tmp_path / "second"), "WAPIPE_PROCESSOR_INSTANCE": "second",
                   **batch}  # fmt: skip
    log = tmp_path / "normalize.log"  # both workers' lines

    feeder = _Feeder(settings)
    output = _Output(settings)
    await output.start()
    first = start_worker("normalize", settings, **batch)
    feeding = asyncio.create_task(feeder.run())
    try:
        await output.wait_until(lambda: len(output.distinct) >= 3_000, first, tmp_path,
                                "3,000 events")  # fmt: skip
        first.send_signal(signal.SIGSTOP)
        frozen_at = len(output.distinct)
        second = start_worker("normalize", settings, **second_home)
        await output.wait_until(lambda: len(output.distinct) >= frozen_at + 6_000, second,
                                tmp_path, "the second worker taking over")  # fmt: skip
        first.send_signal(signal.SIGCONT)
        await output.wait_until(lambda: "partitions lost" in log.read_text() or
                                first.poll() is not None, second, tmp_path,
                                "the first worker learning its partitions were lost")  # fmt: skip
        woken_at = len(output.distinct)
        await output.wait_until(lambda: len(output.distinct) >= woken_at + 3_000, second,
                                tmp_path, "progress after the zombie woke")  # fmt: skip
        feeder.stop()
        await feeding
        expected = feeder.fed
        await output.wait_until(lambda: expected <= output.distinct, second, tmp_path,
                                "every event", timeout=240)  # fmt: skip
    finally:
        first.send_signal(signal.SIGCONT)
        feeder.stop()
        await feeding
        await output.stop()

    missing = expected - output.distinct
    duplicates = sum(count - 1 for count in output.counts.values())
    woken = "rejoined" if first.poll() is None else f"exited {first.returncode}"
    print(f"\nnormalize with its first worker frozen at {frozen_at:,} events and woken at "
          f"{woken_at:,}: {len(expected):,} events, {len(missing)} missing, "
          f"{duplicates} duplicated; the woken worker {woken}")  # fmt: skip
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"
    assert duplicates == 0, f"{duplicates} records written twice"
    assert not output.distinct - expected, "records of events never fed"
    assert first.poll() in (None, EXIT_BATCH_FAILED), log.read_text()[-3000:]


class _Feeder:
    """Feeds receipts to the raw topic at a steady pace until stopped (or until its
    ceiling, so that a hung test cannot fill the disk)."""

    CHUNK = 300  # receipts per send round
    PAUSE_SECONDS = 0.05  # between rounds: about 6,000 receipts/s at most
    CEILING = 600_000

    def __init__(self, settings) -> None:
        self.settings = settings
        self.fed: set[str] = set()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, linger_ms=5)
        await producer.start()
        raw = topics.RAW.name(self.settings.topic_prefix)
        try:
            n = 0
            while not self._stopping.is_set() and n < self.CEILING:
                chunk = [_receipt(i) for i in range(n, n + self.CHUNK)]
                deliveries = [await producer.send(raw, value, key=key) for key, value, _ in chunk]
                await asyncio.gather(*deliveries)
                self.fed.update(dedupe_key for _, _, dedupe_key in chunk)
                n += self.CHUNK
                await asyncio.sleep(self.PAUSE_SECONDS)  # a pace, not a wait for a condition
        finally:
            await producer.stop()


class _Output:
    """Follows the status topic, counting each dedupe key."""

    def __init__(self, settings) -> None:
        self.counts: Counter[str] = Counter()
        self._group: tuple[str, int] | None = None  # (state, members) last described
        self.bootstrap = settings.kafka_bootstrap
        self._consumer = AIOKafkaConsumer(
            topics.STATUS.name(settings.topic_prefix), bootstrap_servers=settings.kafka_bootstrap,
            isolation_level="read_committed",
            auto_offset_reset="earliest", enable_auto_commit=False,
        )  # fmt: skip

    @property
    def distinct(self) -> set[str]:
        return set(self.counts)

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def wait_until(self, condition, worker, home: Path, what: str, timeout=120.0,
                         between=None) -> None:  # fmt: skip
        deadline = time.monotonic() + timeout
        while not condition():
            if between is not None:
                await between()
            assert worker.poll() is None, (home / "normalize.log").read_text()[-2000:]
            assert time.monotonic() < deadline, f"did not reach {what} in {timeout:.0f} s"
            batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batches.values():
                self.counts.update(dict(r.headers)["wapipe-dedupe-key"].decode() for r in records)

    async def wait_until_group(self, group: str, members: int, worker, home: Path) -> None:
        """Read on until the consumer group is stable with `members` members."""

        async def describe() -> None:
            self._group = await group_state(self.bootstrap, group)

        await self.wait_until(lambda: self._group == ("Stable", members), worker, home,
                              f"a stable group of {members}", timeout=60,
                              between=describe)  # fmt: skip
