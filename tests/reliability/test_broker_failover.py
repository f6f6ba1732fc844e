"""Broker failover (issue 5, item 2): a 3-broker KRaft cluster (replication 3,
min.insync.replicas 2) loses one broker to SIGKILL under steady load.

Every request must be answered 200, every acknowledged body must be on the raw
topic afterwards, and normalize, running all along, must carry on: the status
topic ends up with exactly one receipt per umid sent (a duplicate would carry the
same `wapipe-dedupe-key`, and is counted and reported, not hidden).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest
from aiokafka.errors import KafkaError
from steady_sender import SteadySender, receipt_story

from wapipe.topics import RAW, STATUS, create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MESSAGES = 1_500  # unique umids, one `sent` receipt each
RATE = 50.0  # requests per second: 30 s of load
KILL_AT = 0.35  # share of the requests acknowledged when the broker is SIGKILLed
REPLICATION = {"WAPIPE_TOPIC_REPLICATION": "3", "WAPIPE_TOPIC_MIN_INSYNC_REPLICAS": "2"}


@pytest.mark.timeout(480)
async def test_a_broker_killed_under_load_loses_nothing_and_normalize_carries_on(
    local_cluster,
    settings_for,
    start_ingester,
    start_worker,
    follow_topic,
    partitions,
    eventually,
    tmp_path,
):
    cluster = local_cluster(3)
    await asyncio.to_thread(cluster.up)
    settings = settings_for(
        kafka_bootstrap=cluster.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.whatsapp",
        topic_partitions=3,
        topic_replication=3,
        topic_min_insync_replicas=2,
    )
    await create_topics(settings)
    watched = [RAW.name(settings.topic_prefix), STATUS.name(settings.topic_prefix)]
    story = receipt_story(MESSAGES, prefix="fo", now=datetime.now(UTC), outcomes=("sent",),
                          retried=0.0)  # fmt: skip
    assert len(story.dedupe_keys) == len(story.bodies) == MESSAGES

    worker = start_worker("normalize", settings, **REPLICATION)
    log = tmp_path / "normalize.log"

    def normalize_died() -> str | None:
        if worker.poll() is None:
            return None
        return f"normalize exited with {worker.returncode}:\n{log.read_text()[-3000:]}"

    status = await follow_topic(
        settings, STATUS, lambda record: dict(record.headers)["wapipe-dedupe-key"].decode()
    )
    async with start_ingester(settings) as ingester:
        sender = SteadySender(ingester.url(), story.bodies, rate=RATE)
        sending = asyncio.create_task(sender.run())
        # The kill lands with the load running and normalize's output flowing.
        await status.until(
            lambda: len(sender.acknowledged) >= KILL_AT * MESSAGES and len(status.counts) >= 100,
            "load and normalize's output before the kill", 120, normalize_died,
        )  # fmt: skip
        before = await partitions(cluster.bootstrap, watched)
        assert all(len(p["replicas"]) == len(p["isr"]) == 3 for p in before.values()), before
        victim, led = Counter(p["leader"] for p in before.values()).most_common(1)[0]
        acknowledged_at_kill = len(sender.acknowledged)
        await asyncio.to_thread(cluster.kill, victim)
        killed_at = time.monotonic()

        moved_after = None
        deadline = time.monotonic() + 60
        while moved_after is None:
            assert time.monotonic() < deadline, f"node {victim}'s partitions kept no leader"
            try:
                after = {
                    p["leader"] for p in (await partitions(cluster.bootstrap, watched)).values()
                }
            except KafkaError:  # asked the dead node, which the metadata still lists
                after = set()
            if after and not after & {victim, -1}:
                moved_after = time.monotonic() - killed_at
            else:
                await status.read()  # and keep following normalize meanwhile
        await asyncio.wait_for(sending, 180)
        publisher = ingester.publisher
        await eventually(lambda: publisher.spool.empty and publisher.readiness[0], 90,
                         "the ingester's spool to drain and Kafka to be ready")  # fmt: skip
        outcomes = {outcome: ingester.metric(
            "wapipe_ingest_requests_total", event_type="outbound_message_status_changed",
            outcome=outcome) for outcome in ("published", "spooled")}  # fmt: skip
        timeouts = ingester.metric("wapipe_ingest_producer_errors_total", reason="timeout")
        drained = ingester.metric("wapipe_ingest_spool_drained_records_total")

    assert not sender.failures, f"{len(sender.failures)} requests not answered 200, e.g. " + str(
        sender.failures[:3]
    )
    assert len(sender.acknowledged) == MESSAGES

    raw = await follow_topic(settings, RAW)
    acknowledged = sender.acknowledged_bodies
    await raw.until(lambda: acknowledged <= raw.counts.keys(), "every acknowledged body", 90)
    every_receipt = "a receipt of every umid on the status topic"
    await status.until(lambda: story.dedupe_keys <= status.counts.keys(), every_receipt, 180,
                       normalize_died)  # fmt: skip
    await status.drain()  # to the end: a duplicate sent after the last new key counts too
    lost = len(acknowledged - raw.counts.keys())
    print(f"\nFIGURES failover: sent {MESSAGES}, acknowledged {len(sender.acknowledged)} "
          f"({acknowledged_at_kill} before the kill), killed node {victim} leading {led} of "
          f"{len(before)} raw/status partitions, leaders moved after {moved_after:.1f} s, "
          f"published {outcomes['published']:.0f}, spooled {outcomes['spooled']:.0f} "
          f"(publish timeouts {timeouts:.0f}, drained {drained:.0f}), raw records "
          f"{raw.records} (duplicates {raw.duplicates}), lost {lost}, status records "
          f"{status.records}, distinct {len(status.counts)}, duplicates {status.duplicates}, "
          f"normalize alive {worker.poll() is None}")  # fmt: skip
    assert lost == 0
    assert set(status.counts) == story.dedupe_keys
    assert worker.poll() is None, normalize_died()
