"""Processor benchmark: events/s of one normalize and one funnel worker, against a bare
aiokafka consume-and-parse loop over the same input, in the same run.

Feeds N webhook receipts (event times near now) into the raw topic of a fresh
prefix, then measures, one after the other:
1. the ceiling: aiokafka consuming the raw topic and parsing each body (orjson);
2. normalize: `wapipe process normalize`, raw -> typed topics;
3. funnel: `wapipe process funnel`, the receipts normalize wrote -> message states.
A worker's rate is read from its own /metrics counter while it works (start-up
and group join excluded): events between the first and the last sample over the
time between them. Prints a Markdown table and writes it to bench/results/.
Uses WAPIPE_KAFKA_BOOTSTRAP if set, else starts its own broker (port 19092).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from wapipe.local_kafka import LocalBroker  # noqa: E402
from wapipe.settings import Settings  # noqa: E402
from wapipe.topics import RAW, create_topics  # noqa: E402

STATES = ("sent", "delivered", "read")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=60_000, help="receipts to process")
    parser.add_argument("--partitions", type=int, default=6)
    arguments = parser.parse_args()
    broker, bootstrap = start_broker()
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=f"bench{int(time.time())}.wa",
                        topic_partitions=arguments.partitions)  # fmt: skip
    try:
        asyncio.run(create_topics(settings))
        asyncio.run(_feed(settings, arguments.events))
        ceiling = asyncio.run(_bare_loop(settings, arguments.events))
        print(f"bare aiokafka consume+parse: {ceiling:,.0f} events/s", flush=True)
        with tempfile.TemporaryDirectory(prefix="wapipe-bench-") as home:
            normalize = _worker_rate(settings, "normalize", "wapipe_normalize_events_total",
                                     arguments.events, Path(home))  # fmt: skip
            print(f"normalize: {normalize:,.0f} events/s", flush=True)
            funnel = _worker_rate(settings, "funnel", "wapipe_funnel_merged_observations_total",
                                  arguments.events, Path(home))  # fmt: skip
            print(f"funnel: {funnel:,.0f} events/s", flush=True)
    finally:
        if broker is not None:
            broker.down()
    report = _report(arguments, ceiling, normalize, funnel)
    print(report)
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / f"processors-{time.strftime('%Y%m%d-%H%M%S')}.md").write_text(report)
    return 0


def start_broker() -> tuple[LocalBroker | None, str]:
    """WAPIPE_KAFKA_BOOTSTRAP if set, else a broker of our own on port 19092."""
    bootstrap = os.environ.get("WAPIPE_KAFKA_BOOTSTRAP")
    if bootstrap:
        return None, bootstrap
    broker = LocalBroker(directory=REPO / ".wapipe" / "bench-kafka",
                         jar_cache=REPO / ".wapipe" / "kafka-jars",
                         port=19092, controller_port=19093)  # fmt: skip
    print(f"starting a broker for the benchmark on {broker.bootstrap} ...", flush=True)
    broker.up()
    return broker, broker.bootstrap


def worker_environment(settings: Settings, home: Path) -> tuple[dict[str, str], int]:
    """The environment of a `wapipe process` worker for `settings`, and its web port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    environment = {**os.environ, "WAPIPE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                   "WAPIPE_TOPIC_PREFIX": settings.topic_prefix,
                   "WAPIPE_TOPIC_PARTITIONS": str(settings.topic_partitions),
                   "WAPIPE_HOME": str(home), "WAPIPE_PROCESSOR_WEB_PORT": str(port),
                   "WAPIPE_LOG_LEVEL": "warning"}  # fmt: skip
    return environment, port


async def _feed(settings: Settings, events: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5,
                                max_batch_size=1 << 20, compression_type="lz4")  # fmt: skip
    await producer.start()
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    try:
        deliveries = []
        for n in range(events):
            umid, state = f"m-{n // 3}", STATES[n % 3]
            status = {"state": state, "timestamp": now}
            if state == "delivered":
                status["detail"] = "delivered_to_recipient"
            body = {"namespace": "ChatApps", "eventType": "outbound_message_status_changed",
                    "payload": {"umid": umid, "subAccountId": f"acme-{n % 7}",
                                "channel": "whatsapp", "user": {"msisdn": "+6281234567890"},
                                "status": status}}  # fmt: skip
            deliveries.append(await producer.send(
                RAW.name(settings.topic_prefix), orjson.dumps(body), key=umid.encode(),
                headers=[("wapipe-received-at", now.encode())],
            ))  # fmt: skip
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


async def _bare_loop(settings: Settings, events: int) -> float:
    consumer = AIOKafkaConsumer(RAW.name(settings.topic_prefix),
                                bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    seen, started = 0, None
    try:
        while seen < events:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if started is None and batches:
                started = time.perf_counter()
            for records in batches.values():
                for record in records:
                    orjson.loads(record.value)
                    seen += 1
    finally:
        await consumer.stop()
    return seen / (time.perf_counter() - (started or time.perf_counter()))


def _worker_rate(settings: Settings, job: str, counter: str, events: int, home: Path) -> float:
    environment, port = worker_environment(settings, home)
    worker = subprocess.Popen([sys.executable, "-m", "wapipe", "process", job], env=environment)
    samples: list[tuple[float, float]] = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            count = counter_value(port, counter)
            if count:
                samples.append((time.perf_counter(), count))
            if count >= events:
                break
            time.sleep(0.25)
        else:
            sys.exit(f"{job} did not process {events} events in 600 s")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    (t0, n0), (t1, n1) = samples[0], samples[-1]
    return (n1 - n0) / (t1 - t0)


def counter_value(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))  # fmt: skip


def _report(arguments: argparse.Namespace, ceiling: float, normalize: float, funnel: float) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())  # fmt: skip
    return "\n".join([
        f"Machine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}; broker "
        f"and worker on this machine. {arguments.events:,} receipts, "
        f"{arguments.partitions} partitions, one worker each.",
        "",
        "| consumer | events/s | ratio to the bare loop |",
        "|---|---:|---:|",
        f"| bare aiokafka consume + orjson parse | {ceiling:,.0f} | 1.00 |",
        f"| normalize worker | {normalize:,.0f} | {normalize / ceiling:.3f} |",
        f"| funnel worker | {funnel:,.0f} | {funnel / ceiling:.3f} |",
    ]) + "\n"  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
