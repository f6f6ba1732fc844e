"""Processor benchmark: events/s of one worker of each job on the stream engine, side by
side with the librdkafka consume-and-parse ceiling, the engine's own floor, the funnel
job written with Quix Streams and faust's floor, over the same input, in one run.

Feeds N webhook receipts (N/3 messages: sent, delivered, read; event times near now)
into the raw topic of a fresh prefix, then measures, one after the other:
1. the ceiling: librdkafka (confluent_kafka.Consumer, read_committed, batches of the
   engine's size) consuming the raw topic and parsing each body (orjson), writing
   nothing, read again until 2 s were timed; aiokafka's same loop beside it;
2. the engine's floor (bench/processors/engine_floor.py): a job of this benchmark's
   own on processors/engine that parses each record, without and with one output per
   event, one Kafka transaction per batch: what the engine costs before a job's work;
3. faust's floor (bench/processors/faust_floor.py, in the virtualenv of
   --faust-python): the same parse in a faust agent reading batches as our faust
   workers did, without and with one send per event (at least once): the engine
   the processors left;
4. normalize: `wapipe process normalize`, raw -> typed topics;
5. funnel: `wapipe process funnel` over the receipts normalize wrote, counted three
   ways in the same run: every source record it processed (the N receipts on
   `status`, and the window deltas it wrote to `funnel.deltas` and read back: its
   second hop), the receipts alone, and its output, as the peers' is counted;
6. the peers, counted by their output: the funnel with Quix Streams
   (bench/processors/quix_funnel.py, in the virtualenv of --quix-python), at least
   once and exactly once; the message fold over aiokafka batches without the engine
   (bench/processors/batch_funnel.py: at least once, no window totals);
7. templates and phones: N/2 template quality and N/2 phone quality events (200
   templates, 100 numbers) fed after the receipts, normalized by a second normalize
   worker, then one worker of each job;
8. conversations over the N receipts (20,000 customers of 7 sub-accounts, every other
   message a marketing template), counted by every source record of its two hops;
   then limits over what conversations sent it, until its count stands still.
The engine's workers and floors are read from `wapipe_processor_records_total` on
their /metrics (source records processed and committed). A funnel counted by its
output counts three events per message it wrote in state `read` to its message-state
topic (read_committed). A rate is the events between the first and the last change
of the count over the time between them (start-up, group join and restore
excluded; "one burst" when the count changed fewer than 3 times), and over the whole
run from the process's start (included). For each process on the engine, its mean
batch over the run, from its histograms: records, milliseconds from records in hand
to state stored, and of those the transaction's (produce, offsets, commit). Prints
a Markdown table and the targets, and writes them to bench/results/.
Uses WAPIPE_KAFKA_BOOTSTRAP if set, else starts its own broker (port 19092).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import confluent_kafka
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from ingest.envelope import record_key  # noqa: E402
from wapipe.local_kafka import LocalBroker, free_port  # noqa: E402
from wapipe.settings import Settings  # noqa: E402
from wapipe.topics import MESSAGE_STATE, RAW, create_topics  # noqa: E402

STATES = ("sent", "delivered", "read")
TARGET_EVENTS_PER_SECOND = 40_000  # every job, per worker
TARGET_QUIX_RATIO = 5.0  # the funnel against Quix Streams on the same job
_TIMEOUT_SECONDS = 600
_SAMPLE_SECONDS = 0.25
_STEADY_SAMPLES = 3  # changes of the count needed for a steady rate
_SETTLE_SECONDS = 2.0  # the funnel: its deltas hop has caught up when its count stays put
_CEILING_SECONDS = 2.0  # a ceiling reads its input again until this much was timed
_ENGINE_ENVIRONMENT: dict[str, str] = {}  # --batch-size, for every process on the engine
Records = Iterable[tuple[str, bytes, bytes, list[tuple[str, bytes]] | None]]


@dataclass(frozen=True)
class Rate:
    steady: float | None  # None: the count changed too few times ("one burst")
    whole: float | None = None  # from the process's start; None: not a process of its own
    batches: str = ""  # an engine process's mean batch: records, ms in all, ms committing

    @property
    def best(self) -> float:
        """The steady rate, else the whole run's."""
        return self.steady if self.steady is not None else (self.whole or 0.0)


