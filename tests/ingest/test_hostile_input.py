"""Hostile input at the webhook and token routes, over real HTTP with a real broker.

One ingester (in this process, on loopback) serves the whole module, configured like a
careful production one: a static `Authorization` value, an OAuth client, a signature
secret, a trusted proxy, a small body limit and a short client timeout. Every request
any test here sends goes through `Hostile.post`/`send_raw`, which remember what was
answered 200; the module's last test reads the raw topic and finds exactly those bodies:
nothing refused was published, nothing accepted was lost.

Invariants, for every input: never a 5xx (Kafka is up, so not even the documented 503);
a refusal is the documented 4xx with a JSON `{"error", "message"}` body; the server keeps
serving. The bugs these tests found are named where they are pinned down (regressions).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from hostile_bodies import (
    encodings,
    expected_verdict,
    json_non_objects,
    json_objects,
    webhook_variants,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from ingest import envelope
from ingest.app import TOKEN_PATH, WEBHOOK_PATH, create_app
from ingest.auth import UNPARSEABLE_ADDRESS, AuthFailure, Gatekeeper, sign
from ingest.oauth import TokenIssuer
from wapipe.settings import Settings
from wapipe.topics import RAW, create_topics

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "examples"
STATIC = "Bearer hostile-static-token"
SECRET = "hostile-secret"
CLIENT_ID, CLIENT_SECRET = "hostile-client", "hostile-client-secret"
LIMIT = 16_384  # WAPIPE_MAX_BODY_BYTES here: huge bodies stay cheap to send
CLIENT_TIMEOUT = 1.0  # WAPIPE_CLIENT_TIMEOUT_SECONDS here
ANSWER_WITHIN = 30.0  # bounded waits for an answer that must come much sooner

# The server lives across examples on purpose (one ingester per module).
FUZZ = settings(
    max_examples=100, deadline=None, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip


def _settings(**overrides: Any) -> Settings:
    return Settings(**{"log_format": "console", **overrides})


# --- the pure parts of the fixes (no broker) ---------------------------------------------


def test_an_absurdly_long_id_is_keyed_by_its_hash():
    # Regression: a 100 KB umid made the spool's 16-bit key length overflow (a 500),
    # and key plus value could exceed Kafka's message size (flipping to the spool).
    umid = "u" * 100_000
    raw = orjson.dumps({"payload": {"umid": umid}})
    key = envelope.record_key(orjson.loads(raw), raw)
    assert key == b"sha256:" + hashlib.sha256(umid.encode()).hexdigest().encode()
    other = orjson.dumps({"payload": {"umid": umid, "status": {"state": "read"}}})
    assert envelope.record_key(orjson.loads(other), other) == key  # same id, same partition
    assert envelope.record_key({"eventId": "e" * 512}, b"") == b"e" * 512


def test_event_type_header_of_a_deeply_nested_event_type():
    # Regression: str() of a list nested 1,000 deep raised RecursionError (a 500).
    deep = orjson.loads(b'{"eventType": ' + b"[" * 1000 + b"]" * 1000 + b"}")
    assert envelope.event_type_header(deep) == b""
    assert envelope.event_type_header({"eventType": "x" * 500}) == b"x" * 200
    assert envelope.event_type_header({"eventType": 42}) == b"42"
    assert envelope.event_type_header({}) == b""


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"authorization": STATIC}, id="static"),
        pytest.param({"oauth_clients": f"{CLIENT_ID}:{CLIENT_SECRET}"}, id="oauth"),
    ],
)
def test_an_authorization_header_that_is_not_utf8_is_refused_not_a_crash(overrides):
    # aiohttp hands such a header over with surrogate escapes; encoding it raised
    # UnicodeEncodeError (a 500), in our comparison and in PyJWT alike.
    settings = _settings(**overrides)
    gate = Gatekeeper(settings, TokenIssuer.from_settings(settings))
    header = b"Bearer \xff\xfe-token".decode("utf-8", "surrogateescape")
    assert gate.check_authorization(header).failure is AuthFailure.WRONG_AUTHORIZATION


def test_a_forwarded_hop_that_is_no_address_is_never_passed_on():
    gate = Gatekeeper(_settings(trusted_proxies="127.0.0.1/32"), None)
    garbage = b"\xff\xfe, 10.0.0.1".decode("utf-8", "surrogateescape")
    assert gate.client_address("127.0.0.1", "203.0.113.9") == "203.0.113.9"
    assert gate.client_address("127.0.0.1", f"{garbage}, 127.0.0.1") == "10.0.0.1"
    assert gate.client_address("127.0.0.1", "not-an-ip, 127.0.0.1") == UNPARSEABLE_ADDRESS
    assert gate.client_address("127.0.0.1", "1.2.3.4:5678") == UNPARSEABLE_ADDRESS
    assert not Gatekeeper(_settings(allowed_networks="0.0.0.0/0"), None).network_allowed(
        UNPARSEABLE_ADDRESS
    )


def test_normalize_dead_letters_a_known_event_nested_deeper_than_it_can_write():
    # orjson reads 1,024 levels (so the ingester accepts such a body) but writes 255:
    # normalize once raised here, and its worker exited on every restart.
    from processors.normalize.records import DeadLetterKind
    from processors.normalize.rules import Rejected, normalize

    example = orjson.dumps(orjson.loads((EXAMPLES / "status_sent.json").read_bytes()))
    raw = example[:-1] + b', "extra": ' + b"[" * 300 + b"]" * 300 + b"}"
    result = normalize(raw, None)
    assert isinstance(result, Rejected)
    assert result.kind is DeadLetterKind.INVALID_BODY
    assert "re-encoded" in result.reason


# --- one ingester for the module ---------------------------------------------------------


@dataclass
class Hostile:
    settings: Settings
    server: TestServer
    session: aiohttp.ClientSession
    registry: CollectorRegistry
    accepted: list[bytes] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)

    def url(self, path: str = WEBHOOK_PATH) -> str:
        return str(self.server.make_url(path))

    def headers_for(self, body: bytes, **extra: str) -> dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": STATIC,
                "X-8x8-Signature": sign(SECRET, body), **extra}  # fmt: skip

    async def post(
        self, body: bytes, headers: dict[str, str] | None = None, path: str = WEBHOOK_PATH
    ) -> tuple[int, dict[str, Any]]:
        """POST `body` (signed and authorized unless `headers` say otherwise)."""
        sent = self.headers_for(body) if headers is None else headers
        async with self.session.post(self.url(path), data=body, headers=sent) as response:
            answer = await response.read()
            return self._record(response.status, answer, body, response.content_type)

    def _record(
        self, status: int, answer: bytes, body: bytes, content_type: str
    ) -> tuple[int, dict[str, Any]]:
        self.statuses[status] += 1
        assert status < 500, f"{status} for {body[:200]!r}: {answer[:500]!r}"
        assert content_type == "application/json", (status, content_type, answer[:200])
        parsed: dict[str, Any] = orjson.loads(answer)
        if status == 200 and parsed == {"status": "accepted"}:
            self.accepted.append(body)
        elif status >= 400 and "error_description" not in parsed:
            assert set(parsed) == {"error", "message"}, parsed
        return status, parsed

    async def send_raw(self, request: bytes, body_for_record: bytes = b"") -> tuple[int, bytes]:
        """Write `request` as is on a fresh connection; (status, answer body)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        try:
            writer.write(request)
            await writer.drain()
            status, headers, answer = await asyncio.wait_for(_read_response(reader), ANSWER_WITHIN)
        finally:
            writer.close()
        self._record(status, answer, body_for_record, headers.get("content-type", "").split(";")[0])
        return status, answer


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
    }
    answer = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, answer


