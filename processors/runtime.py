"""What every processor worker shares: its faust app's configuration, its metrics page,
and how it runs.

Each job is its own faust app, named `<topic prefix>.<job>`: its own consumer group
(so jobs scale independently and two prefixes never share a group), its own
changelog topics, its own state directory under WAPIPE_HOME/state/<prefix>.<job>.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import faust
import faust.streams as faust_streams
from prometheus_client import CollectorRegistry, Gauge, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from processors.normalize import canonical
from processors.progress import (
    Continuity,
    Progress,
    StallWatchdog,
    has_records,
    source_progress,
)
from wapipe.exit_codes import EXIT_BATCH_FAILED, EXIT_PARTITION_STALLED
from wapipe.logs import configure_logging, get_logger
from wapipe.settings import Settings

# A worker killed with SIGKILL is noticed by the group after the session timeout;
# a restarted one waits that long to get its partitions back. 10 s keeps a
# restart under 15 s, while 3 s heartbeats tolerate a busy event loop.
_SESSION_TIMEOUT_SECONDS = 10.0
_HEARTBEAT_SECONDS = 3.0
# A batch closes when it is full or this long after its first event.
_BATCH_WITHIN_SECONDS = 0.05
_DAY_SECONDS = 86_400
_PROGRESS_INTERVAL_SECONDS = 10.0

log = get_logger(__name__)


def create_app(settings: Settings, job: str, registry: CollectorRegistry) -> faust.App:
    app = faust.App(
        f"{settings.topic_prefix}.{job}",
        broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap.split(",")],
        # At least once, made exact downstream by construction: see the README,
        # "Exact under crashes".
        processing_guarantee="at_least_once",
        store="rocksdb://",
        datadir=str(state_directory(settings, job)),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=True,  # the changelogs of the job's own tables
        broker_session_timeout=_SESSION_TIMEOUT_SECONDS,
        broker_heartbeat_interval=_HEARTBEAT_SECONDS,
        producer_acks=-1,
        # JSON compresses about 4x: less broker disk and network, for outputs and changelogs.
        producer_compression_type="lz4",
        web_host=settings.processor_web_host,
        web_bind=settings.processor_web_host,
        web_port=settings.processor_web_port,
        web_enabled=True,
    )

    consumer_lag = Gauge(
        "wapipe_processor_consumer_lag_records",
        "Records of a source partition not yet processed and committed by this worker "
        "(the partition's end offset minus the committed offset).",
        ["processor", "topic", "partition"],
        registry=registry,
    )

    ProcessCollector(registry=registry)  # process_resident_memory_bytes, CPU, open files
    rocksdb_memory = Gauge(
        "wapipe_processor_rocksdb_memory_bytes",
        "Memory RocksDB reports for this worker's tables, over their open partitions: "
        "`memtables` (write buffers, at most 2 x WAPIPE_ROCKSDB_WRITE_BUFFER_MB each), "
        "`block_cache` (at most WAPIPE_ROCKSDB_BLOCK_CACHE_MB each), `table_readers` "
        "(index and filter blocks, growing with the data on disk).",
        ["processor", "table", "kind"],
        registry=registry,
    )
    watchdog = StallWatchdog(settings.processor_stall_seconds)

    @app.timer(_PROGRESS_INTERVAL_SECONDS)  # type: ignore[untyped-decorator]
    async def measure_progress() -> None:
        for table, kind, value in rocksdb_memory_bytes(app):
            rocksdb_memory.labels(job, table, kind).set(value)
        if app.rebalancing:
            # Until the tables are restored no commits are expected, and faust has not
            # loaded the committed offsets yet: the lag keeps its last values.
            watchdog.reset()
            return
        try:
            progress = await source_progress(app)
        except Exception as exc:  # the broker did not answer: nothing to judge by
            log.warning("could not read the partitions' end offsets", job=job, error=repr(exc))
            watchdog.reset()
            return
        consumer_lag.clear()  # revoked partitions drop out
        for tp, partition in progress.items():
            consumer_lag.labels(job, tp.topic, str(tp.partition)).set(partition.lag)
        stalled = await watchdog.confirmed_stalls(progress, time.monotonic(),
                                                  settings.kafka_bootstrap, job)  # fmt: skip
        if stalled:
            _exit_stalled(app.consumer, job, stalled)

    @app.page("/metrics")
    async def metrics(web: Any, _request: Any) -> Any:
        # The full Content-Type (with version and charset) goes in as a header:
        # aiohttp refuses a charset inside `content_type`.
        return web.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/healthz")
    async def healthz(web: Any, _request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.task(on_leader=False)  # type: ignore[untyped-decorator]
    async def use_our_logging() -> None:
        # faust's worker installs its own log handlers at start; ours replace them,
        # so the processors log JSON lines like the ingester.
        configure_logging(settings, service=job)

    # Table writes wait in faust's producer buffer, which warns on every write past
    # 100: a batch writes up to a few per event, by design.
    app.producer.buffer.max_messages = max(100, 4 * settings.processor_batch_size)
    BoundedFlush(app.producer.buffer)
    keep_handed_over_records(app.flow_control)
    return app


def keep_handed_over_records(flow_control: Any) -> None:
    """Make resuming faust's flow control clear the agents' queues only when it was
    suspended.

    Every resume clears every agent's queue, and after a rebalance faust resumes
    twice: once for the tables' recovery, and again once the stream partitions are
    resumed and sought to their committed offsets. By the second time its fetcher
    has already handed the first records of those partitions to the agents, and has
    moved its read offset past them, so the clear dropped them for good: holes that
    `Continuity` caught at most rebalances (each one a restart). A suspension (at a
    rebalance) still ends with a clear on resume, as faust intends.

    Replaces `resume` on faust's FlowControlEvent (faust-streaming is pinned exactly).
    """
    resume = flow_control.resume

    def resume_if_suspended() -> None:
        if not flow_control.is_active():
            resume()

    flow_control.resume = resume_if_suspended


class BoundedFlush:
    """Make a flush of faust's producer buffer wait for what was written before it,
    not for the buffer to be empty.

    faust's own flush returns only when the buffer is empty (or idle for 0.1 s), and
    faust flushes before every commit. While agents keep writing tables (each write
    is a changelog record in this buffer) the buffer is seldom empty when the
    committing task looks, so commits stopped for minutes under a backlog, until the
    stall watchdog ended the worker. This flush waits for the changelog records
    written before it was called, until Kafka acknowledged them: as much as faust's
    commit needs (its own flush ends with the Kafka client's flush), and bounded.

    A record Kafka refused fails every later flush: faust only logs it, and its
    commit would then cover a table write that never reached the changelog.

    It replaces two attributes of the buffer (`put`, `flush`; faust-streaming is
    pinned exactly) and must be installed before the first table write.
    """

    def __init__(self, buffer: Any) -> None:
        self.unacknowledged: set[asyncio.Future[Any]] = set()
        self.refused: BaseException | None = None
        self._put = buffer.put
        buffer.put = self.put
        buffer.flush = self.flush

    def put(self, record: asyncio.Future[Any]) -> None:
        """Queue a record (a faust FutureMessage: resolved when Kafka acknowledges it)."""
        self.unacknowledged.add(record)
        record.add_done_callback(self._done)
        self._put(record)

    def _done(self, record: asyncio.Future[Any]) -> None:
        self.unacknowledged.discard(record)
        if not record.cancelled() and record.exception() is not None:
            self.refused = self.refused or record.exception()

    async def flush(self) -> None:
        """Wait until every record queued so far is acknowledged; raise if any was refused."""
        if self.unacknowledged:
            await asyncio.gather(*self.unacknowledged, return_exceptions=True)
        if self.refused is not None:
            raise self.refused


def _exit_stalled(consumer: Any, job: str, stalled: dict[Any, Progress]) -> None:
    """End the worker so that its restart replays the stalled partitions' events; the
    log holds what faust knew of each (its private bookkeeping: pinned exactly)."""
    for tp, partition in stalled.items():
        acked = consumer._acked.get(tp) or []
        log.critical("partition stalled: records behind its end and no commit; exiting so "
                     "that the restart replays them", job=job, topic=tp.topic,
                     partition=tp.partition, committed=partition.committed, end=partition.end,
                     acknowledged=len(acked), first_acknowledged=min(acked, default=None),
                     read_offset=consumer._read_offset.get(tp))  # fmt: skip
    _end_process(EXIT_PARTITION_STALLED)


_ROCKSDB_MEMORY = {
    "memtables": "rocksdb.size-all-mem-tables",
    "block_cache": "rocksdb.block-cache-usage",
    "table_readers": "rocksdb.estimate-table-readers-mem",
}


def rocksdb_memory_bytes(app: faust.App) -> Iterator[tuple[str, str, int]]:
    """(table, kind, bytes) of every table of `app`, summed over its open partitions.

    Reads faust's open RocksDB handles (`Store._dbs`: faust-streaming is pinned
    exactly); each partition has its own write buffers and block cache.
    """
    for name, table in app.tables.items():
        dbs = list(getattr(table.data, "_dbs", {}).values())
        for kind, prop in _ROCKSDB_MEMORY.items():
            yield name, kind, sum(db.property_int_value(prop) or 0 for db in dbs)


def raw_topic(app: faust.App, *names: str) -> Any:
    """A topic of bytes: the jobs encode and decode their JSON themselves (orjson)."""
    return app.topic(
        *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


class Sink:
    """A topic the job writes to, through faust's producer directly.

    faust's `Topic.send` wraps every record in a FutureMessage and passes it through
    its own buffer and callbacks: a tenth of the funnel worker's time in a profile.
    The jobs await Kafka's acknowledgements themselves, so the producer's own
    future is all they need.
    """

    def __init__(self, app: faust.App, name: str) -> None:
        self.app, self.name = app, name

    async def send(
        self, key: bytes | None, value: bytes, timestamp: float | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:  # fmt: skip
        """Queue one record; the result resolves once Kafka acknowledged it."""
        return await self.app.producer.send(self.name, key, value, None, timestamp, headers)


def event_timestamp(at: str | None) -> float | None:
    """A record's Kafka timestamp (epoch seconds) from its canonical event time."""
    return None if at is None else canonical.parse_timestamp(at, "at").timestamp()


