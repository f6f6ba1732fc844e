"""The funnel job written with Quix Streams: the peer of `wapipe process funnel` in the
processor benchmark. Runs in its own virtualenv (bench/processors/quix-requirements.txt).

The same rules (processors/funnel/state.py and windows.py, imported from this
repository) in Quix's idiom:
- status receipts keyed by umid -> a stateful merge into the message's state
  (Quix's RocksDB store and changelog) -> `<prefix>.quix-<guarantee>.message_state`
  on change;
- each change's window contributions, re-keyed by window (`group_by`, Quix's
  repartition topic) -> a stateful sum per window -> `<prefix>.quix-<guarantee>.funnel`.
What it leaves out, and our job does not: replies from `whatsapp.inbound` (the
benchmark feeds receipts only), the rate alerts, and one delta per window and batch
(our job sums a batch's changes before its second hop; this sends each change). Its
at-least-once mode recounts a replayed change in the windows; its exactly-once mode
uses Kafka transactions, as our engine does for every batch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from quixstreams import Application, State

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from processors.funnel.state import (
    MessageState,
    dump_state,
    load_state,
    merge,
    message_state_value,
    observe_receipt,
)
from processors.funnel.windows import (
    WindowKey,
    add_counts,
    changes,
    contributions,
    funnel_record,
)
from processors.normalize.records import Receipt, record_from_value


def merge_receipt(value: dict[str, Any], state: State) -> dict[str, Any]:
    """The receipt merged into its message's state: the new state (or None when
    nothing changed) and the window changes it makes."""
    receipt = record_from_value(Receipt, value)
    stored = state.get("state")
    before = load_state(stored) if stored is not None else MessageState(umid=receipt.umid)
    after = merge(before, observe_receipt(receipt))
    if after == before:
        return {"state": None, "changes": []}
    state.set("state", dump_state(after).decode())
    window_changes = changes(contributions(before), contributions(after))
    return {
        "state": message_state_value(after),
        "changes": [{"window": key.encode(), "change": c} for key, c in window_changes.items()],
    }


def sum_window(value: dict[str, Any], state: State) -> dict[str, object]:
    counts = add_counts(state.get("counts", {}), value["change"])
    state.set("counts", counts)
    return funnel_record(WindowKey.decode(value["window"]), counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--guarantee", choices=("at-least-once", "exactly-once"),
                        default="at-least-once")  # fmt: skip
    arguments = parser.parse_args()
    app = Application(
        broker_address=arguments.bootstrap,
        consumer_group=f"{arguments.prefix}.quix-funnel-{arguments.guarantee}",
        auto_offset_reset="earliest",
        state_dir=arguments.state_dir,
        processing_guarantee=arguments.guarantee,
        loglevel="WARNING",
    )
    receipts = app.topic(f"{arguments.prefix}.status", value_deserializer="json")
    # Each guarantee writes topics of its own: the benchmark reads each run's output alone.
    outputs = f"{arguments.prefix}.quix-{arguments.guarantee}"
    states = app.topic(f"{outputs}.message_state", value_serializer="json")
    windows = app.topic(f"{outputs}.funnel", value_serializer="json")

    merged = app.dataframe(receipts).apply(merge_receipt, stateful=True)
    merged.filter(lambda v: v["state"] is not None).apply(lambda v: v["state"]).to_topic(states)
    window_changes = merged.apply(lambda v: v["changes"], expand=True)
    window_changes = window_changes.group_by(lambda c: c["window"], name="window")
    window_changes.apply(sum_window, stateful=True).to_topic(windows)
    app.run()


if __name__ == "__main__":
    main()
