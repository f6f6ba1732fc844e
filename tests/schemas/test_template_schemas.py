"""The templates worker's topic schemas (template_state, alerts) against the records it writes.

Like the funnel's (test_funnel_schemas.py), these are the contract of our own output and
strict: every key of `template_state_value` / `alert_value` is required, no other is
allowed, and the details of each template alert type are closed. Records are validated in
their wire form (through orjson and back). The records come from hypothesis: template
states folded from random template events with `rules.apply`, interleaved with the
timer's `rules.end_pause`, as the worker computes them, and every alert raised on the way.
No Kafka involved.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest
from example_bodies import Mutation
from hypothesis import given, settings
from hypothesis import strategies as st
from topic_records import (
    assert_valid,
    errors,
    properties_without_description,
    remove_at,
    set_at,
    topic_validator,
    wire,
)
from typed_events import template_event

import schemas
from processors.alerts import WITHDRAWN, Alert, Severity, alert_value
from processors.normalize import canonical
from processors.normalize.records import TemplateEvent
from processors.templates.rules import (
    Outcome,
    StrikePolicy,
    TemplateState,
    apply,
    end_pause,
    template_state_value,
)
from wapipe import topics
from wapipe.settings import Settings

TEMPLATE_STATE = topics.TEMPLATE_STATE.suffix
ALERTS = topics.ALERTS.suffix
SUFFIXES = (TEMPLATE_STATE, ALERTS)
TEMPLATE_ID = "951847263015"
START = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
POLICY = StrikePolicy()

# The alert types the templates worker raises, and the $defs entry of their details.
TEMPLATE_ALERT_DETAILS = {
    "TEMPLATE_QUALITY_RED": "qualityRedDetails",
    "TEMPLATE_QUALITY_DEGRADED": "qualityDegradedDetails",
    "TEMPLATE_PAUSED": "pausedDetails",
    "TEMPLATE_DISABLED": "statusDetails",
    "TEMPLATE_REJECTED": "statusDetails",
    "TEMPLATE_FLAGGED": "flaggedDetails",
    "TEMPLATE_CATEGORY_CHANGED": "categoryChangedDetails",
    "TEMPLATE_UNPAUSED": "unpausedDetails",
}
SCORES = ("GREEN", "YELLOW", "RED", "UNKNOWN")
STATUSES = ("APPROVED", "PENDING", "REJECTED", "PAUSED", "DISABLED", "FLAGGED", "PENDING_DELETION")
TITLES = (None, "FIRST_PAUSE", "SECOND_PAUSE", "DISABLED", "UNPAUSE", "RATE_LIMITING_PAUSE")
REASONS = (None, "NONE", "INCORRECT_CATEGORY", "INVALID_FORMAT", "ABUSIVE_CONTENT", "SCAM")
CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")
DISABLE_DATES = (None, "2026-12-02")  # as Meta sends it: not normalized


# --------------------------------------------------------------------------- helpers


def at(minutes: int) -> str:
    return canonical.format_timestamp(START + timedelta(minutes=minutes))


def event(minutes: int, **fields: object) -> TemplateEvent:
    return template_event(at(minutes), template_id=TEMPLATE_ID, **fields)


def quality(minutes: int, previous: str | None, new: str, **fields: object) -> TemplateEvent:
    return event(minutes, previous_quality=previous, new_quality=new, **fields)


def status(minutes: int, value: str, title: str | None = None, **fields: object) -> TemplateEvent:
    return event(minutes, event_type="template_status_update", status=value,
                 other_info_title=title, **fields)  # fmt: skip


def category(minutes: int, previous: str | None, new: str, **fields: object) -> TemplateEvent:
    return event(minutes, event_type="template_category_update", previous_category=previous,
                 new_category=new, **fields)  # fmt: skip


@dataclass(frozen=True)
class Tick:
    """The timer's tick: `end_pause(state, now)`."""

    now: str


Step = TemplateEvent | Tick


def step(state: TemplateState, item: Step, policy: StrikePolicy) -> Outcome:
    if isinstance(item, Tick):
        return end_pause(state, item.now)
    return apply(state, item, policy)