@dataclass(frozen=True)
class Row:
    name: str
    counted: str
    rate: Rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--events",
        type=int,
        default=90_000,
        help="receipts to process (rounded down to a multiple of 3)",
    )
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument(
        "--batch-size",
        type=int,
        help="WAPIPE_PROCESSOR_BATCH_SIZE of the processes on the engine "
        "(default: the settings' default)",
    )
    parser.add_argument(
        "--quix-python",
        type=Path,
        default=REPO / ".wapipe/bench-quix/bin/python",
        help="the Python of the Quix Streams virtualenv",
    )
    parser.add_argument(
        "--faust-python",
        type=Path,
        default=REPO / ".wapipe/bench-faust/bin/python",
        help="the Python of the faust virtualenv",
    )
    arguments = parser.parse_args()
    arguments.events -= arguments.events % 3
    for python in (arguments.quix_python, arguments.faust_python):
        if not python.exists():
            sys.exit(f"{python} is missing: `make bench-processors` installs it")
    if arguments.batch_size:
        _ENGINE_ENVIRONMENT["WAPIPE_PROCESSOR_BATCH_SIZE"] = str(arguments.batch_size)
    broker, bootstrap = start_broker()
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=f"bench{int(time.time())}.wa",
                        topic_partitions=arguments.partitions,
                        **({"processor_batch_size": arguments.batch_size}
                           if arguments.batch_size else {}))  # fmt: skip
    load = os.getloadavg()
    rows: list[Row] = []

    def measured(name: str, counted: str, rate: Rate) -> Rate:
        rows.append(Row(name, counted, rate))
        whole = f", {rate.whole:,.0f} over the whole run" if rate.whole else ""
        print(f"{name}: {_shown(rate.steady)} events/s steady{whole}", flush=True)
        return rate

    events, raw = arguments.events, "raw records"
    by_output = "3 per message written `read` to its message-state topic"
    try:
        asyncio.run(create_topics(settings))
        produce(bootstrap, _receipts(settings, events))
        topic = RAW.name(settings.topic_prefix)
        measured(
            "librdkafka consume + orjson parse (the ceiling)",
            raw,
            Rate(librdkafka_rate(settings, topic, events)),
        )
        measured(
            "aiokafka consume + orjson parse",
            raw,
            Rate(asyncio.run(_aiokafka_rate(settings, events))),
        )
        with tempfile.TemporaryDirectory(prefix="wapipe-bench-") as directory:
            home = Path(directory)
            measured(
                "engine floor: parse, offsets in a transaction per batch",
                raw,
                _engine_floor(settings, home, events, send=False),
            )
            measured(
                "engine floor: parse + one output per event, transactional",
                raw,
                _engine_floor(settings, home, events, send=True),
            )
            for send, name in (
                (False, "faust floor: take_events + parse (at least once)"),
                (True, "faust floor: + one send per event (at least once)"),
            ):
                floor = _faust_floor(settings, arguments.faust_python, events, send)
                measured(name, raw, Rate(floor))
            jobs = {
                "normalize": measured(
                    "normalize worker", raw, _worker(settings, home, "normalize", events)
                )
            }
            funnel = _funnel(settings, home, events)
            jobs["funnel, every source record"] = measured(
                "funnel worker",
                f"every source record: the {events:,} receipts, and the "
                "window deltas it wrote to `funnel.deltas` and read back",
                funnel["records"],
            )
            jobs["funnel, receipts"] = measured(
                "funnel worker",
                'receipts merged (`wapipe_funnel_observations_total{source="status"}`)',
                funnel["receipts"],
            )
            ours = measured("funnel worker, counted as the peers", by_output, funnel["output"])
            quix = {
                guarantee: measured(
                    f"funnel, Quix Streams {guarantee}",
                    by_output,
                    _quix(settings, home, arguments.quix_python, guarantee, events),
                )
                for guarantee in ("at-least-once", "exactly-once")
            }
            measured(
                "message fold over aiokafka batches, no engine (prototype: at least "
                "once, no window totals)",
                by_output,
                _batch_funnel(settings, home, events),
            )
            quality = events // 2
            produce(bootstrap, _quality_events(settings, quality))
            _worker(settings, home, "normalize", 2 * quality)  # the quality events, typed
            for job in ("templates", "phones"):
                jobs[job] = measured(
                    f"{job} worker",
                    f"{job[:-1]} quality records",
                    _worker(settings, home, job, quality),
                )
            jobs["conversations"] = measured(
                "conversations worker",
                f"every source record: the {events:,} receipts, and the pair events it "
                "wrote to `conversations.events` and read back",
                _worker(settings, home, "conversations", 2 * events),
            )
            jobs["limits"] = measured(
                "limits worker",
                "every source record: the sub-accounts' reach changes the conversations "
                "worker wrote (one per sub-account and batch), the numbers' (one per "
                "subject and batch) and the phone states",
                _worker(settings, home, "limits", 1, settle=10.0),
            )
    finally:
        if broker is not None:
            broker.down()
    report = _report(arguments, settings, load, rows, jobs, ours, quix)
    print(report)
    write_report("processors", report)
    return 0


