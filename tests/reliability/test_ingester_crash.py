"""Ingester crash (issue 5, item 4): `wapipe ingest` SIGKILLed with events in its spool.

Kafka is down the whole time the events arrive, so every one of them goes to the
spool. The ingester is SIGKILLed twice: once under load (requests in flight; the
sender retries what got no answer, as 8x8's does), and once more with everything
spooled. Then the broker starts, the ingester restarts on the same spool
directory, and the spool must drain into the raw topic with every body in it.

The existing tests cover neighbours of this, not this: `tests/ingest/test_outage.py`
restarts an in-process ingester gracefully (its spool closed cleanly), and
`tests/ingest/test_server_process.py` stops the process with SIGTERM while Kafka is up.

A duplicate on the raw topic is allowed (docs/operations.md, "Never lost"): a request in flight
at the SIGKILL may have reached the spool without its answer, and the sender's
retry then spools it again. So at most one per request in flight.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest
from steady_sender import SteadySender, receipt_story

from wapipe.topics import RAW, create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MESSAGES = 250  # about 600 receipt bodies, all distinct
RATE = 100.0  # requests per second
CONCURRENCY = 8  # requests in flight at most: the bound on raw duplicates
KILL_AT = 0.5  # share of the bodies acknowledged when the first SIGKILL lands


@pytest.mark.timeout(300)
async def test_ingester_sigkilled_with_a_full_spool_drains_it_all_after_restart(
    local_broker, settings_for, ingest_process, follow_topic, eventually
):
    broker = local_broker()  # made, not started: nothing listens on its port yet
    settings = settings_for(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.whatsapp",
        topic_partitions=3,
    )
    story = receipt_story(MESSAGES, prefix="crash", now=datetime.now(UTC), retried=0.0)
    bodies = story.bodies
    assert len(set(bodies)) == len(bodies)

    ingester = ingest_process(settings)
    await ingester.start()
    assert await ingester.status("/readyz") == 503
    sender = SteadySender(ingester.webhook_url, bodies, rate=RATE, concurrency=CONCURRENCY,
                          retry_window=120.0)  # fmt: skip
    sending = asyncio.create_task(sender.run())
    await eventually(lambda: len(sender.acknowledged) >= KILL_AT * len(bodies), 60,
                     f"{KILL_AT:.0%} of the bodies acknowledged")  # fmt: skip
    ingester.kill()  # SIGKILL under load
    acknowledged_at_kill = len(sender.acknowledged)
    await ingester.start()  # the same spool directory; Kafka still down
    await asyncio.wait_for(sending, 150)
    assert not sender.given_up, f"{len(sender.given_up)} bodies never acknowledged"
    assert len(sender.acknowledged) == len(bodies)
    # Failed attempts are the ones the SIGKILL cut, and the retries while nothing listened.
    assert all(failure.status is None for failure in sender.failures), sender.failures[:3]

    metrics = await ingester.metrics()
    spooled = int(metrics.value("wapipe_ingest_spool_records"))
    assert spooled >= len(bodies)
    assert metrics.value("wapipe_ingest_spool_bytes") > 0
    assert metrics.value("wapipe_ingest_kafka_available") == 0
    assert metrics.value(
        "wapipe_ingest_requests_total", event_type="outbound_message_status_changed",
        outcome="spooled",
    ) == spooled - leftover(ingester.log, run=2)  # fmt: skip
    ingester.kill()  # SIGKILL again, with every event in the spool and none in flight

    await asyncio.to_thread(broker.up)
    await create_topics(settings)
    started = time.monotonic()
    await ingester.start()
    assert leftover(ingester.log, run=3) == spooled
    await ingester.wait_for_status("/readyz", 200, 90)
    metrics = await ingester.wait_for_metrics(
        lambda m: m.value("wapipe_ingest_spool_records") == 0, "the spool to drain", 90
    )
    drained_after = time.monotonic() - started
    assert metrics.value("wapipe_ingest_spool_drained_records_total") == spooled
    assert metrics.value("wapipe_ingest_spool_bytes") == 0

    raw = await follow_topic(settings, RAW)
    await raw.until(lambda: set(bodies) <= raw.counts.keys(), "every body on the raw topic", 90)
    await raw.drain()
    lost = len(set(bodies) - raw.counts.keys())
    failures = Counter(str(failure.error).split(":")[0] for failure in sender.failures)
    print(f"\nFIGURES ingester crash: bodies {len(bodies)}, acknowledged "
          f"{len(sender.acknowledged)} ({acknowledged_at_kill} before the first SIGKILL), "
          f"failed attempts {len(sender.failures)} ({dict(failures)}), spooled at the second "
          f"SIGKILL {spooled}, left from run 1 {leftover(ingester.log, run=2)}, drained "
          f"{spooled} in {drained_after:.1f} s after restart, raw records {raw.records}, "
          f"duplicates {raw.duplicates}, lost {lost}")  # fmt: skip
    assert lost == 0
    assert raw.records == spooled
    assert raw.duplicates <= CONCURRENCY


def leftover(log, run: int) -> int:
    """Records the `run`-th start of the ingester found in its spool, from the log: the
    spool reports them as it opens, before the server says it listens."""
    found, starts = 0, 0
    for line in log.read_text().splitlines():
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "spool holds events from an earlier run":
            found = int(event["records"])
        elif event.get("event") == "ingester listening":
            starts += 1
            if starts == run:
                return found
            found = 0
    raise AssertionError(f"the log shows {starts} starts, not {run}")
