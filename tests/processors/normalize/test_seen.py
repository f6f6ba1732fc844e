"""normalize's `seen` memory: its value format, and the sweep that deletes expired keys
with tombstones in the changelog (on the real broker)."""

from __future__ import annotations

import signal
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from example_bodies import EXAMPLE_PATHS

from processors.normalize.seen import digest_of, first_seen_ms, seen_value
from wapipe import topics

DAY_MS = 86_400_000


def test_values_hold_when_first_seen_and_an_ids_digest() -> None:
    assert seen_value(1_700_000_000_000) == b"1700000000000"
    assert seen_value(1_700_000_000_000, "ab12") == b"1700000000000:ab12"
    assert (first_seen_ms(b"1700000000000:ab12"), digest_of(b"1700000000000:ab12")) == (
        1_700_000_000_000, "ab12")  # fmt: skip
    assert digest_of(b"1700000000000") is None
    assert first_seen_ms(b"ab12") is None  # a value without a time is never swept


@pytest.mark.kafka
@pytest.mark.slow
async def test_expired_keys_get_tombstones_and_fresh_ones_stay(
    kafka_settings, start_worker, tmp_path
):
    changelog = topics.changelog("normalize", "seen").name(kafka_settings.topic_prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_settings.kafka_bootstrap)
    await admin.start()
    try:
        compacted = NewTopic(changelog, 1, 1, topic_configs={"cleanup.policy": "compact"})
        await admin.create_topics([compacted])
    finally:
        await admin.close()
    now = int(time.time() * 1000)
    remembered = {
        b"old-dedupe-key": seen_value(now - 15 * DAY_MS),  # older than WAPIPE_DEDUPE_DAYS (14)
        b"old-id-key": seen_value(now - 20 * DAY_MS, "ab12"),
        b"fresh-dedupe-key": seen_value(now - 13 * DAY_MS),
        b"fresh-id-key": seen_value(now, "cd34"),
    }
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka_bootstrap)
    await producer.start()
    try:
        for key, value in remembered.items():  # raw bytes, as the engine writes them
            await producer.send_and_wait(changelog, value, key=key)
        for path in EXAMPLE_PATHS[:5]:  # events, so that batches (and sweeps) run
            await producer.send_and_wait(topics.RAW.name(kafka_settings.topic_prefix),
                                         path.read_bytes(), key=path.name.encode())  # fmt: skip
    finally:
        await producer.stop()

    worker = start_worker("normalize", kafka_settings)
    consumer = AIOKafkaConsumer(changelog, bootstrap_servers=kafka_settings.kafka_bootstrap,
                                isolation_level="read_committed",
                                auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    tombstones: set[bytes] = set()
    deadline = time.monotonic() + 90
    try:
        while tombstones != {b"old-dedupe-key", b"old-id-key"}:
            assert worker.poll() is None, (tmp_path / "normalize.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"tombstones so far: {sorted(tombstones)}"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                tombstones |= {r.key for r in records if r.value is None}
    finally:
        await consumer.stop()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