# --- shared with bench_state.py and bench/e2e ------------------------------------------------
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


def worker_environment(settings: Settings, home: Path) -> tuple[dict[str, str], int]:
    """The environment of a `wapipe process` worker for `settings`, and its web port."""
    port = free_port()
    environment = {**os.environ, "WAPIPE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                   "WAPIPE_TOPIC_PREFIX": settings.topic_prefix,
                   "WAPIPE_TOPIC_PARTITIONS": str(settings.topic_partitions),
                   "WAPIPE_HOME": str(home), "WAPIPE_PROCESSOR_WEB_PORT": str(port),
                   "WAPIPE_LOG_LEVEL": "warning"}  # fmt: skip
    return environment, port


def produce(bootstrap: str, records: Records, what: str | None = None) -> int:
    """Write `records` (topic, key, value, headers) as the ingester does (librdkafka, lz4,
    murmur2 on the key: the partition every writer of the key picks), wait for every
    acknowledgement; a progress line every million when `what` names them."""
    producer = confluent_kafka.Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
        "linger.ms": 5, "batch.size": 1 << 20, "compression.type": "lz4",
        "partitioner": "murmur2_random", "queue.buffering.max.messages": 1_000_000,
    })  # fmt: skip
    failures: list[str] = []

    def delivered(error: confluent_kafka.KafkaError | None, _: object) -> None:
        if error is not None:
            failures.append(str(error))

    count = 0
    for count, (topic, key, value, headers) in enumerate(records, 1):
        while True:
            try:
                producer.produce(topic, value, key, headers=headers, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        if what and count % 1_000_000 == 0:
            print(f"  {count:,} {what} written", flush=True)
    if producer.flush(120) or failures:
        sys.exit(f"producing failed: {failures[:3] or 'not all acknowledged in 120 s'}")
    return count


def consumer(
    bootstrap: str, topic: str, partitions: int, **config: object
) -> confluent_kafka.Consumer:
    """A read_committed librdkafka consumer of every partition of `topic` from its start,
    in no group (nothing committed)."""
    client = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"{topic}.bench",
        "isolation.level": "read_committed", "enable.auto.commit": False,
        "enable.auto.offset.store": False, **config,
    })  # fmt: skip
    client.assign([confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                   for p in range(partitions)])  # fmt: skip
    return client