def _request(path: str, headers: dict[str, str], body: bytes = b"", *,
             raw_headers: bytes = b"") -> bytes:  # fmt: skip
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{lines}".encode()
            + raw_headers + b"\r\n" + body)  # fmt: skip


@pytest.fixture(scope="module")
async def hostile(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
                  ) -> AsyncIterator[Hostile]:  # fmt: skip
    settings = _settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.whatsapp",
        topic_partitions=1,
        spool_dir=tmp_path_factory.mktemp("hostile") / "spool",
        authorization=STATIC,
        oauth_clients=f"{CLIENT_ID}:{CLIENT_SECRET}",
        webhook_secret=SECRET,
        trusted_proxies="127.0.0.1/32",
        max_body_bytes=LIMIT,
        client_timeout_seconds=CLIENT_TIMEOUT,
    )
    await create_topics(settings)
    registry = CollectorRegistry()
    server = TestServer(create_app(settings, registry), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield Hostile(settings, server, session, registry)
    await server.close()


# --- generated bodies --------------------------------------------------------------------


@FUZZ
@given(raw=json_objects().flatmap(encodings))
async def test_any_json_object_is_accepted(hostile, raw):
    status, answer = await hostile.post(raw)
    assert (status, answer.get("error")) == expected_verdict(raw, LIMIT)


@FUZZ
@given(raw=json_non_objects().flatmap(encodings))
async def test_json_that_is_not_an_object_is_refused(hostile, raw):
    status, answer = await hostile.post(raw)
    assert (status, answer.get("error")) == expected_verdict(raw, LIMIT)


@FUZZ
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
async def test_arbitrary_bytes_are_answered_as_json_says(hostile, raw):
    status, answer = await hostile.post(raw)
    assert (status, answer.get("error")) == expected_verdict(raw, LIMIT)


@settings(FUZZ, max_examples=150)
@given(body=webhook_variants())
async def test_near_misses_of_the_known_shapes_are_kept(hostile, body):
    raw = orjson.dumps(body)
    status, answer = await hostile.post(raw)
    assert (status, answer.get("error")) == expected_verdict(raw, LIMIT)


# --- malformed JSON, nesting, UTF-8 ------------------------------------------------------

MALFORMED = [
    b"", b" ", b"{", b'{"a": 1', b'{"a": 1}}', b'{"a": 1} x', b"{'a': 1}", b'{"a": NaN}',
    b'{"a": Infinity}', b'{"a": 1e999}', b'{"a": 01}', b'{"a": .5}', b'{"a": "\\x41"}',
    b'{"a": "\\ud800"}', b'{"a": "\\udc00\\ud800"}', b'{a: 1}', b'{"a": 1,}', b'[1,]',
    b'{"a": 1} // comment', b'/* c */ {}', b'\xef\xbb\xbf{}', b'\x00{}', b'{"a":\x00}',
    b'{"a": "tab\tinside"}', b'{"a": "line\nbreak"}', b'{"a": tru}', b"\xff\xfe{\x00}\x00",
]  # fmt: skip
INVALID_UTF8 = [
    b'{"a": "\xff"}', b'{"a": "\xc0\xaf"}', b'{"a": "\xed\xa0\x80"}', b'{"a": "\xe2\x82"}',
    b'{"\xf8\x88\x80\x80\x80": 1}', b'{"a": "\xf4\x90\x80\x80"}', b'{"a": 1}\x80',
]  # fmt: skip


@pytest.mark.parametrize("raw", MALFORMED + INVALID_UTF8)
async def test_malformed_json_and_invalid_utf8_are_400(hostile, raw):
    status, answer = await hostile.post(raw)
    assert (status, answer["error"]) == (400, "invalid_json"), raw


@pytest.mark.parametrize(
    ("opening", "depth"), [(b"[", 1025), (b"[", 5_000), (b'{"a":', 1025), (b'{"a":', 2_500)]
)
async def test_deep_nesting_is_refused_without_recursing(hostile, opening, depth):
    # 100,000 deep needs a bigger body limit: test_hostile_process.py sends it.
    closing = b"]" if opening == b"[" else b"}"
    raw = opening * depth + b"1" + closing * depth
    status, answer = await hostile.post(raw)
    assert (status, answer["error"]) == (400, "invalid_json")


async def test_nesting_just_under_the_parser_limit_is_kept(hostile):
    deep = b'{"eventType": ' + b"[" * 1020 + b"]" * 1020 + b', "eventId": "deep-1"}'
    assert (await hostile.post(deep))[0] == 200  # also the RecursionError regression
    deeper = b'{"a": ' + b"[" * 1024 + b"]" * 1024 + b"}"
    status, answer = await hostile.post(deeper)
    assert (status, answer["error"]) == (400, "invalid_json")


# --- sizes -----------------------------------------------------------------------------


def _padded(size: int) -> bytes:
    head = b'{"eventId": "big-%d", "pad": "' % size
    return head + b"x" * (size - len(head) - 2) + b'"}'


@pytest.mark.parametrize("size", [LIMIT - 1, LIMIT])
async def test_a_body_up_to_the_limit_is_kept(hostile, size):
    body = _padded(size)
    assert len(body) == size
    assert (await hostile.post(body))[0] == 200


async def test_a_body_over_the_limit_is_413_with_and_without_content_length(hostile):
    body = _padded(LIMIT + 1)
    status, answer = await hostile.post(body)
    assert (status, answer["error"]) == (413, "too_large")

    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    headers = {**hostile.headers_for(body), "Transfer-Encoding": "chunked"}
    status, answer = await hostile.send_raw(_request(WEBHOOK_PATH, headers, chunked), body)
    assert (status, orjson.loads(answer)["error"]) == (413, "too_large")


@pytest.mark.parametrize("declared", [LIMIT + 1, 10**12])
async def test_a_declared_oversized_body_is_refused_before_it_is_sent(hostile, declared):
    # Only the headers go out: if the server waited for the body, no answer would come.
    headers = {**hostile.headers_for(b""), "Content-Length": str(declared)}
    status, answer = await hostile.send_raw(_request(WEBHOOK_PATH, headers))
    assert (status, orjson.loads(answer)["error"]) == (413, "too_large")


# --- content types, signatures, authorization, forwarded addresses -------------------------


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("text/plain", 415), ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415), ("application/jsonx", 415),
        ("application/octet-stream", 415), ("json", 415),
        ("application/json; charset=latin-1", 200), ("APPLICATION/JSON", 200),
        ("application/vnd.8x8+json", 200),
    ],
)  # fmt: skip
async def test_content_types(hostile, content_type, status):
    body = b'{"eventId": "ct-%s"}' % content_type.encode()
    headers = hostile.headers_for(body)
    headers["Content-Type"] = content_type
    answer_status, answer = await hostile.post(body, headers)
    assert answer_status == status, answer
    if status == 415:
        assert answer["error"] == "unsupported_media_type"


