"""The funnel windows as plain functions: contributions, finality, records, and the
job's two folds replayed with aborted transactions (no Kafka)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.funnel.batch import MessageFold, TotalsFold
from processors.funnel.rate_alerts import RateThresholds
from processors.funnel.state import MessageState, Observation, merge
from processors.funnel.windows import (
    Counts,
    WindowKey,
    add_counts,
    changes,
    contributions,
    distribution,
    funnel_record,
    is_final,
    quantile,
    time_bucket,
    window_start,
)
from processors.normalize import canonical

BASE = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
NEVER_FINAL = timedelta(days=3_650)


def at(seconds: float) -> str:
    return canonical.format_timestamp(BASE + timedelta(seconds=seconds))


def receipt(seconds: float, state: str, **fields: object) -> Observation:
    defaults: dict[str, object] = {"sub_account_id": "acme", "country": "ID",
                                   "template_category": "marketing"}  # fmt: skip
    return Observation(at=at(seconds), state=state, **{**defaults, **fields})  # type: ignore[arg-type]


def fold(*observations: Observation, umid: str = "m-1") -> MessageState:
    return reduce(merge, observations, MessageState(umid=umid))


def key(size: str, seconds: float, sub: str = "acme", country: str = "ID",
        category: str = "marketing") -> WindowKey:  # fmt: skip
    return WindowKey(size, window_start(at(seconds), size), sub, country, category)


# --- window keys and buckets ------------------------------------------------------------------
def test_window_start_floors_to_the_minute_and_the_hour() -> None:
    assert window_start("2026-11-25T10:03:27.512Z", "1m") == "2026-11-25T10:03:00.000Z"
    assert window_start("2026-11-25T10:03:27.512Z", "1h") == "2026-11-25T10:00:00.000Z"


def test_window_key_round_trips_and_knows_its_end() -> None:
    window = WindowKey("1h", "2026-11-25T23:00:00.000Z", "acme", "", "")
    assert window.encode() == "1h|2026-11-25T23:00:00.000Z|acme||"
    assert WindowKey.decode(window.encode()) == window
    assert window.end == "2026-11-26T00:00:00.000Z"


@pytest.mark.parametrize("sub_account_id", ["a|b", "a%7Cb", "%", "|", "%25|"])
def test_window_ids_escape_the_separator(sub_account_id: str) -> None:
    window = WindowKey("1m", "2026-11-25T23:00:00.000Z", sub_account_id, "ID", "")
    assert WindowKey.decode(window.encode()) == window


BUCKETED = [(0, "1"), (1, "1"), (1.5, "5"), (3_600, "3600"), (864_000, "864000"), (864_001, "+Inf")]


@pytest.mark.parametrize(("seconds", "label"), BUCKETED)
def test_time_bucket(seconds: float, label: str) -> None:
    assert time_bucket(seconds) == label


# --- contributions ------------------------------------------------------------------------
def test_a_read_and_replied_message_contributes_each_transition_to_its_windows() -> None:
    state = fold(receipt(1, "sent"), receipt(4, "delivered"), receipt(1_804, "read"),
                 Observation(at=at(1_860), state="replied"))  # fmt: skip
    assert contributions(state) == {
        key("1m", 0): {"sent": 1, "delivered": 1, "ttd:5": 1},
        key("1m", 1_800): {"read": 1, "ttr:1800": 1},
        key("1m", 1_860): {"replied": 1},
        key("1h", 0): {
            "sent": 1,
            "delivered": 1,
            "ttd:5": 1,
            "read": 1,
            "ttr:1800": 1,
            "replied": 1,
        },
    }


def test_an_undelivered_message_counts_its_error_code() -> None:
    state = fold(receipt(1, "sent"), receipt(30, "undelivered", error_code=1022))
    assert contributions(state)[key("1m", 0)] == {"sent": 1, "undelivered": 1, "error:1022": 1}


def test_a_failure_then_a_delivery_is_delivered_not_undelivered() -> None:
    state = fold(receipt(1, "sent"), receipt(2, "failed"), receipt(3, "delivered"))
    counts = contributions(state)[key("1m", 0)]
    assert counts["delivered"] == 1
    assert "undelivered" not in counts


def test_a_late_earlier_receipt_moves_the_message_between_windows() -> None:
    before = fold(receipt(3_700, "delivered"))  # implies sent at 11:01:40
    after = merge(before, receipt(59, "sent"))  # the real `sent`, an hour earlier
    moved = changes(contributions(before), contributions(after))
    assert moved[key("1m", 3_700)] == {"sent": -1, "ttd:1": -1, "ttd:10800": 1}  # 3,641 s
    assert moved[key("1m", 0)] == {"sent": 1}
    assert moved[key("1h", 0)] == {"sent": 1}


def test_unknown_dimensions_are_empty() -> None:
    state = fold(Observation(at=at(5), state="replied"))
    assert list(contributions(state)) == [WindowKey("1m", at(0), "", "", ""),
                                          WindowKey("1h", at(0), "", "", "")]  # fmt: skip


# --- a batch's deltas and finality ------------------------------------------------------------
def test_a_batch_sums_its_changes_per_window_and_drops_what_cancels_out() -> None:
    batch = MessageFold({}, NEVER_FINAL)
    batch.add("m-1", receipt(0, "sent"))
    batch.add("m-2", receipt(10, "sent"))
    batch.add("m-1", receipt(-120, "sent"))  # m-1 was sent earlier: out of the 10:00 minute
    deltas, _ = batch.window_deltas()
    assert deltas[key("1m", 0)] == {"sent": 1}  # m-2 only
    assert deltas[key("1m", -120)] == {"sent": 1}
    assert deltas[key("1h", 0)] == {"sent": 1}
    assert deltas[key("1h", -120)] == {"sent": 1}
    assert set(batch.changed) == {"m-1", "m-2"}


def test_a_window_is_final_the_given_time_after_its_end() -> None:
    window = key("1h", 0)  # 10:00-11:00
    assert not is_final(window, BASE + timedelta(hours=25), timedelta(days=1))
    assert is_final(window, BASE + timedelta(hours=25, milliseconds=1), timedelta(days=1))


def test_a_change_to_a_final_window_is_dropped_and_counted() -> None:
    # Sent at 10:00 for an unknown sub-account; two days later a receipt names it:
    # the message would move out of the final 10:00 windows.
    stored = {"m-1": fold(receipt(0, "sent", sub_account_id=None))}
    batch = MessageFold(stored, final_after=timedelta(days=1))
    batch.add("m-1", receipt(2 * 86_400, "delivered"), BASE + timedelta(days=2))
    deltas, late_changes = batch.window_deltas()
    assert late_changes == 4  # out of two windows and into two
    later = at(2 * 86_400)
    assert {w.start for w in deltas} == {window_start(later, "1m"), window_start(later, "1h")}


# --- records ------------------------------------------------------------------------------
def test_quantiles_interpolate_inside_a_bucket() -> None:
    cumulative = distribution({"ttd:5": 10, "ttd:10": 10}, "ttd")["buckets"]
    assert quantile(cumulative, 0.5) == 5.0  # type: ignore[arg-type]
    assert quantile(cumulative, 0.75) == 7.5  # type: ignore[arg-type]
    assert quantile(cumulative, 0.25) == 3.0  # type: ignore[arg-type]


def test_quantiles_of_nothing_are_none_and_beyond_the_buckets_the_largest_bound() -> None:
    assert distribution({}, "ttr")["p50"] is None
    assert distribution({"ttr:+Inf": 3}, "ttr")["p99"] == 864_000.0


def test_funnel_record() -> None:
    counts = {"sent": 4, "delivered": 2, "read": 1, "undelivered": 2, "error:1022": 1,
              "error:": 1, "ttd:5": 2}  # fmt: skip
    record = funnel_record(WindowKey("1m", at(0), "acme", "", "marketing"), counts)
    assert record["windowId"] == f"1m|{at(0)}|acme||marketing"
    assert (record["country"], record["windowEnd"]) == (None, at(60))
    assert (record["deliveryRate"], record["readRate"], record["replyRate"]) == (0.5, 0.5, 0.0)
    assert record["failureRate"] == 0.5
    assert record["undeliveredByErrorCode"] == {"1022": 1, "unknown": 1}
    assert record["timeToDeliverSeconds"]["count"] == 2  # type: ignore[index]
    assert funnel_record(WindowKey("1h", at(0), "", "", ""), {})["deliveryRate"] is None


# --- the protocol: exact totals whatever the transactions ----------------------------------------
_STATES = ("queued", "sent", "delivered", "read", "undelivered", "failed", "rejected", "replied")

observations = st.builds(
    Observation,
    at=st.integers(0, 7_300).map(at),
    state=st.sampled_from(_STATES),
    detail=st.sampled_from([None, "delivered_to_operator", "delivered_to_recipient"]),
    error_code=st.sampled_from([None, 1013, 1022]),
    sub_account_id=st.sampled_from([None, "acme", "globex"]),
    country=st.sampled_from([None, "ID", "DE"]),
    template_category=st.sampled_from([None, "marketing", "utility"]),
)
logs = st.lists(st.tuples(st.integers(0, 7), observations), min_size=1, max_size=60)


def expected_totals(log: list[tuple[int, Observation]]) -> dict[WindowKey, Counts]:
    states: dict[str, MessageState] = {}
    for umid, observation in log:
        name = f"m-{umid}"
        states[name] = merge(states.get(name, MessageState(umid=name)), observation)
    totals: dict[WindowKey, Counts] = {}
    for state in states.values():
        for window, counts in contributions(state).items():
            totals[window] = add_counts(totals.get(window, {}), counts)
    return {window: counts for window, counts in totals.items() if counts}


def run_with_aborts(
    log: list[tuple[int, Observation]], rng: random.Random, partitions: int = 2, aborts: int = 4
) -> dict[WindowKey, Counts]:
    """Both folds as the funnel job runs them, on `partitions` source partitions, in
    batches of random sizes of which up to `aborts` are aborted (a crash before the
    commit: nothing of the batch remains, and its records are processed again)."""
    deltas: list[tuple[WindowKey, Counts]] = []  # funnel.deltas, as read_committed sees it
    for partition in range(partitions):
        entries = [(f"m-{umid}", obs) for umid, obs in log if umid % partitions == partition]
        states: dict[str, MessageState] = {}  # the committed messages table
        position = 0
        while position < len(entries):
            end = min(len(entries), position + rng.randint(1, 6))
            batch = MessageFold(states, NEVER_FINAL)
            for umid, observation in entries[position:end]:
                batch.add(umid, observation)
            if aborts and rng.random() < 0.3:
                aborts -= 1
                continue
            deltas += batch.window_deltas()[0].items()
            states.update(batch.changed)
            position = end
    rng.shuffle(deltas)  # sums do not depend on the order the partitions' deltas interleave
    totals: dict[str, Counts] = {}  # the committed windows table
    position = 0
    while position < len(deltas):
        end = min(len(deltas), position + rng.randint(1, 6))
        summed = TotalsFold(totals, {}, RateThresholds())
        for window, delta in deltas[position:end]:
            summed.add(window, delta)
        if aborts and rng.random() < 0.3:
            aborts -= 1
            continue
        totals.update(summed.totals)
        position = end
    return {WindowKey.decode(window): counts for window, counts in totals.items() if counts}


@settings(max_examples=300, deadline=None)
@given(log=logs, seed=st.integers(0, 2**32 - 1))
def test_window_totals_are_exact_after_aborts_duplicates_and_any_order(
    log: list[tuple[int, Observation]], seed: int
) -> None:
    rng = random.Random(seed)
    repeated = log + rng.sample(log, len(log) // 3)  # sender retries
    rng.shuffle(repeated)
    assert run_with_aborts(repeated, rng, aborts=8) == expected_totals(log)


@settings(max_examples=100, deadline=None)
@given(log=logs, seed=st.integers(0, 2**32 - 1))
def test_window_totals_do_not_depend_on_the_partition_count(
    log: list[tuple[int, Observation]], seed: int
) -> None:
    rng = random.Random(seed)
    assert run_with_aborts(log, rng, partitions=1, aborts=0) == run_with_aborts(
        log, rng, partitions=3
    )
