"""End-to-end latency: the simulator at a fixed rate through the whole pipeline.

For every webhook the simulator posts, the clock starts at the ingester's 200 (the
moment 8x8's sender would consider it delivered) and stops when a consumer sees
what it caused:
- on `whatsapp.webhooks.raw`: the body itself (ingester -> Kafka -> a consumer);
  the floor every other path stands on, measured in the same run;
- on `whatsapp.status`: the typed receipt (normalize's hop);
- on `whatsapp.message_state`: the state the receipt moved its message to
  (normalize, then the funnel's merge: one hop since the engine);
- for a customer's reply to one of our messages: the reply re-keyed by that umid on
  `funnel.replies` (normalize, then the funnel's re-keying hop), and the message's
  state on `message_state` carrying its `repliedAt` (and then the merge hop); only
  the first reply to a message is timed;
- on `whatsapp.alerts`: the template alert the quality or status event raised
  (normalize, then the templates worker).
Only the first sight counts (a retried webhook is timed from its first 200). A
receipt that changed nothing (a duplicate, an older state arriving late) has no
record to wait for and is not counted. Every topic is read read_committed, as the
pipeline's consumers read its transactional outputs: a record counts once its
transaction committed.

Runs `wapipe ingest`, `wapipe process normalize|funnel|templates` as processes,
as a user would; uses WAPIPE_KAFKA_BOOTSTRAP if set, else a broker of its own.
A warm-up story runs first so that group joins are not counted. Prints a Markdown
table and writes it to bench/results/. Target (`make bench-e2e`: 1,000 webhooks/s,
the default rate): p99 from the 200 to `message_state` under 500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import confluent_kafka
import orjson
import uvloop

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "bench" / "processors")]

from bench_processors import start_broker, worker_environment, write_report  # noqa: E402

from simulator import Plan, SendOptions, Summary, Timeline, event_bytes, simulate  # noqa: E402
from simulator.stories import (  # noqa: E402
    Inbound,
    TemplateCategory,
    TemplateQuality,
    TemplateStatus,
)
from wapipe.settings import Settings  # noqa: E402
from wapipe.topics import (  # noqa: E402
    ALERTS,
    FUNNEL_REPLIES,
    MESSAGE_STATE,
    RAW,
    STATUS,
    create_topics,
)

JOBS = ("normalize", "funnel", "templates")
# Alerts raised by a timer (a pause that ended), or withdrawing one (its time), not by
# the webhook they came with.
_UNTIMED_ALERTS = ("TEMPLATE_UNPAUSED", "ALERT_WITHDRAWN")
TARGET_P99_SECONDS = 0.5  # from the 200 to message_state
TARGET_RATE = 1000.0  # at this many webhooks/s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="webhooks per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=600.0,
        help="story seconds per second (600: 10 h of story, so strikes happen)",
    )
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=3)
    arguments = parser.parse_args()  # fmt: skip
    broker, bootstrap = start_broker()
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=f"e2e{int(time.time())}.wa",
                        topic_partitions=arguments.partitions)  # fmt: skip
    try:
        asyncio.run(create_topics(settings))
        with (
            tempfile.TemporaryDirectory(prefix="wapipe-e2e-") as home,
            _pipeline(settings, Path(home)) as url,
        ):
            # uvloop: the simulator posting at the target rate is this process's whole work.
            latencies, summary = uvloop.run(_measure(settings, url, arguments))
    finally:
        if broker is not None:
            broker.down()
    report = _report(arguments, latencies, summary)
    print(report)
    write_report("e2e", report)
    return 0


@contextlib.contextmanager
def _pipeline(settings: Settings, home: Path) -> Iterator[str]:
    """The ingester and the workers as processes (logs in `home`); yields the webhook
    URL once the ingester is ready; SIGTERM to all at the end."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(command: list[str], environment: dict[str, str], name: str) -> None:
        log = (home / f"{name}.log").open("wb")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "wapipe", *command], env=environment,
            stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip

    try:
        for job in JOBS:
            start(["process", job], worker_environment(settings, home)[0], job)
        environment, port = worker_environment(settings, home)
        environment |= {"WAPIPE_INGEST_HOST": "127.0.0.1", "WAPIPE_INGEST_PORT": str(port),
                        "WAPIPE_SPOOL_DIR": str(home / "spool")}  # fmt: skip
        start(["ingest"], environment, "ingest")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not _answers(f"{base}/readyz"):
            if time.monotonic() > deadline:
                sys.exit(f"the ingester is not ready after 60 s: see {home}/ingest.log")
            time.sleep(0.2)
        yield f"{base}/webhooks/whatsapp"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class _Seen:
    """When a consumer first saw each thing, by what it is: ("raw", body bytes),
    ("status", umid|state), ("state", umid|state), ("reply", umid answered),
    ("replied", umid answered), ("alert", alert id) -> (epoch seconds, record value)."""

    first: dict[tuple[str, object], tuple[float, dict[str, object] | None]] = field(
        default_factory=dict
    )

    def note(self, kind: str, what: object, value: dict[str, object] | None = None) -> None:
        self.first.setdefault((kind, what), (time.time(), value))


