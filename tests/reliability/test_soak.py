"""Soak (issue 5, item 6): the whole pipeline under steady simulator traffic for a long
run, with memory, consumer lag and the ingester's p99 sampled; kept out of `make test`.

`make soak` runs it for 30 minutes at 100 webhooks/s; SOAK_SECONDS and SOAK_RATE
change that (e.g. `make soak SOAK_SECONDS=300` for a quick one). The ingester and
all four workers run as processes. It asserts that:
- every webhook was answered 200 (none given up) and the derived data is exact at
  the end (`exactness.assert_exact`);
- no process's resident memory grows: the mean of the last third of the samples is
  within 10% + 16 MiB of the mean of the middle third (the first third is warm-up:
  RocksDB caches and write buffers fill, Python's allocator settles). The workers
  run with small RocksDB budgets (ROCKSDB below): with the defaults (8 MB write
  buffers, 16 MB block cache per table partition) the funnel's 12 table partitions
  may take up to 384 MB, and at 100 webhooks/s its write buffers fill for longer
  than the whole run, which is RocksDB using its budget, not a leak. Small budgets
  fill in the warm-up, so growth after it is the workers' own. The RocksDB memory
  each worker reports (`wapipe_processor_rocksdb_memory_bytes`) is sampled too;
- the workers keep up: no consumer lag in the last third above both twice the
  middle third's highest and 10 s of traffic.
Every sample is printed as a table (run with -s to see it).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from statistics import mean
from typing import Any

import aiohttp
import pytest
from exactness import assert_exact
from ingester_process import rss_kib
from prometheus_client.parser import text_string_to_metric_families

from simulator import Plan, SendOptions, simulate
from wapipe.topics import create_topics

pytestmark = [pytest.mark.soak, pytest.mark.kafka, pytest.mark.slow]

SECONDS = float(os.environ.get("SOAK_SECONDS", "1800"))
RATE = float(os.environ.get("SOAK_RATE", "100"))
JOBS = ("normalize", "funnel", "templates", "phones")
# Story seconds per second: a day of story in the half hour, so that reads come hours
# after delivery and templates walk through their strikes and pauses.
TIME_SCALE = 48.0
SEED = 23
# MB per table partition: write buffers (two at most) and block cache.
ROCKSDB = {"WAPIPE_ROCKSDB_WRITE_BUFFER_MB": "1", "WAPIPE_ROCKSDB_BLOCK_CACHE_MB": "2"}
_MIB = 1024


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the traffic started
    rss_kib: dict[str, int]  # process -> resident memory
    lag: dict[str, float]  # worker -> records behind, over its source partitions
    rocksdb_kib: dict[str, float]  # worker -> the memory RocksDB reports for its tables
    ingest_p99_ms: float | None  # over the interval since the last sample


@pytest.mark.timeout(int(SECONDS) + 900)
async def test_a_long_steady_run_keeps_memory_and_lag_flat_and_the_results_exact(
    local_broker, settings_for, start_pipeline, follow_topic
):
    broker = local_broker()
    await asyncio.to_thread(broker.up)
    settings = settings_for(kafka_bootstrap=broker.bootstrap, topic_partitions=3,
                            topic_prefix=f"t{uuid.uuid4().hex[:10]}.whatsapp")  # fmt: skip
    await create_topics(settings)
    pipeline = await start_pipeline(settings, JOBS, **ROCKSDB)
    ingester, workers = pipeline.ingester, pipeline.workers

    plan = Plan(seed=SEED, rate=RATE, duration=SECONDS, time_scale=TIME_SCALE,
                customers=5_000, sub_accounts=8, templates=20)  # fmt: skip
    started = time.monotonic()
    sending = asyncio.create_task(
        simulate(settings, ingester.webhook_url, plan, options=SendOptions(concurrency=32))
    )
    samples: list[Sample] = []
    interval = max(5.0, SECONDS / 60)
    buckets = _Buckets()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while not sending.done():
            await asyncio.wait({sending}, timeout=interval)
            dead = pipeline.a_worker_died()
            assert dead is None, dead
            processes = {"ingest": ingester.process.pid} | {j: w.pid for j, w in workers.items()}
            exported = {job: await _worker_metrics(session, pipeline.ports[job]) for job in JOBS}
            samples.append(Sample(
                at=time.monotonic() - started,
                rss_kib={name: rss_kib(pid) for name, pid in processes.items()},
                lag={job: lag for job, (lag, _) in exported.items()},
                rocksdb_kib={job: memory / 1024 for job, (_, memory) in exported.items()},
                ingest_p99_ms=buckets.p99_ms(await ingester.metrics()),
            ))  # fmt: skip
            print(_row(samples[-1]), flush=True)
    summary = sending.result()
    assert summary.failed == 0, summary.describe()

    figures = await assert_exact(pipeline, summary, follow_topic, within=600)
    print("\n" + _table(samples))
    print(f"\nFIGURES soak: {summary.describe()}; {figures}\nROW | {figures.row()} |")

    thirds = len(samples) // 3
    assert thirds >= 2, f"too few samples ({len(samples)}) to compare; run longer"
    middle, last = samples[thirds : 2 * thirds], samples[2 * thirds :]
    for name in samples[0].rss_kib:
        before = mean(s.rss_kib[name] for s in middle)
        after = mean(s.rss_kib[name] for s in last)
        assert after <= before * 1.10 + 16 * _MIB, (
            f"{name}'s memory grew from {before / _MIB:.0f} to {after / _MIB:.0f} MiB"
        )
    for job in JOBS:
        bound = max(2 * max(s.lag[job] for s in middle), 10 * RATE)
        worst = max(s.lag[job] for s in last)
        assert worst <= bound, f"{job} fell behind: lag {worst:.0f} > {bound:.0f} records"


class _Buckets:
    """The ingester's request-duration histogram between two reads of its /metrics."""

    def __init__(self) -> None:
        self.previous: dict[float, float] = {}

    def p99_ms(self, samples: Any) -> float | None:
        current: dict[float, float] = {}
        for (name, labels), value in samples.items():
            if name == "wapipe_ingest_request_duration_seconds_bucket":
                bound = float(dict(labels)["le"])
                current[bound] = current.get(bound, 0.0) + value
        deltas = sorted((bound, count - self.previous.get(bound, 0.0))
                        for bound, count in current.items())  # fmt: skip
        self.previous = current
        total = deltas[-1][1] if deltas else 0.0
        if total <= 0:
            return None
        # The upper bound of the bucket holding the 99th percentile: an upper estimate.
        return next(bound for bound, count in deltas if count >= 0.99 * total) * 1000


