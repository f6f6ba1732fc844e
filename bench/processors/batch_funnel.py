"""The funnel's message-state step without faust: what our rules cost over aiokafka
batches, for the processor benchmark. A prototype to measure, not a worker to run.

It answers one question: can the funnel reach 20,000 events/s per worker on this
machine if it leaves faust's per-event stream path? It does the work of our
`message_states` agent per batch, with the same rules (`processors.funnel.batch`),
and the same writes:
- `getmany` up to 2,000 receipts from `<prefix>.status` (keyed by umid);
- read the stored states and partials of the batch from RocksDB (one multi-get),
  fold the batch (`Batch.add`);
- send each changed state to `<prefix>.batch.message_state` and to a changelog
  topic, each touched partial to a partials topic and to a changelog, wait for
  Kafka's acknowledgements;
- write the states and partials to RocksDB (one write batch), commit the offsets.
It leaves out what the worker does besides: replies and the re-keying hop
(`observations`), the windows agent, table restore on rebalance, metrics. So its
rate is an upper bound for a faust-free worker, not a worker.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from bench_processors import ensure_topics
from rocksdict import Options, Rdict, WriteBatch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from processors.funnel.batch import Batch, Slot, slot_id
from processors.funnel.state import (
    MessageState,
    dump_state,
    load_state,
    message_state_value,
    observe_receipt,
)
from processors.funnel.windows import EMPTY, Partial
from processors.normalize.records import Receipt, record_from_value

_MAX_RECORDS = 2000


async def run(bootstrap: str, prefix: str, state_dir: Path, partitions: int) -> None:
    out = f"{prefix}.batch"
    await ensure_topics(bootstrap, partitions, f"{out}.messages-changelog", f"{out}.partials",
                         f"{out}.partials-changelog", f"{out}.message_state")  # fmt: skip
    consumer = AIOKafkaConsumer(
        f"{prefix}.status", bootstrap_servers=bootstrap, group_id=f"{out}-funnel",
        isolation_level="read_committed",
        auto_offset_reset="earliest", enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                compression_type="lz4", max_batch_size=1 << 20)  # fmt: skip
    db = Rdict(str(state_dir), options=Options(raw_mode=True))
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await consumer.start()
    await producer.start()
    try:
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=_MAX_RECORDS)
            if batches:
                await _handle(batches, db, producer, out)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()
        db.close()


async def _handle(batches: dict[Any, list[Any]], db: Rdict, producer: Any, out: str) -> None:
    received = [
        (record, *_observation(record.value)) for records in batches.values() for record in records
    ]
    umids = list({umid for _, umid, _ in received})
    states = dict(zip(umids, db.get([b"m|" + umid.encode() for umid in umids]), strict=True))

    def stored_state(umid: str) -> MessageState:
        data = states.get(umid)
        return load_state(data) if data is not None else MessageState(umid=umid)

    def stored_partial(slot: Slot) -> Partial:
        data = db.get(b"p|" + slot_id(slot).encode())
        return Partial.from_value(orjson.loads(data)) if data is not None else EMPTY

    fold = Batch(stored_state, stored_partial, timedelta(days=2), datetime.now(UTC))
    for record, umid, observation in received:
        fold.add(umid, observation, record.partition, record.offset)
    deliveries = []
    writes = WriteBatch(raw_mode=True)
    for umid, state in fold.changed.items():
        key, stored = umid.encode(), dump_state(state)
        deliveries.append(
            await producer.send(
                f"{out}.message_state", key=key, value=orjson.dumps(message_state_value(state))
            )
        )
        deliveries.append(await producer.send(f"{out}.messages-changelog", key=key, value=stored))
        writes.put(b"m|" + key, stored)
    for slot, partial in fold.touched.items():
        key, value = slot_id(slot).encode(), orjson.dumps(partial.value())
        deliveries.append(await producer.send(f"{out}.partials", key=key, value=value))
        deliveries.append(await producer.send(f"{out}.partials-changelog", key=key, value=value))
        writes.put(b"p|" + key, value)
    await asyncio.gather(*deliveries)
    db.write(writes)


def _observation(value: bytes) -> tuple[str, Any]:
    receipt = record_from_value(Receipt, orjson.loads(value))
    return receipt.umid, observe_receipt(receipt)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--partitions", type=int, required=True)
    arguments = parser.parse_args()
    asyncio.run(run(arguments.bootstrap, arguments.prefix, arguments.state_dir,
                    arguments.partitions))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
