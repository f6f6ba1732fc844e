"""The templates job: template events in; each template's state and its alerts out.

Thin wiring around `rules.apply` and `rules.end_pause`, on the stream engine: per
partition batch, the events (keyed by templateId) are applied to their templates'
states in offset order; the changed states go to `whatsapp.template_state`
(compacted) and the alerts, with the corrections of those a late event showed
wrong, to `whatsapp.alerts` (`keyed_state`). The table holds each template's recent
events and its alerts standing besides its record (`processors.history`).

Timers end the pauses whose end has come, in the same loop and transaction as the
events (no internal topic: a timer of the engine writes the table itself): a
stream-time timer when the partition's stream time passes the end, and, on a
partition read to its end (live), a wall-clock timer once the wall clock passes it, so
that a pause ends on time when no later event comes. The alert's id and content are
the pause's (event-time) end either way, so a replay, which leaves it to stream time
until it has caught up, ends it alike (docs/design.md, Time). The timers find the
pauses due in a second table, a schedule of pause ends (`engine.state.schedule`), so a
run walks only those, not every template. The wall-clock timer also shows every
template of the worker's partitions in the gauges.

Exact under crashes as every job on the engine: a batch's states, alerts, table
writes and input offsets commit in one transaction, or none of it does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import Message
from prometheus_client import CollectorRegistry, Counter, Gauge

from processors.alerts import Alert
from processors.dead_letters import poison_letter
from processors.engine.job import (
    Output,
    PartitionBatch,
    StreamTimer,
    Table,
    WallClockTimer,
    json_value,
    key_text,
)
from processors.engine.state.schedule import Schedule
from processors.history import load_state
from processors.keyed_state import KeyedBatch, StateRecords
from processors.normalize import canonical
from processors.normalize.records import TemplateEvent, record_from_value
from processors.templates.rules import (
    StrikePolicy,
    TemplateState,
    apply,
    end_pause,
    template_state_value,
)
from wapipe import topics
from wapipe.logs import get_logger
from wapipe.settings import Settings

log = get_logger(__name__)

_TABLE, _PAUSE_ENDS = "templates", "pause_ends"
# In the schedule's table, outside its range of times: its pauses have been indexed.
_INDEXED = b"indexed"


class TemplateMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "wapipe_templates_events",
            "Template events by outcome: applied, reordered (applied, placed before a newer "
            "event of its template), duplicate, stale (older than every event still held), "
            "pause_ended (the timer ended a pause).",
            ["outcome"],
            registry=registry,
        )
        self.disagreements = Counter(
            "wapipe_templates_strike_disagreements",
            "Meta's strike count (otherInfo.title) differed from ours; Meta's was taken.",
            registry=registry,
        )
        self.alerts = Counter(
            "wapipe_templates_alerts", "Alerts sent, by type.", ["type"], registry=registry
        )
        labels = ["template_id", "template_name", "template_language"]
        self.red_strikes = Gauge(
            "wapipe_template_red_strikes", "RED strikes of a template (3 disables it).", labels,
            registry=registry,
        )  # fmt: skip
        self.paused = Gauge(
            "wapipe_template_paused", "1 while a template is paused.", labels, registry=registry
        )
        self.disabled = Gauge(
            "wapipe_template_disabled", "1 once a template is disabled.", labels, registry=registry
        )

    def show(self, state: TemplateState, now: str) -> None:
        labels = (state.template_id, state.template_name or "", state.template_language or "")
        paused = state.paused_until is not None and state.paused_until > now
        self.red_strikes.labels(*labels).set(state.red_strikes)
        self.paused.labels(*labels).set(int(paused and not state.disabled))
        self.disabled.labels(*labels).set(int(state.disabled))

    def clear_states(self) -> None:
        for gauge in (self.red_strikes, self.paused, self.disabled):
            gauge.clear()


class TemplatesJob:
    name = "templates"
    aligned = False  # keyed as its source: each partition in its own order

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.metrics = TemplateMetrics(registry)
        prefix = settings.topic_prefix
        self.sources = (topics.TEMPLATE.name(prefix),)
        # templateId -> its state (JSON). No TTL: templates are few and live for years.
        # (pause end, templateId) -> "" for each pause on: what the timers walk.
        self.tables = (Table(_TABLE), Table(_PAUSE_ENDS))
        every = settings.template_pause_check_seconds
        self.timers = (StreamTimer(every, self.end_pauses),
                       WallClockTimer(every, self.end_pauses_live))  # fmt: skip
        self.policy = StrikePolicy(
            settings.template_pause_hours, settings.template_disabling_strike
        )
        self.records = StateRecords(
            table=_TABLE, topic=topics.TEMPLATE_STATE.name(prefix), value=template_state_value,
            event_time=lambda state: state.updated_at, load=_load,
            alerts_topic=topics.ALERTS.name(prefix),
        )  # fmt: skip
        self.deadletter = topics.DEADLETTER.name(prefix)

    def process(self, batch: PartitionBatch) -> None:
        keyed = KeyedBatch(batch, self.records, (key_text(record) for record in batch.records))
        pause_ends = Schedule(batch.table(_PAUSE_ENDS))
        for record in batch.records:
            template_id = key_text(record)
            event = record_from_value(TemplateEvent, json_value(record))
            before = keyed.state(template_id)
            outcome = apply(before, event, self.policy)
            label = outcome.ignored or ("reordered" if outcome.reordered else "applied")
            batch.count(self.metrics.events.labels(label))
            if outcome.disagreement is not None:
                batch.count(self.metrics.disagreements)
                log.warning("Meta's strike count differs from ours; taking Meta's",
                            template_id=template_id, ours=outcome.disagreement.ours,
                            metas=outcome.disagreement.metas,
                            title=outcome.disagreement.title)  # fmt: skip
            keyed.update(template_id, outcome.state)
            self._alert(keyed, template_id, outcome.alerts)
            if outcome.state.paused_until != before.paused_until:
                _schedule_end(pause_ends, outcome.state)
        keyed.send()

    def end_pauses(self, batches: Mapping[int, PartitionBatch]) -> None:
        """End the pauses whose end the partition's stream time has passed."""
        for batch in batches.values():
            if batch.stream_time is not None:
                self._end_pauses(batch, batch.stream_time)

    def end_pauses_live(self, batches: Mapping[int, PartitionBatch], now: datetime) -> None:
        """On the partitions read to their end, end the pauses whose end the wall clock has
        passed; show every template in the gauges, as of the wall clock (those of
        partitions gone elsewhere disappear)."""
        at = canonical.format_timestamp(now)
        self.metrics.clear_states()
        for batch in batches.values():
            if batch.caught_up:
                self._end_pauses(batch, now)
            for _, value in batch.table(_TABLE).items():
                self.metrics.show(load_state(orjson.loads(value), _template, TemplateEvent,
                                             events=False), at)  # fmt: skip

    def _end_pauses(self, batch: PartitionBatch, now: datetime) -> None:
        """End the pauses due by `now`: only those, found in the schedule of pause ends."""
        pause_ends = Schedule(batch.table(_PAUSE_ENDS))
        _index_pauses(batch, pause_ends)
        due = list(pause_ends.due(canonical.epoch_ms(now)))
        if not due:
            return
        keyed = KeyedBatch(batch, self.records, {key.decode() for _, key in due})
        at = canonical.format_timestamp(now)
        for end_ms, key in due:
            pause_ends.done(end_ms, key)  # stale (the pause since changed) or ended now
            template_id = key.decode()
            outcome = end_pause(keyed.state(template_id), at)
            if outcome.alerts:
                batch.count(self.metrics.events.labels("pause_ended"))
                keyed.update(template_id, outcome.state)
                self._alert(keyed, template_id, outcome.alerts)
            _schedule_end(pause_ends, outcome.state)  # a pause still on keeps its entry
        keyed.send()

    def dead_letter(self, record: Message, error: BaseException) -> Output:
        return poison_letter(record, error, self.deadletter)

    def partitions_revoked(self, partitions: frozenset[int]) -> None:
        self.metrics.clear_states()  # shown again, for the partitions kept, by the next run

    def _alert(self, keyed: KeyedBatch[TemplateState], key: str, alerts: tuple[Alert, ...]) -> None:
        keyed.alert(key, alerts)
        for alert in alerts:
            keyed.batch.count(self.metrics.alerts.labels(alert.type))


