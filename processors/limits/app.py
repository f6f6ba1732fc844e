"""The limits job: the distinct customers each business number reached with
business-initiated messages in the rolling 24 hours, against its messaging limit.

On the stream engine, three hops (each commits in its batch's transaction with the
offsets it read, so every record between them is written once):
- `whatsapp.inbound` (keyed by umid): the channel each customer wrote to, re-keyed by
  sub-account to `<prefix>.limits.senders`, where the conversations job also sends each
  sub-account's changes of reach;
- `<prefix>.limits.senders` (keyed by sub-account): summed per sub-account (`senders`
  table) and sent on to the subject it resolves to (`senders.subject_of`: its number,
  or itself), the whole reach moving when the subject changes, to
  `<prefix>.limits.subjects`;
- `<prefix>.limits.subjects` and `whatsapp.phone_state` (keyed by number): summed per
  subject with its tier (`subjects` table); each subject touched is evaluated, and
  every subject again as stream time moves on (customers leave the window with time
  alone): a changed status goes to `whatsapp.messaging_limits`, each crossing of the
  near share and of the limit once to `whatsapp.alerts`.

Every evaluation is at the stream time of `limits.subjects` (the reach's clock), never
the wall clock: a record's `at` is the stream time it is as of. A stream-time timer
evaluates every subject as that time moves on; on a partition read to its end, a
wall-clock timer evaluates them at it too (the wall clock decides when, not what), so
that live and replayed pipelines both end evaluated as of their last event
(docs/design.md, Time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

import orjson
from confluent_kafka import Message
from prometheus_client import CollectorRegistry, Counter, Gauge

from processors.alerts import alert_value
from processors.dead_letters import poison_letter
from processors.engine.job import (
    Output,
    PartitionBatch,
    StreamTimer,
    Table,
    WallClockTimer,
    json_value,
    key_text,
    record_time_ms,
)
from processors.funnel.state import Attribute
from processors.limits.rules import ReachSteps, add_steps
from processors.limits.senders import (
    Sender,
    dump_sender,
    latest_channel,
    load_sender,
    moves,
    subject_kind,
)
from processors.limits.subjects import (
    Evaluation,
    Subject,
    dump_subject,
    evaluate,
    load_subject,
    settle_cut,
    with_changes,
)
from processors.normalize import canonical
from processors.normalize.records import InboundMessage, record_from_value
from wapipe import topics
from wapipe.settings import Settings

_SENDERS, _SUBJECTS = "senders", "subjects"


class LimitMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "wapipe_limits_records",
            "whatsapp.messaging_limits records written, by cause: batch (new reach or "
            "tier) or timer (customers left the 24-hour window).",
            ["cause"],
            registry=registry,
        )
        self.alerts = Counter(
            "wapipe_limits_alerts", "Alerts sent, by type.", ["type"], registry=registry
        )
        self.moves = Counter(
            "wapipe_limits_subject_moves",
            "Sub-accounts whose reach moved to another subject (a number learnt or set).",
            registry=registry,
        )
        labels = ["subject", "subject_kind"]
        self.reached = Gauge(
            "wapipe_messaging_limit_reached_customers",
            "Distinct customers a number reached with business-initiated messages in the last "
            "24 hours.",
            labels,
            registry=registry,
        )
        self.limit = Gauge(
            "wapipe_messaging_limit_customers",
            "A number's messaging limit: distinct customers per rolling 24 hours (absent when "
            "unlimited or unknown).",
            labels,
            registry=registry,
        )

    def show(self, record: Mapping[str, object]) -> None:
        labels = (str(record["subject"]), str(record["subjectKind"]))
        self.reached.labels(*labels).set(record["reached"])  # type: ignore[arg-type]
        if record["limit"] is not None:
            self.limit.labels(*labels).set(record["limit"])  # type: ignore[arg-type]

    def clear(self) -> None:
        self.reached.clear()
        self.limit.clear()


class LimitsJob:
    name = "limits"
    aligned = True  # the senders and subjects, re-keyed: their sums settle by time

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.metrics = LimitMetrics(registry)
        prefix = settings.topic_prefix
        self.inbound = topics.INBOUND.name(prefix)
        self.senders = topics.LIMITS_SENDERS.name(prefix)
        self.subjects = topics.LIMITS_SUBJECTS.name(prefix)
        self.phone_state = topics.PHONE_STATE.name(prefix)
        self.sources = (self.inbound, self.senders, self.subjects, self.phone_state)
        # Both tables are rewritten whenever their key's reach or tier changes; the TTL
        # forgets a sub-account or number silent for longer than the state is of use.
        self.tables = (Table(_SENDERS, ttl_days=settings.message_state_days),
                       Table(_SUBJECTS, ttl_days=settings.message_state_days))  # fmt: skip
        every = settings.messaging_limit_check_seconds
        self.timers = (StreamTimer(every, self.evaluate_all, source=self.subjects),
                       WallClockTimer(every, self.evaluate_caught_up))  # fmt: skip
        self._evaluated_at: dict[int, datetime] = {}  # partition -> its last full evaluation
        self.limits = topics.MESSAGING_LIMITS.name(prefix)
        self.alerts = topics.ALERTS.name(prefix)
        self.deadletter = topics.DEADLETTER.name(prefix)
        self.numbers = settings.sender_numbers
        self.near_share = settings.messaging_limit_near_share

    def process(self, batch: PartitionBatch) -> None:
        if batch.topic == self.inbound:
            self._route_channels(batch)
        elif batch.topic == self.senders:
            self._sum_senders(batch)
        else:
            self._sum_subjects(batch)

    def evaluate_all(self, batches: Mapping[int, PartitionBatch]) -> None:
        """Every subject of these partitions, at their subjects' stream time."""
        for batch in batches.values():
            self._evaluate_every(batch)

    def evaluate_caught_up(self, batches: Mapping[int, PartitionBatch], _now: datetime) -> None:
        """Every subject of the partitions read to their end, at their subjects' stream
        time, once per stream time."""
        for partition, batch in batches.items():
            if batch.caught_up and batch.stream_time_of(self.subjects) != self._evaluated_at.get(
                partition
            ):
                self._evaluate_every(batch)

    def _evaluate_every(self, batch: PartitionBatch) -> None:
        now = batch.stream_time_of(self.subjects)
        if now is None:
            return
        table = batch.table(_SUBJECTS)
        for key, value in list(table.items()):  # read all first: evaluating writes
            subject = key.decode()
            evaluation = evaluate(subject, load_subject(value), now, self.near_share)
            self._publish(batch, subject, evaluation, "timer")
        self._evaluated_at[batch.partition] = now

    def dead_letter(self, record: Message, error: BaseException) -> Output:
        return poison_letter(record, error, self.deadletter)

    def partitions_revoked(self, partitions: frozenset[int]) -> None:
        self.metrics.clear()  # the subjects kept show again at their next evaluation
        for partition in partitions:
            self._evaluated_at.pop(partition, None)

    # --- the three hops ------------------------------------------------------------------------
    def _route_channels(self, batch: PartitionBatch) -> None:
        for record in batch.records:
            message = record_from_value(InboundMessage, json_value(record))
            at = message.occurred_at or message.received_at
            if (message.echo or message.channel not in (None, "whatsapp")
                    or not message.sub_account_id or not message.channel_id or not at):  # fmt: skip
                continue
            batch.send(self.senders, message.sub_account_id.encode(),
                       orjson.dumps({"channel": message.channel_id, "at": at}),
                       timestamp_ms=record_time_ms(record))  # fmt: skip

    def _sum_senders(self, batch: PartitionBatch) -> None:
        table = batch.table(_SENDERS)
        found = table.get_many({record.key() or b"" for record in batch.records})
        stored = {key.decode(): load_sender(value) for key, value in found.items() if value}
        changes: dict[str, ReachSteps] = {}
        channels: dict[str, Attribute | None] = {}
        for record in batch.records:
            sub_account, value = key_text(record), json_value(record)
            if sub_account not in channels:
                channels[sub_account] = stored.get(sub_account, Sender()).channel
            if "reach" in value:
                changes[sub_account] = add_steps(changes.get(sub_account, {}), value["reach"])
            else:
                channels[sub_account] = latest_channel(channels[sub_account], value["at"],
                                                       value["channel"])  # fmt: skip
        if batch.stream_time is None:  # records always have a time: a broken producer
            raise ValueError("limits.senders records without a timestamp")
        cut = settle_cut(batch.stream_time)
        for sub_account, channel in channels.items():
            before = stored.get(sub_account, Sender())
            after, sends = moves(sub_account, before, changes.get(sub_account, {}), channel,
                                 self.numbers, cut)  # fmt: skip
            if len(sends) > 1:
                batch.count(self.metrics.moves)
            for subject, reach in sends.items():
                batch.send(self.subjects, subject.encode(), orjson.dumps({"reach": reach}))
            if after != before:
                table.put(sub_account.encode(), dump_sender(after))

    def _sum_subjects(self, batch: PartitionBatch) -> None:
        table = batch.table(_SUBJECTS)
        stored = table.get_many({record.key() or b"" for record in batch.records})
        subjects: dict[str, Subject] = {}
        for record in batch.records:
            key = key_text(record)
            if key not in subjects:
                found = stored.get(key.encode())
                subjects[key] = load_subject(found) if found else Subject()
            value = json_value(record)
            if batch.topic == self.phone_state:
                subjects[key] = replace(subjects[key], tier=value.get("currentLimit"))
            else:
                subjects[key] = with_changes(subjects[key], value["reach"])
        # The reach's clock; a tier before any reach, at the tier's own.
        now = batch.stream_time_of(self.subjects) or batch.stream_time
        if now is None:  # records always have a time: a broken producer
            raise ValueError(f"{batch.topic} records without a timestamp")
        for key, state in subjects.items():
            self._publish(batch, key, evaluate(key, state, now, self.near_share), "batch")

    def _publish(self, batch: PartitionBatch, key: str, evaluation: Evaluation, cause: str) -> None:
        record = evaluation.record
        if record is not None:
            batch.send(self.limits, str(record["subject"]).encode(), orjson.dumps(record),
                       timestamp_ms=canonical.timestamp_ms(str(record["at"])))  # fmt: skip
            batch.count(self.metrics.records.labels(cause))
        subject = subject_kind(key)[1]
        for alert in evaluation.alerts:
            batch.send(self.alerts, subject.encode(), orjson.dumps(alert_value(alert)),
                       timestamp_ms=canonical.timestamp_ms(alert.occurred_at))  # fmt: skip
            batch.count(self.metrics.alerts.labels(alert.type))
        if evaluation.state.published is not None:
            self.metrics.show(evaluation.state.published)
        # On the timer, a subject whose record and alerts stand is not rewritten: its
        # state differs only by a later settle cut, which changes no count still asked
        # for (and a big number's reach would fill the changelog every few seconds).
        if cause == "batch" or record is not None or evaluation.alerts:
            batch.table(_SUBJECTS).put(key.encode(), dump_subject(evaluation.state))


def create_job(settings: Settings, registry: CollectorRegistry) -> LimitsJob:
    return LimitsJob(settings, registry)
