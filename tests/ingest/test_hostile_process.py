"""`wapipe ingest` as a real process under hostile load, fuzzed from its OpenAPI document.

One process serves the whole module (in file order): schemathesis generates valid and
invalid requests for every documented operation from the served `/openapi.json` and
checks each answer against the document; then 100,000-deep nesting, bodies at and
over the limit, bursts of parallel large bodies and slowloris connections. After all
that the process must still be healthy and accept a normal webhook, its resident
memory must have stayed within a bound, and the normalize worker, run over everything
the fuzzing left on the raw topic, must have put only schema-valid records on the
typed topics and everything else on the dead letters, each repeated event once.

The process is configured like a careful production ingester: a static
`Authorization` value, an OAuth client, a signature secret (every accepted body below
is signed), `X-Forwarded-For` believed from loopback (so fuzzed values of it reach the
address handling), and a 2 s client timeout.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import requests
import schemathesis
import schemathesis_compat
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from hostile_bodies import webhook_variants
from hypothesis import HealthCheck, given, settings
from ingester_process import IngesterProcess, run_ingester
from schemathesis import GenerationMode

import schemas
from ingest import openapi
from ingest.app import TOKEN_PATH, WEBHOOK_PATH
from ingest.auth import sign
from processors.normalize.rules import Normalized, event_time_limit, normalize
from wapipe import topics
from wapipe.local_kafka import free_port
from wapipe.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
schemathesis_compat.install()

STATIC = "Bearer fuzz-static-token"
SECRET = "fuzz-secret"
CLIENT_ID, CLIENT_SECRET = "fuzz-client", "fuzz-client-secret"
CLIENT_TIMEOUT = 2.0
LIMIT = 262_144  # the default WAPIPE_MAX_BODY_BYTES
TYPED = (topics.INBOUND, topics.STATUS, topics.TEMPLATE, topics.PHONE, topics.ACCOUNT)
# Fuzz budgets: examples per operation and mode (the webhook gets the most).
POSITIVE_EXAMPLES = {WEBHOOK_PATH: 150, TOKEN_PATH: 40}
NEGATIVE_EXAMPLES = {WEBHOOK_PATH: 150, TOKEN_PATH: 40}
OTHER_EXAMPLES = 10
# Memory: the bound on growth of the resident set over the warmed-up baseline. The
# hostile phase holds at most BURST large bodies at once (BURST x 256 KiB = 8 MiB) plus
# their JSON parse; allocator arenas keep some of that, and librdkafka's buffers hold
# what awaits acknowledgement. 64 MiB is well above that and far below what a leak of
# the hostile bodies (thousands of requests, over 150 MB sent) would leave behind.
BURST = 32
RSS_GROWTH_BOUND_KIB = 64 * 1024

RESULTS: Counter[str] = Counter()  # operation, mode and status of every fuzz case, for -s


@pytest.fixture(scope="module")
async def fuzz_settings(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.whatsapp",
        topic_partitions=1,
        spool_dir=tmp_path_factory.mktemp("fuzz-spool"),
        log_format="console",
    )
    await topics.create_topics(settings)
    return settings


class Ingester:
    """The process, its warmed-up baseline memory, and what it answered 200."""

    def __init__(self, process: IngesterProcess) -> None:
        self.process = process
        self.baseline_rss_kib = 0
        self.peak_rss_kib = 0
        self.accepted: list[bytes] = []
        self._lock = threading.Lock()

    def post(self, body: bytes, **headers: str) -> int:
        sent = {"Content-Type": "application/json", "Authorization": STATIC,
                "X-8x8-Signature": sign(SECRET, body), **headers}  # fmt: skip
        status, answer = self.process.request("POST", WEBHOOK_PATH, body, sent)
        assert status < 500, f"{status} for {body[:200]!r}: {answer[:300]!r}"
        if status == 200:
            self.record(body)
        return status

    def record(self, body: bytes) -> None:
        with self._lock:
            self.accepted.append(body)

    def sample_rss(self) -> int:
        rss = self.process.rss_kib()
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        return rss


@pytest.fixture(scope="module")
def ingester(fuzz_settings: Settings, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Ingester]:  # fmt: skip
    directory = tmp_path_factory.mktemp("fuzz-ingest")
    with run_ingester(
        fuzz_settings, free_port(), directory,
        WAPIPE_AUTHORIZATION=STATIC, WAPIPE_OAUTH_CLIENTS=f"{CLIENT_ID}:{CLIENT_SECRET}",
        WAPIPE_WEBHOOK_SECRET=SECRET, WAPIPE_TRUSTED_PROXIES="127.0.0.0/8",
        WAPIPE_CLIENT_TIMEOUT_SECONDS=str(CLIENT_TIMEOUT), WAPIPE_LOG_LEVEL="warning",
    ) as process:  # fmt: skip
        ingester = Ingester(process)
        # Warm up (first requests compile validators, fill the allocator's pools, start
        # librdkafka's batches): a baseline taken before would count that as growth.
        with ThreadPoolExecutor(BURST) as pool:
            bodies = [_padded(LIMIT // 2, f"warm-{n}") for n in range(4 * BURST)]
            assert set(pool.map(ingester.post, bodies)) == {200}
        ingester.baseline_rss_kib = ingester.sample_rss()
        yield ingester


def _padded(size: int, event_id: str) -> bytes:
    head = b'{"eventId": "%s", "pad": "' % event_id.encode()
    return head + b"x" * (size - len(head) - 2) + b'"}'


# --- schemathesis: every operation, valid and invalid data -------------------------------


def _schemathesis_config(mode: str, examples: dict[str, int]) -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        # Credentials are the sender's (see _call_and_validate), not generated: generated
        # ones would only ever be wrong, and so every invalid request a 401.
        "generation": {"mode": mode, "max-examples": OTHER_EXAMPLES, "database": "none",
                       "with-security-parameters": False},
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        "checks": {
            # No 5xx; 503 only where documented (status_code_conformance checks that).
            "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]},
            "negative_data_rejection": {
                "expected-statuses": ["400", "401", "403", "404", "405", "408", "413", "415"]
            },
        },
        "operations": [
            {"include-path": path, "generation": {"max-examples": count}}
            for path, count in examples.items()
        ],
    })  # fmt: skip


def _negative_document() -> dict[str, Any]:
    """The operations that take input (the GET ones take none: nothing to make invalid),
    with `WebhookBody`'s documentation-only `anyOf` taken out, which leaves it equal in
    meaning (`anyOf: [known shapes, any object]` is any object): negating the known
    shapes' if/then tree costs hypothesis-jsonschema seconds per example."""
    document = openapi.document()
    document["paths"] = {path: item for path, item in document["paths"].items() if "post" in item}
    del document["components"]["schemas"]["WebhookBody"]["anyOf"]
    return document


