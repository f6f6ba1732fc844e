"""Processor benchmark: events/s of one worker of each job, against a bare aiokafka
consume-and-parse loop and against the funnel job written with Quix Streams, over
the same input, in the same run.

Feeds N webhook receipts (event times near now) into the raw topic of a fresh
prefix, then measures, one after the other:
1. the ceiling: aiokafka consuming the raw topic and parsing each body (orjson);
   then faust's floor (bench/processors/faust_floor.py): the same parse in a faust
   agent reading batches as our workers do, without and with one record sent per
   event, i.e. what faust's stream machinery costs before any work of ours;
2. normalize: `wapipe process normalize`, raw -> typed topics, read from the
   worker's /metrics counter of events;
3. funnel: `wapipe process funnel`, the receipts normalize wrote -> message states;
4. the peer: bench/processors/quix_funnel.py (the same rules with Quix Streams, in
   the virtualenv given by --quix-python), at-least-once and exactly-once;
5. templates and phones: N/2 template quality and N/2 phone quality events (200
   templates, 100 numbers) fed after the receipts, normalized by a second
   normalize worker, then each job's worker, read from its /metrics counter.
Every funnel variant is measured the same way: the messages it has written in
state `read` to its message-state topic, three receipts each. A rate is the events
between the first and the last sample over the time between them (start-up and
group join excluded; "one burst" when the output came within 3 s, as a job that
writes a transaction per commit interval may), and over the whole run from the
process's start (start-up and group join included). Prints a Markdown table and
writes it to bench/results/.
Uses WAPIPE_KAFKA_BOOTSTRAP if set, else starts its own broker (port 19092).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from wapipe.local_kafka import LocalBroker  # noqa: E402
from wapipe.settings import Settings  # noqa: E402
from wapipe.topics import RAW, create_topics  # noqa: E402

STATES = ("sent", "delivered", "read")
FLOORS = {"faust floor: take_events + parse": False,
          "faust floor: take_events + parse + one send per event": True}  # fmt: skip
_STEADY_SPAN_SECONDS = 3.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=60_000, help="receipts to process")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--quix-python", type=Path, default=REPO / ".wapipe/bench-quix/bin/python",
                        help="the Python of the Quix Streams virtualenv")  # fmt: skip
    arguments = parser.parse_args()
    if not arguments.quix_python.exists():
        sys.exit(f"{arguments.quix_python} is missing: `make bench-processors` installs it")
    broker, bootstrap = start_broker()
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=f"bench{int(time.time())}.wa",
                        topic_partitions=arguments.partitions)  # fmt: skip
    try:
        asyncio.run(create_topics(settings))
        asyncio.run(_feed(settings, arguments.events))
        ceiling = asyncio.run(_bare_loop(settings, arguments.events))
        print(f"bare aiokafka consume+parse: {ceiling:,.0f} events/s", flush=True)
        floors = {}
        for name, send in FLOORS.items():
            floors[name] = asyncio.run(_floor_rate(settings, arguments.events, send))
            print(f"{name}: {floors[name]:,.0f} events/s", flush=True)
        keyed: dict[str, float] = {}
        with tempfile.TemporaryDirectory(prefix="wapipe-bench-") as home:
            normalize = _worker_rate(settings, "normalize", "wapipe_normalize_events_total",
                                     arguments.events, Path(home))  # fmt: skip
            print(f"normalize: {normalize:,.0f} events/s", flush=True)
            environment, _ = worker_environment(settings, Path(home))
            funnels = {}
            for name, command, topic in _funnel_variants(settings, arguments, Path(home)):
                funnels[name] = asyncio.run(_output_rate(settings, command, environment, topic,
                                                         arguments.events))  # fmt: skip
                print(f"{name}: {_rates(*funnels[name])}", flush=True)
            quality = arguments.events // 2
            asyncio.run(_feed_quality(settings, quality))
            _worker_rate(settings, "normalize", "wapipe_normalize_events_total", 2 * quality,
                         Path(home))  # fmt: skip
            for job in ("templates", "phones"):
                keyed[job] = _worker_rate(settings, job, f"wapipe_{job}_events_total", quality,
                                          Path(home))  # fmt: skip
                print(f"{job}: {keyed[job]:,.0f} events/s", flush=True)
    finally:
        if broker is not None:
            broker.down()
    report = _report(arguments, ceiling, floors, normalize, funnels, keyed)
    print(report)
    write_report("processors", report)
    return 0


def write_report(name: str, report: str) -> None:
    """Keep `report` as bench/results/<name>-<time>.md (not committed)."""
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.md").write_text(report)


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


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def worker_environment(settings: Settings, home: Path) -> tuple[dict[str, str], int]:
    """The environment of a `wapipe process` worker for `settings`, and its web port."""
    port = unused_port()
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


async def _feed_quality(settings: Settings, events: int) -> None:
    """`events` template quality and `events` phone quality updates, interleaved, one
    second apart per template or number (ending now), each with its own eventId."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5,
                                max_batch_size=1 << 20, compression_type="lz4")  # fmt: skip
    await producer.start()
    scores, limits = ("GREEN", "YELLOW", "RED"), ("TIER_1K", "TIER_10K", "TIER_100K")
    start = datetime.now(UTC).timestamp() - events
    try:
        deliveries = []
        for n in range(2 * events):
            at = datetime.fromtimestamp(start + n // 2, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
            head = {"eventId": f"bench-{n}", "timestamp": at[:-3] + "Z", "provider": "WhatsApp",
                    "businessAccountId": "104233889912345", "accountId": "acme"}  # fmt: skip
            if n % 2 == 0:
                body = {**head, "eventType": "template_quality_update", "eventDetails": {
                    "templateId": str(900_000 + n // 2 % 200), "templateName": "bench",
                    "templateLanguage": "en_US",
                    "meta": {"previousQualityScore": scores[n // 400 % 3],
                             "newQualityScore": scores[(n // 400 + 1) % 3]}}}  # fmt: skip
            else:
                body = {**head, "eventType": "phone_number_quality_update", "eventDetails": {
                    "displayPhoneNumber": str(4930901800 + n // 2 % 100),
                    "meta": {"event": "UPGRADE" if n // 200 % 2 else "DOWNGRADE",
                             "currentLimit": limits[n // 200 % 3],
                             "oldLimit": limits[(n // 200 + 1) % 3]}}}  # fmt: skip
            deliveries.append(await producer.send(
                RAW.name(settings.topic_prefix), orjson.dumps(body), key=head["eventId"].encode(),
                headers=[("wapipe-received-at", head["timestamp"].encode())],
            ))  # fmt: skip
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


async def ensure_topics(bootstrap: str, partitions: int, *names: str) -> None:
    """Create those of `names` that do not exist yet (a benchmark's own output topics)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, partitions, 1) for name in names if name not in existing]
        if missing:
            await admin.create_topics(missing)
    finally:
        await admin.close()


async def _floor_rate(settings: Settings, events: int, send: bool) -> float:
    """Events/s of bench/processors/faust_floor.py over the raw topic."""
    out = f"{settings.topic_prefix}.floor.out"
    if send:
        await ensure_topics(settings.kafka_bootstrap, settings.topic_partitions, out)
    port = unused_port()
    with tempfile.TemporaryDirectory(prefix="wapipe-floor-") as state:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(REPO / "bench/processors/faust_floor.py"),
            "--bootstrap", settings.kafka_bootstrap, "--topic", RAW.name(settings.topic_prefix),
            "--events", str(events), "--state-dir", state, "--web-port", str(port),
            *(["--send", out] if send else []), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            output, _ = await asyncio.wait_for(process.communicate(), 600)
        except TimeoutError:
            process.kill()
            sys.exit(f"faust_floor.py did not read {events} events in 600 s")
    # faust's spinner writes terminal codes to stdout too, even before the figure.
    figure = re.search(rb"FLOOR (\d+)", output)
    if figure is None:
        sys.exit(f"faust_floor.py exited with status {process.returncode} and no figure")
    return float(figure[1])


def _funnel_variants(
    settings: Settings, arguments: argparse.Namespace, home: Path
) -> list[tuple[str, list[str], str]]:
    """(name, command, its message-state topic) of each funnel job to measure."""
    prefix = settings.topic_prefix
    ours = ("funnel worker (wapipe, faust)", [sys.executable, "-m", "wapipe", "process", "funnel"],
            f"{prefix}.message_state")  # fmt: skip
    peers = [
        (f"funnel, Quix Streams {guarantee}",
         [str(arguments.quix_python), str(REPO / "bench/processors/quix_funnel.py"),
          "--bootstrap", settings.kafka_bootstrap, "--prefix", prefix,
          "--state-dir", str(home / f"quix-{guarantee}"), "--guarantee", guarantee],
         f"{prefix}.quix-{guarantee}.message_state")
        for guarantee in ("at-least-once", "exactly-once")
    ]  # fmt: skip
    batch = ("funnel's message states over aiokafka batches, no faust (prototype)",
             [sys.executable, str(REPO / "bench/processors/batch_funnel.py"),
              "--bootstrap", settings.kafka_bootstrap, "--prefix", prefix,
              "--state-dir", str(home / "batch-funnel"),
              "--partitions", str(settings.topic_partitions)],
             f"{prefix}.batch.message_state")  # fmt: skip
    return [ours, batch, *peers]


async def _output_rate(
    settings: Settings, command: list[str], environment: dict[str, str], topic: str, events: int
) -> tuple[float | None, float]:
    """Events/s of the funnel job `command` runs, from the message states it writes.

    Each message of the input ends `read` after three receipts, and every variant
    writes a message's state when it reaches `read` (the intermediate states may be
    coalesced within a batch, as ours does): so the rate is three events per
    message read, counted on `topic` (fresh, so it holds only this job's output).
    """
    # The output exists before the job starts, so it is followed from offset 0.
    await ensure_topics(settings.kafka_bootstrap, settings.topic_partitions, topic)
    # read_committed: a transactional job's output counts when its transaction commits,
    # as its consumers would see it.
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                isolation_level="read_committed")  # fmt: skip
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(settings.topic_partitions)])
    process = await asyncio.create_subprocess_exec(*command, env=environment)
    started = time.perf_counter()
    samples: list[tuple[float, int]] = []
    read = 0
    try:
        deadline = time.monotonic() + 600
        while read < events // 3:
            if process.returncode is not None:
                sys.exit(f"{command[:4]} exited with status {process.returncode}")
            if time.monotonic() > deadline:
                sys.exit(f"{command[:4]}: {read} of {events // 3} messages read after 600 s")
            batches = await consumer.getmany(timeout_ms=250, max_records=10_000)
            read += sum(orjson.loads(record.value)["state"] == "read"
                        for records in batches.values() for record in records)  # fmt: skip
            if read:
                samples.append((time.perf_counter(), 3 * read))
    finally:
        await consumer.stop()
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)
    (t0, n0), (t1, n1) = samples[0], samples[-1]
    whole = n1 / (t1 - started)
    # A job that writes its output in bursts (a transaction per commit interval) may
    # write it all in one: then there is no steady rate to read, only the whole run's.
    return ((n1 - n0) / (t1 - t0) if t1 - t0 >= _STEADY_SPAN_SECONDS else None), whole


async def _bare_loop(settings: Settings, events: int) -> float:
    consumer = AIOKafkaConsumer(RAW.name(settings.topic_prefix),
                                bootstrap_servers=settings.kafka_bootstrap,
                                isolation_level="read_committed",
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


def _rates(steady: float | None, whole: float) -> str:
    shown = "one burst" if steady is None else f"{steady:,.0f}"
    return f"{shown} events/s steady, {whole:,.0f} over the whole run"


def _report(
    arguments: argparse.Namespace, ceiling: float, floors: dict[str, float], normalize: float,
    funnels: dict[str, tuple[float | None, float]], keyed: dict[str, float],
) -> str:  # fmt: skip
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())  # fmt: skip
    return "\n".join([
        f"Machine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}; broker "
        f"and worker on this machine. {arguments.events:,} receipts, "
        f"{arguments.partitions} partitions, one worker each.",
        "",
        "| consumer | events/s (steady) | ratio to the bare loop | events/s over the whole "
        "run, start-up included |",
        "|---|---:|---:|---:|",
        f"| bare aiokafka consume + orjson parse | {ceiling:,.0f} | 1.00 | |",
        *(f"| {name} | {rate:,.0f} | {rate / ceiling:.3f} | |" for name, rate in floors.items()),
        f"| normalize worker | {normalize:,.0f} | {normalize / ceiling:.3f} | |",
        *(f"| {name} | {'one burst' if steady is None else f'{steady:,.0f}'} | "
          f"{'-' if steady is None else f'{steady / ceiling:.3f}'} | {whole:,.0f} |"
          for name, (steady, whole) in funnels.items()),
        *(f"| {job} worker | {rate:,.0f} | {rate / ceiling:.3f} | |"
          for job, rate in keyed.items()),
    ]) + "\n"  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
