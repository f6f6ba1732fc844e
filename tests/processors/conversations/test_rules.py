"""The customer-service window of a pair: each rule, the funnel contributions, and
order-, repetition- and pruning-independence (no Kafka)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import reduce

from hypothesis import given
from hypothesis import strategies as st

from processors.conversations.rules import (
    FREEFORM_OUTSIDE,
    FREEFORM_OUTSIDE_FAILED,
    Conversation,
    OutboundObservation,
    closes_at,
    contact_times,
    customer_of,
    dump_conversation,
    failed_for_window,
    inbound_at,
    is_business_initiated,
    is_open,
    load_conversation,
    merge_inbound,
    merge_outbound,
    observe_receipt,
    opened_at,
    outside_window_contributions,
    prune,
    service_window_key,
    service_window_value,
)
from processors.funnel.windows import UNKNOWN, Counts, WindowKey, add_counts, changes, window_start
from processors.normalize import canonical
from processors.normalize.records import InboundMessage, Receipt

BASE = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
T = canonical.format_timestamp(BASE)


def at(hours: float = 0, ms: int = 0) -> str:
    return canonical.format_timestamp(BASE + timedelta(hours=hours, milliseconds=ms))


def sent(when: str, **fields: object) -> OutboundObservation:
    defaults: dict[str, object] = {"sub_account_id": "acme", "country": "ID"}
    return OutboundObservation(at=when, **{**defaults, **fields})  # type: ignore[arg-type]


def window_expired(when: str, **fields: object) -> OutboundObservation:
    return sent(when, failed=True, error_code=1022, provider_error_code="131047", **fields)


Event = tuple[str, str | None, str | OutboundObservation]  # ("in", None, at) | ("out", umid, obs)


def inbound(when: str) -> Event:
    return ("in", None, when)


def outbound(umid: str, observation: OutboundObservation) -> Event:
    return ("out", umid, observation)


def apply(state: Conversation, event: Event) -> Conversation:
    kind, umid, payload = event
    if kind == "in":
        assert isinstance(payload, str)
        return merge_inbound(state, payload)
    assert umid is not None
    assert isinstance(payload, OutboundObservation)
    return merge_outbound(state, umid, payload)


def fold(*events: Event, start: Conversation | None = None) -> Conversation:
    return reduce(apply, events, start if start is not None else Conversation())


def window(size: str, when: str, sub: str = "acme", country: str = "ID") -> WindowKey:
    return WindowKey(size, window_start(when, size), sub, country, UNKNOWN)


def counted(state: Conversation) -> int:
    windows = outside_window_contributions(state)
    return sum(c.get(FREEFORM_OUTSIDE, 0) for k, c in windows.items() if k.size == "1h")


def failed(state: Conversation) -> int:
    windows = outside_window_contributions(state)
    return sum(c.get(FREEFORM_OUTSIDE_FAILED, 0) for k, c in windows.items() if k.size == "1h")


# --- the window ----------------------------------------------------------------------------------
def test_an_inbound_opens_the_window_for_exactly_24_hours() -> None:
    state = merge_inbound(Conversation(), T)
    assert state.intervals == ((T, at(24)),)
    assert is_open(state, T)
    assert is_open(state, at(24, ms=-1))
    assert not is_open(state, at(24))  # half-open: closed at its end
    assert not is_open(state, at(ms=-1))
    assert (opened_at(state, at(5)), closes_at(state, at(5))) == (T, at(24))
    assert (opened_at(state, at(24)), closes_at(state, at(24))) == (None, None)


def test_two_inbound_10_hours_apart_make_one_window_to_34_hours() -> None:
    state = fold(inbound(at(10)), inbound(T))
    assert state.intervals == ((T, at(34)),)
    assert state.last_inbound_at == at(10)
    assert closes_at(state, at(1)) == at(34)
    assert opened_at(state, at(30)) == T


def test_touching_windows_merge_and_apart_ones_do_not() -> None:
    assert fold(inbound(T), inbound(at(24))).intervals == ((T, at(48)),)
    apart = fold(inbound(at(24, ms=1)), inbound(T))
    assert apart.intervals == ((T, at(24)), (at(24, ms=1), at(48, ms=1)))
    assert not is_open(apart, at(24))
    assert closes_at(apart, at(24, ms=1)) == at(48, ms=1)


def test_an_inbound_bridging_two_windows_merges_all_three() -> None:
    state = fold(inbound(T), inbound(at(40)), inbound(at(20)))
    assert state.intervals == ((T, at(64)),)


# --- classification ------------------------------------------------------------------------------
def test_a_free_form_send_a_millisecond_before_the_end_is_inside_and_at_the_end_outside() -> None:
    opened = merge_inbound(Conversation(), T)
    assert counted(merge_outbound(opened, "m-1", sent(at(24, ms=-1)))) == 0
    outside = merge_outbound(opened, "m-1", sent(at(24)))
    assert outside_window_contributions(outside) == {
        window("1m", at(24)): {FREEFORM_OUTSIDE: 1},
        window("1h", at(24)): {FREEFORM_OUTSIDE: 1},
    }


def test_a_send_before_any_inbound_is_outside() -> None:
    assert counted(fold(outbound("m-1", sent(T)), inbound(at(1)))) == 1


def test_a_template_send_is_never_counted() -> None:
    templates: list[dict[str, object]] = [
        {"template_name": "promo"},
        {"template_category": "MARKETING"},
        {"pricing_category": "marketing"},
        {"pricing_category": "Utility"},
    ]
    for template in templates:
        assert counted(fold(outbound("m-1", window_expired(at(100), **template)))) == 0
    # A later receipt that shows the template withdraws what the first one counted.
    first = fold(outbound("m-1", sent(at(100))))
    assert counted(first) == 1
    later = merge_outbound(first, "m-1", sent(at(101), pricing_category="marketing"))
    assert counted(later) == 0
    assert changes(outside_window_contributions(first), outside_window_contributions(later)) == {
        window("1m", at(100)): {FREEFORM_OUTSIDE: -1},
        window("1h", at(100)): {FREEFORM_OUTSIDE: -1},
    }


def test_service_pricing_or_none_says_free_form() -> None:
    assert not is_business_initiated(None, None, None)
    assert not is_business_initiated(None, None, "SERVICE")
    assert not is_business_initiated(None, None, " service ")
    assert is_business_initiated(None, None, "authentication")
    assert is_business_initiated("hello", None, "service")
    assert counted(fold(outbound("m-1", sent(T, pricing_category="Service")))) == 1


def test_the_window_failure_is_counted_only_with_1022_or_131047() -> None:
    assert failed_for_window(1022, None)
    assert failed_for_window(None, "131047")
    assert failed_for_window(None, " 131047")
    assert not failed_for_window(15, "131026")
    assert not failed_for_window(None, None)
    cases = {
        "code": (sent(T, failed=True, error_code=1022), 1),
        "provider": (sent(T, failed=True, provider_error_code="131047"), 1),
        "other": (sent(T, failed=True, error_code=15, provider_error_code="131026"), 0),
        "not a failure": (sent(T, error_code=1022, provider_error_code="131047"), 0),
    }
    for name, (observation, expected) in cases.items():
        state = fold(outbound("m-1", sent(at(-1))), outbound("m-1", observation))
        assert (name, counted(state), failed(state)) == (name, 1, expected)


def test_a_message_counts_at_its_earliest_receipt() -> None:
    state = fold(inbound(T), outbound("m-1", sent(at(25))), outbound("m-1", sent(at(23))))
    assert state.outbound["m-1"].first_at == at(23)
    assert counted(state) == 0


def test_unknown_dimensions_are_the_funnels_unknown() -> None:
    state = fold(outbound("m-1", OutboundObservation(at=T)))
    assert set(outside_window_contributions(state)) == {
        window("1m", T, UNKNOWN, UNKNOWN),
        window("1h", T, UNKNOWN, UNKNOWN),
    }


def test_dimensions_come_from_the_first_receipt_that_has_them() -> None:
    state = fold(
        outbound("m-1", sent(at(2), country="BR")),
        outbound("m-1", OutboundObservation(at=T)),
        outbound("m-1", sent(at(1), country="ID")),
    )  # fmt: skip
    assert set(outside_window_contributions(state)) == {window("1m", T), window("1h", T)}


def test_customer_is_the_msisdn_else_the_bsuid() -> None:
    assert customer_of("+6281234567890", "US.13491208655302741918") == "+6281234567890"
    assert customer_of(None, "US.13491208655302741918") == "US.13491208655302741918"
    assert customer_of(None, None) is None


# --- the record ----------------------------------------------------------------------------------
def test_the_record_names_the_latest_window() -> None:
    assert service_window_value("acme", "+62", Conversation()) == {
        "subAccountId": "acme", "customer": "+62", "lastInboundAt": None,
        "openedAt": None, "closesAt": None,
    }  # fmt: skip
    state = fold(inbound(at(50)), inbound(T), inbound(at(60)))
    assert service_window_value("acme", "US.1349", state) == {
        "subAccountId": "acme", "customer": "US.1349", "lastInboundAt": at(60),
        "openedAt": at(50), "closesAt": at(84),
    }  # fmt: skip
    sent_only = merge_outbound(state, "m-1", sent(at(90)))
    assert service_window_value("acme", "US.1349", sent_only) == service_window_value(
        "acme", "US.1349", state
    )


def test_the_record_key_escapes_the_separator() -> None:
    assert service_window_key("acme", "+6281234567890") == "acme|+6281234567890"
    assert service_window_key("a|b%", "US.1") == "a%7Cb%25|US.1"


# --- from normalize's records --------------------------------------------------------------------
def _receipt(**fields: object) -> Receipt:
    names = Receipt.__dataclass_fields__
    values: dict[str, object] = {name: None for name in names}
    values.update(umid="m-1", state="sent", occurred_at=T, channel="whatsapp")
    values.update(fields)
    return Receipt(**values)  # type: ignore[arg-type]


def _inbound(**fields: object) -> InboundMessage:
    values: dict[str, object] = {name: None for name in InboundMessage.__dataclass_fields__}
    values.update(umid="in-1", event_type="inbound_message_received", echo=False,
                  channel="whatsapp", occurred_at=T)  # fmt: skip
    values.update(fields)
    return InboundMessage(**values)  # type: ignore[arg-type]


def test_receipts_and_inbound_messages_become_observations() -> None:
    receipt = _receipt(state="rejected", error_code=1022, sub_account_id="acme", country="ID",
                       template_name=None, pricing_category="service")  # fmt: skip
    assert observe_receipt(receipt) == OutboundObservation(
        at=T, pricing_category="service", error_code=1022, failed=True,
        sub_account_id="acme", country="ID",
    )  # fmt: skip
    assert observe_receipt(_receipt(channel="viber")) is None
    assert inbound_at(_inbound()) == T
    assert inbound_at(_inbound(occurred_at=None, received_at=at(1))) == at(1)
    assert inbound_at(_inbound(echo=True)) is None
    assert inbound_at(_inbound(channel="rcs")) is None


def test_a_business_initiated_message_is_a_contact_at_its_first_sent_or_later_receipt() -> None:
    state = fold(
        outbound("m-1", sent(at(3), sent=True, pricing_category="marketing")),
        outbound("m-1", sent(at(2), sent=True)),  # an earlier `sent`, late
        outbound("m-1", sent(at(1))),  # queued: not yet a contact
        outbound("m-2", sent(at(4), sent=True)),  # free-form: no contact
        outbound("m-3", sent(at(5), template_name="promo")),  # never sent
    )
    assert contact_times(state) == [at(2)]


# --- pruning -------------------------------------------------------------------------------------
def test_prune_drops_what_ended_before_the_horizon_but_keeps_the_latest_window() -> None:
    state = fold(inbound(T), inbound(at(100)), outbound("m-1", sent(at(50))),
                 outbound("m-2", sent(at(130))))  # fmt: skip
    pruned = prune(state, at(130))
    assert pruned.intervals == ((at(100), at(124)),)  # ended, but the latest: the record's
    assert set(pruned.outbound) == {"m-2"}
    assert service_window_value("a", "c", pruned) == service_window_value("a", "c", state)
    assert prune(state, at(124)).intervals == ((at(100), at(124)),)  # ends at it: kept
    assert prune(state, at(24)).intervals == state.intervals


def test_a_receipt_after_the_horizon_of_a_forgotten_message_counts_it_again() -> None:
    # The limit of a bounded state, pinned here: the job's retention must outlast the
    # receipts of one message (WhatsApp retries delivery for up to 30 days).
    first = fold(outbound("m-1", sent(T)))
    again = merge_outbound(prune(first, at(1)), "m-1", sent(at(2)))
    assert set(outside_window_contributions(again)) == {window("1m", at(2)), window("1h", at(2))}
    assert merge_outbound(first, "m-1", sent(at(2))) == first


# --- properties ----------------------------------------------------------------------------------
# Whole hours (and a millisecond either side) make inbound windows touch, and sends land
# exactly on a window's end.
times = st.builds(at, st.integers(0, 96), st.sampled_from([0, 0, 0, -1, 1]))
observations = st.builds(
    OutboundObservation,
    at=times,
    template_name=st.sampled_from([None, None, "promo"]),
    template_category=st.sampled_from([None, None, None, "MARKETING"]),
    pricing_category=st.sampled_from([None, None, "service", "SERVICE", "marketing"]),
    error_code=st.sampled_from([None, 15, 1022]),
    provider_error_code=st.sampled_from([None, "131026", "131047"]),
    failed=st.booleans(),
    sent=st.booleans(),
    sub_account_id=st.sampled_from([None, "acme"]),
    country=st.sampled_from([None, "ID", "BR"]),
)
events = st.one_of(
    st.builds(inbound, times),
    st.builds(outbound, st.sampled_from(["m-1", "m-2", "m-3", "m-4"]), observations),
)
histories = st.lists(events, max_size=16)


@given(histories, st.data())
def test_any_order_and_repetition_give_the_same_state_and_counts(
    original: list[Event], data: st.DataObject
) -> None:
    repeated = data.draw(st.lists(st.sampled_from(original), max_size=8)) if original else []
    arrival = data.draw(st.permutations(original + repeated))
    assert fold(*arrival) == fold(*original)
    assert sorted(contact_times(fold(*arrival))) == sorted(contact_times(fold(*original)))
    assert outside_window_contributions(fold(*arrival)) == outside_window_contributions(
        fold(*original)
    )


@given(histories, events)
def test_merging_is_idempotent(history: list[Event], event: Event) -> None:
    once = apply(fold(*history), event)
    assert apply(once, event) == once
    assert fold(*history, *history) == fold(*history)


@given(histories, histories)
def test_merging_is_the_same_in_any_grouping(first: list[Event], second: list[Event]) -> None:
    assert fold(*second, start=fold(*first)) == fold(*first, *second)


@given(histories)
def test_the_deltas_along_any_arrival_order_sum_to_the_final_counts(arrival: list[Event]) -> None:
    totals: dict[WindowKey, Counts] = {}
    state = Conversation()
    for event in arrival:
        after = apply(state, event)
        deltas = changes(outside_window_contributions(state), outside_window_contributions(after))
        for key, delta in deltas.items():
            totals[key] = add_counts(totals.get(key, {}), delta)
        state = after
    assert {key: counts for key, counts in totals.items() if counts} == (
        outside_window_contributions(state)
    )
    assert all(count >= 0 for counts in totals.values() for count in counts.values())


@given(histories, times, st.lists(times, max_size=6))
def test_prune_keeps_every_result_at_or_after_the_horizon(
    history: list[Event], horizon: str, queries: list[str]
) -> None:
    state = fold(*history)
    pruned = prune(state, horizon)
    assert prune(pruned, horizon) == pruned
    for when in [horizon, *queries]:
        if when >= horizon:
            assert is_open(pruned, when) == is_open(state, when)
            assert closes_at(pruned, when) == closes_at(state, when)
            assert opened_at(pruned, when) == opened_at(state, when)
    assert service_window_value("a", "c", pruned) == service_window_value("a", "c", state)
    # The messages first known at or after the horizon count as before; older ones nowhere.
    kept = {umid for umid, facts in state.outbound.items() if facts.first_at >= horizon}
    inbound_only = [e for e in history if e[0] == "in"]
    kept_only = [e for e in history if e[0] == "out" and e[1] in kept]
    assert outside_window_contributions(pruned) == outside_window_contributions(
        fold(*inbound_only, *kept_only)
    )


@given(histories, histories, times)
def test_pruning_between_merges_of_fresh_events_changes_nothing(
    older: list[Event], fresh: list[Event], horizon: str
) -> None:
    # The job prunes the stored state on each write and refuses stale events. A fresh
    # receipt of a message first known before the horizon is the one exception (below).
    forgotten = {umid for umid, o in fold(*older).outbound.items() if o.first_at < horizon}
    fresh = [e for e in fresh if _time_of(e) >= horizon and e[1] not in forgotten]
    continued = prune(fold(*fresh, start=prune(fold(*older), horizon)), horizon)
    assert continued == prune(fold(*older, *fresh), horizon)


def _time_of(event: Event) -> str:
    payload = event[2]
    return payload if isinstance(payload, str) else payload.at


@given(histories)
def test_a_stored_state_loads_back_equal(history: list[Event]) -> None:
    state = fold(*history)
    assert load_conversation(dump_conversation(state)) == state
