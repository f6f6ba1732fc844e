"""The floor of a worker on our stream engine (processors/engine/): the cheapest job it
can run over the raw topic, for the processor benchmark. What the engine itself costs
(consume, batch, transaction, offsets in it) before any work of a real job.

A job with no table: it parses each record of `<prefix>.webhooks.raw` (orjson) and,
with `--send`, sends one record per event (the body encoded again) to
`<prefix>.floor.out`; the engine commits each batch's outputs and input offsets in one
Kafka transaction, as for every job. Runs as `wapipe process` does, from the WAPIPE_*
environment (the benchmark's `worker_environment`), until SIGTERM; the benchmark reads
its rate from `wapipe_processor_records_total{processor="floor"|"floor-send"}` on
/metrics, as it does for the real jobs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson
from confluent_kafka import Message
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from processors.engine import worker
from processors.engine.job import Output, PartitionBatch, Table, Timer
from wapipe import topics
from wapipe.logs import configure_logging
from wapipe.settings import Settings


def floor_topic(prefix: str) -> str:
    return f"{prefix}.floor.out"


class FloorJob:
    tables: tuple[Table, ...] = ()
    aligned = False
    timers: tuple[Timer, ...] = ()

    def __init__(self, prefix: str, send: bool) -> None:
        self.name = "floor-send" if send else "floor"
        self.sources = (topics.RAW.name(prefix),)
        self.out = floor_topic(prefix) if send else None
        self.deadletter = topics.DEADLETTER.name(prefix)

    def process(self, batch: PartitionBatch) -> None:
        out = self.out
        for record in batch.records:
            body = orjson.loads(record.value() or b"")
            if out is not None:
                batch.send(out, record.key(), orjson.dumps(body))

    def dead_letter(self, record: Message, error: BaseException) -> Output:
        return Output(self.deadletter, record.key(), record.value())

    def partitions_revoked(self, partitions: frozenset[int]) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--send", action="store_true", help="one output record per event")
    arguments = parser.parse_args()
    settings = Settings()
    job = FloorJob(settings.topic_prefix, arguments.send)
    configure_logging(settings, service=job.name)
    registry = CollectorRegistry()
    return worker.run(job, settings, registry)


if __name__ == "__main__":
    sys.exit(main())