def create_job(settings: Settings, registry: CollectorRegistry) -> TemplatesJob:
    return TemplatesJob(settings, registry)


_FIELDS = tuple(field.name for field in fields(TemplateState) if field.name != "history")


def _load(template_id: str, data: str | bytes | None) -> TemplateState:
    """A template's state as the table has it (its events, its alerts standing)."""
    if data is None:
        return TemplateState(template_id=template_id)
    return load_state(orjson.loads(data), _template, TemplateEvent)


def _schedule_end(pause_ends: Schedule, state: TemplateState) -> None:
    """Put the template's pause end, if it is paused, in the schedule the timers walk."""
    if state.paused_until is not None and not state.disabled:
        pause_ends.add(canonical.timestamp_ms(state.paused_until) or 0, state.template_id.encode())


def _index_pauses(batch: PartitionBatch, pause_ends: Schedule) -> None:
    """Schedule the pauses of a partition whose state predates the schedule (an upgrade
    from a version without it), once: a marker in the schedule's table, outside any
    range of times, says it was done, in the transaction that did it."""
    if pause_ends.view.get(_INDEXED) is not None:
        return
    for _, value in batch.table(_TABLE).items():
        _schedule_end(pause_ends, load_state(orjson.loads(value), _template, TemplateEvent,
                                             events=False))  # fmt: skip
    pause_ends.view.put(_INDEXED, b"")


def _template(raw: dict[str, Any]) -> TemplateState:
    return TemplateState(**{name: raw[name] for name in _FIELDS if name in raw})