def run(
    steps: list[Step], policy: StrikePolicy = POLICY
) -> tuple[list[TemplateState], list[Alert]]:
    """The states the worker writes (each one that changed) and every alert raised."""
    state = TemplateState(TEMPLATE_ID)
    written: list[TemplateState] = []
    alerts: list[Alert] = []
    for item in steps:
        outcome = step(state, item, policy)
        if outcome.state != state:
            written.append(outcome.state)
        state = outcome.state
        alerts += outcome.alerts
    return written, alerts


def details_rules() -> dict[str, str]:
    """The alerts schema's if/then rules of the template alert types: alert type -> the
    $defs entry of its details (ALERT_WITHDRAWN, of templates and phones, aside)."""
    rules: dict[str, str] = {}
    for rule in schemas.load(f"topics/{ALERTS}")["allOf"]:
        condition = rule["if"]["properties"]["type"]
        assert rule["if"]["required"] == ["type"]
        kinds = [condition["const"]] if "const" in condition else condition["enum"]
        if kinds == [WITHDRAWN]:
            continue
        then = rule["then"]["properties"]
        assert then["subject"]["$ref"] == "#/$defs/templateSubject"
        for kind in kinds:
            assert kind not in rules, kind
            rules[kind] = then["details"]["$ref"].removeprefix("#/$defs/")
    return rules


# A story that raises every template alert type at least once.
EVERY_TYPE_STORY: list[Step] = [
    quality(0, "GREEN", "YELLOW"),
    quality(10, "YELLOW", "RED"),
    status(10, "PAUSED", "FIRST_PAUSE", reason="NONE", other_info_description="Paused 3 h"),
    Tick(at(200)),
    status(300, "FLAGGED", disable_date="2026-12-02"),
    category(400, "UTILITY", "MARKETING"),
    status(500, "REJECTED", reason="INCORRECT_CATEGORY"),
    status(600, "DISABLED", "DISABLED"),
]


# A story whose late events correct alerts sent: a strike renumbered (a replacement) and
# a strike that never was (a withdrawal: the template was disabled before it).
CORRECTED_STORY: list[Step] = [
    quality(600, "GREEN", "RED"),
    quality(500, "GREEN", "RED"),  # within the first pause: no end of it between
    status(50, "DISABLED", "DISABLED"),
]


# --------------------------------------------------------------------------- schema files


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_schema_describes_key_timestamp_and_evolution(suffix: str) -> None:
    document = schemas.load(f"topics/{suffix}")
    assert document["title"].startswith(f"whatsapp.{suffix}: ")
    description = document["description"]
    for needle in ("Kafka key", "Kafka timestamp", "tolerate"):
        assert needle in description, needle
    assert document["type"] == "object"
    assert document["additionalProperties"] is False


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_property_has_a_description(suffix: str) -> None:
    assert properties_without_description(schemas.load(f"topics/{suffix}")) == []


def test_template_alert_details_and_subject_are_closed() -> None:
    definitions = schemas.load(f"topics/{ALERTS}")["$defs"]
    for name in {*TEMPLATE_ALERT_DETAILS.values(), "templateSubject"}:
        definition = definitions[name]
        assert definition["additionalProperties"] is False, name
        assert set(definition["required"]) == set(definition["properties"]), name
    assert "templateId" in definitions["templateSubject"]["required"]


# --------------------------------------------------------------------------- schema == code


def test_template_state_required_are_the_record_keys() -> None:
    document = schemas.load(f"topics/{TEMPLATE_STATE}")
    keys = list(template_state_value(TemplateState(TEMPLATE_ID)))
    assert len(document["required"]) == len(set(document["required"]))
    assert set(document["required"]) == set(keys)
    assert set(document["properties"]) == set(keys)


def test_alert_required_are_the_record_keys() -> None:
    document = schemas.load(f"topics/{ALERTS}")
    _, alerts = run(EVERY_TYPE_STORY)
    keys = list(alert_value(alerts[0]))
    assert len(document["required"]) == len(set(document["required"]))
    assert set(document["required"]) == set(keys)
    assert set(document["properties"]) == set(keys)


