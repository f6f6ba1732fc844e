"""State benchmark: memory and disk of one funnel worker tracking N messages.

Feeds N delivery receipts (one message each, `delivered`, which implies `sent`:
a full state) straight into `whatsapp.status` of a fresh prefix, runs one
`wapipe process funnel` until it has written all N message states, and reports:
the worker's resident memory (now and peak), the size of its RocksDB state
directory, and the size of its tables' changelog topics on the broker (what a
new worker reads to rebuild the state). Needs the broker's data directory to
measure the changelogs, so it starts its own broker (port 19092) unless
WAPIPE_KAFKA_BOOTSTRAP is set (then changelog sizes are not reported).

`--restore` gets to N tracked messages faster, for the millions: it writes the N
states the worker would have made straight to its `messages` changelog (the same
bytes, partitions and keys), starts the worker, which rebuilds its RocksDB table
from the changelog as after a lost disk (timed: that is a restart's recovery), and
then feeds `read` receipts for a tenth of the messages (at most 200,000) so that
the store is read and written under load. A sample of the resulting states must
show the restored delivery times: the proof that the worker really holds them.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from bench_processors import (  # noqa: E402
    counter_value,
    start_broker,
    worker_environment,
    write_report,
)

from processors.funnel.state import MessageState, dump_state, merge, observe_receipt  # noqa: E402
from processors.normalize.records import Receipt, record_value  # noqa: E402
from wapipe.exit_codes import EXIT_PARTITION_STALLED  # noqa: E402
from wapipe.settings import Settings  # noqa: E402
from wapipe.topics import MESSAGE_STATE, STATUS, create_topics  # noqa: E402

_TIMEOUT_SECONDS = 3_600


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument(
        "--restore",
        action="store_true",
        help="seed the state through the worker's changelog (see above)",
    )
    arguments = parser.parse_args()
    broker, bootstrap = start_broker()
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=f"state{int(time.time())}.wa",
                        topic_partitions=arguments.partitions)  # fmt: skip
    try:
        asyncio.run(create_topics(settings))
        started = time.monotonic()
        feed = _feed_changelog if arguments.restore else _feed
        asyncio.run(feed(settings, arguments.messages))
        print(f"fed {arguments.messages:,} records in {time.monotonic() - started:.0f} s",
              flush=True)  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="wapipe-state-") as home:
            if arguments.restore:
                figures = _restore_worker(settings, arguments.messages, Path(home))
            else:
                figures = _run_worker(settings, arguments.messages, Path(home))
            data = broker.directory / "data" if broker is not None else None
            changelogs = _changelog_bytes(data, settings) if data is not None else None
    finally:
        if broker is not None:
            broker.down()
    report = _report(arguments, figures, changelogs)
    print(report)
    write_report("state", report)
    return 0


def _umid(n: int) -> str:
    """A realistic umid: a UUID's length."""
    return f"{n:08x}-1f2e-4d3c-8b7a-{n * 7919 % 16**12:012x}"


