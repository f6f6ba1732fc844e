"""Broker outage (issue 5, item 1): the only broker SIGKILLed for longer than the
sender's whole retry window, under the simulator's steady traffic, then restarted.

`wapipe ingest` (a real process), normalize and funnel run throughout. Every
request must be answered 200 (from the spool while Kafka is away), every body
must be on the raw topic afterwards, and the derived data must be exact: each
message's last `message_state` record and each funnel window's last record equal
to the pure fold of what was sent (normalize's rules, the funnel's merge), and the
simulator's own oracle (written from the contract, not from the pipeline's code)
must agree on every message's state and every sub-account's funnel totals.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from exactness import assert_exact

from simulator import Plan, SendOptions, simulate
from wapipe.topics import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# The outage must outlast 8x8's sender: it gives up about 2 minutes after an event's
# first attempt (retries after about 1, 10, 30 and 90 s; docs/operations.md, "Never lost"), so
# only the ingester's spool can carry an event across an outage longer than that.
OUTAGE_SECONDS = 125.0
BEFORE_SECONDS = 20.0  # of traffic (and processors' output) before the kill
AFTER_SECONDS = 25.0  # of traffic after the broker is back
RATE = 20.0  # webhooks per second
SEED = 11


@pytest.mark.timeout(600)
async def test_a_broker_dead_for_longer_than_the_retry_window_loses_nothing(
    local_broker, settings_for, start_pipeline, follow_topic
):
    broker = local_broker()
    await asyncio.to_thread(broker.up)
    settings = settings_for(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.whatsapp",
        topic_partitions=3,
    )
    await create_topics(settings)
    pipeline = await start_pipeline(settings, ("normalize", "funnel"))
    ingester, states = pipeline.ingester, pipeline.states

    plan = Plan(seed=SEED, rate=RATE, duration=BEFORE_SECONDS + OUTAGE_SECONDS + AFTER_SECONDS)
    sending = asyncio.create_task(
        simulate(settings, ingester.webhook_url, plan, options=SendOptions(concurrency=16))
    )
    started = time.monotonic()
    await states.until(
        lambda: time.monotonic() - started >= BEFORE_SECONDS and states.records > 0,
        "traffic and the funnel's output before the kill", 120, pipeline.a_worker_died,
    )  # fmt: skip

    await asyncio.to_thread(broker.kill)  # SIGKILL: a crash, not a clean stop
    killed_at = time.monotonic()
    await ingester.wait_for_status("/readyz", 503, 30)
    # The outage itself: time has to pass, there is no condition to wait for.
    await asyncio.sleep(max(0.0, killed_at + OUTAGE_SECONDS - time.monotonic()))
    during = await ingester.metrics()
    survived = {job: worker.poll() is None for job, worker in pipeline.workers.items()}
    await asyncio.to_thread(broker.up)
    outage = time.monotonic() - killed_at

    summary = await asyncio.wait_for(sending, plan.duration + 120)
    assert summary.failed == 0, summary.describe()
    assert summary.retried == 0, f"some requests were not answered 200: {summary.describe()}"
    assert summary.acknowledged == summary.events == len(summary.timeline)
    spooled = during.value("wapipe_ingest_spool_records")
    assert spooled > 0, "nothing was spooled during the outage"
    metrics = await ingester.wait_for_metrics(
        lambda m: m.value("wapipe_ingest_spool_records") == 0, "the spool to drain", 120
    )
    published = metrics.total("wapipe_ingest_requests_total", outcome="published")
    spooled_total = metrics.total("wapipe_ingest_requests_total", outcome="spooled")

    figures = await assert_exact(pipeline, summary, follow_topic)
    print(
        f"\nFIGURES outage: {summary.describe()}; broker down {outage:.1f} s; "
        f"spool held {spooled:.0f} at the end of the outage; published {published:.0f}, "
        f"spooled {spooled_total:.0f}; {figures}; workers alive after the outage {survived}"
        f"\nROW | {figures.row()} |"
    )
    assert figures.lost == 0
    assert pipeline.a_worker_died() is None
    assert all(survived.values()), f"a worker did not survive the outage: {survived}"