class _Follower:
    """A process of its own (the simulator keeps this one's core) reading the raw,
    status, replies, message-state and alert topics read_committed from their ends, and
    noting when each thing is first seen (wall-clock times, comparable across processes)."""

    def __init__(self, settings: Settings) -> None:
        prefix = settings.topic_prefix
        topics = {spec.name(prefix): spec.suffix
                  for spec in (RAW, STATUS, FUNNEL_REPLIES, MESSAGE_STATE, ALERTS)}  # fmt: skip
        self.conn, child = multiprocessing.Pipe()
        self.process = multiprocessing.Process(
            target=_follow, args=(settings.kafka_bootstrap, topics, settings.topic_partitions,
                                  child), daemon=True,
        )  # fmt: skip
        self.process.start()
        if not self.conn.poll(60):
            sys.exit("the follower did not start within 60 s")
        self.conn.recv()

    def ask(self, request: str) -> object:
        self.conn.send(request)
        return self.conn.recv()

    def clear(self) -> None:
        self.conn.send("clear")

    def count(self) -> tuple[int, bool]:
        """How many things were seen, and whether a message state was."""
        answer = self.ask("count")
        assert isinstance(answer, tuple)
        return answer

    def stop(self) -> _Seen:
        first = self.ask("stop")
        self.process.join(30)
        assert isinstance(first, dict)
        return _Seen(first)


def _follow(bootstrap: str, topics: dict[str, str], partitions: int, conn: Connection) -> None:
    """The follower's process: reads until asked to stop, answering `count`, `clear`
    (forget what was seen) and `stop` (sends everything seen)."""
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": "bench-e2e-follower",
        "isolation.level": "read_committed", "enable.auto.commit": False,
        "fetch.wait.max.ms": 10,
    })  # fmt: skip
    consumer.assign([confluent_kafka.TopicPartition(name, p, confluent_kafka.OFFSET_END)
                     for name in topics for p in range(partitions)])  # fmt: skip
    seen = _Seen()
    conn.send("ready")
    while True:
        while conn.poll():
            request = conn.recv()
            if request == "count":
                conn.send((len(seen.first), any(kind == "state" for kind, _ in seen.first)))
            elif request == "clear":
                seen.first.clear()
            else:  # stop
                conn.send(seen.first)
                consumer.close()
                return
        for record in consumer.consume(500, 0.005):  # a short wait: the time noted is the return
            if record.error() is not None:
                continue
            kind, value = topics[record.topic() or ""], record.value() or b""
            if kind == RAW.suffix:
                seen.note("raw", value)
            elif kind == STATUS.suffix:
                receipt = orjson.loads(value)
                seen.note("status", f"{receipt['umid']}|{receipt['state']}")
            elif kind == FUNNEL_REPLIES.suffix:  # keyed by the umid the reply answers
                seen.note("reply", (record.key() or b"").decode())
            elif kind == MESSAGE_STATE.suffix:
                state = orjson.loads(value)
                seen.note("state", f"{state['umid']}|{state['state']}")
                if state["repliedAt"] is not None:
                    seen.note("replied", state["umid"])
            else:
                alert = orjson.loads(value)
                seen.note("alert", alert["alertId"], alert)


async def _measure(
    settings: Settings, url: str, arguments: argparse.Namespace
) -> tuple[dict[str, list[float]], Summary]:
    follower = _Follower(settings)
    options = SendOptions(concurrency=64)
    print("warm-up: a short story until its states come out ...", flush=True)
    warm_up = Plan(seed=arguments.seed + 1, rate=50, duration=5, time_scale=60)
    await simulate(settings, url, warm_up, options=options)
    deadline = time.monotonic() + 120
    while not follower.count()[1]:
        if time.monotonic() > deadline:
            sys.exit("no warm-up states within 120 s")
        await asyncio.sleep(0.1)
    follower.clear()  # the warm-up's sightings
    plan = Plan(seed=arguments.seed, rate=arguments.rate, duration=arguments.duration,
                time_scale=arguments.time_scale)  # fmt: skip
    print(f"posting {arguments.rate:g} webhooks/s for {arguments.duration:g} s ...", flush=True)
    summary = await simulate(settings, url, plan, options=options, progress=sys.stderr)
    print(summary.describe(), flush=True)
    await _settle(follower)
    seen = follower.stop()
    return _latencies(summary.timeline, summary.acknowledged_at, seen), summary


async def _settle(follower: _Follower, quiet: float = 10.0, at_most: float = 300.0) -> None:
    """Wait until nothing new was seen for `quiet` seconds: the pipeline has caught up."""
    deadline = time.monotonic() + at_most
    count, changed = follower.count()[0], time.monotonic()
    while time.monotonic() - changed < quiet and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = follower.count()[0]
        if now != count:
            count, changed = now, time.monotonic()