def test_the_if_then_rules_cover_exactly_the_template_alert_types() -> None:
    assert details_rules() == TEMPLATE_ALERT_DETAILS
    _, alerts = run(EVERY_TYPE_STORY)
    assert {alert.type for alert in alerts} == set(TEMPLATE_ALERT_DETAILS)


def test_each_template_alert_details_are_the_keys_the_rules_write() -> None:
    definitions = schemas.load(f"topics/{ALERTS}")["$defs"]
    _, alerts = run(EVERY_TYPE_STORY)
    for alert in alerts:
        definition = definitions[TEMPLATE_ALERT_DETAILS[alert.type]]
        assert set(definition["required"]) == set(alert.details), alert.type
        assert set(definitions["templateSubject"]["required"]) == set(alert.subject)
        assert_valid(ALERTS, alert_value(alert))


def test_corrections_are_valid_and_withdrawals_write_their_details_keys() -> None:
    definitions = schemas.load(f"topics/{ALERTS}")["$defs"]
    _, alerts = run(CORRECTED_STORY)
    records = [assert_valid(ALERTS, alert_value(alert)) for alert in alerts]
    assert [(r["type"], len(r["supersedes"])) for r in records] == [
        ("TEMPLATE_QUALITY_RED", 0),
        ("TEMPLATE_QUALITY_RED", 0),
        ("TEMPLATE_QUALITY_RED", 1),  # strike 2 at 600 replaces strike 1 at 600
        ("TEMPLATE_DISABLED", 0),
        (WITHDRAWN, 1),  # strike 1 at 500 never was
        (WITHDRAWN, 1),  # nor strike 2 at 600
    ]
    withdrawals = [r for r in records if r["type"] == WITHDRAWN]
    definition = definitions["withdrawnDetails"]
    assert definition["additionalProperties"] is False
    for withdrawal in withdrawals:
        assert set(definition["required"]) == set(definition["properties"])
        assert set(definition["required"]) == set(withdrawal["details"])
        assert withdrawal["supersedes"] == [withdrawal["details"]["withdrawnAlertId"]]
        assert withdrawal["subject"]["templateId"] == TEMPLATE_ID


def test_alert_types_are_examples_and_match_the_pattern() -> None:
    kind = schemas.load(f"topics/{ALERTS}")["properties"]["type"]
    assert "enum" not in kind
    assert set(TEMPLATE_ALERT_DETAILS) <= set(kind["examples"])
    for example in kind["examples"]:
        assert re.fullmatch(kind["pattern"], example), example
        assert example in kind["description"], example


def test_severity_is_the_code_severities() -> None:
    severity = schemas.load(f"topics/{ALERTS}")["properties"]["severity"]
    assert severity["enum"] == list(get_args(Severity))


@pytest.mark.parametrize(
    ("name", "template_name"),
    [("status", "status"), ("quality", "newQuality"), ("category", "newCategory")],
)
def test_template_state_copies_the_template_field_spelling(name: str, template_name: str) -> None:
    event_property = schemas.load(f"topics/{topics.TEMPLATE.suffix}")["properties"][template_name]
    state_property = schemas.load(f"topics/{TEMPLATE_STATE}")["properties"][name]
    assert state_property["$ref"] == event_property["$ref"]
    assert state_property["type"] == ["string", "null"]


def test_strike_bounds_are_the_settings_bounds() -> None:
    metadata = Settings.model_fields["template_disabling_strike"].metadata
    low = next(item.ge for item in metadata if hasattr(item, "ge"))
    high = next(item.le for item in metadata if hasattr(item, "le"))
    red_strikes = schemas.load(f"topics/{TEMPLATE_STATE}")["properties"]["redStrikes"]
    red = schemas.load(f"topics/{ALERTS}")["$defs"]["qualityRedDetails"]["properties"]
    assert (red_strikes["minimum"], red_strikes["maximum"]) == (0, high)
    assert (red["strike"]["minimum"], red["strike"]["maximum"]) == (low, high)
    assert (red["strikesToDisable"]["minimum"], red["strikesToDisable"]["maximum"]) == (low, high)


