"""The funnel worker, SIGKILLed three times mid-run and restarted, ends with exact
message states, exact funnel windows and exact billing windows, and writes no record
twice; so does a
funnel that a second worker joins, leaves and joins again mid-run (partitions and
their tables moving between workers).

The input is a receipt story of a few thousand messages: receipts shuffled,
repeated and late (reads before deliveries, reads three days after delivery),
failures, and customers' replies. The expected state of every message is the pure
fold of its observations, and the expected windows the sum of those states'
contributions; the last `message_state` record of each umid and the last
`whatsapp.funnel` record of each window must equal them exactly. A job writes a
state or a window only when it changed, so a record equal to its key's previous one
is a record written twice (a replay).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from datetime import UTC, datetime, timedelta
from functools import reduce
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from consumer_groups import group_state, join_leave_join
from stream_times import assert_job_stream_times

import schemas
from processors.funnel.billing import BillingKey, billing_contributions, billing_record
from processors.funnel.state import (
    MessageState,
    merge,
    message_state_value,
    observe_receipt,
    observe_reply,
)
from processors.funnel.windows import WindowKey, add_counts, contributions, funnel_record
from processors.normalize.records import InboundMessage, Receipt, record_from_value, record_value
from wapipe import topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MESSAGES = 4_000
KILLS_AT = (0.25, 0.5, 0.75)  # fractions of the messages seen when each SIGKILL lands
_NOW = datetime.now(UTC).replace(microsecond=0)  # event times near now (retention)


PRICING = ("marketing", "utility", "authentication")


def _at(minutes: float) -> str:
    return (_NOW - timedelta(minutes=60 - minutes)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


_DAYS_AGO = -3 * 24 * 60  # minutes: the story's old messages, read in its last hour


def _story(
    seed: int = 7, messages: int = MESSAGES, first: int = 0
) -> tuple[list[Receipt], list[InboundMessage]]:
    """The receipts and replies of messages m-<first> to m-<first + messages - 1>."""
    rng = random.Random(seed)
    receipts, replies = [], []
    for n in range(first, first + messages):
        umid = f"m-{n}"
        base = {"umid": umid, "subAccountId": f"acme-{n % 3}", "channel": "whatsapp",
                "msisdn": "+6281234567890", "country": "ID"}  # fmt: skip
        start = _DAYS_AGO if n % 20 == 0 else 0
        steps = [("sent", None, start + 1)]
        if rng.random() < 0.1:
            steps.append(("undelivered", "undelivered_to_recipient", start + 2))
        else:
            steps.append(("delivered", "delivered_to_recipient", start + 3))
            if rng.random() < 0.6:
                steps.append(("read", None, 5 + rng.random() * 40))
        for state, detail, minute in steps:
            # The pricing category comes on the delivered receipt: billed when it comes.
            category = PRICING[n % 3] if state == "delivered" else None
            value = {**base, "state": state, "detail": detail, "occurredAt": _at(minute),
                     "errorCode": 1022 if state == "undelivered" else None,
                     "pricingCategory": category}  # fmt: skip
            receipts.append(record_from_value(Receipt, value))
        if rng.random() < 0.2:
            replies.append(record_from_value(InboundMessage, {
                "umid": f"in-{n}", "eventType": "inbound_message_received", "echo": False,
                "replyToUmid": umid, "occurredAt": _at(50), "channel": "whatsapp",
            }))  # fmt: skip
    receipts += rng.sample(receipts, len(receipts) // 10)  # retries
    rng.shuffle(receipts)
    return receipts, replies


def _expected(receipts: list[Receipt], replies: list[InboundMessage]) -> dict[str, MessageState]:
    observations: dict[str, list] = {}
    for receipt in receipts:
        observations.setdefault(receipt.umid, []).append(observe_receipt(receipt))
    for message in replies:
        link = observe_reply(message)
        assert link is not None
        observations[link[0]].append(link[1])
    return {
        umid: reduce(merge, items, MessageState(umid=umid)) for umid, items in observations.items()
    }


def _expected_windows(states: list[MessageState]) -> dict[str, dict]:
    totals: dict[WindowKey, dict[str, int]] = {}
    for state in states:
        for window, counts in contributions(state).items():
            totals[window] = add_counts(totals.get(window, {}), counts)
    return {window.encode(): funnel_record(window, counts) for window, counts in totals.items()}


def _expected_billing(states: list[MessageState]) -> dict[str, dict]:
    totals: dict[BillingKey, dict[str, int]] = {}
    for state in states:
        for window, counts in billing_contributions(state).items():
            totals[window] = add_counts(totals.get(window, {}), counts)
    return {window.encode(): billing_record(window, counts, None)
            for window, counts in totals.items()}  # fmt: skip


async def _feed(settings, receipts: list[Receipt], replies: list[InboundMessage]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        deliveries = [
            await producer.send(topic.name(settings.topic_prefix),
                                orjson.dumps(record_value(record)), key=record.umid.encode())
            for topic, records in ((topics.STATUS, receipts), (topics.INBOUND, replies))
            for record in records
        ]  # fmt: skip
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


class _Follower:
    """Reads `message_state` and `whatsapp.funnel` (each record schema-checked) and keeps
    each message's and each window's last record, against what the story expects."""

    def __init__(self, settings, receipts: list[Receipt], replies: list[InboundMessage],
                 log: Path) -> None:  # fmt: skip
        self.settings, self.log = settings, log
        self.receipts: list[Receipt] = []
        self.replies: list[InboundMessage] = []
        self.expect(receipts, replies)
        self.latest: dict[str, dict] = {}
        self.windows: dict[str, dict] = {}
        self.billing: dict[str, dict] = {}
        self.repeated = {"message_state": 0, "funnel": 0, "billing": 0}  # equal to the previous
        self.group: tuple[str, int] | None = None  # (state, members) last described
        self.state_topic = topics.MESSAGE_STATE.name(settings.topic_prefix)
        self.billing_topic = topics.BILLING.name(settings.topic_prefix)
        self.validators = {self.state_topic: schemas.validator("topics/message_state"),
                           self.billing_topic: schemas.validator("topics/billing"),
                           topics.FUNNEL.name(settings.topic_prefix):
                               schemas.validator("topics/funnel")}  # fmt: skip
        self.consumer = AIOKafkaConsumer(
            self.state_topic, topics.FUNNEL.name(settings.topic_prefix), self.billing_topic,
            bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest",
            isolation_level="read_committed",
            enable_auto_commit=False,
        )  # fmt: skip

    def expect(self, receipts: list[Receipt], replies: list[InboundMessage]) -> None:
        """Expect these receipts and replies too (fed since)."""
        self.receipts += receipts
        self.replies += replies
        self.states = _expected(self.receipts, self.replies)
        self.expected = {umid: message_state_value(state) for umid, state in self.states.items()}
        self.expected_windows = _expected_windows(list(self.states.values()))
        self.expected_billing = _expected_billing(list(self.states.values()))

    async def __aenter__(self) -> _Follower:
        await self.consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()

    def exact(self) -> bool:
        windows = {k: v for k, v in self.windows.items() if v["sent"] or v["delivered"]
                   or v["read"] or v["replied"] or v["undelivered"]}  # fmt: skip
        billing = {k: v for k, v in self.billing.items() if v["delivered"]}
        return (self.latest == self.expected and windows == self.expected_windows
                and billing == self.expected_billing)  # fmt: skip

    def differences(self) -> str:
        """How far the output is from the expected one, for a failure message."""
        states = [u for u in self.expected if self.latest.get(u) != self.expected[u]]
        windows = [w for w in self.expected_windows
                   if self.windows.get(w) != self.expected_windows[w]]  # fmt: skip
        return (f"{len(self.latest)} of {len(self.expected)} messages seen, {len(states)} "
                f"states differ, e.g. {states[:2]}; {len(windows)} windows differ, e.g. "
                f"{windows[:2]}")  # fmt: skip

    async def follow(self, condition, worker, what: str, timeout: float = 180.0,
                     between=None) -> None:  # fmt: skip
        deadline = time.monotonic() + timeout
        while not condition():
            if between is not None:
                await between()
            assert worker.poll() is None, self.log.read_text()[-2000:]
            assert time.monotonic() < deadline, (
                f"did not reach {what} in {timeout:.0f} s ({self.differences()})"
            )
            for records in (await self.consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    value = orjson.loads(record.value)
                    validator = self.validators[record.topic]
                    assert validator.is_valid(value), next(validator.iter_errors(value)).message
                    if record.topic == self.state_topic:
                        umid = record.key.decode()
                        self.repeated["message_state"] += self.latest.get(umid) == value
                        self.latest[umid] = value
                    elif record.topic == self.billing_topic:
                        self.repeated["billing"] += self.billing.get(value["windowId"]) == value
                        self.billing[value["windowId"]] = value
                    else:
                        self.repeated["funnel"] += self.windows.get(value["windowId"]) == value
                        self.windows[value["windowId"]] = value

    async def follow_until_group(self, members: int, worker) -> None:
        """Read on until the funnel's consumer group is stable with `members` members."""
        group = f"{self.settings.topic_prefix}.funnel"

        async def describe() -> None:
            self.group = await group_state(self.settings.kafka_bootstrap, group)

        await self.follow(lambda: self.group == ("Stable", members), worker,
                          f"a stable group of {members}", timeout=90, between=describe)  # fmt: skip

    def assert_exact(self, replies: list[InboundMessage]) -> None:
        latest, windows, expected = self.latest, self.windows, self.expected
        wrong = [umid for umid in expected if latest.get(umid) != expected[umid]]
        assert not wrong, f"{len(wrong)} messages end in a wrong state, e.g. {wrong[:3]}"
        reached = {value["state"] for value in latest.values()}
        assert {"read", "delivered", "undelivered"} <= reached
        assert sum(value["repliedAt"] is not None for value in latest.values()) == len(replies)
        wrong_windows = [w for w in self.expected_windows
                         if windows.get(w) != self.expected_windows[w]]  # fmt: skip
        assert not wrong_windows, f"{len(wrong_windows)} windows wrong, e.g. {wrong_windows[:3]}"
        assert sum(w["read"] for w in windows.values() if w["window"] == "1h") == sum(
            state.read_at is not None for state in self.states.values()
        )
        billing = {k: v for k, v in self.billing.items() if v["delivered"]}
        assert billing == self.expected_billing
        assert {v["pricingCategory"] for v in billing.values()} == set(PRICING)
        print(f"\nfunnel: {len(latest)} messages, {len(windows)} windows and {len(billing)} "
              f"billing windows exact; records written twice: {self.repeated}")  # fmt: skip
        assert self.repeated == {"message_state": 0, "funnel": 0, "billing": 0}