async def _produce(settings: Settings, records: Iterable[tuple[str, bytes, bytes, int | None]],
                   what: str) -> None:  # fmt: skip
    """Send `records` (topic, key, value, partition or None for the key's), awaiting
    Kafka's acknowledgements 50,000 at a time; a progress line every million."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5,
                                max_batch_size=1 << 20, compression_type="lz4")  # fmt: skip
    await producer.start()
    try:
        deliveries = []
        for n, (topic, key, value, partition) in enumerate(records, 1):
            deliveries.append(await producer.send(topic, value, key=key, partition=partition))
            if len(deliveries) >= 50_000:
                await asyncio.gather(*deliveries)
                deliveries.clear()
                if n % 1_000_000 < 50_000:
                    print(f"  {n:,} {what} written", flush=True)
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def _feed(settings: Settings, messages: int) -> None:
    """One `delivered` receipt, with every field a receipt carries, per message."""
    topic, now = STATUS.name(settings.topic_prefix), _now()

    def record(n: int) -> tuple[str, bytes, bytes, None]:
        receipt = _receipt(_umid(n), n, "delivered", now, detail="delivered_to_recipient")
        return topic, receipt.umid.encode(), orjson.dumps(record_value(receipt)), None

    await _produce(settings, (record(n) for n in range(messages)), "receipts")


_RESTORED_AT = "2026-11-01T10:00:00.000Z"  # the restored states' delivery time


def _receipt(umid: str, n: int, state: str, at: str, detail: str | None = None) -> Receipt:
    return Receipt(umid=umid, sub_account_id=f"acme-{n % 7}", channel="whatsapp", state=state,
                   detail=detail, occurred_at=at, received_at=at, msisdn=f"+62812{n:08d}",
                   channel_user_id=None, country="ID", error_code=None, error_message=None,
                   provider_error_code=None, pricing_category="marketing", template_name=None,
                   template_language=None, template_category="MARKETING", batch_id=None,
                   client_message_id=None, version=None)  # fmt: skip


async def _feed_changelog(settings: Settings, messages: int) -> None:
    """Write `messages` delivered states to the funnel's `messages` changelog as the
    worker writes them: key and value JSON strings (faust's json codec over the table's
    str values), each on the partition of its umid in `funnel.observations` (the same
    murmur2 partitioner)."""
    topic = f"{settings.topic_prefix}.funnel-messages-changelog"

    def record(n: int) -> tuple[str, bytes, bytes, int]:
        umid = _umid(n)
        delivered = observe_receipt(_receipt(umid, n, "delivered", _RESTORED_AT))
        state = merge(MessageState(umid=umid), delivered)
        partition = (murmur2(umid.encode()) & 0x7FFFFFFF) % settings.topic_partitions
        return topic, orjson.dumps(umid), orjson.dumps(dump_state(state).decode()), partition

    await _produce(settings, (record(n) for n in range(messages)), "states")


def _restore_worker(settings: Settings, messages: int, home: Path) -> dict[str, float]:
    """Start a funnel worker on the seeded changelog; time its recovery; feed `read`
    receipts for some of the messages; measure; check the restored times came out."""
    environment, port = worker_environment(settings, home)
    reads = min(200_000, max(1, messages // 10))
    step = messages // reads
    chosen = [(n * step, _umid(n * step)) for n in range(reads)]
    worker = subprocess.Popen([sys.executable, "-m", "wapipe", "process", "funnel"],
                              env=environment)  # fmt: skip
    started = time.monotonic()
    try:
        while not _answers(port):
            _alive(worker, started)
            time.sleep(0.5)
        asyncio.run(_feed_reads(settings, chosen))
        recovered, last_report, restarts, before, done = None, time.monotonic(), 0, 0.0, 0.0
        while done < reads:
            if worker.poll() == EXIT_PARTITION_STALLED:  # restarted, as a supervisor would
                restarts, before = restarts + 1, done
                print(f"  the worker exited {EXIT_PARTITION_STALLED} (events skipped in a "
                      "rebalance): restarting it", flush=True)  # fmt: skip
                worker = subprocess.Popen([sys.executable, "-m", "wapipe", "process", "funnel"],
                                          env=environment)  # fmt: skip
            _alive(worker, started)
            done = max(done, before + counter_value(port, "wapipe_funnel_state_changes_total"))
            if done and recovered is None:  # the first change comes after the recovery
                recovered = time.monotonic() - started
            if time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                print(f"  {done:,.0f} of {reads:,} reads, {_rss_mb(worker.pid):,.0f} MB RSS",
                      flush=True)  # fmt: skip
            time.sleep(1)
        ready = time.monotonic() - started
        figures = _measure(worker, home, ready) | {
            "reads": reads, "recovered": recovered or ready, "restarts": restarts,
        }  # fmt: skip
    finally:
        worker.terminate()
        worker.wait(60)
    figures["state_after_stop_mb"] = _directory_bytes(home / "state") / 1e6
    restored = asyncio.run(_restored_share(settings, {umid for _, umid in chosen[:1000]}))
    if restored < 1.0:
        sys.exit(f"only {restored:.0%} of the sampled states kept the restored delivery time")
    return figures


async def _feed_reads(settings: Settings, chosen: list[tuple[int, str]]) -> None:
    topic, now = STATUS.name(settings.topic_prefix), _now()

    def record(n: int, umid: str) -> tuple[str, bytes, bytes, None]:
        receipt = _receipt(umid, n, "read", now)
        return topic, umid.encode(), orjson.dumps(record_value(receipt)), None

    await _produce(settings, (record(n, umid) for n, umid in chosen), "reads")


async def _restored_share(settings: Settings, sample: set[str]) -> float:
    """Of the sampled messages' `read` states, the share whose deliveredAt is the restored
    time (a worker that lost its state would take the read's time instead)."""
    consumer = AIOKafkaConsumer(MESSAGE_STATE.name(settings.topic_prefix),
                                bootstrap_servers=settings.kafka_bootstrap,
                                isolation_level="read_committed",
                                auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    found: dict[str, bool] = {}
    deadline = time.monotonic() + 120
    try:
        while len(found) < len(sample) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500, max_records=20_000)).values():
                for record in records:
                    state = orjson.loads(record.value)
                    if state["umid"] in sample and state["state"] == "read":
                        found[state["umid"]] = state["deliveredAt"] == _RESTORED_AT
    finally:
        await consumer.stop()
    return sum(found.values()) / len(sample)


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
            return True
    except OSError:
        return False


