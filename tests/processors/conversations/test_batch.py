"""The conversations job's pair hop as a pure fold: which service-window records a batch
writes, its deltas to the funnel windows, stale events, and what it stores (no Kafka)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from processors.conversations.batch import PairFold, inbound_event, receipt_event
from processors.conversations.rules import OutboundObservation, dump_conversation, load_conversation
from processors.funnel.windows import WindowKey
from processors.normalize import canonical

T = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
PAIR = "acme|+628123450001"
NEVER_FINAL = timedelta(days=3_650)
RETENTION = timedelta(days=35)


def at(minutes: float) -> str:
    return canonical.format_timestamp(T + timedelta(minutes=minutes))


def wire(event: dict[str, object]) -> dict[str, object]:
    """An event as the pair hop reads it from conversations.events."""
    parsed: dict[str, object] = orjson.loads(orjson.dumps(event))
    return parsed


def free_form(minutes: float, **fields: object) -> dict[str, object]:
    observation = OutboundObservation(at=at(minutes), sub_account_id="acme", country="ID",
                                      **fields)  # type: ignore[arg-type]  # fmt: skip
    return wire(receipt_event("m-1", observation))


def test_an_inbound_writes_the_pairs_window_and_a_receipt_alone_writes_none() -> None:
    fold = PairFold({}, RETENTION)
    fold.add(PAIR, wire(free_form(0, sent=True)))
    assert fold.service_windows() == {}
    fold.add(PAIR, wire(inbound_event(at(60))))
    assert fold.service_windows() == {PAIR: {
        "subAccountId": "acme", "customer": "+628123450001", "lastInboundAt": at(60),
        "openedAt": at(60), "closesAt": at(60 + 24 * 60)}}  # fmt: skip


def test_a_send_outside_then_an_earlier_inbound_moves_it_inside() -> None:
    fold = PairFold({}, RETENTION)
    fold.add(PAIR, free_form(0, failed=True, error_code=1022))
    hour = WindowKey("1h", at(0), "acme", "ID", "")
    deltas, late = fold.window_deltas(NEVER_FINAL)
    assert (deltas[hour], late) == ({"freeform_outside": 1, "freeform_outside_failed": 1}, 0)
    committed = PairFold(fold.to_store(), RETENTION)  # the next batch, after the commit
    committed.add(PAIR, wire(inbound_event(at(-60))))  # the customer had written: late news
    deltas, _ = committed.window_deltas(NEVER_FINAL)
    assert deltas[hour] == {"freeform_outside": -1, "freeform_outside_failed": -1}


def test_events_older_than_the_horizon_of_their_stream_time_are_refused_and_counted() -> None:
    fold = PairFold({}, timedelta(days=1))
    fold.add(PAIR, wire(inbound_event(at(-1))), T)  # within the day before its stream time
    fold.add(PAIR, free_form(-24 * 60 - 1), T)  # a minute older than that: stale
    fold.add(PAIR, free_form(-24 * 60 - 1))  # no stream time (none yet): nothing is stale
    assert fold.stale == 1
    assert fold.horizon == at(-24 * 60)


def test_a_final_window_takes_no_more_changes_at_its_records_stream_time() -> None:
    fold = PairFold({}, RETENTION)
    fold.add(PAIR, free_form(0), T + timedelta(days=5))
    assert fold.window_deltas(timedelta(days=2)) == ({}, 2)
    early = PairFold({}, RETENTION)  # the same send, its record read before the window closed
    early.add(PAIR, free_form(0), T)
    early.add(PAIR, wire(inbound_event(at(-10))), T + timedelta(days=5))  # moves it inside
    # Counted at its record (its window open then), the move inside dropped (final by then).
    counted = {WindowKey(size, at(0), "acme", "ID", ""): {"freeform_outside": 1}
               for size in ("1m", "1h")}  # fmt: skip
    assert early.window_deltas(timedelta(days=2)) == (counted, 2)


def test_the_stored_state_is_pruned_and_reads_back() -> None:
    fold = PairFold({}, RETENTION)
    fold.add(PAIR, free_form(0, sent=True, template_name="promo"))
    fold.add(PAIR, wire(inbound_event(at(5))))
    [(pair, state)] = fold.to_store().items()
    assert pair == PAIR
    assert load_conversation(dump_conversation(state)) == state
    assert PairFold({PAIR: state}, RETENTION).to_store() == {}  # nothing changed: nothing to write


def test_a_template_sent_is_a_reach_change_of_the_sub_account_once() -> None:
    fold = PairFold({}, RETENTION)
    fold.add(PAIR, free_form(0, sent=True, template_name="promo"))
    fold.add(PAIR, free_form(3, sent=True, template_name="promo"))  # its delivered: same contact
    end = canonical.format_timestamp(T + timedelta(hours=24))
    assert fold.reach_deltas() == {"acme": {f"{at(0)}/{end}": 1}}
    later = PairFold(fold.to_store(), RETENTION)
    later.add(PAIR, free_form(-5, sent=True))  # an earlier `sent` of the same message, late
    assert later.reach_deltas() == {
        "acme": {f"{at(0)}/{end}": -1, f"{at(-5)}/{at(24 * 60 - 5)}": 1}
    }