ENVIRONMENT = {"WAPIPE_PROCESSOR_BATCH_SIZE": "200", "WAPIPE_FUNNEL_WINDOW_DAYS": "4"}


async def test_message_states_and_windows_are_exact_after_three_sigkills(
    fresh_topics, start_worker, tmp_path
):
    settings = await fresh_topics(3)
    receipts, replies = _story()
    await _feed(settings, receipts, replies)
    async with _Follower(settings, receipts, replies, tmp_path / "funnel.log") as output:
        worker = start_worker("funnel", settings, **ENVIRONMENT)
        for fraction in KILLS_AT:
            await output.follow(lambda f=fraction: len(output.latest) >= f * MESSAGES, worker,
                                f"{fraction:.0%}")  # fmt: skip
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            worker = start_worker("funnel", settings, **ENVIRONMENT)
        await output.follow(output.exact, worker, "the exact final states and windows")
    output.assert_exact(replies)
    assert_job_stream_times(settings, "funnel")


async def test_a_second_worker_joining_and_leaving_mid_run_keeps_everything_exact(
    fresh_topics, start_worker, tmp_path
):
    """Scaling out and in: each join and leave moves partitions, their tables and
    unfinished batches between two workers (each with its own local state). Stories
    keep arriving throughout, so that every rebalance lands mid-stream and the first
    worker must keep processing across it."""
    settings = await fresh_topics(6)
    second_environment = {**ENVIRONMENT, "WAPIPE_HOME": str(tmp_path / "second"),
                          "WAPIPE_PROCESSOR_INSTANCE": "second"}  # fmt: skip
    rebalances = 0
    feeder = _Feeder(settings)
    async with _Follower(settings, [], [], tmp_path / "funnel.log") as output:
        first = start_worker("funnel", settings, **ENVIRONMENT)
        feeding = asyncio.create_task(feeder.run())
        try:
            await output.follow(lambda: len(output.latest) >= 1_000, first, "1,000 messages")
            async for members in join_leave_join(
                lambda: start_worker("funnel", settings, **second_environment)
            ):
                await output.follow_until_group(members, first)
                print(f"\ngroup of {members} stable after {len(output.latest):,} messages")
                rebalances += 1
                done = len(output.latest)
                await output.follow(lambda d=done: len(output.latest) >= d + 1_000, first,
                                    "progress after the rebalance")  # fmt: skip
        finally:
            feeder.stop()
            await feeding
        output.expect(feeder.receipts, feeder.replies)
        await output.follow(output.exact, first, "the exact final states and windows",
                            timeout=240)  # fmt: skip
    assert rebalances == 3
    output.assert_exact(output.replies)


class _Feeder:
    """Feeds stories of `MESSAGES_PER_STORY` new messages at a steady pace until stopped
    (or until its ceiling, so that a hung test cannot fill the disk)."""

    MESSAGES_PER_STORY = 500  # about 1,600 receipts and 100 replies
    PAUSE_SECONDS = 0.5  # between stories: about 3,000 records/s at most
    CEILING = 200_000  # messages

    def __init__(self, settings) -> None:
        self.settings = settings
        self.receipts: list[Receipt] = []
        self.replies: list[InboundMessage] = []
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        first = 0
        while not self._stopping.is_set() and first < self.CEILING:
            receipts, replies = _story(seed=first, messages=self.MESSAGES_PER_STORY, first=first)
            await _feed(self.settings, receipts, replies)
            self.receipts += receipts
            self.replies += replies
            first += self.MESSAGES_PER_STORY
            await asyncio.sleep(self.PAUSE_SECONDS)  # a pace, not a wait for a condition
