"""Restore benchmark: how fast a funnel worker rebuilds its message table from the
changelog (a lost disk, a new node), against librdkafka reading the same changelog.

Writes N tracked-message states straight to the funnel's messages changelog
(`wapipe.topics.changelog("funnel", "messages")`) of a fresh prefix: the bytes the job
stores (`dump_state` of a delivered message, keyed by its umid), each on the partition
of its umid (murmur2, as the engine's producer puts them), then measures:
1. the ceiling: librdkafka reading the whole changelog read_committed and writing
   nothing, with the worker's own restore consumer (processors.engine.kafka): all
   partitions at once; one partition after the other, as the worker restores them;
   and so again with fetch.wait.max.ms 10 instead of librdkafka's 500 (one client
   reading partitions in turn: each new partition's first fetch queues behind the
   last one of the partition before, which the broker holds that long at its end);
2. the restore: `wapipe process funnel` with an empty WAPIPE_HOME. Records/s from its
   "table restored" log lines (each partition's records and seconds), from the wall
   clock between the first and the last change of
   `wapipe_processor_restore_records_total{table="messages"}`, and from the process's
   start to its /readyz (start-up and group join included);
3. the proof: `read` receipts for a sample of the messages, whose states on
   `message_state` must carry the restored delivery time (a worker that lost them would
   take the read's time instead);
and the worker's resident memory and RocksDB directory after the restore.
Target: at least 100,000 changelog records/s, i.e. 5 million tracked messages back in
under a minute (`--messages 5000000` measures that).
Uses WAPIPE_KAFKA_BOOTSTRAP if set, else starts its own broker (port 19092).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from unittest import mock

import confluent_kafka
import orjson
from confluent_kafka import TopicPartition

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from bench_processors import (  # noqa: E402
    Records,
    consumer,
    metrics,
    produce,
    start_broker,
    worker_environment,
    write_report,
)

from processors.engine.kafka import KafkaOptions, restore_consumer  # noqa: E402
from processors.funnel.state import MessageState, dump_state, merge, observe_receipt  # noqa: E402
from processors.normalize.records import Receipt, record_value  # noqa: E402
from wapipe.settings import Settings  # noqa: E402
from wapipe.topics import MESSAGE_STATE, STATUS, changelog, create_topics  # noqa: E402

TARGET_RECORDS_PER_SECOND = 100_000
_TIMEOUT_SECONDS = 1_800
_SAMPLE_SECONDS = 0.25
_FETCH_RECORDS = 10_000  # as processors/engine/state/restore.py
_RESTORED_AT = "2026-11-01T10:00:00.000Z"  # the restored states' delivery time
_SAMPLE = 1_000  # messages read after the restore, to prove it


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--messages",
        type=int,
        default=500_000,
        help="tracked messages to restore (5000000: the target's size)",
    )
    parser.add_argument("--partitions", type=int, default=6)
    arguments = parser.parse_args()  # fmt: skip
    broker, bootstrap = start_broker()
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=f"state{int(time.time())}.wa",
                        topic_partitions=arguments.partitions)  # fmt: skip
    topic = changelog("funnel", "messages").name(settings.topic_prefix)
    try:
        asyncio.run(create_topics(settings))
        started = time.monotonic()
        produce(bootstrap, _states(topic, arguments.messages), "states")
        print(f"wrote {arguments.messages:,} states to {topic} in "
              f"{time.monotonic() - started:.0f} s", flush=True)  # fmt: skip
        one_by_one = [[p] for p in range(arguments.partitions)]
        ceilings = {
            "librdkafka reading the changelog, all partitions at once (the ceiling)":
                _read(settings, topic, [list(range(arguments.partitions))]),
            "librdkafka reading the changelog, one partition after the other (as the worker)":
                _read(settings, topic, one_by_one),
            "librdkafka, one partition after the other, fetch.wait.max.ms 10 (not 500)":
                _read(settings, topic, one_by_one, **{"fetch.wait.max.ms": 10}),
        }  # fmt: skip
        for name, (records, seconds) in ceilings.items():
            print(f"{name}: {records / seconds:,.0f} records/s", flush=True)
        with tempfile.TemporaryDirectory(prefix="wapipe-state-") as home:
            figures = _restore(settings, arguments.messages, Path(home))
    finally:
        if broker is not None:
            broker.down()
    report = _report(arguments, ceilings, figures)
    print(report)
    write_report("state", report)
    return 0


def _umid(n: int) -> str:
    """A realistic umid: a UUID's length."""
    return f"{n:08x}-1f2e-4d3c-8b7a-{n * 7919 % 16**12:012x}"


