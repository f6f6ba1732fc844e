"""Nothing answered 200 is lost: Kafka dying mid-stream, and the ingester restarting."""

from __future__ import annotations

import asyncio
import socket

import pytest

from wapipe.topics import RAW, create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _body(n: int) -> bytes:
    return (
        b'{"namespace": "ChatApps", "eventType": "outbound_message_status_changed", '
        b'"payload": {"umid": "outage-%d", "subAccountId": "acme", "channel": "whatsapp", '
        b'"status": {"state": "sent", "timestamp": "2026-03-14T10:00:01Z"}}}' % n
    )


async def test_broker_killed_mid_stream_loses_nothing(
    local_broker, settings_for, start_ingester, read_raw, eventually
):
    broker = local_broker()
    await asyncio.to_thread(broker.up)
    # The default publish budget: on a brand-new cluster the idempotent producer's
    # first send waits ~0.5 s for its producer id.
    settings = settings_for(kafka_bootstrap=broker.bootstrap, topic_partitions=3)
    await create_topics(settings, (RAW,))
    before, during = [_body(n) for n in range(50)], [_body(n) for n in range(50, 150)]

    async with start_ingester(settings) as ingester:
        for body in before:
            assert (await ingester.post(body))[0] == 200
        assert ingester.metric(
            "wapipe_ingest_requests_total", event_type="outbound_message_status_changed",
            outcome="published",
        ) == len(before)  # fmt: skip

        await asyncio.to_thread(broker.kill)  # SIGKILL: a crash, not a clean stop
        for body in during:
            assert (await ingester.post(body))[0] == 200, "a request was refused during the outage"
        assert ingester.metric("wapipe_ingest_spool_records") > 0
        async with ingester.session.get(ingester.url("/readyz")) as response:
            assert response.status == 503
            assert (await response.json())["status"] == "not_ready"

        await asyncio.to_thread(broker.up)
        publisher = ingester.publisher
        await eventually(lambda: publisher.spool.empty, 90, "the spool to drain after the restart")
        await eventually(lambda: publisher.readiness[0], 30, "readiness after the restart")
        assert ingester.metric("wapipe_ingest_spool_drained_records_total") > 0

    records = await read_raw(settings, len(before) + len(during), timeout=90)
    found = {record.value for record in records}
    missing = [body for body in before + during if body not in found]
    assert not missing, f"{len(missing)} acknowledged events are missing from the raw topic"


async def test_spool_survives_an_ingester_restart_and_drains_in_order(
    kafka_settings, settings_for, start_ingester, read_raw, eventually
):
    with socket.socket() as sock:  # a port where nothing listens: Kafka "down"
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    offline = kafka_settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{dead_port}"})
    bodies = [_body(n) for n in range(40)]

    async with start_ingester(offline) as ingester:
        for body in bodies:
            assert (await ingester.post(body))[0] == 200
        assert ingester.metric(
            "wapipe_ingest_requests_total", event_type="outbound_message_status_changed",
            outcome="spooled",
        ) == len(bodies)  # fmt: skip
    assert list(offline.spool_dir.glob("*.spool")), "the spool left no segment on disk"

    async with start_ingester(kafka_settings) as ingester:  # same spool directory
        publisher = ingester.publisher
        assert publisher.spool.records == len(bodies)
        await eventually(lambda: publisher.spool.empty, 60, "the spool to drain")
        assert ingester.metric("wapipe_ingest_spool_bytes") == 0

    records = await read_raw(kafka_settings, len(bodies))
    assert [record.value for record in records] == bodies
    assert all(dict(record.headers)["wapipe-received-at"] for record in records)


async def test_full_spool_answers_503(kafka_settings, start_ingester, read_raw):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    offline = kafka_settings.model_copy(update={
        "kafka_bootstrap": f"127.0.0.1:{dead_port}",
        "spool_max_bytes": 2048, "spool_segment_bytes": 1024,
    })  # fmt: skip
    async with start_ingester(offline) as ingester:
        statuses = [(await ingester.post(_body(n)))[0] for n in range(20)]
        assert statuses[0] == 200
        assert statuses[-1] == 503
        assert set(statuses) == {200, 503}
        status, answer = await ingester.post(_body(99))
        assert (status, answer["error"]) == (503, "unavailable")
        assert ingester.metric(
            "wapipe_ingest_requests_total", event_type="outbound_message_status_changed",
            outcome="unavailable",
        ) == statuses.count(503) + 1  # fmt: skip