async def _worker_metrics(session: aiohttp.ClientSession, port: int) -> tuple[float, float]:
    """A worker's consumer lag (records) and RocksDB memory (bytes), over all labels."""
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    totals = {"wapipe_processor_consumer_lag_records": 0.0,
              "wapipe_processor_rocksdb_memory_bytes": 0.0}  # fmt: skip
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals["wapipe_processor_consumer_lag_records"], totals[
        "wapipe_processor_rocksdb_memory_bytes"
    ]


def _row(sample: Sample) -> str:
    memory = " | ".join(f"{sample.rss_kib[name] / _MIB:.0f}" for name in sample.rss_kib)
    rocksdb = " | ".join(f"{sample.rocksdb_kib[job] / _MIB:.1f}" for job in JOBS)
    lags = " | ".join(f"{sample.lag[job]:.0f}" for job in JOBS)
    p99 = "-" if sample.ingest_p99_ms is None else f"{sample.ingest_p99_ms:g}"
    return f"| {sample.at:.0f} | {p99} | {memory} | {rocksdb} | {lags} |"


def _table(samples: list[Sample]) -> str:
    names = list(samples[0].rss_kib)
    head = (["s", "ingest p99 ms (bucket bound)"] + [f"{n} RSS MiB" for n in names]
            + [f"{job} RocksDB MiB" for job in JOBS] + [f"{job} lag" for job in JOBS])  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    return "\n".join(lines + [_row(sample) for sample in samples])
