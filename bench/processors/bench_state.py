"""State benchmark: memory and disk of one funnel worker tracking N messages.

Feeds N delivery receipts (one message each, `delivered`, which implies `sent`:
a full state) straight into `whatsapp.status` of a fresh prefix, runs one
`wapipe process funnel` until it has written all N message states, and reports:
the worker's resident memory (now and peak), the size of its RocksDB state
directory, and the size of its tables' changelog topics on the broker (what a
new worker reads to rebuild the state). Needs the broker's data directory to
measure the changelogs, so it starts its own broker (port 19092) unless
WAPIPE_KAFKA_BOOTSTRAP is set (then changelog sizes are not reported).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from bench_processors import counter_value, start_broker, worker_environment  # noqa: E402

from wapipe.settings import Settings  # noqa: E402
from wapipe.topics import STATUS, create_topics  # noqa: E402

_TIMEOUT_SECONDS = 3_600


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=6)
    arguments = parser.parse_args()
    broker, bootstrap = start_broker()
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=f"state{int(time.time())}.wa",
                        topic_partitions=arguments.partitions)  # fmt: skip
    try:
        asyncio.run(create_topics(settings))
        started = time.monotonic()
        asyncio.run(_feed(settings, arguments.messages))
        print(f"fed {arguments.messages:,} receipts in {time.monotonic() - started:.0f} s",
              flush=True)  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="wapipe-state-") as home:
            figures = _run_worker(settings, arguments.messages, Path(home))
            data = broker.directory / "data" if broker is not None else None
            changelogs = _changelog_bytes(data, settings) if data is not None else None
    finally:
        if broker is not None:
            broker.down()
    report = _report(arguments, figures, changelogs)
    print(report)
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / f"state-{time.strftime('%Y%m%d-%H%M%S')}.md").write_text(report)
    return 0


async def _feed(settings: Settings, messages: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5,
                                max_batch_size=1 << 20, compression_type="lz4")  # fmt: skip
    await producer.start()
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    try:
        deliveries = []
        for n in range(messages):
            # A realistic umid (a UUID's length) and every field a receipt carries.
            umid = f"{n:08x}-1f2e-4d3c-8b7a-{n * 7919 % 16**12:012x}"
            receipt = {"umid": umid, "subAccountId": f"acme-{n % 7}", "channel": "whatsapp",
                       "state": "delivered", "detail": "delivered_to_recipient",
                       "occurredAt": now, "receivedAt": now, "msisdn": f"+62812{n:08d}",
                       "channelUserId": None, "country": "ID", "errorCode": None,
                       "errorMessage": None, "providerErrorCode": None,
                       "pricingCategory": "marketing", "templateName": None,
                       "templateLanguage": None, "templateCategory": "MARKETING",
                       "batchId": None, "clientMessageId": None, "version": None}  # fmt: skip
            deliveries.append(await producer.send(
                STATUS.name(settings.topic_prefix), orjson.dumps(receipt), key=umid.encode()
            ))  # fmt: skip
            if len(deliveries) >= 50_000:
                await asyncio.gather(*deliveries)
                deliveries.clear()
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


def _run_worker(settings: Settings, messages: int, home: Path) -> dict[str, float]:
    environment, port = worker_environment(settings, home)
    worker = subprocess.Popen([sys.executable, "-m", "wapipe", "process", "funnel"],
                              env=environment)  # fmt: skip
    started, last_report = time.monotonic(), 0.0
    try:
        while (done := counter_value(port, "wapipe_funnel_state_changes_total")) < messages:
            if worker.poll() is not None:
                sys.exit(f"the funnel worker exited with {worker.returncode}")
            if time.monotonic() - started > _TIMEOUT_SECONDS:
                sys.exit(f"the funnel worker did not track {messages:,} messages in time")
            if time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                print(f"  {done:,.0f} messages tracked, {_rss_mb(worker.pid):,.0f} MB RSS",
                      flush=True)  # fmt: skip
            time.sleep(1)
        elapsed = time.monotonic() - started
        time.sleep(5)  # let RocksDB settle its memtables before measuring
        figures = {"seconds": elapsed, "rss_mb": _rss_mb(worker.pid),
                   "peak_rss_mb": _status_mb(worker.pid, "VmHWM"),
                   "state_mb": _directory_bytes(home / "state") / 1e6}  # fmt: skip
    finally:
        worker.terminate()
        worker.wait(60)
    figures["state_after_stop_mb"] = _directory_bytes(home / "state") / 1e6
    return figures


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
    lines = [
        f"{arguments.messages:,} tracked messages (one `delivered` receipt each), "
        f"{arguments.partitions} partitions, one funnel worker; "
        f"all tracked in {figures['seconds']:.0f} s.",
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
