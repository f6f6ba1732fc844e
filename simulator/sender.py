"""Posts a timeline's webhooks the way 8x8's sender does, at a paced rate.

- Each webhook is posted when its story time comes (`Plan.real_offset`), never
  faster than `Plan.rate` per second (a token bucket), with at most
  `SendOptions.concurrency` requests open at once.
- It is signed as the ingester checks it (`X-8x8-Signature`: HMAC-SHA256 of the
  raw body, `ingest.auth.sign`) when a webhook secret is configured, and carries
  the configured `Authorization` value, or a bearer token fetched with the
  configured OAuth client's credentials, as 8x8's sender does.
- Like 8x8's sender it expects a 200 within 5 s and retries anything else
  (timeout, connection error, any other status) after pauses of about 1, 10, 30
  and 90 s; then it gives up and the event is lost. The pauses stay real seconds
  whatever the time scale (they are the sender's behaviour, not the story's);
  `SendOptions.retry_pauses` lets tests shorten them. A retry after a timeout
  may duplicate an event the receiver kept: counted as a possible duplicate.
- A template's or a phone number's events (`Event.group`) are posted one after
  another: each waits until the one before it was answered or given up. The
  pipeline applies those in event time and ignores an older one arriving late,
  so a retry must not let the next event overtake it. Receipts need no such
  care (the funnel takes them in any order) and are posted freely.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import TextIO
from urllib.parse import urljoin

import aiohttp

from ingest.auth import sign
from simulator.bodies import event_bytes
from simulator.expected import Expected, expected_results
from simulator.stories import Event, Timeline
from wapipe.settings import Settings

SIGNATURE_HEADER = "X-8x8-Signature"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a route, not a secret
RETRY_PAUSES = (1.0, 10.0, 30.0, 90.0)  # 8x8's documented schedule for chat messages
SENDER_TIMEOUT = 5.0  # 8x8 expects a 200 within 5 s
_USER_AGENT = "wapipe-simulator/1 (behaves like 8x8's webhook sender)"


@dataclass(frozen=True)
class SendOptions:
    concurrency: int = 32
    timeout: float = SENDER_TIMEOUT
    retry_pauses: tuple[float, ...] = RETRY_PAUSES
    progress_interval: float | None = None  # None: 1 s on a terminal, 5 s otherwise


@dataclass(frozen=True)
class Credentials:
    """What proves the sender to the ingester, from the same settings the ingester reads."""

    secret: str | None = None  # signs the body (the first of the configured secrets)
    authorization: str | None = None  # a static `Authorization` header value
    oauth_client: tuple[str, str] | None = None  # (client id, secret) for /oauth/token

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials:
        secrets = settings.webhook_secret
        static = settings.authorization
        clients = list(settings.oauth_client_secrets.items())
        return cls(
            secret=secrets[0].get_secret_value() if secrets else None,
            authorization=static[0].get_secret_value() if static else None,
            oauth_client=clients[0] if clients and not static else None,
        )


class Outcome(Enum):
    ACKNOWLEDGED = "acknowledged"
    REFUSED = "refused"  # an answer other than 200
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"


@dataclass
class Stats:
    """Running counts, read by the progress line and the summary."""

    events: int = 0  # in the timeline
    posted: int = 0  # events whose first attempt went out
    attempts: int = 0
    acknowledged: int = 0
    retried: int = 0  # attempts after the first
    failed: int = 0  # events given up after the last retry
    timeouts: int = 0
    connection_errors: int = 0
    possible_duplicates: int = 0  # retries of an attempt the receiver may have kept
    in_flight: int = 0  # requests open now
    waiting: int = 0  # events in a retry pause, or waiting for their group's previous one
    statuses: Counter[int] = field(default_factory=Counter)  # answers other than 200
    lost: list[str] = field(default_factory=list)  # keys of the events given up
    # event key -> wall-clock time (epoch seconds) of its 200: where an end-to-end
    # latency starts (bench/e2e)
    acknowledged_at: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Summary:
    """How a run went, and the timeline it posted (for `expected()`)."""

    timeline: Timeline
    url: str
    events: int
    posted: int
    acknowledged: int
    attempts: int
    retried: int
    failed: int
    timeouts: int
    connection_errors: int
    possible_duplicates: int
    statuses: dict[int, int]
    lost: tuple[str, ...]
    elapsed: float
    acknowledged_at: dict[str, float] = field(default_factory=dict)  # as in Stats

    @property
    def rate(self) -> float:
        return self.posted / self.elapsed if self.elapsed > 0 else 0.0

    def expected(self, disabling_strike: int = 3) -> Expected:
        """What the pipeline must end with: the timeline without the events given up."""
        return expected_results(self.timeline, lost=self.lost, disabling_strike=disabling_strike)

    def describe(self) -> str:
        refusals = ", ".join(
            f"{count}x HTTP {status}" for status, count in sorted(self.statuses.items())
        )
        return (
            f"{self.posted} of {self.events} webhooks posted in {self.elapsed:.1f} s "
            f"({self.rate:.1f}/s) to {self.url}: {self.acknowledged} acknowledged, "
            f"{self.retried} retries ({self.timeouts} timeouts, {self.connection_errors} "
            f"connection errors{', ' + refusals if refusals else ''}), "
            f"{self.possible_duplicates} possible duplicates, {self.failed} given up"
        )


async def send_timeline(
    timeline: Timeline,
    url: str,
    credentials: Credentials | None = None,
    options: SendOptions | None = None,
    *,
    progress: TextIO | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Summary:
    """Post every event of `timeline` to `url`; return when each was acknowledged or
    given up. Progress goes to `progress` (e.g. sys.stderr) when given."""
    credentials = credentials or Credentials()
    options = options or SendOptions()
    stats = Stats(events=len(timeline.events))
    connector = aiohttp.TCPConnector(limit=options.concurrency, ssl=ssl_context or True)
    timeout = aiohttp.ClientTimeout(total=options.timeout)
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        poster = _Poster(session, url, credentials, options, stats)
        reporter = (
            asyncio.create_task(_report(stats, progress, options, started, timeline))
            if progress is not None
            else None
        )
        try:
            await _dispatch(timeline, poster, options)
        finally:
            if reporter is not None:
                reporter.cancel()
                await asyncio.gather(reporter, return_exceptions=True)
    elapsed = time.monotonic() - started
    return Summary(
        timeline=timeline,
        url=url,
        events=stats.events,
        posted=stats.posted,
        acknowledged=stats.acknowledged,
        attempts=stats.attempts,
        retried=stats.retried,
        failed=stats.failed,
        timeouts=stats.timeouts,
        connection_errors=stats.connection_errors,
        possible_duplicates=stats.possible_duplicates,
        statuses=dict(stats.statuses),
        lost=tuple(stats.lost),
        elapsed=elapsed,
        acknowledged_at=stats.acknowledged_at,
    )


async def _dispatch(timeline: Timeline, poster: _Poster, options: SendOptions) -> None:
    loop = asyncio.get_running_loop()
    plan = timeline.plan
    start = loop.time()
    bucket = _TokenBucket(plan.rate)
    last_of_group: dict[str, asyncio.Future[None]] = {}
    tasks: set[asyncio.Task[None]] = set()
    try:
        for event in timeline.events:
            delay = start + plan.real_offset(event.post_at) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await bucket.take()
            body = event_bytes(timeline, event)
            if event.group is None:
                # Backpressure: a slow receiver slows the posting of new events down.
                await poster.slots.acquire()
                task = asyncio.create_task(poster.deliver(event, body, holding_slot=True))
            else:
                before = last_of_group.get(event.group)
                done = loop.create_future()
                last_of_group[event.group] = done
                task = asyncio.create_task(_in_turn(poster, event, body, before, done))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _in_turn(
    poster: _Poster,
    event: Event,
    body: bytes,
    before: asyncio.Future[None] | None,
    done: asyncio.Future[None],
) -> None:
    """Deliver a grouped event once the group's previous event is settled."""
    try:
        if before is not None and not before.done():
            poster.stats.waiting += 1
            try:
                await asyncio.shield(before)
            finally:
                poster.stats.waiting -= 1
        await poster.deliver(event, body, holding_slot=False)
    finally:
        if not done.done():
            done.set_result(None)