# The file the process serves (test_openapi.py: byte for byte). Loaded at import: the
# lazy, fixture-based loader of schemathesis 4.23 does not run under pytest 9.2.
POSITIVE = schemathesis.openapi.from_path(
    openapi.DOCUMENT_PATH, config=_schemathesis_config("positive", POSITIVE_EXAMPLES)
)
NEGATIVE = schemathesis.openapi.from_dict(
    _negative_document(), config=_schemathesis_config("negative", NEGATIVE_EXAMPLES)
)


def _call_and_validate(case: Any, ingester: Ingester) -> None:
    """Send `case` with the credentials a real sender has (a signature of the very bytes
    sent), except where the case made them invalid on purpose; then check the answer."""
    mode = case.meta.generation.mode if case.meta else GenerationMode.POSITIVE
    mutated = {m.parameter.lower() for m in getattr(case.meta.phase.data, "mutations", ())
               if m.parameter} if case.meta else set()  # fmt: skip
    kwargs = case.as_transport_kwargs(base_url=ingester.process.base_url)
    headers = kwargs["headers"]

    def put(name: str, value: str) -> None:
        if name.lower() not in mutated:
            headers[name] = value

    if case.operation.path == WEBHOOK_PATH:
        put("Authorization", STATIC)
        if "json" in kwargs:  # serialize here, so that the signature covers what is sent
            kwargs["data"] = json.dumps(kwargs.pop("json"), allow_nan=False).encode()
        data = kwargs.get("data") or b""
        kwargs["data"] = data.encode() if isinstance(data, str) else data
        put("X-8x8-Signature", sign(SECRET, kwargs["data"]))
    elif case.operation.path == TOKEN_PATH and mode.is_positive and isinstance(case.body, dict):
        # Valid data deserves valid credentials: the client's own, in the form.
        headers.pop("Authorization", None)
        kwargs["data"] = {**case.body, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    response = requests.request(**kwargs, timeout=30)
    RESULTS[f"{case.operation.label} {mode.value} {response.status_code}"] += 1
    if case.operation.path == WEBHOOK_PATH and response.status_code == 200:
        ingester.record(kwargs["data"])
    case.validate_response(response, headers=headers, transport_kwargs=kwargs)


@POSITIVE.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_schemathesis_valid_requests(case, ingester):
    _call_and_validate(case, ingester)


@NEGATIVE.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_schemathesis_invalid_requests(case, ingester):
    _call_and_validate(case, ingester)


def test_the_fuzzing_reached_every_answer_that_matters():
    if not RESULTS:
        pytest.skip("run with the schemathesis tests above")
    print("\nschemathesis cases by operation, mode and status:")
    for line, count in sorted(RESULTS.items()):
        print(f"  {count:5d}  {line}")
    statuses = {line.rsplit(" ", 2)[0] + " " + line.rsplit(" ", 1)[1] for line in RESULTS}
    for expected in (f"POST {WEBHOOK_PATH} 200", f"POST {WEBHOOK_PATH} 400",
                     f"POST {TOKEN_PATH} 200", f"POST {TOKEN_PATH} 400"):  # fmt: skip
        assert expected in statuses, f"no {expected} among {sorted(statuses)}"


# --- more hostile load ------------------------------------------------------------------


def test_huge_nesting_bodies_and_bursts(ingester):
    deep = b"[" * 100_000 + b"]" * 100_000  # under the 256 KiB limit: the parser refuses
    for body in (deep, b'{"a":' * 40_000 + b"1" + b"}" * 40_000):
        assert len(body) <= LIMIT
        assert ingester.post(body) == 400
    assert ingester.post(_padded(LIMIT, "at-limit")) == 200
    assert ingester.post(_padded(LIMIT + 1, "over-limit")) == 413
    huge = {"Content-Length": str(10**12)}
    assert ingester.process.request("POST", WEBHOOK_PATH, b"", {
        "Content-Type": "application/json", "Authorization": STATIC, **huge})[0] == 413  # fmt: skip

    # Bursts of parallel large bodies, valid and not, wrong signatures among them.
    def one(n: int) -> int:
        if n % 4 == 3:
            return ingester.post(_padded(LIMIT, f"burst-{n}"), **{"X-8x8-Signature": "0" * 64})
        if n % 4 == 2:
            return ingester.post(b'{"pad": "' + b"\xff" * (LIMIT - 20) + b'"}')
        return ingester.post(_padded(LIMIT - n, f"burst-{n}"))

    with ThreadPoolExecutor(BURST) as pool:
        for round_ in range(5):
            statuses = Counter(pool.map(one, range(round_ * 100, round_ * 100 + 100)))
            ingester.sample_rss()
            assert set(statuses) == {200, 400, 401}, statuses


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=webhook_variants())
def test_near_misses_of_the_known_shapes(ingester, body):
    assert ingester.post(orjson.dumps(body)) == 200


