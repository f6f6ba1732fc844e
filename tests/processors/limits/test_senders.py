"""The limits job's sub-account hop and subject evaluation as plain functions: which
number a sub-account counts under, its reach moving when that changes, and a subject's
records and alerts over time (no Kafka)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from processors.funnel.state import Attribute
from processors.limits.rules import (
    Reach,
    add,
    add_steps,
    reach_intervals,
    reached_at,
    settle,
    steps,
)
from processors.limits.senders import (
    Sender,
    as_steps,
    dump_sender,
    latest_channel,
    load_sender,
    moves,
    number,
    subject_of,
)
from processors.limits.subjects import Subject, dump_subject, evaluate, load_subject, with_changes
from processors.normalize import canonical

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CUT = canonical.format_timestamp(NOW - timedelta(hours=30))
UUID = "c6b2f1e0-5d1a-4f8e-8a7c-0b9d3e4f5a61"


def at(minutes: float) -> str:
    return canonical.format_timestamp(NOW + timedelta(minutes=minutes))


def contact(minutes: float) -> dict[str, int]:
    """One new customer reached at `minutes`: the delta the conversations job sends."""
    return steps(reach_intervals([at(minutes)]))


# --- which subject --------------------------------------------------------------------------
def test_the_setting_then_the_channel_then_the_sub_account() -> None:
    numbers = {"acme": "4930901820", UUID: "15550783881"}
    assert subject_of("acme", UUID, numbers) == "4930901820"  # the sub-account's own first
    assert subject_of("globex", UUID, numbers) == "15550783881"  # its channel's
    assert subject_of("globex", "+49 30 1234567", {}) == "49301234567"  # a channel that is one
    assert subject_of("globex", UUID, {}) == "sub-account:globex"  # unknown: itself
    assert subject_of("globex", None, {}) == "sub-account:globex"
    assert number("<CHANNEL_ID>") is None


def test_the_latest_inbound_channel_wins_in_any_order() -> None:
    seen = [(at(1), "111111111"), (at(5), "222222222"), (at(5), "111111111"), (at(3), UUID)]
    for order in (seen, seen[::-1], random.Random(3).sample(seen, len(seen))):
        known = None
        for when, channel in order:
            known = latest_channel(known, when, channel)
        assert known == Attribute(at(5), "222222222")


# --- reach on its way to the subject --------------------------------------------------------
def test_reach_goes_to_the_subject_and_moves_whole_when_the_number_is_learnt() -> None:
    first, sends = moves("acme", Sender(), add_steps(contact(-60), contact(-30)), None, {}, CUT)
    assert list(sends) == ["sub-account:acme"]
    learnt = Attribute(at(-10), "4930901820")
    second, sends = moves("acme", first, contact(-5), learnt, {}, CUT)
    assert set(sends) == {"sub-account:acme", "4930901820"}
    left = add(add(Reach(), add_steps(contact(-60), contact(-30))), sends["sub-account:acme"])
    assert reached_at(left, at(0)) == 0  # all of it left the old subject
    assert reached_at(add(Reach(), sends["4930901820"]), at(0)) == 3  # and all came here
    assert second.subject == "4930901820"
    assert load_sender(dump_sender(second)) == second


def test_a_settled_reach_moves_as_what_it_still_counts() -> None:
    reach = add(Reach(), add_steps(contact(-25 * 60), contact(-60)))  # one started 25 h ago
    settled = settle(reach, at(-2 * 60))
    assert reached_at(add(Reach(), as_steps(settled)), at(0)) == reached_at(reach, at(0)) == 1


# --- a subject over time --------------------------------------------------------------------
def test_a_number_near_then_at_its_limit_each_alerted_once_and_a_record_only_on_change() -> None:
    state = Subject(tier="TIER_250")
    alerts: list[str] = []
    records = 0
    for customer in range(250):
        state = with_changes(state, contact(-300 + customer))
        evaluation = evaluate("4930901820", state, NOW, 0.8)
        state = evaluation.state
        alerts += [alert.alert_id for alert in evaluation.alerts]
        records += evaluation.record is not None
    assert [a.split("|")[0] for a in alerts] == ["MESSAGING_LIMIT_NEAR", "MESSAGING_LIMIT_REACHED"]
    assert alerts[0] == f"MESSAGING_LIMIT_NEAR|4930901820|250@{at(-300 + 199)}"
    assert records == 250
    again = evaluate("4930901820", state, NOW + timedelta(seconds=30), 0.8)
    assert (again.record, again.alerts) == (None, [])  # nothing changed but the time
    assert load_subject(dump_subject(again.state)) == again.state
    later = evaluate("4930901820", state, NOW + timedelta(hours=19, seconds=30), 0.8)
    assert later.record is not None
    assert later.record["reached"] == 249  # the first customer left at -300 min + 24 h


def test_a_sub_account_without_a_number_is_counted_and_says_so() -> None:
    evaluation = evaluate("sub-account:acme", with_changes(Subject(), contact(-1)), NOW, 0.8)
    assert evaluation.record is not None
    record = evaluation.record
    assert (record["subject"], record["subjectKind"]) == ("acme", "sub_account")
    assert (evaluation.record["limit"], evaluation.alerts) == (None, [])