# --------------------------------------------------------------------------- generated records

minutes = st.integers(0, 72 * 60)
names = {
    "template_name": st.sampled_from([None, "spring_sale_2026", "order_update"]),
    "template_language": st.sampled_from([None, "en_US", "id"]),
    "business_account_id": st.sampled_from([None, "104233889912345"]),
}


@st.composite
def template_events(draw: st.DrawFn) -> TemplateEvent:
    """One event of any template event type, at a random time (maybe without occurredAt)."""
    when = draw(minutes)
    common: dict[str, object] = {name: draw(values) for name, values in names.items()}
    # Few ids at few times: repeated events (duplicates) and reused ids happen.
    common["event_id"] = f"e-{draw(st.one_of(st.integers(1, 3), st.integers(4, 10**6)))}"
    if draw(st.integers(0, 9)) == 0:
        common["occurred_at"] = None  # apply falls back on receivedAt
    kind = draw(st.sampled_from(["quality", "quality", "status", "status", "category", "advice"]))
    if kind == "quality":
        previous = draw(st.sampled_from([None, *SCORES]))
        return quality(when, previous, draw(st.sampled_from(SCORES)), **common)
    if kind == "status":
        value = draw(st.sampled_from(STATUSES))
        return status(
            when,
            value,
            draw(st.sampled_from(TITLES)),
            reason=draw(st.sampled_from(REASONS)),
            other_info_description=draw(st.sampled_from([None, "Quality too low"])),
            disable_date=draw(st.sampled_from(DISABLE_DATES)) if value == "FLAGGED" else None,
            **common,
        )
    if kind == "category":
        previous = draw(st.sampled_from([None, *CATEGORIES]))
        return category(when, previous, draw(st.sampled_from(CATEGORIES)), **common)
    return event(
        when,
        event_type="template_correct_category_detection",
        category=draw(st.sampled_from(CATEGORIES)),
        correct_category=draw(st.sampled_from(CATEGORIES)),
        **common,
    )


ticks = st.builds(Tick, minutes.map(at))
stories = st.lists(st.one_of(template_events(), template_events(), ticks), min_size=1, max_size=30)
# Meta's rule and configurations the settings allow (a pause per strike before the disabling).
policies = st.sampled_from(
    [POLICY, StrikePolicy((), 1), StrikePolicy((1, 2, 4), 4), StrikePolicy(tuple(range(1, 10)), 10)]
)


@settings(max_examples=300, deadline=None)
@given(story=stories)
def test_every_template_state_and_alert_is_valid(story: list[Step]) -> None:
    written, alerts = run(story)
    for state in written:
        record = assert_valid(TEMPLATE_STATE, template_state_value(state))
        assert record["templateId"] == TEMPLATE_ID
        assert record["updatedAt"] is not None
    for alert in alerts:
        record = assert_valid(ALERTS, alert_value(alert))
        # What the descriptions promise beyond the schema.
        assert record["alertId"].startswith(f"{record['type']}|{TEMPLATE_ID}|")
        assert record["subject"]["templateId"] == TEMPLATE_ID


@settings(max_examples=200, deadline=None)
@given(story=stories, policy=policies)
def test_every_record_is_valid_under_any_allowed_policy(
    story: list[Step], policy: StrikePolicy
) -> None:
    written, alerts = run(story, policy)
    for state in written:
        assert_valid(TEMPLATE_STATE, template_state_value(state))
    for alert in alerts:
        record = assert_valid(ALERTS, alert_value(alert))
        if record["type"] == "TEMPLATE_QUALITY_RED":
            assert record["details"]["strikesToDisable"] == policy.disabling_strike