def metrics(port: int) -> Callable[[str], float]:
    """A scrape of a worker's /metrics: `value(series)` sums the samples of `series`, which
    may end with a label selector (`name{label="value"}`); 0 when the worker does not
    answer yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        text = ""
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = dict(_LABEL.findall(match["labels"] or ""))
            samples.append((match["name"], labels, float(match["value"])))

    def value(series: str) -> float:
        name, _, selector = series.partition("{")
        wanted = dict(_LABEL.findall(selector))
        return sum(v for n, labels, v in samples
                   if n == name and wanted.items() <= labels.items())  # fmt: skip

    return value


_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


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


# --- the input ---------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _receipts(settings: Settings, events: int) -> Records:
    topic, now = RAW.name(settings.topic_prefix), _now()
    for n in range(events):
        umid, state = f"m-{n // 3}", STATES[n % 3]
        status = {"state": state, "timestamp": now}
        if state == "delivered":
            status["detail"] = "delivered_to_recipient"
        # 20,000 customers; every other message a marketing template (the conversations and
        # limits jobs count those), the others free-form (no open window: counted outside).
        msisdn = f"+62812{n // 3 % 20_000:07d}"
        payload = {"umid": umid, "subAccountId": f"acme-{n // 3 % 7}", "channel": "whatsapp",
                   "user": {"msisdn": msisdn}, "status": status}  # fmt: skip
        if n // 3 % 2 == 0:
            payload["whatsapp"] = {"pricingCategory": "marketing"}
        body = {
            "namespace": "ChatApps",
            "eventType": "outbound_message_status_changed",
            "payload": payload,
        }
        yield topic, umid.encode(), orjson.dumps(body), [("wapipe-received-at", now.encode())]


def _quality_events(settings: Settings, events: int) -> Records:
    """`events` template quality and `events` phone quality updates, interleaved, one
    second apart per template or number (ending now), each with its own eventId."""
    topic = RAW.name(settings.topic_prefix)
    scores, limits = ("GREEN", "YELLOW", "RED"), ("TIER_1K", "TIER_10K", "TIER_100K")
    start = datetime.now(UTC).timestamp() - events
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
        raw = orjson.dumps(body)  # keyed as the ingester keys it: by template, by number
        yield (topic, record_key(body, raw), raw,
               [("wapipe-received-at", head["timestamp"].encode())])  # fmt: skip


# --- the ceilings ------------------------------------------------------------------------------
def librdkafka_rate(settings: Settings, topic: str, events: int) -> float:
    """Records/s of librdkafka consuming `topic` and parsing each value (batches of the
    engine's size), read again until 2 s were timed."""

    def once() -> tuple[int, float]:
        client = consumer(
            settings.kafka_bootstrap,
            topic,
            settings.topic_partitions,
            **{"fetch.wait.max.ms": 50, "queued.max.messages.kbytes": 32_768},
        )
        timer = _Timer(events, f"librdkafka reading {topic}")
        try:
            while not timer.done:
                messages = client.consume(settings.processor_batch_size, 1.0)
                for message in messages:
                    if message.error() is None:
                        orjson.loads(message.value())
                timer.add(len(messages))
            return timer.result()
        finally:
            client.close()

    return _repeated(once)


async def _aiokafka_rate(settings: Settings, events: int) -> float:
    async def once() -> tuple[int, float]:
        client = AIOKafkaConsumer(RAW.name(settings.topic_prefix),
                                  bootstrap_servers=settings.kafka_bootstrap,
                                  isolation_level="read_committed",
                                  auto_offset_reset="earliest",
                                  enable_auto_commit=False)  # fmt: skip
        await client.start()
        timer = _Timer(events, "aiokafka reading the raw topic")
        try:
            while not timer.done:
                batches = await client.getmany(timeout_ms=1000, max_records=5000)
                count = 0
                for records in batches.values():
                    for record in records:
                        orjson.loads(record.value)
                        count += 1
                timer.add(count)
            return timer.result()
        finally:
            await client.stop()

    records, seconds = 0, 0.0
    while seconds < _CEILING_SECONDS:
        more, took = await once()
        records, seconds = records + more, seconds + took
    return records / seconds


class _Timer:
    """Counts a read of `events` records, timed from the end of its first batch to the end
    of its last (the first waits for the fetch to start)."""

    def __init__(self, events: int, what: str) -> None:
        self.events, self.what = events, what
        self.seen = self.timed = 0
        self.started = 0.0
        self.deadline = time.monotonic() + _TIMEOUT_SECONDS

    @property
    def done(self) -> bool:
        if time.monotonic() > self.deadline:
            sys.exit(f"{self.what}: {self.seen} of {self.events} records in {_TIMEOUT_SECONDS} s")
        return self.seen >= self.events

    def add(self, count: int) -> None:
        if count and self.seen:
            self.timed += count
        elif count:
            self.started = time.perf_counter()
        self.seen += count

    def result(self) -> tuple[int, float]:
        return self.timed, time.perf_counter() - self.started


def _repeated(once: Callable[[], tuple[int, float]]) -> float:
    """Records/s of `once` (records, seconds), repeated until 2 s were timed: a short
    input reads in a few milliseconds."""
    records, seconds = 0, 0.0
    while seconds < _CEILING_SECONDS:
        more, took = once()
        records, seconds = records + more, seconds + took
    return records / seconds


def _faust_floor(settings: Settings, python: Path, events: int, send: bool) -> float:
    """Events/s of bench/processors/faust_floor.py (in its own virtualenv) over the raw topic."""
    out = f"{settings.topic_prefix}.faust-floor.out"
    if send:
        asyncio.run(ensure_topics(settings.kafka_bootstrap, settings.topic_partitions, out))
    with tempfile.TemporaryDirectory(prefix="wapipe-faust-") as state:
        try:
            done = subprocess.run(
                [str(python), str(REPO / "bench/processors/faust_floor.py"),
                 "--bootstrap", settings.kafka_bootstrap,
                 "--topic", RAW.name(settings.topic_prefix), "--events", str(events),
                 "--state-dir", state, "--web-port", str(free_port()),
                 *(["--send", out] if send else [])],
                stdout=subprocess.PIPE, timeout=_TIMEOUT_SECONDS, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            sys.exit(f"faust_floor.py did not read {events} events in {_TIMEOUT_SECONDS} s")
    # faust's spinner writes terminal codes to stdout too, even before the figure.
    figure = re.search(rb"FLOOR (\d+)", done.stdout)
    if figure is None:
        sys.exit(f"faust_floor.py exited with status {done.returncode} and no figure")
    return float(figure[1])


# --- processes measured by their counts --------------------------------------------------------
@dataclass
class Run:
    """The samples of a process's counts: each count's changes, (time, value)."""

    started: float
    series: dict[str, list[tuple[float, float]]]

    def rate(self, name: str) -> Rate:
        samples = self.series.get(name)
        if not samples:
            sys.exit(f"{name}: nothing counted")
        (t0, n0), (t1, n1) = samples[0], samples[-1]
        steady = (n1 - n0) / (t1 - t0) if len(samples) >= _STEADY_SAMPLES else None
        return Rate(steady, n1 / (t1 - self.started), self._batches())

    def last(self, name: str) -> float:
        samples = self.series.get(name)
        return samples[-1][1] if samples else 0.0

    def _batches(self) -> str:
        """The mean batch of an engine process, from its histograms' sums and counts."""
        batches = self.last("batches")
        if not batches:
            return ""
        return (f"{self.last('batch_records') / batches:,.0f}, "
                f"{self.last('batch_seconds') / batches * 1000:.1f}, "
                f"{self.last('commit_seconds') / batches * 1000:.1f}")  # fmt: skip


def run_measured(
    command: list[str], environment: Mapping[str, str],
    probe: Callable[[], Mapping[str, float]],
    finished: Callable[[Mapping[str, float]], bool], what: str, settle: float = 0.0,
) -> Run:  # fmt: skip
    """Run `command` until `finished(probe())`, and then until no count moved for `settle`
    seconds; SIGTERM it; the samples of each count `probe` returns."""
    process = subprocess.Popen(command, env=dict(environment))
    run = Run(time.perf_counter(), {})
    done_at = None
    try:
        deadline = time.monotonic() + _TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                sys.exit(f"{what} exited with status {process.returncode}")
            now, values = time.perf_counter(), probe()
            if time.monotonic() > deadline:
                sys.exit(f"{what} did not finish in {_TIMEOUT_SECONDS} s: {dict(values)}")
            for name, value in values.items():
                samples = run.series.setdefault(name, [])
                if value and (not samples or value != samples[-1][1]):
                    samples.append((now, value))
            if done_at is None and finished(values):
                done_at = now
            last_change = max((s[-1][0] for s in run.series.values() if s), default=now)
            if done_at is not None and now - last_change >= settle:
                return run
            time.sleep(_SAMPLE_SECONDS)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def engine_counts(port: int, processor: str) -> dict[str, float]:
    """An engine process's records and batch histograms, and a getter of its other series."""
    value = metrics(port)
    label = f'{{processor="{processor}"}}'
    return {"records": value(f"wapipe_processor_records_total{label}"),
            "batches": value(f"wapipe_processor_batch_records_count{label}"),
            "batch_records": value(f"wapipe_processor_batch_records_sum{label}"),
            "batch_seconds": value(f"wapipe_processor_batch_duration_seconds_sum{label}"),
            "commit_seconds": value(f"wapipe_processor_commit_duration_seconds_sum{label}"),
            **({"receipts": value('wapipe_funnel_observations_total{source="status"}')}
               if processor == "funnel" else {})}  # fmt: skip


def _environment(settings: Settings, home: Path) -> tuple[dict[str, str], int]:
    environment, port = worker_environment(settings, home)
    return environment | _ENGINE_ENVIRONMENT, port


def _worker(settings: Settings, home: Path, job: str, events: int, settle: float = 0.0) -> Rate:
    """One `wapipe process <job>` until it processed `events` source records (and then
    until its count stood still for `settle` seconds: for a job whose input count is
    not known beforehand)."""
    environment, port = _environment(settings, home)
    return run_measured(
        [sys.executable, "-m", "wapipe", "process", job], environment,
        lambda: engine_counts(port, job), lambda values: values["records"] >= events,
        f"wapipe process {job}", settle,
    ).rate("records")  # fmt: skip


def _engine_floor(settings: Settings, home: Path, events: int, send: bool) -> Rate:
    environment, port = _environment(settings, home)
    name = "floor-send" if send else "floor"
    if send:
        asyncio.run(ensure_topics(settings.kafka_bootstrap, settings.topic_partitions,
                                  f"{settings.topic_prefix}.floor.out"))  # fmt: skip
    return run_measured(
        [sys.executable, str(REPO / "bench/processors/engine_floor.py"),
         *(["--send"] if send else [])], environment,
        lambda: engine_counts(port, name), lambda values: values["records"] >= events,
        f"engine_floor.py ({name})",
    ).rate("records")  # fmt: skip


class ReadStates:
    """Follows a message-state topic from its start (read_committed): 3 per message seen
    in state `read` (each of the benchmark's messages ends `read` after 3 receipts)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = consumer(settings.kafka_bootstrap, topic, settings.topic_partitions)
        self.read = 0

    def events(self) -> float:
        for _ in range(20):  # what has arrived, in bounded calls
            messages = self.consumer.consume(10_000, 0.02)
            self.read += sum(message.error() is None
                             and orjson.loads(message.value())["state"] == "read"
                             for message in messages)  # fmt: skip
            if len(messages) < 10_000:
                break
        return 3.0 * self.read

    def close(self) -> None:
        self.consumer.close()


def _funnel(settings: Settings, home: Path, events: int) -> dict[str, Rate]:
    """`wapipe process funnel` over the receipts normalize wrote: its records, its
    receipts and its output, until every receipt is merged and every message read,
    then until its deltas hop has caught up (no count moving for 2 s)."""
    environment, port = _environment(settings, home)
    states = ReadStates(settings, MESSAGE_STATE.name(settings.topic_prefix))
    try:
        run = run_measured(
            [sys.executable, "-m", "wapipe", "process", "funnel"], environment,
            lambda: {**engine_counts(port, "funnel"), "output": states.events()},
            lambda values: values["receipts"] >= events and values["output"] >= events,
            "wapipe process funnel", settle=_SETTLE_SECONDS,
        )  # fmt: skip
    finally:
        states.close()
    return {name: run.rate(name) for name in ("records", "receipts", "output")}


def _by_output(settings: Settings, command: list[str], topic: str, events: int, what: str) -> Rate:
    """A funnel job other than ours, counted by the `read` states it writes to `topic`."""
    # The output exists before the job starts, so it is followed from offset 0.
    asyncio.run(ensure_topics(settings.kafka_bootstrap, settings.topic_partitions, topic))
    states = ReadStates(settings, topic)
    try:
        return run_measured(
            command,
            os.environ,
            lambda: {"output": states.events()},
            lambda values: values["output"] >= events,
            what,
        ).rate("output")
    finally:
        states.close()


def _quix(settings: Settings, home: Path, python: Path, guarantee: str, events: int) -> Rate:
    prefix = settings.topic_prefix
    command = [str(python), str(REPO / "bench/processors/quix_funnel.py"),
               "--bootstrap", settings.kafka_bootstrap, "--prefix", prefix,
               "--state-dir", str(home / f"quix-{guarantee}"),
               "--guarantee", guarantee]  # fmt: skip
    return _by_output(settings, command, f"{prefix}.quix-{guarantee}.message_state", events,
                      f"quix_funnel.py {guarantee}")  # fmt: skip


def _batch_funnel(settings: Settings, home: Path, events: int) -> Rate:
    prefix = settings.topic_prefix
    command = [sys.executable, str(REPO / "bench/processors/batch_funnel.py"),
               "--bootstrap", settings.kafka_bootstrap, "--prefix", prefix,
               "--state-dir", str(home / "batch-funnel"),
               "--partitions", str(settings.topic_partitions)]  # fmt: skip
    return _by_output(settings, command, f"{prefix}.batch.message_state", events,
                      "batch_funnel.py")  # fmt: skip


# --- the report --------------------------------------------------------------------------------
def _shown(rate: float | None) -> str:
    return "one burst" if rate is None else f"{rate:,.0f}"


def _report(
    arguments: argparse.Namespace, settings: Settings, load: tuple[float, float, float],
    rows: list[Row], jobs: Mapping[str, Rate], ours: Rate, quix: Mapping[str, Rate],
) -> str:  # fmt: skip
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())  # fmt: skip
    ceiling = rows[0].rate.best
    lines = [
        f"`bench/processors/bench_processors.py --events {arguments.events} --partitions "
        f"{arguments.partitions}"
        + (f" --batch-size {arguments.batch_size}" if arguments.batch_size else "")
        + f"`, {time.strftime('%Y-%m-%d %H:%M')}. Machine: {os.cpu_count()} cores ({cpu}), "
        f"load average {load[0]:.2f} at the start, Python {platform.python_version()}; "
        f"broker, worker and benchmark on this machine. {arguments.events:,} receipts, "
        f"{arguments.partitions} partitions, one worker each, batches of at most "
        f"{settings.processor_batch_size} records on the engine.",
        "",
        "| consumer | what is counted | events/s (steady) | ratio to the ceiling | events/s "
        "over the whole run, start-up included | engine's mean batch: records, ms, ms "
        "committing |",
        "|---|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    for row in rows:
        steady = row.rate.steady
        ratio = "-" if steady is None else f"{steady / ceiling:.3f}"
        whole = "" if row.rate.whole is None else f"{row.rate.whole:,.0f}"
        lines.append(f"| {row.name} | {row.counted} | {_shown(steady)} | {ratio} | {whole} | "
                     f"{row.rate.batches} |")  # fmt: skip
    lines += ["", f"Targets: every job at least {TARGET_EVENTS_PER_SECOND:,} events/s per "
              f"worker (steady), the funnel at least {TARGET_QUIX_RATIO:g} times Quix Streams "
              "on the same job (both counted by their output).", ""]  # fmt: skip
    for job, rate in jobs.items():
        lines.append(f"- {job}: {_shown(rate.steady)} events/s, "
                     f"{_verdict(rate.steady, TARGET_EVENTS_PER_SECOND)}")  # fmt: skip
    for guarantee, peer in quix.items():
        if ours.steady is not None and peer.steady is not None:
            times, basis = ours.steady / peer.steady, "steady rates"
        else:  # one of them wrote in bursts: the whole runs, start-ups included
            times, basis = (ours.whole or 0.0) / (peer.whole or 1.0), "whole runs"
        lines.append(f"- funnel / Quix Streams {guarantee}: {times:.1f} times ({basis}), "
                     f"{_verdict(times, TARGET_QUIX_RATIO)}")  # fmt: skip
    return "\n".join(lines) + "\n"


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return "no steady rate to judge (one burst): run with more --events"
    if value >= target:
        return "target met"
    return f"target missed by {1 - value / target:.0%} ({target / value:.2f}x short)"


if __name__ == "__main__":
    sys.exit(main())