def _alive(worker: subprocess.Popen[bytes], started: float) -> None:
    if worker.poll() is not None:
        sys.exit(f"the funnel worker exited with {worker.returncode}")
    if time.monotonic() - started > _TIMEOUT_SECONDS:
        sys.exit("the funnel worker did not finish in time")


def _run_worker(settings: Settings, messages: int, home: Path) -> dict[str, float]:
    environment, port = worker_environment(settings, home)
    worker = subprocess.Popen([sys.executable, "-m", "wapipe", "process", "funnel"],
                              env=environment)  # fmt: skip
    started, last_report = time.monotonic(), 0.0
    try:
        while (done := counter_value(port, "wapipe_funnel_state_changes_total")) < messages:
            _alive(worker, started)
            if time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                print(f"  {done:,.0f} messages tracked, {_rss_mb(worker.pid):,.0f} MB RSS",
                      flush=True)  # fmt: skip
            time.sleep(1)
        figures = _measure(worker, home, time.monotonic() - started)
    finally:
        worker.terminate()
        worker.wait(60)
    figures["state_after_stop_mb"] = _directory_bytes(home / "state") / 1e6
    return figures


def _measure(worker: subprocess.Popen[bytes], home: Path, seconds: float) -> dict[str, float]:
    """The running worker's memory and its state directory's size."""
    time.sleep(5)  # let RocksDB settle its memtables before measuring
    return {"seconds": seconds, "rss_mb": _rss_mb(worker.pid),
            "peak_rss_mb": _status_mb(worker.pid, "VmHWM"),
            "state_mb": _directory_bytes(home / "state") / 1e6}  # fmt: skip


def _rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmRSS")


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _directory_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def _changelog_bytes(data: Path, settings: Settings) -> dict[str, float]:
    """MB of log segments on the broker per changelog topic of the funnel app (all
    partitions; not the indexes, which Kafka preallocates)."""
    sizes: dict[str, float] = {}
    app = f"{settings.topic_prefix}.funnel-"
    for partition in data.glob(f"{app}*-changelog-*"):
        table = partition.name[len(app) :].split("-changelog-")[0]
        segments = sum(path.stat().st_size for path in partition.glob("*.log"))
        sizes[table] = sizes.get(table, 0.0) + segments / 1e6
    return sizes


def _report(
    arguments: argparse.Namespace, figures: dict[str, float], changelogs: dict[str, float] | None
) -> str:
    how = (f"restored from its changelog, then {figures['reads']:,.0f} `read` receipts "
           f"processed; first state change {figures['recovered']:.0f} s after start (the "
           f"recovery), the last {figures['seconds']:.0f} s after; "
           f"{figures['restarts']:.0f} restarts on exit {EXIT_PARTITION_STALLED}"
           if arguments.restore else
           f"one `delivered` receipt each, all tracked in {figures['seconds']:.0f} s")  # fmt: skip
    lines = [
        f"{arguments.messages:,} tracked messages ({how}), {arguments.partitions} partitions, "
        f"one funnel worker.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| worker resident memory at the end | {figures['rss_mb']:,.0f} MB |",
        f"| worker peak resident memory | {figures['peak_rss_mb']:,.0f} MB |",
        f"| RocksDB state directory (running) | {figures['state_mb']:,.0f} MB |",
        f"| RocksDB state directory (after a clean stop) | "
        f"{figures['state_after_stop_mb']:,.0f} MB |",
    ]
    for table, size in sorted((changelogs or {}).items()):
        lines.append(f"| changelog `{table}` on the broker | {size:,.0f} MB |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