def test_replays_of_a_signed_body_are_accepted(ingester):
    body = json.dumps({
        "namespace": "ChatApps", "eventType": "outbound_message_status_changed",
        "payload": {"umid": "replayed-umid", "subAccountId": "acme", "channel": "whatsapp",
                    "user": {"msisdn": "+6281234567890"},
                    "status": {"state": "delivered", "timestamp": _now_iso()}},
    }).encode()  # fmt: skip
    assert [ingester.post(body) for _ in range(3)] == [200, 200, 200]


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def test_slowloris_connections_are_closed_while_others_are_served(ingester):
    body = _padded(1000, "slow-body")
    head = (f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: {STATIC}\r\nX-8x8-Signature: {sign(SECRET, body)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    # Half send their headers byte by byte, half their body: neither ever finishes.
    clients = [_SlowClient(ingester.process, head + body, len(head) + 10) if n % 2
               else _SlowClient(ingester.process, head, 10) for n in range(20)]  # fmt: skip
    assert ingester.post(b'{"eventId": "while-slowloris"}') == 200  # others are served
    give_up = CLIENT_TIMEOUT * 15
    deadline = time.monotonic() + give_up
    while any(c.open for c in clients):
        assert time.monotonic() < deadline, (
            f"{sum(c.open for c in clients)} slow connections still open after {give_up:.0f} s "
            f"(client timeout {CLIENT_TIMEOUT} s)"
        )
        waiting = [c.sock for c in clients if c.open]
        readable, _, _ = select.select(waiting, [], [], 0.5)  # an answer, a close, or pace on
        for client in clients:
            if client.open:
                client.step(client.sock in readable)
    assert ingester.post(b'{"eventId": "after-slowloris"}') == 200
    slow_headers = [c.answer for c in clients if c.sent_at_start < len(head)]
    slow_bodies = [c.answer for c in clients if c.sent_at_start > len(head)]
    # A slow body is answered 408 before the close; slow headers make no request to answer.
    assert all(a.startswith(b"HTTP/1.1 408") for a in slow_bodies), slow_bodies
    assert slow_headers == [b""] * len(slow_headers), slow_headers


class _SlowClient:
    """Sends `data` from `sent_at_start` on one byte per step until the server answers or
    closes."""

    def __init__(self, process: IngesterProcess, data: bytes, sent_at_start: int) -> None:
        self.sock = socket.create_connection((process.host, process.port), timeout=5)
        self.data, self.sent_at_start, self.sent = data, sent_at_start, sent_at_start
        self.sock.sendall(data[:sent_at_start])
        self.open, self.answer = True, b""

    def step(self, readable: bool) -> None:
        try:
            if readable:
                self.answer = self.sock.recv(65536)
                self.close()
                return
            if self.sent < len(self.data) - 1:  # never the last byte
                self.sock.sendall(self.data[self.sent : self.sent + 1])
                self.sent += 1
        except OSError:  # reset: the server closed it
            self.close()

    def close(self) -> None:
        self.open = False
        self.sock.close()


# --- afterwards -----------------------------------------------------------------------


def test_the_process_is_healthy_and_its_memory_bounded(ingester):
    process = ingester.process
    process.assert_running()
    assert process.request("GET", "/healthz")[0] == 200
    assert process.request("GET", "/readyz")[0] == 200
    assert ingester.post(b'{"eventId": "after-all", "eventType": "something_new"}') == 200
    rss = ingester.sample_rss()
    growth = rss - ingester.baseline_rss_kib
    print(f"\ningester RSS: baseline {ingester.baseline_rss_kib / 1024:.1f} MiB, now "
          f"{rss / 1024:.1f} MiB, peak sampled {ingester.peak_rss_kib / 1024:.1f} MiB; "
          f"{len(ingester.accepted)} bodies accepted")  # fmt: skip
    assert growth < RSS_GROWTH_BOUND_KIB, (
        f"resident memory grew {growth / 1024:.1f} MiB over the warmed-up baseline "
        f"{ingester.baseline_rss_kib / 1024:.1f} MiB (bound {RSS_GROWTH_BOUND_KIB / 1024:.0f} MiB)"
    )


async def test_nothing_invalid_reaches_the_typed_topics(
    ingester, fuzz_settings, start_worker, tmp_path
):
    settings = fuzz_settings
    raw_topic = topics.RAW.name(settings.topic_prefix)
    raw = await _read_all(settings, raw_topic)
    assert sorted(r.value for r in raw) == sorted(ingester.accepted), "raw != accepted"

    worker = start_worker("normalize", settings)
    try:
        await _wait_for_commit(settings, f"{settings.topic_prefix}.normalize", raw_topic,
                               len(raw), worker, tmp_path)  # fmt: skip
        typed = {spec.suffix: await _read_all(settings, spec.name(settings.topic_prefix))
                 for spec in TYPED}  # fmt: skip
        letters = await _read_all(settings, topics.DEADLETTER.name(settings.topic_prefix))
    finally:
        worker.terminate()
        worker.wait(timeout=60)

    # What the rules say of each raw record: a typed record (once per dedupe key), or a
    # dead letter (each one).
    expected: dict[str, set[str]] = {spec.suffix: set() for spec in TYPED}
    ahead = timedelta(seconds=settings.event_time_max_ahead_seconds)
    dead = Counter[bytes]()
    for record in raw:
        received_at = dict(record.headers).get("wapipe-received-at", b"").decode() or None
        # Every raw record has the ingester's receipt time: the limit does not depend
        # on when normalize ran.
        latest = event_time_limit(received_at, datetime.now(UTC), ahead)
        result = normalize(record.value, received_at, latest)
        if isinstance(result, Normalized):
            expected[result.topic.suffix].add(result.dedupe_key)
        else:
            dead[record.value] += 1

    for spec in TYPED:
        records = typed[spec.suffix]
        keys = Counter(dict(r.headers)["wapipe-dedupe-key"].decode() for r in records)
        assert set(keys) == expected[spec.suffix], spec.suffix
        assert max(keys.values(), default=1) == 1, f"{spec.suffix} holds an event twice"
        check = schemas.validator(f"topics/{spec.suffix}")
        for record in records:
            value = orjson.loads(record.value)
            assert check.is_valid(value), (
                spec.suffix,
                [e.message for e in check.iter_errors(value)][:5],
            )
    letter_check = schemas.validator("topics/deadletter")
    originals = Counter()
    for letter in letters:
        value = orjson.loads(letter.value)
        assert letter_check.is_valid(value), [e.message for e in letter_check.iter_errors(value)][
            :5
        ]
        originals[value["original"].encode()] += 1
    assert originals == dead

    dedupe_keys = [
        dict(r.headers)["wapipe-dedupe-key"].decode() for r in typed[topics.STATUS.suffix]
    ]
    replayed = [key for key in dedupe_keys if "replayed-umid" in key]
    if any(b"replayed-umid" in r.value for r in raw):
        assert len(replayed) == 1, replayed
    print(
        f"\nnormalize over {len(raw)} raw records: "
        + ", ".join(f"{s}={len(typed[s])}" for s in typed)
        + f", deadletter={len(letters)}"
    )


async def _read_all(settings: Settings, topic: str, timeout: float = 60.0) -> list[ConsumerRecord]:
    """Every record of `topic` (one partition) up to its end offset now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                isolation_level="read_committed",
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        while await consumer.position(partition) < end:
            assert time.monotonic() < deadline, f"{topic}: read {len(records)} of {end}"
            batches = await consumer.getmany(partition, timeout_ms=500)
            records += batches.get(partition, [])
        return records
    finally:
        await consumer.stop()


async def _wait_for_commit(settings, group, topic, end, worker, tmp_path, timeout=180.0):
    """Until `group` committed offset `end` of `topic`: normalize sent and Kafka
    acknowledged everything before it (it commits only after both)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                                isolation_level="read_committed",
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        committed = None
        while committed is None or committed < end:
            assert worker.poll() is None, (
                f"normalize exited with {worker.returncode}:\n"
                + (tmp_path / "normalize.log").read_text()[-3000:]
            )
            assert time.monotonic() < deadline, (
                f"normalize committed {committed} of {end} raw records in {timeout:.0f} s"
            )
            await asyncio.sleep(0.5)
            committed = await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()
