"""The simulator's sender: 8x8's behaviour over HTTP (retries, duplicates, order of a
template's events, credentials), against a tiny receiver and the real ingester."""

from __future__ import annotations

import asyncio
import io
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from ingest.auth import Gatekeeper, SignatureCheck
from simulator import (
    Credentials,
    Plan,
    SendOptions,
    new_timeline,
    send_timeline,
    simulate,
    timeline_bodies,
)
from simulator.sender import Stats, progress_line
from simulator.stories import Inbound
from wapipe.settings import Settings

FAST_RETRIES = (0.05, 0.05, 0.05, 0.05)
# A small story posted as fast as the rate allows: 1000 story seconds in one real second.
SMALL = Plan(seed=8, messages=30, duration=1, time_scale=1000, rate=1000)

Behaviour = Callable[[bytes, int], str]  # (body, attempt number) -> "ok", "error" or "hang"
Guard = Callable[[web.Request], Awaitable[web.Response | None]]


@dataclass
class Receiver:
    """A stand-in for the ingester that misbehaves on purpose."""

    behaviour: Behaviour
    kept: list[bytes] = field(default_factory=list)  # every body it stored (answered or not)
    answered: list[bytes] = field(default_factory=list)  # bodies answered 200, in order
    attempts: Counter[bytes] = field(default_factory=Counter)
    headers: list[dict[str, str]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # ends "hang" answers
    guard: Guard | None = None  # may answer a request first (a 401), or hold it

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.guard is not None:
            refusal = await self.guard(request)
            if refusal is not None:
                return refusal
        self.attempts[raw] += 1
        self.headers.append(dict(request.headers))
        verdict = self.behaviour(raw, self.attempts[raw])
        if verdict == "error":
            return web.json_response({"error": "unavailable"}, status=500)
        self.kept.append(raw)  # stored, as an ingester that answers too late has
        if verdict == "hang":
            await self.release.wait()  # answers only after the sender gave up waiting
            return web.json_response({"status": "accepted"})
        self.answered.append(raw)
        return web.json_response({"status": "accepted"})


@asynccontextmanager
async def receiving(
    behaviour: Behaviour, extra_routes: Callable[[web.Application], None] | None = None
) -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver(behaviour)
    app = web.Application()
    app.router.add_post("/webhooks/whatsapp", receiver.handle)
    if extra_routes is not None:
        extra_routes(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield receiver, str(server.make_url("/webhooks/whatsapp"))
    finally:
        receiver.release.set()
        await server.close()


def _fails_first(share: int, offset: int = 0) -> Callable[[bytes], bool]:
    """Picks about one body in `share` (by a hash of its bytes: the same on a retry)."""
    return lambda raw: zlib.crc32(raw) % share == offset


async def test_failed_and_slow_first_attempts_are_retried_until_all_are_acknowledged():
    errors, hangs = _fails_first(5), _fails_first(5, 1)

    def behaviour(raw: bytes, attempt: int) -> str:
        if attempt == 1 and errors(raw):
            return "error"
        if attempt == 1 and hangs(raw):
            return "hang"
        return "ok"

    timeline = new_timeline(SMALL)
    bodies = timeline_bodies(timeline)
    options = SendOptions(timeout=0.5, retry_pauses=FAST_RETRIES)
    async with receiving(behaviour) as (receiver, url):
        summary = await send_timeline(timeline, url, options=options)

    failed_first = sum(1 for raw in bodies if errors(raw))
    hung_first = sum(1 for raw in bodies if hangs(raw) and not errors(raw))
    assert failed_first > 0, "the seed must make both misbehaviours occur"
    assert hung_first > 0, "the seed must make both misbehaviours occur"
    assert (summary.events, summary.acknowledged, summary.failed) == (len(bodies), len(bodies), 0)
    assert summary.acknowledged_at.keys() == {event.key for event in timeline.events}
    assert Counter(receiver.answered) == Counter(bodies), "each body answered 200 once"
    assert summary.statuses == {500: failed_first}
    assert summary.timeouts >= hung_first  # more if the machine is very slow
    assert (
        summary.retried
        == summary.attempts - summary.events
        == sum(receiver.attempts.values()) - len(bodies)
    )
    # The receiver kept each hung body twice: the duplicates 8x8's retries cause.
    duplicates = {raw for raw, count in Counter(receiver.kept).items() if count > 1}
    assert len(duplicates) >= hung_first
    assert summary.possible_duplicates == summary.timeouts + summary.connection_errors
    assert summary.expected().events == len(bodies)


async def test_a_template_s_events_stay_in_order_when_one_is_retried():
    def behaviour(raw: bytes, attempt: int) -> str:
        # Every template event fails once: without ordering, its successor would overtake it.
        return "error" if attempt == 1 and b'"templateId"' in raw else "ok"

    timeline = new_timeline(SMALL)
    async with receiving(behaviour) as (receiver, url):
        summary = await send_timeline(timeline, url, options=SendOptions(retry_pauses=FAST_RETRIES))
    assert summary.failed == 0
    by_template: dict[str, list[str]] = {}
    for raw in receiver.answered:
        body = orjson.loads(raw)
        if body["eventType"].startswith("template_"):
            template_id = str(body["eventDetails"]["templateId"])
            by_template.setdefault(template_id, []).append(body["timestamp"])
    assert by_template
    for template_id, times in by_template.items():
        assert times == sorted(times), template_id


async def test_events_given_up_are_lost_and_left_out_of_the_expected_results():
    def behaviour(raw: bytes, attempt: int) -> str:
        return "error" if b'"inbound_message_received"' in raw else "ok"

    timeline = new_timeline(SMALL)
    async with receiving(behaviour) as (_receiver, url):
        summary = await send_timeline(timeline, url, options=SendOptions(retry_pauses=(0.01, 0.01)))
    inbound = [e.key for e in timeline.events if isinstance(e.fact, Inbound) and not e.fact.echo]
    assert summary.failed == len(inbound) > 0
    assert sorted(summary.lost) == sorted(inbound)
    assert summary.attempts == summary.events + 2 * len(inbound)
    expected = summary.expected()
    assert expected.inbound == 0
    assert expected.events == summary.events - len(inbound)


async def test_webhooks_carry_the_signature_and_authorization_the_ingester_checks():
    settings = Settings(webhook_secret="first-secret,second-secret", authorization="Bearer abc")
    gatekeeper = Gatekeeper(settings, None)
    async with receiving(lambda raw, attempt: "ok") as (receiver, url):
        summary = await simulate(settings, url, Plan(seed=3, messages=5, duration=1, rate=500,
                                                     time_scale=100))  # fmt: skip
    assert summary.acknowledged == summary.events > 0
    for raw, headers in zip(receiver.answered, receiver.headers, strict=True):
        assert gatekeeper.check_signature(raw, headers["X-8x8-Signature"]) is SignatureCheck.VALID
        assert gatekeeper.check_authorization(headers["Authorization"]).ok
        assert headers["Content-Type"] == "application/json"


async def test_oauth_tokens_are_fetched_and_fetched_again_after_a_401():
    issued: list[str] = []

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        assert (form["grant_type"], form["client_id"], form["client_secret"]) == (
            "client_credentials", "eight-by-eight", "s3cret"
        )  # fmt: skip
        issued.append(f"token-{len(issued) + 1}")
        return web.json_response({"access_token": issued[-1], "token_type": "Bearer"})

    def behaviour(raw: bytes, attempt: int) -> str:
        return "ok"

    async def refuse_the_first_token(request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") == "Bearer token-1":  # "expired"
            return web.json_response({"error": "unauthorized"}, status=401)
        return None

    settings = Settings(oauth_clients="eight-by-eight:s3cret")
    routes = lambda app: app.router.add_post("/oauth/token", token)  # noqa: E731
    async with receiving(behaviour, routes) as (receiver, url):
        receiver.guard = refuse_the_first_token
        summary = await simulate(
            settings,
            url,
            Plan(seed=3, messages=4, duration=1, rate=500, time_scale=100),
            options=SendOptions(retry_pauses=FAST_RETRIES, concurrency=1),
        )
    assert summary.failed == 0
    assert len(issued) >= 2
    assert all(h["Authorization"].startswith("Bearer token-") for h in receiver.headers)


async def test_progress_is_reported_while_posting(eventually):
    stream = io.StringIO()
    first_request = asyncio.Event()

    async def hold(request: web.Request) -> None:
        await first_request.wait()  # the run waits until a progress line was written

    async with receiving(lambda raw, attempt: "ok") as (receiver, url):
        receiver.guard = hold
        options = SendOptions(progress_interval=0.02)
        run = asyncio.create_task(
            send_timeline(new_timeline(SMALL), url, options=options, progress=stream)
        )
        await eventually(lambda: "acknowledged 0" in stream.getvalue(), 30, "a progress line")
        first_request.set()
        summary = await asyncio.wait_for(run, 60)
    assert summary.failed == 0
    assert stream.getvalue().startswith("sent ")  # not a terminal: whole lines, no \r


def test_the_progress_line_names_every_count():
    stats = Stats(
        events=100, posted=40, acknowledged=37, retried=2, failed=1, in_flight=3, waiting=2
    )
    line = progress_line(stats, elapsed=12.3, duration=60, rate=19.5)
    assert line == ("sent 40/100  acknowledged 37  retried 2  failed 1  in flight 3  waiting 2  "
                    "rate 19.5/s  00:12 / 01:00")  # fmt: skip


def test_credentials_follow_the_ingester_settings():
    assert Credentials.from_settings(Settings()) == Credentials()
    settings = Settings(webhook_secret="a,b", authorization="Basic dXNlcjpwdw==",
                        oauth_clients="id:secret")  # fmt: skip
    assert Credentials.from_settings(settings) == Credentials("a", "Basic dXNlcjpwdw==", None)
    oauth = Credentials.from_settings(Settings(oauth_clients="id:secret"))
    assert oauth.oauth_client == ("id", "secret")


@pytest.mark.kafka
async def test_every_webhook_reaches_the_raw_topic_through_the_real_ingester(
    kafka_settings, start_ingester, read_raw
):
    settings = kafka_settings.model_copy(update={"webhook_secret": (SecretStr("s3cret"),)})
    plan = Plan(seed=9, messages=40, duration=2, time_scale=500, rate=200)
    async with start_ingester(settings) as ingester:
        summary = await simulate(settings, ingester.url(), plan)
    bodies = timeline_bodies(summary.timeline)
    assert (summary.acknowledged, summary.failed) == (len(bodies), 0)
    records = await read_raw(settings, len(bodies))
    assert Counter(record.value for record in records) == Counter(bodies)
    signatures = {dict(record.headers)["wapipe-signature"] for record in records}
    assert signatures == {b"valid"}
