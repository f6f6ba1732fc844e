"""A steady-rate webhook sender for the reliability tests, and the receipt stories it sends.

`receipt_story` makes delivery receipts (sent, delivered, read, undelivered) for a
known set of umids, with event times near now, some bodies sent twice (the
sender's retries). `fold_bodies` knows what the pipeline must make of any bodies
(these, or the simulator's): each message's final `message_state` and every
funnel window, as the pure fold of the receipts and replies (normalize's rules,
then the funnel's merge), the way the funnel's kill test does.

`SteadySender` posts bodies at a fixed rate (open loop: a slow answer does not
slow the schedule, up to `concurrency` requests in flight) and records every
attempt. Like 8x8's sender it retries a request that got no 200, with backoff,
until `retry_window` seconds after its first attempt (0: never); every failed
attempt stays in `failures`, so a test can require that none happened.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import reduce
from typing import Any

import aiohttp
import orjson

from processors.funnel.state import (
    MessageState,
    merge,
    message_state_value,
    observe_receipt,
    observe_reply,
)
from processors.funnel.windows import WindowKey, add_counts, contributions, funnel_record
from processors.normalize.records import InboundMessage, Receipt
from processors.normalize.rules import Normalized, normalize

WEBHOOK_PATH = "/webhooks/whatsapp"
# Each message's receipts are spread over the stream: its `delivered` comes this many
# messages after its `sent`, its `read` as many again later.
_RECEIPT_SPREAD = 25


@dataclass(frozen=True)
class Story:
    """Bodies in send order (a retried body appears twice) and what they must yield."""

    bodies: list[bytes]
    states: dict[str, MessageState]  # umid -> the fold of its receipts
    dedupe_keys: set[str]  # one per distinct event: what the typed topics must hold

    def expected_message_states(self) -> dict[str, dict[str, object]]:
        """umid -> its final `whatsapp.message_state` record."""
        return {umid: message_state_value(state) for umid, state in self.states.items()}

    def expected_windows(self) -> dict[str, dict[str, object]]:
        """windowId -> its final `whatsapp.funnel` record: the sum of the final states'
        contributions."""
        totals: dict[WindowKey, dict[str, int]] = {}
        for state in self.states.values():
            for window, counts in contributions(state).items():
                totals[window] = add_counts(totals.get(window, {}), counts)
        return {window.encode(): funnel_record(window, counts) for window, counts in totals.items()}


def receipt_story(
    messages: int, *, prefix: str, now: datetime, seed: int = 5, retried: float = 0.05,
    outcomes: Sequence[str] = ("read", "read", "read", "read", "read", "delivered", "delivered",
                               "delivered", "sent", "undelivered"),
) -> Story:  # fmt: skip
    """Receipts of `messages` outbound messages `<prefix>-<n>`, each ending in one of
    `outcomes` (drawn at random), event times in the half hour before `now`; a share
    `retried` of the bodies is sent a second time a little later."""
    rng = random.Random(seed)
    start = now - timedelta(minutes=30)
    timeline: list[tuple[int, int, bytes]] = []  # (position, stage, body)
    for n in range(messages):
        outcome = rng.choice(outcomes)
        steps = {"read": ("sent", "delivered", "read"), "delivered": ("sent", "delivered"),
                 "sent": ("sent",), "undelivered": ("sent", "undelivered")}[outcome]  # fmt: skip
        sent_at = start + timedelta(seconds=n * 0.5)
        for stage, state in enumerate(steps):
            at = sent_at + timedelta(seconds=(0, 5, 90)[stage])
            timeline.append((n + stage * _RECEIPT_SPREAD, stage,
                             _receipt_body(f"{prefix}-{n}", n, state, at)))  # fmt: skip
    timeline.sort(key=lambda item: item[:2])
    bodies = [body for _, _, body in timeline]
    for index in sorted(rng.sample(range(len(bodies)), int(len(bodies) * retried)), reverse=True):
        bodies.insert(min(len(bodies), index + rng.randint(1, 40)), bodies[index])
    return fold_bodies(bodies)


def fold_bodies(bodies: Sequence[bytes]) -> Story:
    """What the pipeline must make of `bodies` (in any order, repeated or not): each
    receipt and reply normalized by normalize's rules and merged into its message's
    state by the funnel's; other event types count only as dedupe keys."""
    observations: dict[str, list[Any]] = {}
    dedupe_keys = set()
    for body in bodies:
        normalized = normalize(body, None)
        assert isinstance(normalized, Normalized), normalized
        dedupe_keys.add(normalized.dedupe_key)
        record = normalized.record
        if isinstance(record, Receipt):
            observations.setdefault(record.umid, []).append(observe_receipt(record))
        elif isinstance(record, InboundMessage) and (link := observe_reply(record)) is not None:
            observations.setdefault(link[0], []).append(link[1])
    states = {
        umid: reduce(merge, items, MessageState(umid=umid))
        for umid, items in sorted(observations.items())
    }
    return Story(bodies=list(bodies), states=states, dedupe_keys=dedupe_keys)


