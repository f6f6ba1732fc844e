"""The funnel's rules alone: what one receipt costs in our own code, without Kafka or faust.

Builds N receipts as `whatsapp.status` records (N/3 messages: sent, delivered, read,
a second apart), then times, best of --repeat runs, each step a funnel worker takes
per receipt, cumulatively:
1. the ceiling: `orjson.loads` of each record (what any consumer must do);
2. + the typed record and the observation (`record_from_value`, `observe_receipt`);
3. + the merge into the message's state and its window partials (`Batch.add`, in
   batches of 500 over states kept in a dict);
4. + the encodings written per changed state (`dump_state` for the table,
   `message_state_value` for the topic).
Prints microseconds per receipt and the receipts/s one core could do at most.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from processors.funnel.batch import Batch, Slot
from processors.funnel.state import (
    MessageState,
    dump_state,
    message_state_value,
    observe_receipt,
)
from processors.funnel.windows import EMPTY, Partial
from processors.normalize.canonical import format_timestamp
from processors.normalize.records import Receipt, record_from_value

_BATCH = 500


def receipts(count: int) -> list[bytes]:
    start = datetime.now(UTC) - timedelta(hours=1)
    values = []
    for n in range(count // 3):
        for step, state in enumerate(("sent", "delivered", "read")):
            at = format_timestamp(start + timedelta(seconds=n // 10 + step))
            values.append(orjson.dumps({
                "umid": f"m-{n}", "subAccountId": f"acme-{n % 5}", "channel": "whatsapp",
                "state": state, "detail": None, "occurredAt": at, "receivedAt": at,
                "msisdn": "+6281234567890", "channelUserId": None, "country": "ID",
                "errorCode": None, "errorMessage": None, "providerErrorCode": None,
                "pricingCategory": None, "templateName": None, "templateLanguage": None,
                "templateCategory": "MARKETING" if n % 2 else None, "batchId": None,
                "clientMessageId": None, "version": None,
            }))  # fmt: skip
    return values


def run_steps(values: list[bytes], steps: int) -> None:
    """The first `steps` steps of the module docstring over `values`."""
    states: dict[str, MessageState] = {}
    partials: dict[Slot, Partial] = {}
    for first in range(0, len(values), _BATCH):
        fold = Batch(lambda umid: states.get(umid) or MessageState(umid=umid),
                     lambda slot: partials.get(slot, EMPTY), timedelta(days=2),
                     datetime.now(UTC))  # fmt: skip
        for offset, value in enumerate(values[first : first + _BATCH], start=first):
            parsed = orjson.loads(value)
            if steps < 2:
                continue
            receipt = record_from_value(Receipt, parsed)
            observation = observe_receipt(receipt)
            if steps < 3:
                continue
            fold.add(receipt.umid, observation, 0, offset)
        if steps < 4:
            continue
        for state in fold.changed.values():
            dump_state(state)
            orjson.dumps(message_state_value(state))
        states.update(fold.changed)
        partials.update(fold.touched)


def best_seconds(work: Callable[[], None], repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return min(timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--receipts", type=int, default=60_000)
    parser.add_argument("--repeat", type=int, default=5)
    arguments = parser.parse_args()
    values = receipts(arguments.receipts)
    names = ["orjson parse (the ceiling)", "+ typed record and observation",
             "+ merge into state and partials (Batch.add)", "+ state encodings"]  # fmt: skip
    print(f"{len(values):,} receipts, best of {arguments.repeat}\n")
    print("| step (cumulative) | µs per receipt | receipts/s on one core |")
    print("|---|---:|---:|")
    for steps, name in enumerate(names, start=1):
        seconds = best_seconds(lambda s=steps: run_steps(values, s), arguments.repeat)
        per = seconds / len(values)
        print(f"| {name} | {per * 1e6:.1f} | {1 / per:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