def test_the_strike_story_gives_valid_records() -> None:
    story: list[Step] = [
        quality(0, "GREEN", "RED"),
        status(1, "PAUSED", "FIRST_PAUSE"),
        Tick(at(180)),
        quality(240, "RED", "GREEN"),
        quality(300, "GREEN", "RED"),
        Tick(at(300 + 6 * 60)),
        quality(700, None, "YELLOW"),
        quality(720, None, "RED"),
    ]
    written, alerts = run(story)
    records = [assert_valid(TEMPLATE_STATE, template_state_value(state)) for state in written]
    assert (records[-1]["redStrikes"], records[-1]["disabled"]) == (3, True)
    assert records[-1]["pausedUntil"] is None
    red = [assert_valid(ALERTS, alert_value(a)) for a in alerts if a.type == "TEMPLATE_QUALITY_RED"]
    assert [r["details"]["strike"] for r in red] == [1, 2, 3]
    assert [r["details"]["pauseHours"] for r in red] == [3, 6, None]
    assert [a.type for a in alerts].count("TEMPLATE_UNPAUSED") == 2


def test_an_unknown_alert_type_needs_only_an_object_of_details() -> None:
    record: dict[str, object] = {
        "alertId": "PHONE_NUMBER_FLAGGED|4930901820|2026-11-25T08:00:00.000Z",
        "type": "PHONE_NUMBER_FLAGGED",
        "severity": "warning",
        "occurredAt": at(0),
        "subject": {"displayPhoneNumber": "4930901820", "businessAccountId": None},
        "summary": "Phone number +4930901820 is flagged for quality (LOW_QUALITY).",
        "details": {"reason": "LOW_QUALITY", "anything": [1, {"nested": True}]},
        "supersedes": [],
    }
    assert_valid(ALERTS, record)


# --------------------------------------------------------------------------- wrong values


def _state_record() -> dict[str, Any]:
    written, _ = run(
        [quality(0, "GREEN", "RED"), status(300, "FLAGGED", disable_date="2026-12-02")]
    )
    return wire(template_state_value(written[-1]))


def _alert_record(kind: str) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        _, alerts = run(EVERY_TYPE_STORY)
        return wire(alert_value(next(alert for alert in alerts if alert.type == kind)))

    return build


def _wrong(
    suffix: str, build: Callable[[], dict[str, Any]], mutate: Mutation, path: str, id: str
) -> Any:
    """A valid record of topic `suffix` made invalid by `mutate`: an error must point at
    `path`."""
    return pytest.param(suffix, build, mutate, path, id=id)


def _withdrawal_record() -> dict[str, Any]:
    _, alerts = run(CORRECTED_STORY)
    return wire(alert_value(next(alert for alert in alerts if alert.type == WITHDRAWN)))


RED = _alert_record("TEMPLATE_QUALITY_RED")
FLAGGED = _alert_record("TEMPLATE_FLAGGED")
UNPAUSED = _alert_record("TEMPLATE_UNPAUSED")

