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
    fold = PairFold({}, at(-10_000))
    fold.add(PAIR, wire(free_form(0, sent=True)))
    assert fold.service_windows() == {}
    fold.add(PAIR, wire(inbound_event(at(60))))
    assert fold.service_windows() == {PAIR: {
        "subAccountId": "acme", "customer": "+628123450001", "lastInboundAt": at(60),
        "openedAt": at(60), "closesAt": at(60 + 24 * 60)}}  # fmt: skip


def test_a_send_outside_then_an_earlier_inbound_moves_it_inside() -> None:
    fold = PairFold({}, at(-10_000))
    fold.add(PAIR, free_form(0, failed=True, error_code=1022))
    hour = WindowKey("1h", at(0), "acme", "ID", "")
    deltas, late = fold.window_deltas(T, NEVER_FINAL)
    assert (deltas[hour], late) == ({"freeform_outside": 1, "freeform_outside_failed": 1}, 0)
    committed = PairFold(fold.to_store(), at(-10_000))  # the next batch, after the commit
    committed.add(PAIR, wire(inbound_event(at(-60))))  # the customer had written: late news
    deltas, _ = committed.window_deltas(T, NEVER_FINAL)
    assert deltas[hour] == {"freeform_outside": -1, "freeform_outside_failed": -1}


def test_events_older_than_the_horizon_are_refused_and_counted() -> None:
    fold = PairFold({}, at(0))
    fold.add(PAIR, wire(inbound_event(at(-1))))
    fold.add(PAIR, free_form(-1))
    assert (fold.stale, fold.changed) == (2, {})


def test_a_final_window_takes_no_more_changes() -> None:
    fold = PairFold({}, at(-10_000))
    fold.add(PAIR, free_form(0))
    assert fold.window_deltas(T + timedelta(days=5), timedelta(days=2)) == ({}, 2)


def test_the_stored_state_is_pruned_and_reads_back() -> None:
    fold = PairFold({}, at(-10_000))
    fold.add(PAIR, free_form(0, sent=True, template_name="promo"))
    fold.add(PAIR, wire(inbound_event(at(5))))
    [(pair, state)] = fold.to_store().items()
    assert pair == PAIR
    assert load_conversation(dump_conversation(state)) == state
    assert PairFold({PAIR: state}, at(1)).to_store() == {}  # nothing changed: nothing to write


def test_a_template_sent_is_a_reach_change_of_the_sub_account_once() -> None:
    fold = PairFold({}, at(-10_000))
    fold.add(PAIR, free_form(0, sent=True, template_name="promo"))
    fold.add(PAIR, free_form(3, sent=True, template_name="promo"))  # its delivered: same contact
    end = canonical.format_timestamp(T + timedelta(hours=24))
    assert fold.reach_deltas() == {"acme": {f"{at(0)}/{end}": 1}}
    later = PairFold(fold.to_store(), at(-10_000))
    later.add(PAIR, free_form(-5, sent=True))  # an earlier `sent` of the same message, late
    assert later.reach_deltas() == {
        "acme": {f"{at(0)}/{end}": -1, f"{at(-5)}/{at(24 * 60 - 5)}": 1}
    }
