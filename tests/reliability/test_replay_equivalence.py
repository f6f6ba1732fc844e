"""Replaying the retained raw topic into a fresh pipeline re-derives what the live run
derived (docs/design.md, Time; docs/operations.md, "Replaying the raw events").

A live pipeline (the ingester and all six jobs) takes two stories through HTTP: the
simulator's default story (receipts with late reads and failures, inbound replies,
template quality changes with three strikes, pauses and a disabling, a category change,
phone tiers upgraded and downgraded, a quality flag raised and cleared) and the
guard-rails story (a number walked to 80% and 100% of its messaging limit, service
windows, free-form messages outside them, billing). Each is posted shuffled, and a share
of it again (retries the ingester keeps as new raw records). Before them, 3 hours of
the default story are posted in event order, as live traffic comes, with the rate
alerts' thresholds lowered: its windows' receipts come before their decision, so the
funnel's rate alerts are raised, and must be the same in both runs. Once every job has caught
up and nothing is written any more, the workers are stopped and every derived topic is
read to its end. Then `wapipe replay --to-prefix NEW --yes` copies the raw topic to a
new prefix, six fresh workers (a state directory and an instance of their own) process
it, and their outputs must equal the live run's: the last record per key of the state
topics, per window of `funnel` and `billing`, per subject of `messaging_limits` (but its
`at`), and the standing alerts with their contents (but `supersedes`); records that count
nothing (all-zero windows, a subject without a limit at reach 0) are left out of both,
as their presence depends on batching (`LEFT_OUT`, `counts_nothing`).

Why the stories lie 3 days back: that is when a replay happens, days after the events.
Had a rule decided with the wall clock, the replay would see every service window
closed, every funnel window final (the live run took every change), every template
pause long over when its strike arrived, and the limits' 24 h as elapsed: it would have
derived other windows, other counts, other alerts. Deciding with event time and stream
time, both runs see the same times, so they must agree however the records were batched
and interleaved (the live run read them as they came, the replay at full speed).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from derived_outputs import Derived, differences, read_derived, until_settled
from shuffled_posting import shuffled

from simulator import Plan, SendOptions, Summary, Timeline, new_timeline, simulate
from simulator.stories import Inbound
from wapipe.settings import Settings
from wapipe.topics import ALERTS, BILLING, FUNNEL, MESSAGING_LIMITS, create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

JOBS = ("normalize", "funnel", "templates", "phones", "conversations", "limits")
# The rate alerts' thresholds lowered, so that the stories' small windows are alerted.
ENVIRONMENT = {"WAPIPE_TEMPLATE_PAUSE_CHECK_SECONDS": "1",
               "WAPIPE_MESSAGING_LIMIT_CHECK_SECONDS": "1",
               "WAPIPE_FUNNEL_ALERT_MIN_VOLUME": "5", "WAPIPE_FUNNEL_FAILURE_RATE_ALERT": "0.05",
               "WAPIPE_FUNNEL_READ_RATE_ALERT": "0.6"}  # fmt: skip
# The default story, 12 h of it in 15 s (about 1,200 webhooks): seed 7 walks its first
# template through 3 strikes (paused twice, then disabled) and pauses two more once,
# recategorizes one; its three numbers are upgraded, downgraded, flagged and unflagged.
MIXED = Plan(seed=7, rate=70.0, duration=15.0, time_scale=2880.0)
# The guard-rails story, 4 h of it in 15 s (about 2,400 webhooks).
GUARDRAILS = Plan(seed=17, story="guardrails", rate=400.0, duration=15.0, time_scale=960.0)
# The default story again, 3 h of it in 15 s, posted in event order as live traffic
# comes: its windows' receipts arrive before their decision, so the rate alerts decide
# on what came (a shuffled story's receipts come after it: they are not counted).
IN_ORDER = Plan(seed=23, rate=70.0, duration=15.0, time_scale=720.0)
# The guard-rails story ends over 3 days ago, the mixed one an hour before it, the one
# in order an hour before the mixed one starts.
AGO = timedelta(days=3, minutes=1)
RETRIED = 0.2  # the share of each story posted a second time
OPTIONS = SendOptions(concurrency=16, retry_pauses=(1.0, 2.0, 5.0, 10.0))
SEED = 41  # of the posting orders
# Fields that may differ, left out of the comparison:
# - messaging_limits' `at`, the stream time an evaluation was as of. Both runs end
#   evaluated at the same final stream time, but a record is rewritten only when its
#   content changes, so the `at` of a key's last record depends on when the evaluation
#   that last changed something ran (batching, timer rounds);
# - a standing alert's `supersedes`: the ids it replaced depend on the order the events
#   came in (late receipts moved a crossing, a late template event renumbered a strike);
#   which alerts stand, and what each says, do not.
LEFT_OUT = {MESSAGING_LIMITS.suffix: ("at",), ALERTS.suffix: ("supersedes",)}


def with_their_own_times(timeline: Timeline) -> Timeline:
    """The timeline with every inbound message carrying its own `timestamp` (a few of the
    simulator's come without one, as 8x8 sends some). An event without a time of its own
    takes the time the ingester received it; here that is 3 days after the story, since
    the test posts 3-day-old events now, which no live traffic does (an event and its
    receipt are seconds apart, and a replay keeps the original receipt time). Such an
    event would jump its partition's stream time 3 days ahead wherever it lands, and
    where it lands in the re-keyed topics differs between a live run and a replay."""
    events = tuple(replace(event, fact=replace(event.fact, complete=True))
                   if isinstance(event.fact, Inbound) else event
                   for event in timeline.events)  # fmt: skip
    return replace(timeline, events=events)


def counts_nothing(value: Any) -> bool:
    """Whether every count of a record is 0 (nested: a window's distributions and error
    codes; a limit of None). A message's change that moved between windows within one
    batch (its country or category told by a later receipt) never touches the first
    window, while one split over two batches writes it back to all zeros: such a window
    says no more than a window never written, and is left out of both runs' views."""
    if isinstance(value, dict):
        return all(counts_nothing(item) for item in value.values())
    return not isinstance(value, int) or isinstance(value, bool) or value == 0


# Likewise a subject without a limit whose reach moved to another one (a sub-account
# counted under itself until its customers' messages told its number) ends at reach 0,
# written or not depending on which the limits job learnt first.
COUNTING_NOTHING = {view: counts_nothing for view in (FUNNEL.suffix, BILLING.suffix,
                                                      MESSAGING_LIMITS.suffix)}  # fmt: skip
SETTLE_SECONDS = 150.0
# Alert types the stories must have raised (some may since be superseded or withdrawn).
SENT = ("TEMPLATE_QUALITY_RED", "TEMPLATE_PAUSED", "TEMPLATE_UNPAUSED", "TEMPLATE_DISABLED",
        "MESSAGING_LIMIT_UPGRADED", "MESSAGING_LIMIT_DOWNGRADED", "PHONE_NUMBER_FLAGGED",
        "MESSAGING_LIMIT_NEAR", "MESSAGING_LIMIT_REACHED")  # fmt: skip


async def post(
    settings: Settings, url: str, timelines: list[Timeline], in_order: Timeline
) -> list[Summary]:  # fmt: skip
    """Post `in_order` in event order (first: the others' later times would make its
    receipts late); then the timelines side by side, each shuffled; then a share of each
    shuffled one again."""
    first = [await simulate(settings, url, timeline=in_order, options=OPTIONS)]
    first += await asyncio.gather(*(simulate(settings, url, timeline=shuffled(t, SEED + n),
                                             options=OPTIONS)
                                    for n, t in enumerate(timelines)))  # fmt: skip
    again = await asyncio.gather(*(simulate(settings, url, options=OPTIONS,
                                            timeline=shuffled(t, SEED + 10 + n, RETRIED))
                                   for n, t in enumerate(timelines)))  # fmt: skip
    summaries = [*first, *again]
    assert all(s.failed == 0 for s in summaries), [s.describe() for s in summaries]
    return summaries


Workers = Mapping[str, subprocess.Popen[bytes]]


def alive_check(workers: Workers, logs: Path) -> Callable[[], str | None]:
    """What the first worker found dead said last, or None while all run."""

    def alive() -> str | None:
        for job, worker in workers.items():
            if worker.poll() is not None:
                log = (logs / f"{job}.log").read_text(errors="replace")[-3000:]
                return f"{job} exited with {worker.returncode}:\n{log}"
        return None

    return alive


async def stop(workers: Workers, logs: Path) -> None:
    """SIGTERM every worker; each must exit 0."""
    for worker in workers.values():
        worker.send_signal(signal.SIGTERM)
    for job, worker in workers.items():
        status = await asyncio.to_thread(worker.wait, 60)
        log = (logs / f"{job}.log").read_text(errors="replace")[-3000:]
        assert status == 0, f"{job} exited with {status} on SIGTERM:\n{log}"


def assert_not_trivial(live: Derived) -> None:
    """The stories derived what this test is about: a comparison of empty topics proves
    nothing."""
    views = live.views
    templates = views["template_state"].values()
    assert max((t["redStrikes"] for t in templates), default=0) >= 2, templates
    assert any(t["disabled"] for t in templates), templates
    phones = views["phone_state"].values()
    assert any(len(p["tierHistory"]) >= 2 for p in phones), phones
    sent = {alert["type"] for alert in live.alerts}
    for kind in SENT:
        assert kind in sent, f"no {kind} alert among {sorted(sent)}"
    standing = {alert["type"] for alert in views[ALERTS.suffix].values()}
    assert {"MESSAGING_LIMIT_NEAR", "MESSAGING_LIMIT_REACHED"} <= standing, standing
    assert {"DELIVERY_FAILURE_SPIKE", "READ_RATE_DROP"} <= standing, standing  # (in order)
    limits = views[MESSAGING_LIMITS.suffix].values()
    # (The last records' reach is as of the last stream time, which may lie past the
    # stories' 24 h; the standing alerts above show the number's crossings.)
    assert any(v["subjectKind"] == "number" and v["limit"] for v in limits), limits
    assert len(views["service_windows"]) >= 30, views["service_windows"]
    billed = [w for w in views[BILLING.suffix].values() if w["window"] == "1d" and w["delivered"]]
    assert billed, views[BILLING.suffix]
    funnel = views[FUNNEL.suffix].values()
    assert any(w["freeformOutsideWindow"] for w in funnel), "no free-form message outside"
    assert any(w["read"] for w in funnel), "nothing read"
    assert any(w["undelivered"] for w in funnel), "nothing undelivered"
    assert len(views["message_state"]) >= 1_000, len(views["message_state"])


@pytest.mark.timeout(480)
async def test_a_replay_of_the_raw_topic_derives_what_the_live_run_derived(
    kafka_bootstrap: str, settings_for: Callable[..., Settings], start_pipeline: Any,
    start_worker: Callable[..., subprocess.Popen[bytes]], unused_port: Callable[[], int],
    tmp_path: Path,
) -> None:  # fmt: skip
    settings = settings_for(kafka_bootstrap=kafka_bootstrap, topic_partitions=3,
                            topic_prefix=f"t{uuid.uuid4().hex[:10]}.whatsapp")  # fmt: skip
    await create_topics(settings)
    pipeline = await start_pipeline(settings, JOBS, **ENVIRONMENT)

    # --- the live run
    started = time.monotonic()
    now = datetime.now(UTC)
    timelines = [with_their_own_times(new_timeline(MIXED, now=now - AGO - timedelta(hours=1))),
                 with_their_own_times(new_timeline(GUARDRAILS, now=now - AGO))]  # fmt: skip
    in_order = with_their_own_times(new_timeline(IN_ORDER, now=now - AGO - timedelta(hours=14)))
    latest_event = max(t.anchor + timedelta(seconds=e.at)
                       for t in (*timelines, in_order) for e in t.events)  # fmt: skip
    assert latest_event < now - timedelta(days=3), latest_event  # (a story ends `duration` late)
    summaries = await post(settings, pipeline.ingester.webhook_url, timelines, in_order)
    await until_settled(settings, JOBS, pipeline.a_worker_died, SETTLE_SECONDS)
    live_seconds = time.monotonic() - started
    await stop(pipeline.workers, tmp_path)
    assert pipeline.ingester.stop() == 0, pipeline.ingester.tail()
    live = await asyncio.to_thread(read_derived, settings, LEFT_OUT, COUNTING_NOTHING)
    assert_not_trivial(live)

    # --- the replay: the raw topic copied to a new prefix, six fresh workers on it
    replayed = settings_for(kafka_bootstrap=kafka_bootstrap, topic_partitions=3,
                            topic_prefix=f"r{uuid.uuid4().hex[:10]}.whatsapp")  # fmt: skip
    home = tmp_path / "replay-home"
    environment = {**os.environ, "WAPIPE_KAFKA_BOOTSTRAP": kafka_bootstrap,
                   "WAPIPE_TOPIC_PREFIX": settings.topic_prefix, "WAPIPE_TOPIC_PARTITIONS": "3",
                   "WAPIPE_HOME": str(home)}  # fmt: skip
    copy_started = time.monotonic()
    command = [sys.executable, "-m", "wapipe", "replay", "--to-prefix", replayed.topic_prefix,
               "--yes"]  # fmt: skip
    result = await asyncio.to_thread(subprocess.run, command, env=environment, timeout=120,
                                     stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                     check=False)  # fmt: skip
    copy_seconds = time.monotonic() - copy_started
    assert result.returncode == 0, (
        f"wapipe replay exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    copied = re.search(r"copied ([\d,]+) records", result.stdout)
    assert copied, result.stdout

    replay_started = time.monotonic()
    workers = {job: start_worker(job, replayed, **ENVIRONMENT, WAPIPE_HOME=str(home),
                                 WAPIPE_PROCESSOR_INSTANCE="replay",
                                 WAPIPE_PROCESSOR_WEB_PORT=str(unused_port()))
               for job in JOBS}  # fmt: skip
    await until_settled(replayed, JOBS, alive_check(workers, tmp_path), SETTLE_SECONDS)
    replay_seconds = time.monotonic() - replay_started
    await stop(workers, tmp_path)
    replay = await asyncio.to_thread(read_derived, replayed, LEFT_OUT, COUNTING_NOTHING)

    posted = sum(s.events for s in summaries)
    compared = ", ".join(f"{view} {len(records)}" for view, records in live.views.items())
    rate_alerts = sum(alert["type"] in ("DELIVERY_FAILURE_SPIKE", "READ_RATE_DROP",
                                        "SERVICE_WINDOW_FAILURES")
                      for alert in live.views[ALERTS.suffix].values())  # fmt: skip
    print(
        f"\nFIGURES replay equivalence: {posted} webhooks posted "
        f"({' + '.join(str(s.events) for s in summaries)}); live run {live_seconds:.1f} s; "
        f"replay copy of {copied[1]} raw records {copy_seconds:.1f} s; replay processing "
        f"{replay_seconds:.1f} s; compared (standing alerts, last record per key or "
        f"window): {compared} ({rate_alerts} of the funnel's rate alerts); records read "
        f"live {sum(live.records.values())}, replayed "
        f"{sum(replay.records.values())}; records counting nothing left out live "
        f"{dict(live.dropped)}, replayed {dict(replay.dropped)}"
    )

    # --- the same outputs
    found = {view: differences(live.views[view], replay.views[view]) for view in live.views}
    different = {view: diff for view, diff in found.items() if diff is not None}
    assert not different, (
        f"the replay ({replayed.topic_prefix}) derived other records than the live run "
        f"({settings.topic_prefix}):\n"
        + "\n".join(f"{view}: {diff}" for view, diff in different.items())
    )
