"""Billable messages as plain functions: what a delivered message adds to the billing
windows, the batch folds replayed with aborted transactions, the record and its rate
card (no Kafka)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import reduce
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.funnel.batch import MessageFold
from processors.funnel.billing import (
    BillingKey,
    billing_contributions,
    billing_record,
    sum_deltas,
)
from processors.funnel.rate_card import Rate, RateCard, RateCardError, load_rate_card
from processors.funnel.state import MessageState, Observation, merge
from processors.funnel.windows import Counts, add_counts, window_start
from processors.normalize import canonical
from wapipe.settings import Settings, SettingsError

BASE = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)  # half an hour before a UTC midnight
NEVER_FINAL = timedelta(days=3_650)
EXAMPLE_CARD = Path(__file__).resolve().parents[3] / "deploy" / "billing" / "rate-card.example.csv"


def at(seconds: float) -> str:
    return canonical.format_timestamp(BASE + timedelta(seconds=seconds))


def receipt(seconds: float, state: str, **fields: object) -> Observation:
    defaults: dict[str, object] = {"sub_account_id": "acme", "country": "ID",
                                   "pricing_category": "marketing"}  # fmt: skip
    return Observation(at=at(seconds), state=state, **{**defaults, **fields})  # type: ignore[arg-type]


def fold(*observations: Observation) -> MessageState:
    return reduce(merge, observations, MessageState(umid="m-1"))


def key(size: str, seconds: float, category: str = "marketing") -> BillingKey:
    return BillingKey(size, window_start(at(seconds), size), "acme", "ID", category)


# --- contributions --------------------------------------------------------------------------
def test_a_delivered_message_counts_once_in_its_hour_and_its_day() -> None:
    state = fold(receipt(0, "sent"), receipt(60, "delivered", detail="delivered_to_recipient"))
    assert billing_contributions(state) == {key("1h", 60): {"delivered": 1},
                                            key("1d", 60): {"delivered": 1}}  # fmt: skip
    assert key("1d", 60).start == "2026-11-25T00:00:00.000Z"


def test_the_day_is_the_utc_day_of_the_delivery_not_of_the_send() -> None:
    state = fold(receipt(0, "sent"), receipt(3_600, "delivered"))  # delivered after midnight
    assert {window.start for window in billing_contributions(state)} == {
        "2026-11-26T00:00:00.000Z"}  # fmt: skip


def test_sent_or_failed_messages_are_not_billed() -> None:
    assert billing_contributions(fold(receipt(0, "sent"))) == {}
    assert billing_contributions(fold(receipt(0, "undelivered", error_code=1022))) == {}
    operator = fold(receipt(0, "delivered", detail="delivered_to_operator"))
    assert billing_contributions(operator) == {}  # not yet on the customer's phone


def test_a_read_without_delivered_is_billed_at_the_read() -> None:
    assert billing_contributions(fold(receipt(90, "read"))) == {
        key("1h", 90): {"delivered": 1}, key("1d", 90): {"delivered": 1}}  # fmt: skip


def test_a_category_learnt_later_moves_the_message_out_of_the_unknown_category() -> None:
    before = fold(receipt(60, "delivered", pricing_category=None))
    after = merge(before, receipt(61, "read", pricing_category="utility"))
    assert {window.pricing_category for window in billing_contributions(before)} == {""}
    assert {window.pricing_category for window in billing_contributions(after)} == {"utility"}


# --- the folds, replayed with aborted batches ------------------------------------------------
observations = st.builds(
    Observation,
    at=st.integers(0, 7_200).map(lambda seconds: at(seconds)),
    state=st.sampled_from(["sent", "delivered", "read", "undelivered"]),
    detail=st.sampled_from([None, "delivered_to_recipient", "delivered_to_operator"]),
    sub_account_id=st.sampled_from([None, "acme", "globex"]),
    country=st.sampled_from([None, "ID", "DE"]),
    pricing_category=st.sampled_from([None, "marketing", "utility", "authentication"]),
)
logs = st.lists(st.tuples(st.integers(0, 7), observations), min_size=1, max_size=60)


def expected_totals(log: list[tuple[int, Observation]]) -> dict[str, Counts]:
    states: dict[str, MessageState] = {}
    for umid, observation in log:
        name = f"m-{umid}"
        states[name] = merge(states.get(name, MessageState(umid=name)), observation)
    totals: dict[str, Counts] = {}
    for state in states.values():
        for window, counts in billing_contributions(state).items():
            totals[window.encode()] = add_counts(totals.get(window.encode(), {}), counts)
    return {window: counts for window, counts in totals.items() if counts}


def run_with_aborts(log: list[tuple[int, Observation]], rng: random.Random) -> dict[str, Counts]:
    """The funnel's billing hops as the job runs them, over two partitions, in batches of
    random sizes, some aborted (a crash before the commit: processed again)."""
    deltas: list[tuple[str, Counts]] = []  # funnel.deltas, as read_committed sees it
    for partition in range(2):
        entries = [(f"m-{umid}", obs) for umid, obs in log if umid % 2 == partition]
        states: dict[str, MessageState] = {}
        position = 0
        while position < len(entries):
            end = min(len(entries), position + rng.randint(1, 6))
            batch = MessageFold(states, NEVER_FINAL)
            for umid, observation in entries[position:end]:
                batch.add(umid, observation)
            if rng.random() < 0.2:
                continue  # aborted: nothing of it remains
            deltas += [
                (window.encode(), counts) for window, counts in batch.billing_deltas()[0].items()
            ]
            states.update(batch.changed)
            position = end
    rng.shuffle(deltas)
    totals: dict[str, Counts] = {}
    position = 0
    while position < len(deltas):
        end = min(len(deltas), position + rng.randint(1, 6))
        summed = sum_deltas(totals, deltas[position:end])
        if rng.random() < 0.2:
            continue
        totals.update(summed)
        position = end
    return {window: counts for window, counts in totals.items() if counts}


@settings(max_examples=150, deadline=None)
@given(log=logs, seed=st.integers(0, 2**32 - 1))
def test_billing_totals_are_exact_under_any_order_batching_and_aborts(log, seed) -> None:
    rng = random.Random(seed)
    shuffled = list(log) + rng.sample(log, k=min(len(log), 5))  # and some redelivered
    rng.shuffle(shuffled)
    assert run_with_aborts(shuffled, rng) == expected_totals(log)


def test_a_final_window_takes_no_more_billing_changes() -> None:
    batch = MessageFold({}, timedelta(days=2))
    batch.add("m-1", receipt(0, "delivered"), BASE + timedelta(days=5))
    assert batch.billing_deltas() == ({}, 2)  # its hour and its day, both final


# --- the record and the rate card ------------------------------------------------------------
CARD = RateCard({("ID", "marketing"): Rate(Decimal("0.0400"), "USD"),
                 ("*", "marketing"): Rate(Decimal("0.0600"), "USD")})  # fmt: skip


def test_the_record_prices_the_count_with_the_card() -> None:
    record = billing_record(key("1d", 0), {"delivered": 3}, CARD)
    assert record["delivered"] == 3
    assert (record["pricePerMessage"], record["currency"], record["estimatedCost"]) == (
        "0.0400", "USD", "0.1200")  # fmt: skip
    assert record["windowEnd"] == "2026-11-26T00:00:00.000Z"


def test_a_country_the_card_does_not_name_takes_its_star_line() -> None:
    record = billing_record(BillingKey("1h", at(0), "acme", "DE", "marketing"), {"delivered": 2},
                            CARD)  # fmt: skip
    assert record["estimatedCost"] == "0.1200"


@pytest.mark.parametrize("window", [
    BillingKey("1h", at(0), "acme", "ID", "utility"),  # no rate for the category
    BillingKey("1h", at(0), "acme", "", "marketing"),  # country unknown: no guess from `*`
    BillingKey("1h", at(0), "acme", "ID", ""),  # category unknown
])  # fmt: skip
def test_no_rate_gives_null_price_and_cost(window: BillingKey) -> None:
    record = billing_record(window, {"delivered": 1}, CARD)
    assert (record["pricePerMessage"], record["currency"], record["estimatedCost"]) == (
        None, None, None)  # fmt: skip
    assert billing_record(window, {"delivered": 1}, None)["estimatedCost"] is None


def test_the_example_card_loads_and_says_it_is_an_example() -> None:
    card = load_rate_card(EXAMPLE_CARD)
    assert card.rate("ID", "MARKETING") == Rate(Decimal("0.0400"), "USD")
    assert "EXAMPLE ONLY" in EXAMPLE_CARD.read_text().splitlines()[0]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "card.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("line", "says"), [
    ("XX1,marketing,0.04,USD", "country 'XX1' is not two letters"),
    ("ID,promo,0.04,USD", "pricing category 'promo' is not one of"),
    ("ID,marketing,-0.04,USD", "price '-0.04' is not a decimal number"),
    ("ID,marketing,1e3,USD", "price '1e3' is not a decimal number"),
    ("ID,marketing,0.04,usd", "currency 'usd' is not three upper-case letters"),
    ("ID,marketing,0.04", "3 fields, expected 4"),
])  # fmt: skip
def test_each_bad_line_is_named_with_what_is_wrong(tmp_path: Path, line: str, says: str) -> None:
    path = write(tmp_path, f"# a comment\ncountry,category,price,currency\n{line}\n")
    with pytest.raises(RateCardError, match="a bad line") as error:
        load_rate_card(path)
    assert f"line 3: {says}" in str(error.value)


def test_every_bad_line_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "country,category,price,currency\nID,marketing,x,USD\n"
                           "ID,utility,0.02,USD\nID,utility,0.03,USD\n")  # fmt: skip
    with pytest.raises(RateCardError, match="2 bad lines") as error:
        load_rate_card(path)
    assert "line 2: price 'x'" in str(error.value)
    assert "line 4: ID,utility again (first on line 3)" in str(error.value)


@pytest.mark.parametrize(("text", "says"), [
    ("", "no lines"),
    ("country,category,cost,currency\n", "the header must be country,category,price,currency"),
    ("country,category,price,currency\n", "a header and no rate"),
])  # fmt: skip
def test_a_card_without_header_or_rates_is_refused(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(RateCardError, match=says):
        load_rate_card(write(tmp_path, text))


def test_settings_refuse_a_bad_card_at_start_up_naming_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "country,category,price,currency\nID,marketing,x,USD\n")
    with pytest.raises(SettingsError, match="WAPIPE_BILLING_RATE_CARD: rate card") as error:
        Settings.from_env(billing_rate_card=path)
    assert "line 2: price 'x'" in str(error.value)
    with pytest.raises(SettingsError, match="cannot be read"):
        Settings.from_env(billing_rate_card=tmp_path / "missing.csv")
    assert Settings.from_env(billing_rate_card=EXAMPLE_CARD).rate_card is not None
    assert Settings.from_env().rate_card is None
