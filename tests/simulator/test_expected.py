"""The oracle: expected final results from a timeline, on a handmade story, and the
pipeline's own pure rules reaching the same results on generated ones."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from processors.funnel.state import (
    MessageState,
    merge,
    message_state_value,
    observe_receipt,
    observe_reply,
)
from processors.funnel.windows import contributions
from processors.normalize.records import InboundMessage, PhoneEvent, Receipt, TemplateEvent
from processors.normalize.rules import Normalized, normalize
from processors.phones import rules as phone_rules
from processors.templates import rules as template_rules
from simulator import FunnelTotals, Plan, expected_results, make_timeline, timeline_bodies
from simulator.population import BusinessPhone, Customer, Population, SubAccount, Template
from simulator.stories import (
    FAILURES,
    Event,
    Fact,
    Inbound,
    PhoneChange,
    TemplateQuality,
    TemplateStatus,
    Timeline,
)
from simulator.stories import Receipt as ReceiptFact

ANCHOR = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
PHONE_A, PHONE_B = (
    BusinessPhone("441212000001", "TIER_1K"),
    BusinessPhone("441212000002", "TIER_1K"),
)
SUB_A, SUB_B = SubAccount("acme_a", "chan-a", PHONE_A), SubAccount("acme_b", "chan-b", PHONE_B)
LENA = Customer("+4915123456789", "DE", "Lena", None)
BUDI = Customer("+6281234567890", "ID", "Budi", "ID.12345678901234567890")
SALE = Template("100000000000001", "spring_sale", "en_US", "MARKETING")
FAILURE = FAILURES[0][1]


def _receipt(
    umid: str, state: str, sub: SubAccount = SUB_A, customer: Customer = LENA
) -> ReceiptFact:
    failure = FAILURE if state == "undelivered" else None
    return ReceiptFact(umid, sub, customer, state, SALE, SALE.category, failure)


def _reply(umid: str, to: str, echo: bool = False) -> Inbound:
    return Inbound(umid, SUB_A, LENA, "text", reply_to=to, echo=echo)


def _timeline(facts: list[tuple[float, Fact]], post_order: list[int] | None = None) -> Timeline:
    """A timeline of `facts` at their times, posted in `post_order` (indexes)."""
    events = []
    for index, (at, fact) in enumerate(facts):
        if isinstance(fact, ReceiptFact):
            key, group = f"{fact.umid}|{fact.state}", None
        elif isinstance(fact, Inbound):
            key, group = fact.umid, None
        elif isinstance(fact, PhoneChange):
            key, group = f"p{index}", f"phone:{fact.phone.display_phone_number}"
        else:
            key, group = f"t{index}", f"template:{fact.template.template_id}"
        events.append(Event(at, at, fact, key, index, group))
    order = post_order if post_order is not None else list(range(len(events)))
    population = Population("acme", "104233889912345", (SUB_A, SUB_B), (LENA, BUDI), (SALE,))
    return Timeline(Plan(seed=99), population, ANCHOR, tuple(events[i] for i in order))


HANDMADE: list[tuple[float, Fact]] = [
    # m1: sent, delivered, read, and two replies: one of each transition.
    (1, _receipt("m1", "sent")), (2, _receipt("m1", "delivered")), (30, _receipt("m1", "read")),
    (40, _reply("r1", "m1")), (50, _reply("r2", "m1")),
    # m2: queued, sent, then failed: sent and undelivered.
    (3, _receipt("m2", "queued")), (4, _receipt("m2", "sent")), (9, _receipt("m2", "undelivered")),
    # m3: read with no delivered before it: delivered and sent all the same.
    (5, _receipt("m3", "read")),
    # m4 (B): refused at once: undelivered only.
    (6, _receipt("m4", "undelivered", SUB_B, BUDI)),
    # m5 (B): sent and delivered; an echo naming it is no reply.
    (7, _receipt("m5", "sent", SUB_B)), (8, _receipt("m5", "delivered", SUB_B)),
    (60, _reply("e1", "m5", echo=True)),
    # m6 (B): only queued: no transition the funnel counts.
    (10, _receipt("m6", "queued", SUB_B)),
    # a reply to a message we have no receipt of: replied, sub-account unknown.
    (70, _reply("r3", "m9")),
    # a template: strikes 1, (RED again without a recovery: none), 2, 3, then nothing more.
    (100, TemplateQuality(SALE, "UNKNOWN", "GREEN")),
    (110, TemplateQuality(SALE, "GREEN", "RED")),
    (111, TemplateStatus(SALE, "PAUSED", "FIRST_PAUSE")),
    (120, TemplateQuality(SALE, "RED", "RED")),
    (130, TemplateQuality(SALE, "RED", "GREEN")),
    (140, TemplateQuality(SALE, "GREEN", "RED")),
    (150, TemplateQuality(SALE, "RED", "YELLOW")),
    (160, TemplateQuality(SALE, "YELLOW", "RED")),
    (170, TemplateQuality(SALE, "RED", "GREEN")),
    (180, TemplateQuality(SALE, "GREEN", "RED")),
    # a number: onboarded, upgraded, flagged.
    (200, PhoneChange(PHONE_A, "ONBOARDING", tier="TIER_1K")),
    (210, PhoneChange(PHONE_A, "UPGRADE", "TIER_10K", "TIER_1K")),
    (220, PhoneChange(PHONE_A, "FLAGGED", reason="QUALITY_DECREASE")),
]  # fmt: skip


def test_message_states_and_funnel_totals_of_a_handmade_story():
    # Posted in reverse: out of order everywhere; the results do not depend on it.
    timeline = _timeline(HANDMADE, list(reversed(range(len(HANDMADE)))))
    expected = expected_results(timeline)
    states = {umid: message.state for umid, message in expected.messages.items()}
    assert states == {"m1": "read", "m2": "undelivered", "m3": "read", "m4": "undelivered",
                      "m5": "delivered", "m6": "queued", "m9": None}  # fmt: skip
    assert expected.messages["m2"].error_code == FAILURE.code
    assert expected.messages["m1"].replied
    assert not expected.messages["m5"].replied
    assert expected.funnel == {
        "": FunnelTotals(replied=1),
        "acme_a": FunnelTotals(sent=3, delivered=2, read=2, replied=1, undelivered=1),
        "acme_b": FunnelTotals(sent=1, delivered=1, undelivered=1),
    }
    assert expected.funnel_total == FunnelTotals(4, 3, 2, 2, 2)
    assert (expected.inbound, expected.replies) == (3, 3)


def test_template_strikes_and_phone_state_of_a_handmade_story():
    expected = expected_results(_timeline(HANDMADE))
    template = expected.templates[SALE.template_id]
    assert (template.red_strikes, template.disabled, template.quality) == (3, True, "RED")
    assert template.status == "PAUSED"
    phone = expected.phones[PHONE_A.display_phone_number]
    assert (phone.tier, phone.flagged) == ("TIER_10K", True)


def test_the_disabling_strike_is_a_parameter():
    template = expected_results(_timeline(HANDMADE), disabling_strike=2).templates[SALE.template_id]
    assert (template.red_strikes, template.disabled) == (2, True)


def test_lost_events_count_for_nothing():
    expected = expected_results(_timeline(HANDMADE), lost={"m5|delivered", "r3", "m4|undelivered"})
    assert expected.messages["m5"].state == "sent"
    assert "m9" not in expected.messages
    assert "m4" not in expected.messages
    assert expected.funnel["acme_b"] == FunnelTotals(sent=1)
    assert expected.lost == ("m4|undelivered", "m5|delivered", "r3")
    assert expected.events == len(HANDMADE) - 3


def test_expected_results_are_written_as_camel_case_json(tmp_path: Path):
    path = tmp_path / "expected.json"
    expected_results(_timeline(HANDMADE)).write(path)
    written = orjson.loads(path.read_bytes())
    assert written["funnel"]["acme_a"] == {"sent": 3, "delivered": 2, "read": 2, "replied": 1,
                                           "undelivered": 1}  # fmt: skip
    assert written["templates"][SALE.template_id]["redStrikes"] == 3
    assert written["messages"]["m2"]["subAccountId"] == "acme_a"
    assert written["messages"]["m2"]["errorCode"] == FAILURE.code
    assert written["phones"][PHONE_A.display_phone_number]["tier"] == "TIER_10K"
    assert written["eventTypes"]["outbound_message_status_changed"] == 11


# --- the pipeline's own pure rules agree with the oracle -----------------------------------------
@pytest.fixture(scope="module", params=[(31, 1.0), (32, 1800.0)], ids=["real-time", "compressed"])
def generated(request: pytest.FixtureRequest) -> Timeline:
    seed, time_scale = request.param
    return make_timeline(Plan(seed=seed, rate=20, duration=60, time_scale=time_scale), ANCHOR)


def _posted_with_retries(timeline: Timeline, shuffle: bool = False) -> list[bytes]:
    """The bodies as the pipeline may get them: a tenth of them again later (retries),
    and, with `shuffle`, in any order (what the funnel must take)."""
    rng = random.Random(7)
    bodies = timeline_bodies(timeline)
    posted = bodies + rng.sample(bodies, len(bodies) // 10)
    if shuffle:
        rng.shuffle(posted)
    return posted


def test_the_funnel_rules_reach_the_expected_totals(generated):
    states: dict[str, MessageState] = {}
    for raw in _posted_with_retries(generated, shuffle=True):
        result = normalize(raw, "2026-11-25T09:00:00.000Z")
        assert isinstance(result, Normalized)
        record = result.record
        if isinstance(record, Receipt):
            link: tuple[str, object] | None = (record.umid, observe_receipt(record))
        elif isinstance(record, InboundMessage):
            link = observe_reply(record)
        else:
            continue
        if link is not None:
            umid, observation = link
            states[umid] = merge(states.get(umid, MessageState(umid)), observation)  # type: ignore[arg-type]
    totals: dict[str, Counter[str]] = {}
    for state in states.values():
        for window, counts in contributions(state).items():
            if window.size == "1h":
                totals.setdefault(window.sub_account_id, Counter()).update(counts)
    expected = expected_results(generated)
    assert {
        key: FunnelTotals(**{stage: counts[stage] for stage in
                             ("sent", "delivered", "read", "replied", "undelivered")})
        for key, counts in totals.items()
    } == expected.funnel  # fmt: skip
    for umid, state in states.items():
        assert message_state_value(state)["state"] == expected.messages[umid].state, umid


def test_the_template_and_phone_rules_reach_the_expected_states(generated):
    templates: dict[str, template_rules.TemplateState] = {}
    phones: dict[str, phone_rules.PhoneState] = {}
    policy = template_rules.StrikePolicy()
    for raw in _posted_with_retries(generated):
        result = normalize(raw, "2026-11-25T09:00:00.000Z")
        assert isinstance(result, Normalized)
        record = result.record
        if isinstance(record, TemplateEvent):
            before = templates.get(
                record.template_id, template_rules.TemplateState(record.template_id)
            )
            templates[record.template_id] = template_rules.apply(before, record, policy).state
        elif isinstance(record, PhoneEvent):
            number = record.display_phone_number
            before_phone = phones.get(number, phone_rules.PhoneState(number))
            phones[number] = phone_rules.apply(before_phone, record).state
    expected = expected_results(generated)
    assert expected.templates[generated.population.templates[0].template_id].red_strikes == 3
    pipeline = {k: (s.red_strikes, s.disabled, s.quality, s.status) for k, s in templates.items()}
    oracle = {
        k: (t.red_strikes, t.disabled, t.quality, t.status) for k, t in expected.templates.items()
    }
    assert pipeline == oracle
    assert {n: (s.tier, s.flagged) for n, s in phones.items()} == {
        n: (p.tier, p.flagged) for n, p in expected.phones.items()
    }