def table_options(settings: Settings, ttl_days: int | None = None) -> dict[str, int]:
    """RocksDB options of a table: bounded memory per partition (faust's defaults give
    each partition's store 3 x 64 MB of write buffers and a 2 GB block cache), and
    keys that expire `ttl_days` after their last write, if given."""
    options = {
        "write_buffer_size": settings.rocksdb_write_buffer_mb << 20,
        "max_write_buffer_number": 2,
        "block_cache_size": settings.rocksdb_block_cache_mb << 20,
    }
    if ttl_days is not None:
        options["ttl"] = ttl_days * _DAY_SECONDS
    return options


async def handle_batches(
    stream: Any,
    settings: Settings,
    job: str,
    handle: Callable[[list[Any]], Awaitable[None]],
) -> None:
    """Feed an agent's stream to `handle` in batches, each one all or nothing.

    The one loop every agent runs: a batch is handled completely before faust acks
    (and so may commit) its events, and a batch that fails ends the process
    (`exit_on_error`) instead of being acked unhandled.
    """
    continuity = Continuity(stream.app.consumer)
    async for events in stream.take_events(
        settings.processor_batch_size, within=_BATCH_WITHIN_SECONDS
    ):
        async with exit_on_error(job):
            await _exit_on_lost_records(continuity.holes(events), settings.kafka_bootstrap, job)
            await handle(events)