BODY = b'{"eventId": "sig-1", "eventType": "something_new"}'
DIGEST = hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param(sign(SECRET, BODY + b" "), id="other-body"),
        pytest.param(sign("not-the-secret", BODY), id="other-secret"),
        pytest.param(sign(SECRET, BODY)[:-2], id="truncated-hex"),
        pytest.param("sha256=" + sign(SECRET, BODY)[:-1] + "g", id="not-hex"),
        pytest.param(base64.b64encode(DIGEST[:-1]).decode(), id="short-base64"),
        pytest.param("=" * 44, id="padding-only"),
        pytest.param("\u00e9" * 64, id="latin1"),
        pytest.param("x" * 8000, id="huge"),
    ],
)
async def test_wrong_or_missing_signatures_are_401(hostile, signature):
    headers = hostile.headers_for(BODY)
    del headers["X-8x8-Signature"]
    if signature is not None:
        headers["X-8x8-Signature"] = signature
    status, answer = await hostile.post(BODY, headers)
    assert (status, answer["error"]) == (401, "unauthorized")


@pytest.mark.parametrize(
    "signature",
    [
        sign(SECRET, BODY), sign(SECRET, BODY).upper(), "sha256=" + sign(SECRET, BODY),
        base64.b64encode(DIGEST).decode(), base64.urlsafe_b64encode(DIGEST).decode().rstrip("="),
    ],
)  # fmt: skip
async def test_the_right_signature_in_each_accepted_form(hostile, signature):
    headers = hostile.headers_for(BODY, **{"X-8x8-Signature": signature})
    status, _ = await hostile.post(BODY, headers)
    assert status == 200