def _receipt_body(umid: str, n: int, state: str, at: datetime) -> bytes:
    status: dict[str, Any] = {"state": state, "timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
                              + "Z"}  # fmt: skip
    if state == "delivered":
        status["detail"] = "delivered_to_recipient"
    if state == "undelivered":
        status |= {"detail": "undelivered_to_recipient", "errorCode": 1022,
                   "errorMessage": "Message expired"}  # fmt: skip
    payload = {"umid": umid, "subAccountId": f"acme-{n % 3}", "channel": "whatsapp",
               "user": {"msisdn": f"+62812{n % 10_000:04d}7890"}, "status": status}  # fmt: skip
    return orjson.dumps({"namespace": "ChatApps", "eventType": "outbound_message_status_changed",
                         "payload": payload})  # fmt: skip


@dataclass(frozen=True)
class Attempt:
    index: int  # of the body in the sender's list
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    error: str | None
    at: float  # time.monotonic()


@dataclass
class SteadySender:
    """Posts `bodies` to `url` at `rate` per second; see the module's docstring."""

    url: str
    bodies: Sequence[bytes]
    rate: float
    concurrency: int = 16
    retry_window: float = 0.0
    request_timeout: float = 10.0
    headers: dict[str, str] = field(default_factory=dict)
    started: int = 0  # bodies whose first attempt has begun
    acknowledged: set[int] = field(default_factory=set)  # indexes answered 200
    given_up: set[int] = field(default_factory=set)  # indexes never answered 200
    failures: list[Attempt] = field(default_factory=list)  # every attempt without a 200
    attempts: int = 0
    began_at: float | None = None
    ended_at: float | None = None

    @property
    def done(self) -> bool:
        return len(self.acknowledged) + len(self.given_up) == len(self.bodies)

    @property
    def acknowledged_bodies(self) -> set[bytes]:
        return {self.bodies[index] for index in self.acknowledged}

    async def run(self) -> None:
        """Send every body; return when each was answered 200 or given up."""
        slots = asyncio.Semaphore(self.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self.began_at = time.monotonic()
            tasks = []
            for index in range(len(self.bodies)):
                # Open loop: the schedule does not wait for answers, only for a free slot.
                delay = self.began_at + index / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                self.started += 1
                tasks.append(asyncio.create_task(self._deliver(session, slots, index)))
            await asyncio.gather(*tasks)
        self.ended_at = time.monotonic()

    async def _deliver(
        self, session: aiohttp.ClientSession, slots: asyncio.Semaphore, index: int
    ) -> None:
        first = time.monotonic()
        backoff = 0.25
        headers = {"Content-Type": "application/json", **self.headers}
        try:
            while True:
                self.attempts += 1
                status, error = None, None
                try:
                    async with session.post(self.url, data=self.bodies[index],
                                            headers=headers) as response:  # fmt: skip
                        status = response.status
                        await response.read()
                except (aiohttp.ClientError, TimeoutError) as problem:
                    error = f"{type(problem).__name__}: {problem}"
                if status == 200:
                    self.acknowledged.add(index)
                    return
                self.failures.append(Attempt(index, status, error, time.monotonic()))
                if time.monotonic() + backoff - first > self.retry_window:
                    self.given_up.add(index)
                    return
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 2.0)
        finally:
            slots.release()

    def summary(self) -> dict[str, object]:
        took = (self.ended_at or time.monotonic()) - (self.began_at or time.monotonic())
        return {"bodies": len(self.bodies), "acknowledged": len(self.acknowledged),
                "given_up": len(self.given_up), "attempts": self.attempts,
                "failed_attempts": len(self.failures), "seconds": round(took, 1)}  # fmt: skip
