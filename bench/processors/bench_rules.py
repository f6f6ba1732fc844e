"""The funnel's rules alone: what one receipt costs in our own code, without Kafka or the
engine.

Builds N receipts as `whatsapp.status` records (N/3 messages: sent, delivered, read,
a second apart), then times, best of --repeat runs, each step the funnel job takes
per receipt (processors/funnel/app.py), cumulatively:
1. the ceiling: `orjson.loads` of each record (what any consumer must do);
2. + the typed record and the observation (`record_from_value`, `observe_receipt`);
3. + the merge into the message's state and the batch's window and billing deltas
   (`MessageFold`, in batches of the engine's default size over states kept in a dict);
4. + the encodings written per changed state and per delta (`dump_state` for the
   table, `message_state_value` for the topic, the delta record);
5. + the second hop, amortized over the receipts: each delta parsed back and summed
   into its window's total and the rate alerts' sub-account window (`TotalsFold`),
   each touched total encoded (`funnel_record`) with its table value.
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

from processors.funnel.batch import MessageFold, SubAccountWindow, TotalsFold
from processors.funnel.rate_alerts import RateThresholds
from processors.funnel.state import (
    MessageState,
    dump_state,
    message_state_value,
    observe_receipt,
)
from processors.funnel.windows import Counts, WindowKey, funnel_record
from processors.normalize.canonical import format_timestamp
from processors.normalize.records import Receipt, record_from_value
from wapipe.settings import Settings

_BATCH: int = Settings.model_fields["processor_batch_size"].default  # the engine's


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
    totals: dict[str, Counts] = {}
    subaccounts: dict[str, SubAccountWindow] = {}
    limits = RateThresholds()
    for first in range(0, len(values), _BATCH):
        fold = MessageFold(states, timedelta(days=2))
        for value in values[first : first + _BATCH]:
            parsed = orjson.loads(value)
            if steps < 2:
                continue
            receipt = record_from_value(Receipt, parsed)
            observation = observe_receipt(receipt)
            if steps < 3:
                continue
            fold.add(receipt.umid, observation)
        for_alerts = limits.horizon()
        window_deltas, _ = fold.window_deltas(for_alerts)
        billing_deltas, _ = fold.billing_deltas()
        if steps < 4:
            continue
        deltas = []
        for state in fold.changed.values():
            dump_state(state)
            orjson.dumps(message_state_value(state))
        for window, counts in window_deltas.items():
            deltas.append(orjson.dumps({"window": window.encode(), "counts": counts}))
        for key, counts in billing_deltas.items():
            orjson.dumps({"billing": key.encode(), "counts": counts})
        for_alerts_encoded = [orjson.dumps({"alert": whole.encode(), "counts": counts})
                              for whole, counts in for_alerts.deltas.items()]  # fmt: skip
        states.update(fold.changed)
        if steps < 5:
            continue
        sums = TotalsFold(totals, subaccounts, limits)
        for data in deltas:
            delta = orjson.loads(data)
            sums.add(WindowKey.decode(delta["window"]), delta["counts"])
        for data in for_alerts_encoded:
            delta = orjson.loads(data)
            sums.add_for_alerts(delta["alert"], delta["counts"])
        for window_id, counts in sums.totals.items():
            orjson.dumps(funnel_record(WindowKey.decode(window_id), counts))
            orjson.dumps(counts)
        totals.update(sums.totals)
        subaccounts.update(sums.touched_subaccounts)


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
             "+ merge into state and window deltas (MessageFold)",
             "+ state and delta encodings",
             "+ deltas summed into window totals (TotalsFold), totals encoded"]  # fmt: skip
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