class _Poster:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        credentials: Credentials,
        options: SendOptions,
        stats: Stats,
    ) -> None:
        self.session, self.url, self.credentials = session, url, credentials
        self.pauses = options.retry_pauses
        self.stats = stats
        self.slots = asyncio.Semaphore(options.concurrency)
        self._token: str | None = None
        self._token_lock = asyncio.Lock()

    async def deliver(self, event: Event, body: bytes, *, holding_slot: bool) -> None:
        """Post `body` until acknowledged, retrying after each pause; then give up."""
        stats = self.stats
        stats.posted += 1
        previous: Outcome | None = None
        for attempt, pause in enumerate((0.0, *self.pauses)):
            if attempt:
                stats.waiting += 1
                try:
                    await asyncio.sleep(pause)
                finally:
                    stats.waiting -= 1
                stats.retried += 1
                if previous in (Outcome.TIMEOUT, Outcome.CONNECTION_ERROR):
                    stats.possible_duplicates += 1
            if not (holding_slot and attempt == 0):
                await self.slots.acquire()
            try:
                previous = await self._attempt(body)
            finally:
                self.slots.release()
            if previous is Outcome.ACKNOWLEDGED:
                stats.acknowledged += 1
                stats.acknowledged_at[event.key] = time.time()
                return
        stats.failed += 1
        stats.lost.append(event.key)

    async def _attempt(self, body: bytes) -> Outcome:
        stats = self.stats
        stats.attempts += 1
        stats.in_flight += 1
        try:
            headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT}
            if self.credentials.secret is not None:
                headers[SIGNATURE_HEADER] = sign(self.credentials.secret, body)
            authorization = await self._authorization()
            if authorization is not None:
                headers["Authorization"] = authorization
            async with self.session.post(self.url, data=body, headers=headers) as response:
                await response.read()
                if response.status == 200:
                    return Outcome.ACKNOWLEDGED
                stats.statuses[response.status] += 1
                if response.status == 401:
                    self._token = None  # expired or revoked: fetch a new one next time
                return Outcome.REFUSED
        except TimeoutError:
            stats.timeouts += 1
            return Outcome.TIMEOUT
        except aiohttp.ClientError:
            stats.connection_errors += 1
            return Outcome.CONNECTION_ERROR
        finally:
            stats.in_flight -= 1

    async def _authorization(self) -> str | None:
        if self.credentials.authorization is not None:
            return self.credentials.authorization
        if self.credentials.oauth_client is None:
            return None
        async with self._token_lock:
            if self._token is None:
                client_id, secret = self.credentials.oauth_client
                form = {
                    "grant_type": "client_credentials",
                    "client_id": client_id,
                    "client_secret": secret,
                }
                async with self.session.post(urljoin(self.url, TOKEN_PATH), data=form) as answer:
                    if answer.status != 200:
                        return None  # the webhook is then refused (401) and retried
                    self._token = str((await answer.json())["access_token"])
            return f"Bearer {self._token}"