def _receipt(umid: str, n: int, state: str, at: str, detail: str | None = None) -> Receipt:
    return Receipt(umid=umid, sub_account_id=f"acme-{n % 7}", channel="whatsapp", state=state,
                   detail=detail, occurred_at=at, received_at=at, msisdn=f"+62812{n:08d}",
                   channel_user_id=None, country="ID", error_code=None, error_message=None,
                   provider_error_code=None, pricing_category="marketing", template_name=None,
                   template_language=None, template_category="MARKETING", batch_id=None,
                   client_message_id=None, version=None)  # fmt: skip


def _states(topic: str, messages: int) -> Records:
    """Each message's state after one `delivered` receipt (which implies `sent`: a full
    state), as the funnel stores it."""
    for n in range(messages):
        umid = _umid(n)
        receipt = _receipt(umid, n, "delivered", _RESTORED_AT, detail="delivered_to_recipient")
        state = merge(MessageState(umid=umid), observe_receipt(receipt))
        yield topic, umid.encode(), dump_state(state), None


def _read(
    settings: Settings, topic: str, rounds: list[list[int]], **config: object
) -> tuple[int, float]:
    """(records, seconds) of the engine's restore consumer reading `topic` to its end, each
    round of partitions after the previous one, writing nothing; the restore consumer's
    settings but `config`. The watermarks are read first, all of them."""
    prefix = settings.topic_prefix
    options = KafkaOptions(settings.kafka_bootstrap, f"{prefix}.ceiling", f"{prefix}.ceiling")
    real = confluent_kafka.Consumer
    # The engine's restore consumer, its settings overridden by `config` (if any).
    with mock.patch.object(confluent_kafka, "Consumer", lambda base: real({**base, **config})):
        client = restore_consumer(options)
    records, started = 0, time.monotonic()
    try:
        watermarks = {p: client.get_watermark_offsets(TopicPartition(topic, p), timeout=30,
                                                      cached=False)
                      for partitions in rounds for p in partitions}  # fmt: skip
        for partitions in rounds:
            client.assign([TopicPartition(topic, p, watermarks[p][0]) for p in partitions])
            reached = dict.fromkeys(partitions, 0)
            while any(reached[p] < watermarks[p][1] for p in partitions):
                if time.monotonic() - started > _TIMEOUT_SECONDS:
                    sys.exit(f"reading {topic} did not end in {_TIMEOUT_SECONDS} s")
                for message in client.consume(_FETCH_RECORDS, 0.1):
                    error = message.error()
                    if error is None:
                        records += 1
                        reached[message.partition()] = message.offset() + 1
                    elif error.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                        reached[message.partition()] = watermarks[message.partition()][1]
                    else:
                        sys.exit(f"reading {topic}: {error}")
            client.unassign()
        return records, time.monotonic() - started
    finally:
        client.close()


