"""A worker process of a job on the engine: its configuration from the settings, its
signals (SIGTERM and SIGINT finish the batch in hand, commit it and leave the group),
and its exit status (0 after a stop, EXIT_BATCH_FAILED when it cannot go on)."""

from __future__ import annotations

import signal
import socket
import sys

from confluent_kafka import KafkaException
from prometheus_client import CollectorRegistry

from processors.engine.job import Job
from processors.engine.kafka import KafkaOptions
from processors.engine.loop import EngineConfig, EngineError, Worker
from processors.engine.state.restore import RestoreError
from processors.engine.state.store import StoreOptions
from wapipe import topics
from wapipe.exit_codes import EXIT_BATCH_FAILED
from wapipe.logs import get_logger
from wapipe.settings import Settings

log = get_logger(__name__)


def engine_config(settings: Settings, job: Job) -> EngineConfig:
    group = f"{settings.topic_prefix}.{job.name}"
    prefix = settings.topic_prefix
    return EngineConfig(
        kafka=KafkaOptions(
            bootstrap=settings.kafka_bootstrap,
            group_id=group,
            transactional_id=f"{group}.{settings.processor_instance or socket.gethostname()}",
            transaction_timeout_ms=int(settings.processor_transaction_timeout_seconds * 1000),
        ),
        state_dir=settings.home / "state" / group,
        changelogs={t.name: topics.changelog(job.name, t.name).name(prefix) for t in job.tables},
        store=StoreOptions(settings.rocksdb_write_buffer_mb, settings.rocksdb_block_cache_mb),
        batch_size=settings.processor_batch_size,
        max_drift_ms=round(settings.processor_max_drift_seconds * 1000) if job.aligned else None,
        web_host=settings.processor_web_host,
        web_port=settings.processor_web_port,
    )


def run(job: Job, settings: Settings, registry: CollectorRegistry) -> int:
    """Run one worker of `job` until SIGTERM/SIGINT; its exit status."""
    worker = Worker(job, engine_config(settings, job), registry)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    try:
        worker.run()
    except (EngineError, RestoreError, KafkaException) as error:
        log.critical("worker cannot go on; exiting", job=job.name, reason=str(error))
        print(f"wapipe process {job.name}: {error}", file=sys.stderr)
        return EXIT_BATCH_FAILED
    return 0