async def _exit_on_lost_records(holes: dict[Any, Progress], bootstrap: str, job: str) -> None:
    """End the worker before this batch is acknowledged if records of a partition did
    not reach the agent (`Continuity`), so that its restart replays them from the
    committed offset; a hole without records (a transaction's commit marker) is no loss."""
    for tp, hole in holes.items():
        if await has_records(bootstrap, tp, hole):
            log.critical("records of a partition skipped on their way to the agent; exiting so "
                         "that the restart replays them", job=job, topic=tp.topic,
                         partition=tp.partition, first_skipped=hole.committed,
                         next_received=hole.end)  # fmt: skip
            _end_process(EXIT_PARTITION_STALLED)
        log.info("offsets skipped without records (transaction markers)", job=job,
                 topic=tp.topic, partition=tp.partition, first_skipped=hole.committed,
                 next_received=hole.end)  # fmt: skip


def _end_process(code: int) -> NoReturn:
    """Exit at once with the log flushed: no faust shutdown, which would ack and commit."""
    logging.shutdown()
    os._exit(code)


@contextlib.asynccontextmanager
async def exit_on_error(job: str) -> AsyncIterator[None]:
    """End the process at once if handling a batch fails.

    faust acks the events of a batch even when its handler raises (take_events'
    `finally`), and its supervisor restarts the agent past them: those events would
    be committed unprocessed, i.e. lost. Exiting before the ack keeps them
    uncommitted, so the restarted worker handles them again. The rules turn bad
    input into dead letters, not exceptions: what gets here is a bug or an outage,
    and a crash loop is the honest signal for it.
    """
    try:
        yield
    except asyncio.CancelledError:
        raise
    except BaseException:
        log.critical("batch failed: exiting so that its events are not committed", job=job,
                     exc_info=True)  # fmt: skip
        _end_process(EXIT_BATCH_FAILED)


@contextlib.contextmanager
def as_current_event(event: Any) -> Iterator[None]:
    """Let table writes for `event` happen outside faust's own iteration.

    A table write goes to the changelog partition of the event being processed,
    which faust finds in a context variable it sets while iterating a stream.
    Batches (`take_events`) write after iterating, so we set it per event. This
    uses faust's private `_current_event` (faust-streaming is pinned exactly).
    """
    token = faust_streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)


def state_directory(settings: Settings, job: str) -> Path:
    """Local state of one app: its tables' RocksDB files (a cache of their changelogs)."""
    directory = (settings.home / "state" / f"{settings.topic_prefix}.{job}").resolve()
    directory.parent.mkdir(parents=True, exist_ok=True)  # faust makes only the last level
    return directory


def run(app: faust.App, settings: Settings) -> None:
    """Run one worker of `app` until SIGTERM/SIGINT (faust handles both gracefully)."""
    # No stdout redirection: our JSON handler writes to the real stderr.
    worker = faust.Worker(
        app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False
    )
    worker.execute_from_commandline()