def _restore(settings: Settings, messages: int, home: Path) -> dict[str, float]:
    """Start a funnel worker with no state; follow its restore; prove it; measure it."""
    environment, port = worker_environment(settings, home)
    environment |= {"WAPIPE_LOG_LEVEL": "info", "WAPIPE_LOG_FORMAT": "json"}
    log_path = home / "funnel.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "wapipe", "process", "funnel"],
                                  env=environment, stderr=log)  # fmt: skip
    started = time.perf_counter()
    samples: list[tuple[float, float]] = []
    try:
        while True:
            _alive(worker, started)
            now = time.perf_counter()
            restored = metrics(port)(
                'wapipe_processor_restore_records_total{processor="funnel",table="messages"}'
            )
            if restored and (not samples or restored != samples[-1][1]):
                samples.append((now, restored))
            if restored >= messages and _answers(f"http://127.0.0.1:{port}/readyz"):
                ready = now - started
                break
            time.sleep(_SAMPLE_SECONDS)
        figures = {"ready_seconds": ready, **_log_figures(log_path),
                   "rss_mb": _status_mb(worker.pid, "VmRSS"),
                   "peak_rss_mb": _status_mb(worker.pid, "VmHWM"),
                   "state_mb": _directory_bytes(home / "state") / 1e6}  # fmt: skip
        (t0, n0), (t1, n1) = samples[0], samples[-1]
        figures |= {"clock_records": n1 - n0, "clock_seconds": t1 - t0}
        chosen = [(n, _umid(n)) for n in range(0, messages, max(1, messages // _SAMPLE))]
        produce(settings.kafka_bootstrap, _reads(settings, chosen))
        while metrics(port)('wapipe_funnel_observations_total{source="status"}') < len(chosen):
            _alive(worker, started)
            time.sleep(_SAMPLE_SECONDS)
    finally:
        worker.terminate()
        worker.wait(60)
    kept = _restored_share(settings, {umid for _, umid in chosen})
    if kept < 1.0:
        sys.exit(f"only {kept:.0%} of the sampled states kept the restored delivery time")
    return figures | {"proof": len(chosen)}


def _log_figures(path: Path) -> dict[str, float]:
    """The messages table's restore from the worker's "table restored" lines: records and
    seconds summed over its partitions (restored one after the other), the slowest one."""
    records, seconds, slowest = 0, 0.0, float("inf")
    for line in path.read_bytes().splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if entry.get("event") == "table restored" and entry.get("table") == "messages":
            records += entry["records"]
            seconds += entry["seconds"]
            slowest = min(slowest, entry["records_per_second"])
    if not records:
        sys.exit(f"no `table restored` line for the messages table in {path}")
    return {"log_records": records, "log_seconds": seconds, "log_slowest": slowest}


def _reads(settings: Settings, chosen: list[tuple[int, str]]) -> Records:
    topic, now = STATUS.name(settings.topic_prefix), time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                                                   time.gmtime())  # fmt: skip
    for n, umid in chosen:
        receipt = _receipt(umid, n, "read", now)
        yield topic, umid.encode(), orjson.dumps(record_value(receipt)), None


def _restored_share(settings: Settings, sample: set[str]) -> float:
    """Of the sampled messages' `read` states, the share whose deliveredAt is the restored
    time."""
    client = consumer(settings.kafka_bootstrap, MESSAGE_STATE.name(settings.topic_prefix),
                      settings.topic_partitions)  # fmt: skip
    found: dict[str, bool] = {}
    deadline = time.monotonic() + 120
    try:
        while len(found) < len(sample) and time.monotonic() < deadline:
            for message in client.consume(10_000, 0.5):
                if message.error() is None:
                    state = orjson.loads(message.value())
                    if state["umid"] in sample and state["state"] == "read":
                        found[state["umid"]] = state["deliveredAt"] == _RESTORED_AT
    finally:
        client.close()
    return sum(found.values()) / len(sample)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


def _alive(worker: subprocess.Popen[bytes], started: float) -> None:
    if worker.poll() is not None:
        sys.exit(f"the funnel worker exited with {worker.returncode}")
    if time.perf_counter() - started > _TIMEOUT_SECONDS:
        sys.exit(f"the funnel worker did not restore in {_TIMEOUT_SECONDS} s")


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _directory_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def _report(
    arguments: argparse.Namespace, ceilings: dict[str, tuple[int, float]], f: dict[str, float]
) -> str:
    ceiling = next(iter(ceilings.values()))
    top = ceiling[0] / ceiling[1]
    rows = [*((name, records, seconds) for name, (records, seconds) in ceilings.items()),
            ("funnel worker's restore, from its `table restored` lines (partitions summed)",
             f["log_records"], f["log_seconds"]),
            ("funnel worker's restore, wall clock of `wapipe_processor_restore_records_total`",
             f["clock_records"], f["clock_seconds"]),
            ("funnel worker, from its start to /readyz (start-up and group join included)",
             arguments.messages, f["ready_seconds"])]  # fmt: skip
    lines = [
        f"`bench/processors/bench_state.py --messages {arguments.messages} --partitions "
        f"{arguments.partitions}`, {time.strftime('%Y-%m-%d %H:%M')}: {arguments.messages:,} "
        f"tracked messages in the funnel's messages changelog, {arguments.partitions} "
        f"partitions, one funnel worker with an empty WAPIPE_HOME; broker and worker on "
        f"this machine. After the restore, {f['proof']:,.0f} `read` receipts all kept the "
        "restored delivery time.",
        "",
        "| reader | records | seconds | records/s | ratio to the ceiling |",
        "|---|---:|---:|---:|---:|",
        *(f"| {name} | {records:,.0f} | {seconds:.2f} | {records / seconds:,.0f} | "
          f"{records / seconds / top:.2f} |" for name, records, seconds in rows),
        "",
        f"Slowest partition's restore: {f['log_slowest']:,.0f} records/s. Worker after the "
        f"restore: {f['rss_mb']:,.0f} MB resident (peak {f['peak_rss_mb']:,.0f} MB), RocksDB "
        f"directory {f['state_mb']:,.0f} MB.",
    ]  # fmt: skip
    lines.append(
        f"Target: at least {TARGET_RECORDS_PER_SECOND:,} records/s (5,000,000 "
        "tracked messages back in under a minute):"
    )
    for what, rate in (
        ("the restore itself (log lines)", f["log_records"] / f["log_seconds"]),
        ("the worker's start to /readyz", arguments.messages / f["ready_seconds"]),
    ):
        verdict = (
            "target met"
            if rate >= TARGET_RECORDS_PER_SECOND
            else f"target missed by {1 - rate / TARGET_RECORDS_PER_SECOND:.0%}"
        )
        lines.append(f"- {what}: {rate:,.0f} records/s, {verdict}; 5,000,000 at this rate: "
                     f"{5_000_000 / rate:.0f} s")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