# What a header value may hold on the wire (RFC 9110 field-vchar, space, obs-text): sent as
# raw bytes, since a client library refuses, or re-encodes, much of it.
HEADER_BYTES = st.lists(st.integers(0x20, 0xFF).filter(lambda b: b != 0x7F), max_size=100).map(
    bytes
)


@FUZZ
@given(header=st.sampled_from([b"X-8x8-Signature: ", b"Authorization: Bearer "]),
       value=HEADER_BYTES)  # fmt: skip
async def test_generated_signature_and_authorization_bytes_are_401_not_a_crash(
    hostile, header, value
):
    # A header that is not UTF-8 was a 500 (regression); any other wrong value is a 401.
    name = header.split(b":")[0].decode()
    headers = {k: v for k, v in hostile.headers_for(BODY).items() if k != name}
    request = _request(WEBHOOK_PATH, {**headers, "Content-Length": str(len(BODY))}, BODY,
                       raw_headers=header + value + b"\r\n")  # fmt: skip
    status, answer = await hostile.send_raw(request, BODY)
    assert (status, orjson.loads(answer)["error"]) == (401, "unauthorized")


async def test_a_forwarded_address_that_is_not_utf8_is_kept_as_unparseable(hostile):
    # Regression: from a trusted proxy, such a hop went into the raw record's header: a 500.
    body = b'{"eventId": "xff-1"}'
    headers = {**hostile.headers_for(body), "Content-Length": str(len(body))}
    request = _request(WEBHOOK_PATH, headers, body, raw_headers=b"X-Forwarded-For: \xff\xfe\r\n")
    assert (await hostile.send_raw(request, body))[0] == 200


async def test_a_huge_id_is_kept(hostile):
    # Regression: see test_an_absurdly_long_id_is_keyed_by_its_hash.
    body = orjson.dumps({"payload": {"umid": "u" * (LIMIT - 100)}})
    assert (await hostile.post(body))[0] == 200