WRONG_RECORDS = [
    _wrong(ALERTS, RED, set_at("severity", "error"), "severity", id="severity-unknown"),
    _wrong(ALERTS, RED, set_at("severity", "WARNING"), "severity", id="severity-upper-case"),
    _wrong(ALERTS, RED, remove_at("subject/templateId"), "subject", id="template-alert-no-id"),
    _wrong(
        ALERTS,
        RED,
        set_at("subject/templateId", None),
        "subject/templateId",
        id="template-alert-null-id",
    ),
    _wrong(ALERTS, RED, set_at("details/strike", 0), "details/strike", id="strike-0"),
    _wrong(ALERTS, RED, set_at("details/strike", "1"), "details/strike", id="strike-string"),
    _wrong(ALERTS, RED, set_at("details/action", "STOP"), "details/action", id="action-unknown"),
    _wrong(
        ALERTS,
        RED,
        set_at("details/pauseHours", 1.5),
        "details/pauseHours",
        id="pauseHours-not-integer",
    ),
    _wrong(
        ALERTS,
        RED,
        set_at("details/pausedUntil", "2026-11-25T11:00:00Z"),
        "details/pausedUntil",
        id="pausedUntil-without-milliseconds",
    ),
    _wrong(
        ALERTS, RED, remove_at("details/strikesToDisable"), "details", id="red-details-missing-key"
    ),
    _wrong(ALERTS, RED, set_at("details/extra", 1), "details", id="red-details-extra-key"),
    _wrong(
        ALERTS,
        FLAGGED,
        set_at("details/disableDate", 20261202),
        "details/disableDate",
        id="disableDate-integer",
    ),
    _wrong(
        ALERTS,
        UNPAUSED,
        set_at("details/pausedUntil", None),
        "details/pausedUntil",
        id="unpaused-pausedUntil-null",
    ),
    _wrong(ALERTS, RED, set_at("extra", 1), "", id="alert-extra-property"),
    _wrong(ALERTS, RED, remove_at("supersedes"), "", id="alert-without-supersedes"),
    _wrong(ALERTS, RED, set_at("supersedes", None), "supersedes", id="supersedes-null"),
    _wrong(ALERTS, RED, set_at("supersedes", ["strike-1"]), "supersedes/0", id="supersedes-no-id"),
    _wrong(
        ALERTS,
        _withdrawal_record,
        set_at("supersedes", []),
        "supersedes",
        id="withdrawal-of-nothing",
    ),
    _wrong(
        ALERTS,
        _withdrawal_record,
        set_at("severity", "warning"),
        "severity",
        id="withdrawal-not-info",
    ),
    _wrong(
        ALERTS,
        _withdrawal_record,
        remove_at("details/withdrawnType"),
        "details",
        id="withdrawal-details-missing-key",
    ),
    _wrong(
        ALERTS,
        _withdrawal_record,
        set_at("details/causeOccurredAt", "yesterday"),
        "details/causeOccurredAt",
        id="withdrawal-cause-not-a-time",
    ),
    _wrong(ALERTS, RED, remove_at("details"), "", id="alert-missing-property"),
    _wrong(ALERTS, RED, set_at("type", "template_quality_red"), "type", id="type-lower-case"),
    _wrong(ALERTS, RED, set_at("occurredAt", None), "occurredAt", id="occurredAt-null"),
    _wrong(ALERTS, RED, set_at("summary", ""), "summary", id="summary-empty"),
    _wrong(ALERTS, RED, set_at("subject", {}), "subject", id="subject-empty"),
    _wrong(ALERTS, RED, set_at("alertId", "strike-1"), "alertId", id="alertId-without-type"),
    _wrong(
        TEMPLATE_STATE,
        _state_record,
        set_at("redStrikes", -1),
        "redStrikes",
        id="redStrikes-negative",
    ),
    _wrong(
        TEMPLATE_STATE,
        _state_record,
        set_at("redStrikes", 11),
        "redStrikes",
        id="redStrikes-beyond-10",
    ),
    _wrong(
        TEMPLATE_STATE, _state_record, set_at("status", "flagged"), "status", id="status-lower-case"
    ),
    _wrong(
        TEMPLATE_STATE, _state_record, set_at("disabled", "false"), "disabled", id="disabled-string"
    ),
    _wrong(
        TEMPLATE_STATE,
        _state_record,
        set_at("templateId", None),
        "templateId",
        id="templateId-null",
    ),
    _wrong(
        TEMPLATE_STATE,
        _state_record,
        set_at("pausedUntil", "2026-11-25T11:00:00Z"),
        "pausedUntil",
        id="state-pausedUntil-without-milliseconds",
    ),
    _wrong(TEMPLATE_STATE, _state_record, set_at("extra", 1), "", id="state-extra-property"),
    _wrong(
        TEMPLATE_STATE, _state_record, remove_at("disableDate"), "", id="state-missing-property"
    ),
]


@pytest.mark.parametrize(("suffix", "build", "mutate", "path"), WRONG_RECORDS)
def test_wrong_value_is_invalid(
    suffix: str, build: Callable[[], dict[str, Any]], mutate: Mutation, path: str
) -> None:
    check = topic_validator(suffix)
    record = build()
    assert check.is_valid(record), errors(check, record)  # valid before the mutation
    mutate(record)
    assert check.is_valid(record) is False
    found = errors(check, record)
    assert any("/".join(map(str, at)) == path for at, _ in found), found