class _TokenBucket:
    """At most `rate` takes per second, with bursts of a tenth of a second's worth
    so that a dispatcher that fell behind catches up without exceeding the rate."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate / 10)
        self.tokens = self.capacity
        self.updated: float | None = None

    async def take(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.updated is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            wait = (1 - self.tokens) / self.rate
            await asyncio.sleep(wait)
            self.updated = loop.time()
            self.tokens = 1.0
        self.tokens -= 1


# --- progress ------------------------------------------------------------------------------------
def progress_line(stats: Stats, elapsed: float, duration: float, rate: float) -> str:
    """One line: what was sent and answered so far, and the current post rate."""
    return (
        f"sent {stats.posted}/{stats.events}  acknowledged {stats.acknowledged}  "
        f"retried {stats.retried}  failed {stats.failed}  in flight {stats.in_flight}  "
        f"waiting {stats.waiting}  rate {rate:.1f}/s  {_clock(elapsed)} / {_clock(duration)}"
    )


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes:02d}:{rest:02d}"


async def _report(
    stats: Stats, stream: TextIO, options: SendOptions, started: float, timeline: Timeline
) -> None:
    """Rewrite one line about every second on a terminal; else a line every 5 s, so
    that logs stay short."""
    terminal = stream.isatty()
    interval = options.progress_interval or (1.0 if terminal else 5.0)
    posted, at = 0, time.monotonic()
    try:
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            rate = (stats.posted - posted) / (now - at) if now > at else 0.0
            posted, at = stats.posted, now
            line = progress_line(stats, now - started, timeline.plan.duration, rate)
            stream.write(f"\r{line}\x1b[K" if terminal else f"{line}\n")
            stream.flush()
    finally:
        if terminal:
            stream.write("\r\x1b[K")
            stream.flush()