def _latencies(
    timeline: Timeline, acknowledged_at: dict[str, float], seen: _Seen
) -> dict[str, list[float]]:
    """Seconds from each webhook's 200 to the first sight of what it caused, by path."""
    paths: dict[str, list[float]] = {"raw": [], "status": [], "message_state": [],
                                     "reply": [], "replied": [], "alerts": []}  # fmt: skip
    template_events: dict[str, list[tuple[datetime, str]]] = {}
    replied: set[str] = set()  # messages whose first reply is timed
    for event in timeline.events:
        acked = acknowledged_at.get(event.key)
        if acked is None:
            continue
        raw = seen.first.get(("raw", event_bytes(timeline, event)))
        if raw is not None:
            paths["raw"].append(raw[0] - acked)
        for kind, path in (("status", "status"), ("state", "message_state")):
            if (kind, event.key) in seen.first:
                paths[path].append(seen.first[kind, event.key][0] - acked)
        fact = event.fact
        # Only a message's first reply: a later one would find it seen already.
        if (isinstance(fact, Inbound) and fact.reply_to and not fact.echo
                and fact.reply_to not in replied):  # fmt: skip
            replied.add(fact.reply_to)
            for kind in ("reply", "replied"):
                if (kind, fact.reply_to) in seen.first:
                    paths[kind].append(seen.first[kind, fact.reply_to][0] - acked)
        if isinstance(event.fact, TemplateQuality | TemplateStatus | TemplateCategory):
            at = timeline.anchor + timedelta(seconds=event.at)
            template_events.setdefault(event.fact.template.template_id, []).append((at, event.key))
    for (kind, _), (when, alert) in seen.first.items():
        if kind != "alert" or alert is None or alert["type"] in _UNTIMED_ALERTS:
            continue
        subject = alert["subject"]
        candidates = template_events.get(str(subject.get("templateId")), [])  # type: ignore[attr-defined]
        occurred = datetime.fromisoformat(str(alert["occurredAt"]).replace("Z", "+00:00"))
        # The body's time may be truncated to fewer digits: the nearest event within 1 s.
        near = [(abs((at - occurred).total_seconds()), key) for at, key in candidates]
        if near and min(near)[0] < 1.0:
            paths["alerts"].append(when - acknowledged_at[min(near)[1]])
    return paths


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _report(
    arguments: argparse.Namespace, latencies: dict[str, list[float]], summary: Summary
) -> str:
    floor = _percentile(latencies["raw"], 0.5) if latencies["raw"] else float("nan")
    lines = [
        f"# End-to-end latency, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"broker, ingester, 3 workers and the simulator on the same machine. "
        f"`bench/e2e/bench_e2e.py --rate {arguments.rate:g} --duration {arguments.duration:g} "
        f"--time-scale {arguments.time_scale:g} --seed {arguments.seed}`: "
        f"{summary.acknowledged} webhooks acknowledged at {summary.rate:.0f}/s, "
        f"{summary.retried} retries.",
        "",
        "| from the 200 to | timed | p50 ms | p90 ms | p99 ms | max ms | p50 / raw p50 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {"raw": "the body on `webhooks.raw` (floor)",
              "status": "the receipt on `status` (normalize)",
              "message_state": "the receipt's state on `message_state` (normalize, funnel)",
              "reply": "a reply on `funnel.replies` (normalize, funnel's re-keying hop)",
              "replied": "a reply's `repliedAt` on `message_state` (normalize, funnel's "
                         "two hops)",
              "alerts": "its alert on `alerts`"}  # fmt: skip
    for path, values in latencies.items():
        if not values:
            lines.append(f"| {labels[path]} | 0 | - | - | - | - | - |")
            continue
        p50 = _percentile(values, 0.5)
        cells = [f"{_percentile(values, q) * 1000:,.0f}" for q in (0.5, 0.9, 0.99)]
        lines.append(f"| {labels[path]} | {len(values):,} | {' | '.join(cells)} | "
                     f"{max(values) * 1000:,.0f} | {p50 / floor:.1f} |")  # fmt: skip
    states = latencies["message_state"]
    if states:
        p99 = _percentile(states, 0.99)
        verdict = ("target met" if p99 < TARGET_P99_SECONDS else
                   f"target missed by {(p99 - TARGET_P99_SECONDS) * 1000:,.0f} ms "
                   f"({p99 / TARGET_P99_SECONDS:.1f}x)")  # fmt: skip
        if summary.rate < 0.95 * TARGET_RATE:
            verdict = (f"not judged: the simulator reached {summary.rate:,.0f}/s, not "
                       f"{TARGET_RATE:,.0f}/s")  # fmt: skip
        lines += ["", f"Target: p99 from the 200 to `message_state` under "
                  f"{TARGET_P99_SECONDS * 1000:.0f} ms at {TARGET_RATE:,.0f} webhooks/s: "
                  f"{p99 * 1000:,.0f} ms at {summary.rate:,.0f}/s, {verdict}."]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
