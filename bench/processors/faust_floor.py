"""The floor of a faust-streaming worker: the cheapest job faust can run over the raw
topic, for the processor benchmark. faust is the engine our processors ran on before
processors/engine/: this shows what its stream machinery alone cost, before any work.

Standalone (it imports nothing of this repository): it runs in a virtualenv of its own,
.wapipe/bench-faust (bench/processors/faust-requirements.txt), as faust-streaming is no
longer one of the pipeline's dependencies.

One agent reads the raw topic in batches the way our workers do (`take_events`, the
same batch size and wait), parses each body (orjson) and, with `--send`, writes one
record per event through the producer and waits for the batch's acknowledgements,
as our faust jobs did (at least once: they used no transactions). After `--events`
events it prints one line, `FLOOR <events/s>`, measured from the end of the first
batch to the last, and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import faust
import orjson


def raw_topic(app: faust.App, *names: str) -> Any:
    """A topic of bytes, as our faust jobs read theirs (they decoded JSON themselves)."""
    return app.topic(
        *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--send", help="write one record per event to this topic")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--web-port", type=int, required=True)
    arguments = parser.parse_args()
    app = faust.App(
        f"{arguments.topic}.floor{'-send' if arguments.send else ''}",
        broker=f"kafka://{arguments.bootstrap}",
        processing_guarantee="at_least_once",
        datadir=arguments.state_dir,
        web_port=arguments.web_port,
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        producer_acks=-1,
        producer_compression_type="lz4",
    )
    progress = {"events": 0, "timed": 0, "since": 0.0}  # timed: after the first batch

    @app.agent(raw_topic(app, arguments.topic))
    async def floor(stream: Any) -> None:
        async for events in stream.take_events(500, within=0.05):
            deliveries = []
            for event in events:
                body = orjson.loads(event.message.value)
                if arguments.send:
                    deliveries.append(await app.producer.send(
                        arguments.send, event.message.key, orjson.dumps(body), None, None, None
                    ))  # fmt: skip
            await asyncio.gather(*deliveries)
            if progress["events"]:
                progress["timed"] += len(events)
            else:
                progress["since"] = time.perf_counter()
            progress["events"] += len(events)
            if progress["events"] >= arguments.events:
                rate = progress["timed"] / (time.perf_counter() - progress["since"])
                print(f"FLOOR {rate:.0f}", flush=True)
                os._exit(0)  # the figure is out; no need for a graceful stop

    app.finalize()
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
