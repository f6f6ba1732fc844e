"""The engine's metrics, the same for every job (labelled `processor`), and the worker's
small web server: /metrics, /healthz (the loop is alive), /readyz (every assigned
partition restored and being processed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_BATCH_SIZES = (1, 10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000)
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry, processor: str) -> None:
        self.processor = processor
        ProcessCollector(registry=registry)  # process_resident_memory_bytes, CPU, open files
        label = ["processor"]
        self.consumer_lag = Gauge(
            "wapipe_processor_consumer_lag_records",
            "Records of a source partition not yet processed and committed by this worker "
            "(the partition's end offset minus the worker's position).",
            ["processor", "topic", "partition"], registry=registry,
        )  # fmt: skip
        self.batch_records = Histogram(
            "wapipe_processor_batch_records", "Source records per batch.", label,
            buckets=_BATCH_SIZES, registry=registry,
        ).labels(processor)  # fmt: skip
        self.batch_duration = Histogram(
            "wapipe_processor_batch_duration_seconds",
            "Time from a batch's records in hand to its state stored: the job's work, the "
            "transaction and the RocksDB write.",
            label, buckets=_SECONDS, registry=registry,
        ).labels(processor)  # fmt: skip
        self.commit_duration = Histogram(
            "wapipe_processor_commit_duration_seconds",
            "Time to produce a batch's records, send its offsets and commit its transaction.",
            label, buckets=_SECONDS, registry=registry,
        ).labels(processor)  # fmt: skip
        self.last_commit = Gauge(
            "wapipe_processor_last_commit_timestamp_seconds",
            "When this worker last committed a transaction (Unix time): a worker whose loop "
            "goes round but commits nothing while it has lag is stuck.",
            label, registry=registry,
        ).labels(processor)  # fmt: skip
        self.records = Counter(
            "wapipe_processor_records", "Source records processed and committed.", label,
            registry=registry,
        ).labels(processor)  # fmt: skip
        self.aborted = Counter(
            "wapipe_processor_transactions_aborted",
            "Batches whose transaction was aborted (their records are processed again).",
            label, registry=registry,
        ).labels(processor)  # fmt: skip
        self.poison = Counter(
            "wapipe_processor_poison_records",
            "Source records that made the job fail, sent to the dead letters.",
            label, registry=registry,
        ).labels(processor)  # fmt: skip
        self.timer_errors = Counter(
            "wapipe_processor_timer_errors",
            "Timer runs that raised (a bug): their work was dropped, the worker went on.",
            label, registry=registry,
        ).labels(processor)  # fmt: skip
        self.stream_time = Gauge(
            "wapipe_processor_stream_time_seconds",
            "A source partition's committed stream time (Unix time): the highest event time "
            "this worker has processed from it. The wall clock minus it is how far behind "
            "in event time the job is (it stays put while the partition has no traffic).",
            ["processor", "topic", "partition"], registry=registry,
        )  # fmt: skip
        self.rebalances = Counter(
            "wapipe_processor_rebalances",
            "Partitions assigned to or taken from this worker, by kind (assigned, revoked, "
            "lost).",
            ["processor", "kind"], registry=registry,
        )  # fmt: skip
        self.restored = Counter(
            "wapipe_processor_restore_records",
            "Changelog records applied to the local stores while restoring.",
            ["processor", "table"], registry=registry,
        )  # fmt: skip
        self.restore_remaining = Gauge(
            "wapipe_processor_restore_remaining_records",
            "Changelog records still to restore before the table's partitions are processed.",
            ["processor", "table"], registry=registry,
        )  # fmt: skip
        self.rocksdb_memory = Gauge(
            "wapipe_processor_rocksdb_memory_bytes",
            "Memory RocksDB reports for this worker's tables, over their open partitions: "
            "`memtables` (write buffers, at most 2 x WAPIPE_ROCKSDB_WRITE_BUFFER_MB each), "
            "`block_cache` (at most WAPIPE_ROCKSDB_BLOCK_CACHE_MB each), `table_readers` "
            "(index and filter blocks, growing with the data on disk).",
            ["processor", "table", "kind"], registry=registry,
        )  # fmt: skip


class WebServer:
    """/metrics, /healthz and /readyz on a thread of its own (the loop never serves HTTP)."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry,
        alive: Callable[[], bool], ready: Callable[[], bool],
    ) -> None:  # fmt: skip
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._reply(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                elif self.path in ("/healthz", "/readyz"):
                    ok = alive() if self.path == "/healthz" else ready()
                    body = b'{"status":"ok"}' if ok else b'{"status":"unavailable"}'
                    self._reply(200 if ok else 503, "application/json", body)
                else:
                    self._reply(404, "text/plain", b"not found\n")

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:  # scrapes are not worth a log line
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="web",
                                        daemon=True)  # fmt: skip

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Heartbeat:
    """When the loop last went round: /healthz fails once it has not for `limit` seconds."""

    def __init__(self, limit: float) -> None:
        self.limit, self.last = limit, time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.last < self.limit
