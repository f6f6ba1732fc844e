"""The funnel's message-state hop without the engine: what our rules cost over plain
aiokafka batches, for the processor benchmark. A prototype to measure, not a worker.

It answers one question: how much of the funnel worker's cost is the engine (its
transactions, its second hop, its stores' bookkeeping) rather than the funnel's own
work? It does the work of the job's merge hop (processors/funnel/app.py) per batch,
with the same fold (`processors.funnel.batch.MessageFold`) and the same writes:
- `getmany` up to 2,000 receipts from `<prefix>.status` (keyed by umid);
- read the stored states of the batch from RocksDB (one multi-get), fold the batch;
- send each changed state to `<prefix>.batch.message_state` and to a changelog topic,
  each window delta to `<prefix>.batch.deltas`, wait for Kafka's acknowledgements;
- write the states to RocksDB (one write batch), commit the offsets.
At least once, no transaction. It leaves out what the worker does besides: replies
and their re-keying hop, summing the deltas into window totals (`TotalsFold`),
restore on rebalance, metrics. So its rate is an upper bound of the merge hop
without the engine, not a worker.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from bench_processors import ensure_topics
from rocksdict import Options, Rdict, WriteBatch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from processors.funnel.batch import MessageFold
from processors.funnel.state import dump_state, load_state, message_state_value, observe_receipt
from processors.normalize.records import Receipt, record_from_value

_MAX_RECORDS = 2000


async def run(bootstrap: str, prefix: str, state_dir: Path, partitions: int) -> None:
    out = f"{prefix}.batch"
    await ensure_topics(bootstrap, partitions, f"{out}.messages-changelog", f"{out}.deltas",
                        f"{out}.message_state")  # fmt: skip
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
    received = [_observation(record.value) for records in batches.values() for record in records]
    umids = list({umid for umid, _ in received})
    stored = db.get([b"m|" + umid.encode() for umid in umids])
    fold = MessageFold({umid: load_state(data) for umid, data in zip(umids, stored, strict=True)
                        if data is not None}, timedelta(days=2))  # fmt: skip
    for umid, observation in received:
        fold.add(umid, observation)
    deliveries = []
    writes = WriteBatch(raw_mode=True)
    for umid, state in fold.changed.items():
        key, value = umid.encode(), dump_state(state)
        state_record = orjson.dumps(message_state_value(state))
        deliveries.append(await producer.send(f"{out}.message_state", state_record, key=key))
        deliveries.append(await producer.send(f"{out}.messages-changelog", value, key=key))
        writes.put(b"m|" + key, value)
    for window, counts in fold.window_deltas()[0].items():
        delta = orjson.dumps({"window": window.encode(), "counts": counts})
        deliveries.append(await producer.send(f"{out}.deltas", delta,
                                              key=window.sub_account_id.encode()))  # fmt: skip
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