async def test_a_replay_of_a_signed_body_is_accepted_each_time(hostile):
    # The ingester keeps no memory of bodies: a replay (or the sender's retry) is accepted
    # and published again; normalize drops the repetition (test_hostile_process.py).
    body = (EXAMPLES / "status_sent.json").read_bytes()
    for _ in range(3):
        assert (await hostile.post(body))[0] == 200


# --- slow clients --------------------------------------------------------------------


async def test_a_body_slower_than_the_client_timeout_gets_408_and_others_are_served(hostile):
    body = b'{"eventId": "slow-1", "pad": "' + b"x" * 200 + b'"}'
    headers = {**hostile.headers_for(body), "Content-Length": str(len(body))}
    reader, writer = await asyncio.open_connection("127.0.0.1", hostile.server.port)
    try:
        writer.write(_request(WEBHOOK_PATH, headers, body[:20]))
        await writer.drain()
        answer = asyncio.ensure_future(_read_response(reader))
        # Meanwhile the server serves others.
        assert (await hostile.post(b'{"eventId": "fast-1"}'))[0] == 200
        for byte in body[20:40]:  # a trickle, never the whole body
            if answer.done():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.wait({answer}, timeout=CLIENT_TIMEOUT / 4)
        status, _, text = await asyncio.wait_for(answer, ANSWER_WITHIN)
        assert (status, orjson.loads(text)["error"]) == (408, "request_timeout")
        assert await asyncio.wait_for(reader.read(), ANSWER_WITHIN) == b"", "not closed"
    finally:
        writer.close()


# --- the token route and the router ------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "error"),
    [
        ("multipart/form-data", b"grant_type=client_credentials", "invalid_request"),
        ("multipart/form-data; boundary=x", b"--y\r\n\r\n", "invalid_request"),
        ("application/x-www-form-urlencoded",
         b"grant_type=client_credentials&client_id=\xff&client_secret=%ff", "invalid_request"),
        ("application/json", b'{"grant_type": "client_credentials"}', "invalid_request"),
        ("application/x-www-form-urlencoded", b"grant_type=password", "unsupported_grant_type"),
        ("application/x-www-form-urlencoded", b"&&==&=", "unsupported_grant_type"),
    ],
)  # fmt: skip
async def test_hostile_token_requests_are_oauth_errors_not_crashes(
    hostile, content_type, body, error
):
    # Regression: a multipart body without a boundary, and a form that is not UTF-8, were 500s.
    headers = {"Content-Type": content_type}
    status, answer = await hostile.post(body, headers, path=TOKEN_PATH)
    assert (status, answer["error"]) == (400, error)


async def test_an_oversized_token_request_is_413_as_json(hostile):
    body = b"grant_type=client_credentials&pad=" + b"x" * LIMIT
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, answer = await hostile.post(body, headers, path=TOKEN_PATH)
    assert (status, answer["error"]) == (413, "too_large")


async def test_the_token_flow_still_works(hostile):
    form = b"grant_type=client_credentials&client_id=%s&client_secret=%s" % (
        CLIENT_ID.encode(), CLIENT_SECRET.encode())  # fmt: skip
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, answer = await hostile.post(form, headers, path=TOKEN_PATH)
    assert status == 200, answer
    body = b'{"eventId": "oauth-1"}'
    token = f"Bearer {answer['access_token']}"
    assert (await hostile.post(body, hostile.headers_for(body, Authorization=token)))[0] == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", WEBHOOK_PATH, 405, "method_not_allowed"),
        ("PUT", "/healthz", 405, "method_not_allowed"),
        ("GET", "/nope", 404, "not_found"),
        ("POST", "/webhooks/whatsapp/", 404, "not_found"),
    ],
)
async def test_the_routers_refusals_are_json_too(hostile, method, path, status, error):
    async with hostile.session.request(method, hostile.url(path)) as response:
        assert response.status == status
        assert await response.json() == {"error": error, "message": response.reason}
        if status == 405:
            assert response.headers["Allow"]


# --- last: what reached the raw topic --------------------------------------------------


async def test_the_raw_topic_holds_exactly_the_accepted_bodies(hostile, read_raw):
    expected = Counter(hostile.accepted)
    if not expected:
        pytest.skip("run with the tests above: it checks what they sent")
    records = await read_raw(hostile.settings, sum(expected.values()))
    found = Counter(record.value for record in records)
    assert found == expected, (
        f"{sum((found - expected).values())} refused bodies published, "
        f"{sum((expected - found).values())} accepted bodies missing"
    )
    assert RAW.name(hostile.settings.topic_prefix) == records[0].topic
