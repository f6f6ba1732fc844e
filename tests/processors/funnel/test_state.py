"""The per-message funnel state: each rule, and order- and repetition-independence."""

from __future__ import annotations

from functools import reduce

from hypothesis import given
from hypothesis import strategies as st

from processors.funnel.state import MessageState, Observation, Stage, merge


def _fold(observations: list[Observation], umid: str = "m-1") -> MessageState:
    return reduce(merge, observations, MessageState(umid=umid))


def _at(second: int) -> str:
    return f"2026-03-14T10:00:{second:02d}.000Z"


def test_read_without_delivered_counts_as_delivered():
    state = _fold([Observation(_at(5), "read"), Observation(_at(1), "sent")])
    assert (state.state, state.stage) == ("read", Stage.READ)
    assert (state.sent_at, state.delivered_at, state.read_at) == (_at(1), _at(5), _at(5))


def test_delivered_to_operator_is_not_yet_delivered():
    state = _fold([Observation(_at(2), "delivered", "delivered_to_operator")])
    assert (state.state, state.delivered_at, state.sent_at) == ("sent", None, _at(2))
    assert state.detail == "delivered_to_operator"


def test_states_only_move_forward_and_late_older_receipts_change_no_stage():
    state = _fold([
        Observation(_at(9), "read"),
        Observation(_at(3), "delivered", "delivered_to_recipient"),
        Observation(_at(1), "sent"),
        Observation(_at(0), "queued"),
    ])  # fmt: skip
    assert state.state == "read"
    assert (state.queued_at, state.sent_at, state.delivered_at, state.read_at) == (
        _at(0), _at(1), _at(3), _at(9))  # fmt: skip


def test_failure_records_its_codes():
    failure = Observation(
        _at(3), "undelivered", "rejected_by_operator", error_code=15,
        provider_error_code="131009", error_message="Invalid destination",
    )  # fmt: skip
    state = _fold([Observation(_at(1), "sent"), failure])
    assert (state.state, state.detail) == ("undelivered", "rejected_by_operator")
    assert state.failure == failure


def test_a_failure_after_the_phone_got_the_message_does_not_undo_delivery():
    state = _fold([
        Observation(_at(2), "delivered", "delivered_to_recipient"),
        Observation(_at(4), "failed", error_code=1),
    ])  # fmt: skip
    assert (state.state, state.detail) == ("delivered", "delivered_to_recipient")
    assert state.failure is not None


def test_reply_marks_the_message_without_moving_its_stage():
    state = _fold([Observation(_at(1), "sent"), Observation(_at(7), "replied")])
    assert (state.state, state.replied_at, state.last_event_at) == ("sent", _at(7), _at(7))


def test_descriptive_fields_come_from_the_first_observation_that_has_them():
    state = _fold([
        Observation(_at(5), "read", country="ZZ-later"),
        Observation(_at(0), "queued"),  # earliest, but says nothing of the country
        Observation(_at(1), "sent", country="ID", msisdn="+6281234567890"),
    ])  # fmt: skip
    assert state.country is not None
    assert state.country.value == "ID"
    assert state.msisdn is not None
    assert state.msisdn.value == "+6281234567890"


# --- properties --------------------------------------------------------------------------------
DETAILS = [None, "delivered_to_recipient", "delivered_to_operator", "rejected_by_operator",
           "undelivered_to_recipient"]  # fmt: skip
observations = st.builds(
    Observation,
    at=st.integers(0, 5).map(_at),  # few distinct times: ties happen
    state=st.sampled_from(
        ["queued", "sent", "delivered", "read", "undelivered", "rejected", "failed", "replied"]
    ),
    detail=st.sampled_from(
        [
            None,
            "delivered_to_recipient",
            "delivered_to_operator",
            "rejected_by_operator",
            "undelivered_to_recipient",
        ]
    ),
    error_code=st.sampled_from([None, 15, 1022]),
    provider_error_code=st.sampled_from([None, "131009", "131047"]),
    error_message=st.sampled_from([None, "Invalid destination", "Re-engagement message"]),
    sub_account_id=st.sampled_from([None, "acme", "acme_2"]),
    msisdn=st.sampled_from([None, "+6281234567890", "+5511987654321"]),
    country=st.sampled_from([None, "ID", "BR"]),
    channel=st.sampled_from([None, "whatsapp", "viber"]),
    template_category=st.sampled_from([None, "MARKETING", "UTILITY"]),
    pricing_category=st.sampled_from([None, "marketing", "utility"]),
)


@given(
    st.lists(observations, max_size=12).flatmap(
        lambda xs: st.tuples(st.just(xs), st.permutations(xs))
    )
)
def test_any_order_gives_the_same_state(pair):
    original, shuffled = pair
    assert _fold(shuffled) == _fold(original)


@given(st.lists(observations, min_size=1, max_size=10), st.data())
def test_repetitions_change_nothing(original, data):
    repeated = data.draw(st.lists(st.sampled_from(original), max_size=10))
    position = data.draw(st.permutations(original + repeated))
    assert _fold(position) == _fold(original)


@given(st.lists(observations, max_size=10), st.lists(observations, max_size=10))
def test_merging_is_the_same_in_any_grouping(first, second):
    # Two workers' partial states (e.g. before and after a crash) combine to the whole.
    whole = _fold(first + second)
    continued = reduce(merge, second, _fold(first))
    assert continued == whole


@given(st.lists(observations, max_size=12))
def test_the_state_never_moves_backwards(sequence):
    state, stages = MessageState(umid="m-1"), []
    for observation in sequence:
        state = merge(state, observation)
        stages.append(state.stage)
    assert stages == sorted(stages)


# --- from normalize's records to message_state -----------------------------------------------
def test_a_receipt_story_from_the_examples_gives_the_contract_record():
    import json
    from pathlib import Path

    from processors.funnel.state import message_state_value, observe_receipt, observe_reply
    from processors.normalize.rules import normalize

    examples = Path(__file__).resolve().parents[2] / "fixtures" / "examples"
    receipts = [normalize((examples / name).read_bytes(), None).record
                for name in ("status_read_mixed_case.json", "status_sent.json")]  # fmt: skip
    reply = normalize((examples / "inbound_list_reply.json").read_bytes(), None).record
    umid, replied = observe_reply(reply)
    state = _fold([observe_receipt(r) for r in receipts] + [replied], umid=umid)
    value = message_state_value(state)
    assert value == {
        "umid": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "subAccountId": "acme_wa_marketing",
        "msisdn": "+6281234567890", "country": "ID", "channel": "whatsapp",
        "state": "read", "detail": None, "queuedAt": "2026-03-14T10:00:01.512Z",
        "sentAt": "2026-03-14T10:00:01.512Z", "deliveredAt": "2026-03-14T10:01:37.400Z",
        "readAt": "2026-03-14T10:01:37.400Z", "failedAt": None,
        "repliedAt": "2026-03-14T10:02:44.000Z", "errorCode": None, "providerErrorCode": None,
        "errorMessage": None, "pricingCategory": None, "templateCategory": None,
        "lastEventAt": "2026-03-14T10:02:44.000Z",
    }  # fmt: skip
    assert json.loads(json.dumps(value)) == value


@given(st.lists(observations, max_size=8))
def test_a_stored_state_loads_back_equal(sequence):
    from processors.funnel.state import dump_state, load_state

    state = _fold(sequence)
    assert load_state(dump_state(state)) == state
