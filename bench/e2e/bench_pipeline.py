"""Pipeline throughput: receipts fed straight to the raw topic, through `wapipe run`, to
`message_state`.

Starts `wapipe run` (the ingester and every processor, as `make run` does) on a fresh
topic prefix and WAPIPE_HOME, waits until the normalize and funnel workers answer
/readyz, then writes N webhook receipts (N/3 messages: sent, delivered, read) to the
raw topic as fast as librdkafka takes them, and reads `message_state` read_committed
until every message has reached `read`. Prints, in one run:
- the producer alone: receipts/s written to the raw topic (the input's ceiling here);
- the pipeline: receipts/s from the first receipt written to the last message seen
  `read` on `message_state` (normalize, then the funnel, with the ingester, templates
  and phones workers idle beside them, and the broker, on the same cores);
- each worker's steady rate from its `wapipe_processor_records_total`.
Target (issue 18): 15,000 receipts/s or more. Uses WAPIPE_KAFKA_BOOTSTRAP if set, else
a broker of its own. Writes the table to bench/results/.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import confluent_kafka
import orjson

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "bench" / "processors")]

from bench_processors import _receipts, produce, start_broker, write_report  # noqa: E402

from wapipe.settings import Settings  # noqa: E402
from wapipe.stack import worker_ports  # noqa: E402
from wapipe.topics import MESSAGE_STATE  # noqa: E402

TARGET_RECEIPTS_PER_SECOND = 15_000
_TIMEOUT_SECONDS = 600.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300_000,
                        help="receipts to feed (rounded down to a multiple of 3)")  # fmt: skip
    arguments = parser.parse_args()
    events = arguments.events - arguments.events % 3
    broker, bootstrap = start_broker()
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=f"pipe{int(time.time())}.wa")
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="wapipe-bench-pipeline-") as home:
        environment = {**os.environ, "WAPIPE_KAFKA_BOOTSTRAP": bootstrap,
                       "WAPIPE_TOPIC_PREFIX": settings.topic_prefix, "WAPIPE_HOME": home,
                       "WAPIPE_LOG_LEVEL": "warning"}  # fmt: skip
        stack = subprocess.Popen([sys.executable, "-m", "wapipe", "run"], env=environment,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            ports = {name: port for name, port in worker_ports(settings).items()
                     if name in ("normalize", "funnel")}  # fmt: skip
            _await_ready(stack, ports)
            print(f"wapipe run is up; writing {events:,} receipts to the raw topic", flush=True)
            follower = _follower(bootstrap, MESSAGE_STATE.name(settings.topic_prefix))
            started = time.perf_counter()
            produce(bootstrap, _receipts(settings, events))
            written = time.perf_counter() - started
            print(f"written in {written:.1f} s; following message_state", flush=True)
            finished = _await_read(follower, events // 3, started)
            rates = {name: _worker_rate(port) for name, port in ports.items()}
        finally:
            stack.send_signal(signal.SIGTERM)
            stack.wait(60)
            if broker is not None:
                broker.down()
    report = _report(events, written, finished, rates, load)
    print(report)
    write_report("pipeline", report)
    return 0


def _await_ready(stack: subprocess.Popen[bytes], ports: dict[str, int]) -> None:
    deadline = time.monotonic() + 120
    waiting = dict(ports)
    while waiting:
        if stack.poll() is not None:
            sys.exit(f"wapipe run exited with {stack.returncode} before its workers were ready")
        if time.monotonic() > deadline:
            sys.exit(f"workers not ready after 120 s: {sorted(waiting)}")
        waiting = {name: port for name, port in waiting.items() if not _answers(port, "readyz")}
        time.sleep(0.2)  # polling a process's HTTP endpoint: no event to await


def _answers(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _follower(bootstrap: str, topic: str) -> confluent_kafka.Consumer:
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"bench-pipeline-{time.time()}",
        "isolation.level": "read_committed", "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })  # fmt: skip
    consumer.subscribe([topic])
    return consumer


def _await_read(consumer: confluent_kafka.Consumer, messages: int, started: float) -> float:
    """Seconds from `started` until `messages` distinct umids were seen in state `read`."""
    read: set[bytes] = set()
    last = started
    deadline = time.monotonic() + _TIMEOUT_SECONDS
    while len(read) < messages:
        if time.monotonic() > deadline:
            sys.exit(f"only {len(read):,} of {messages:,} messages reached `read` "
                     f"within {_TIMEOUT_SECONDS:.0f} s")  # fmt: skip
        for record in consumer.consume(10_000, 0.5):
            if (
                record.error() is None
                and orjson.loads(record.value() or b"{}").get("state") == "read"
            ):
                read.add(record.key() or b"")
                last = time.perf_counter()
    consumer.close()
    return last - started


_RECORDS, _SECONDS = (
    "wapipe_processor_batch_records_sum",
    "wapipe_processor_batch_duration_seconds_sum",
)


def _worker_rate(port: int) -> str:
    """The worker's records over its batches' seconds: its busy rate, from its histograms."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    values = {_RECORDS: 0.0, _SECONDS: 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in values:
            values[name] += float(line.rsplit(" ", 1)[1])
    return f"{values[_RECORDS] / values[_SECONDS]:,.0f}" if values[_SECONDS] else "-"


def _report(events: int, written: float, finished: float, rates: dict[str, str],
            load: tuple[float, float, float]) -> str:  # fmt: skip
    pipeline = events / finished
    verdict = ("met" if pipeline >= TARGET_RECEIPTS_PER_SECOND else
               f"missed by {1 - pipeline / TARGET_RECEIPTS_PER_SECOND:.0%}")  # fmt: skip
    return "\n".join([
        f"`bench/e2e/bench_pipeline.py --events {events}`, {time.strftime('%Y-%m-%d %H:%M')}. "
        f"Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"load average {load[0]:.2f} at the start; broker, `wapipe run` and the feeder share "
        f"them. {events:,} receipts, {events // 3:,} messages.",
        "",
        "| what | receipts/s |",
        "|---|---:|",
        f"| librdkafka writing them to the raw topic (the input's ceiling) | "
        f"{events / written:,.0f} |",
        f"| raw topic to `message_state` `read`, through `wapipe run` | {pipeline:,.0f} |",
        f"| normalize worker, records over its batches' time | {rates['normalize']} |",
        f"| funnel worker, records over its batches' time | {rates['funnel']} |",
        "",
        f"Target: {TARGET_RECEIPTS_PER_SECOND:,} receipts/s through `wapipe run`: {verdict}.",
    ])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
