"""The webhook route over real HTTP against a real broker: what is kept, what is refused."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from example_bodies import expected_raw_key

from ingest.envelope import record_key

pytestmark = pytest.mark.kafka

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.rglob("*.json"))


async def test_every_example_is_published_byte_for_byte_with_its_key(
    kafka_settings, start_ingester, read_raw
):
    bodies = [path.read_bytes() for path in EXAMPLE_FILES]
    async with start_ingester(kafka_settings) as ingester:
        for body in bodies:
            status, answer = await ingester.post(body)
            assert (status, answer) == (200, {"status": "accepted"})
        assert ingester.metric("wapipe_ingest_spool_records") == 0
    records = await read_raw(kafka_settings, len(bodies))

    assert [record.value for record in records] == bodies
    expected_keys = [expected_raw_key(json.loads(body)) for body in bodies]
    assert [record.key for record in records] == expected_keys
    for record in records:
        headers = dict(record.headers)
        assert headers["wapipe-shape"] == b"recognised"
        assert headers["wapipe-source-address"] == b"127.0.0.1"
        assert headers["wapipe-auth"] == b"none"
        assert headers["wapipe-signature"] == b"not_configured"
        assert headers["wapipe-received-at"].endswith(b"Z")
        assert headers["wapipe-event-type"] == json.loads(record.value)["eventType"].encode()


async def test_unknown_shapes_and_other_channels_are_kept_and_marked(
    kafka_settings, start_ingester, read_raw
):
    bodies = [
        b'{"eventType": "something_new", "eventId": "n-1", "eventDetails": {"x": 1}}',
        b'{"namespace": "ChatApps", "eventType": "inbound_message_received", '
        b'"inboundMessage": {"umid": "line-1", "channel": "line"}}',
        b'{"hello": "world"}',
        b"{}",
    ]
    async with start_ingester(kafka_settings) as ingester:
        for body in bodies:
            assert (await ingester.post(body))[0] == 200
        assert (
            ingester.metric(
                "wapipe_ingest_requests_total", event_type="unknown", outcome="published"
            )
            == 3
        )
    records = await read_raw(kafka_settings, len(bodies))

    assert [r.value for r in records] == bodies
    assert [r.key for r in records] == [
        b"n-1",
        b"line-1",
        record_key({}, bodies[2]),
        record_key({}, bodies[3]),
    ]
    shapes = [dict(r.headers)["wapipe-shape"] for r in records]
    assert shapes == [b"unrecognised", b"recognised", b"unrecognised", b"unrecognised"]


REFUSALS = [
    pytest.param(b"not json", {}, 400, "invalid_json", id="not-json"),
    pytest.param(b"", {}, 400, "invalid_json", id="empty-body"),
    pytest.param(b'{"a": 1', {}, 400, "invalid_json", id="truncated-json"),
    pytest.param(b'{"a": "\xff\xfe"}', {}, 400, "invalid_json", id="invalid-utf8"),
    pytest.param(b"[" * 2000 + b"]" * 2000, {}, 400, "invalid_json", id="deep-nesting"),
    pytest.param(b"[1, 2]", {}, 400, "not_an_object", id="array"),
    pytest.param(b'"text"', {}, 400, "not_an_object", id="string"),
    pytest.param(b"42", {}, 400, "not_an_object", id="number"),
    pytest.param(b"null", {}, 400, "not_an_object", id="null"),
    pytest.param(b"{}", {"Content-Type": "text/plain"}, 415, "unsupported_media_type", id="text"),
    pytest.param(
        b"a=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415,
        "unsupported_media_type", id="form",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("body", "headers", "status", "error"), REFUSALS)
async def test_refusals_answer_a_json_error_and_publish_nothing(
    kafka_settings, start_ingester, read_raw, body, headers, status, error
):
    sentinel = b'{"eventId": "sentinel", "eventType": "something_new"}'
    async with start_ingester(kafka_settings) as ingester:
        answer_status, answer = await ingester.post(body, headers)
        assert answer_status == status
        assert answer["error"] == error
        assert isinstance(answer["message"], str)
        assert answer["message"]
        assert (
            ingester.metric("wapipe_ingest_requests_total", event_type="none", outcome=error) == 1
        )
        assert (await ingester.post(sentinel))[0] == 200
    records = await read_raw(kafka_settings, 1)
    assert [r.value for r in records] == [sentinel], "a refused request reached the raw topic"


async def test_body_over_the_limit_is_refused_before_it_is_read(
    kafka_settings, settings_for, start_ingester, read_raw
):
    settings = kafka_settings.model_copy(update={"max_body_bytes": 4096})
    big = b'{"eventId": "big", "pad": "' + b"x" * 5000 + b'"}'
    async with start_ingester(settings) as ingester:
        status, answer = await ingester.post(big)
        assert (status, answer["error"]) == (413, "too_large")

        async def chunks():  # no Content-Length: the limit applies while reading
            for start in range(0, len(big), 1000):
                yield big[start : start + 1000]

        async with ingester.session.post(
            ingester.url(), data=chunks(), headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status == 413
            assert (await response.json())["error"] == "too_large"

        assert (await ingester.post(b'{"eventId": "small"}'))[0] == 200
    records = await read_raw(settings, 1)
    assert [r.key for r in records] == [b"small"]


async def test_health_readiness_and_metrics_endpoints(kafka_settings, start_ingester, eventually):
    async with start_ingester(kafka_settings) as ingester:
        publisher = ingester.publisher
        await eventually(lambda: publisher.readiness[0], 30, "the ingester to reach Kafka")
        async with ingester.session.get(ingester.url("/healthz")) as response:
            assert response.status == 200
        async with ingester.session.get(ingester.url("/readyz")) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ready"
        assert (await ingester.post(b'{"eventId": "m-1"}'))[0] == 200
        async with ingester.session.get(ingester.url("/metrics")) as response:
            text = await response.text()
        assert response.status == 200
        assert 'wapipe_ingest_requests_total{event_type="unknown",outcome="published"} 1.0' in text
        assert "wapipe_ingest_request_duration_seconds_bucket" in text
        assert "wapipe_ingest_publish_duration_seconds_count 1.0" in text
        assert "wapipe_ingest_spool_records 0.0" in text
        assert "_created" not in text


async def test_token_route_absent_without_oauth_clients(kafka_settings, start_ingester):
    async with (
        start_ingester(kafka_settings) as ingester,
        ingester.session.post(
            ingester.url("/oauth/token"), data={"grant_type": "client_credentials"}
        ) as response,
    ):
        assert response.status in (404, 405)


async def test_concurrent_requests_are_all_published(kafka_settings, start_ingester, read_raw):
    bodies = [b'{"eventId": "c-%d", "eventType": "x"}' % n for n in range(300)]
    async with start_ingester(kafka_settings) as ingester:
        connector = aiohttp.TCPConnector(limit=50)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def post(body: bytes) -> int:
                async with session.post(
                    ingester.url(), data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    return response.status

            statuses = await asyncio.gather(*(post(body) for body in bodies))
    assert set(statuses) == {200}
    records = await read_raw(kafka_settings, len(bodies))
    assert sorted(r.value for r in records) == sorted(bodies)
