"""The guard-rails story end to end (simulator/guardrails.py): webhooks through HTTP, the
ingester and normalize to the phones, conversations, limits and funnel jobs.

A business number on TIER_1K is walked to 80% and 100% of its messaging limit by 1,000
customers; customers write and get free-form answers inside their service window, others
get free-form messages outside one (some failing with 1022 / 131047); deliveries in
three pricing categories and two countries are billed. The story (4 h of it) is posted
in a shuffled order, then a quarter of it again (retries the receiver already kept), and
every new output must equal the oracle (simulator/guardrails_expected.py):
`whatsapp.messaging_limits` and the standing limit alerts, `whatsapp.service_windows`,
the funnel's 1 h windows' free-form counts and the billing 1 d windows.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from shuffled_posting import shuffled
from state_topics import StateAndAlerts

from simulator import Plan, SendOptions, new_timeline, simulate
from simulator.guardrails import NUMBER
from simulator.guardrails_expected import NEAR, REACHED, GuardrailsExpected, expected_guardrails
from wapipe.topics import BILLING, MESSAGING_LIMITS, SERVICE_WINDOWS, create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

JOBS = ("normalize", "funnel", "phones", "conversations", "limits")
SEED = 17
# 4 hours of story posted in 20 s (about 2,400 webhooks).
PLAN = Plan(seed=SEED, story="guardrails", rate=400.0, duration=20.0, time_scale=720.0)
RETRIED = 0.25  # the share of the webhooks posted a second time
ENVIRONMENT = {"WAPIPE_MESSAGING_LIMIT_CHECK_SECONDS": "1"}
OPTIONS = SendOptions(concurrency=16, retry_pauses=(1.0, 2.0, 5.0, 10.0))


class _Workers:
    """Stands for the pipeline's workers where `StateAndAlerts.until` polls one: fails
    with the log of the first worker found dead."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    def poll(self) -> None:
        dead = self.pipeline.a_worker_died()
        assert dead is None, dead


def limits_found(outputs: StateAndAlerts) -> dict[str, tuple[Any, ...]]:
    return {key: (value["subjectKind"], value["tier"], value["limit"], value["reached"],
                  value["headroom"], value["oldestLeavesAt"])
            for key, value in outputs.states.items() if value["reached"]}  # fmt: skip


def limits_expected(expected: GuardrailsExpected) -> dict[str, tuple[Any, ...]]:
    return {key: (r.subject_kind, r.tier, r.limit, r.reached, r.headroom, r.oldest_leaves_at)
            for key, r in expected.limits.items()}  # fmt: skip


def standing(outputs: StateAndAlerts) -> set[str]:
    """The limit alerts that hold: those sent, minus those a later one superseded or
    withdrew."""
    superseded = {s for alert in outputs.alerts for s in alert["supersedes"]}
    withdrawn = {alert["alertId"] for alert in outputs.alerts if alert["type"] == "ALERT_WITHDRAWN"}
    return {alert["alertId"] for alert in outputs.alerts
            if alert["type"] in (NEAR, REACHED)} - superseded - withdrawn  # fmt: skip


@pytest.mark.timeout(600)
async def test_the_guardrails_story_end_to_end(
    kafka_bootstrap: str, settings_for: Any, start_pipeline: Any, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap=kafka_bootstrap, topic_partitions=3,
                            topic_prefix=f"t{uuid.uuid4().hex[:10]}.whatsapp")  # fmt: skip
    await create_topics(settings)
    pipeline = await start_pipeline(settings, JOBS, **ENVIRONMENT)
    started = time.monotonic()
    timeline = new_timeline(PLAN)
    expected = expected_guardrails(timeline)
    url = pipeline.ingester.webhook_url
    first = await simulate(settings, url, timeline=shuffled(timeline, SEED), options=OPTIONS)
    again = await simulate(settings, url, timeline=shuffled(timeline, SEED + 1, RETRIED),
                           options=OPTIONS)  # fmt: skip
    assert first.failed == again.failed == 0, (first.describe(), again.describe())
    posted = time.monotonic() - started
    workers = _Workers(pipeline)

    def pair(_: Any, value: dict[str, Any]) -> str:
        return f"{value['subAccountId']}|{value['customer']}"

    async with (
        StateAndAlerts(settings, MESSAGING_LIMITS) as limits,
        StateAndAlerts(settings, SERVICE_WINDOWS, state_id=pair) as windows,
        StateAndAlerts(settings, BILLING, state_id=lambda _, value: value["windowId"]) as billing,
    ):

        def billed() -> dict[str, int]:
            return {window_id: value["delivered"] for window_id, value in billing.states.items()
                    if value["window"] == "1d" and value["delivered"]}  # fmt: skip

        def outside() -> dict[str, tuple[int, int]]:
            found = {}
            for window_id, value in pipeline.windows.latest_json().items():
                counts = (value["freeformOutsideWindow"], value["freeformOutsideWindowFailed"])
                if value["window"] == "1h" and any(counts):
                    found[window_id] = counts
            return found

        def limit_found() -> tuple[dict[str, tuple[Any, ...]], set[str]]:
            return limits_found(limits), standing(limits)

        limit_expected = (limits_expected(expected), set(expected.alerts))
        await limits.until(lambda: limit_found() == limit_expected, workers,
                           tmp_path / "limits.log",
                           "the number at its limit and its two standing alerts", 300)  # fmt: skip
        await windows.until(lambda: windows.states == expected.service_windows, workers,
                            tmp_path / "conversations.log", "the service windows", 120)  # fmt: skip
        await pipeline.windows.until(lambda: outside() == expected.freeform_outside,
                                     "the funnel's free-form counts", 120,
                                     alive=pipeline.a_worker_died)  # fmt: skip
        await billing.until(lambda: billed() == expected.billing, workers,
                            tmp_path / "funnel.log", "the billing day windows", 120)  # fmt: skip
        exact = time.monotonic() - started
        # Nothing changes afterwards: stop every worker, read to the end, compare again.
        for job, worker in pipeline.workers.items():
            worker.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(worker.wait, 60) == 0, f"{job} did not stop cleanly"
        for outputs in (limits, windows, billing):
            await outputs.drain()
        await pipeline.windows.drain()
        assert limit_found() == limit_expected
        assert windows.states == expected.service_windows
        assert outside() == expected.freeform_outside
        assert billed() == expected.billing
    limit_alerts = [a["alertId"] for a in limits.alerts if a["type"] in (NEAR, REACHED)]
    assert len(limit_alerts) == len(set(limit_alerts)), f"an alert sent twice: {limit_alerts}"
    near = next(a for a in limits.alerts if a["alertId"] in expected.alerts and a["type"] == NEAR)
    assert near["details"]["reached"] >= 800  # more when customers share its second
    assert near["subject"] == {"displayPhoneNumber": NUMBER, "subAccountId": None}
    print(
        f"\nFIGURES guardrails: {len(timeline)} webhooks + {again.events} again posted in "
        f"{posted:.1f} s; outputs exact after {exact:.1f} s: "
        f"{sorted(expected.alerts)}, {len(expected.service_windows)} service windows, "
        f"{sum(o for o, _ in expected.freeform_outside.values())} free-form outside, "
        f"{sum(expected.billing.values())} billed"
    )
