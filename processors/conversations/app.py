"""The conversations job: customers' inbound messages and our receipts in; each
customer's 24-hour service window, and the free-form messages sent outside it, out.

On the stream engine, two hops (each commits in its batch's transaction with the
offsets it read, so every record between them is written once):
- `whatsapp.inbound` and `whatsapp.status` (keyed by umid): each customer's inbound
  message and each receipt, re-keyed by its (sub-account, customer) pair to
  `<prefix>.conversations.events`; one without a sub-account or a customer, or of
  another channel, goes nowhere (counted);
- `<prefix>.conversations.events` (keyed by pair): merged into the pairs' states
  (`pairs` table, `rules.Conversation`); a changed service window goes to
  `whatsapp.service_windows`, and the batch's changes to the funnel windows'
  outside-window counts to `<prefix>.funnel.deltas` (keyed by sub-account), which the
  funnel job sums into `whatsapp.funnel` beside its own changes; and the changes to
  each sub-account's customers' reach (the times they got a business-initiated
  message, `processors/limits`) to `<prefix>.limits.senders`.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import orjson
from confluent_kafka import Message
from prometheus_client import CollectorRegistry, Counter

from processors.conversations.batch import Event, PairFold, inbound_event, receipt_event
from processors.conversations.rules import (
    customer_of,
    dump_conversation,
    inbound_at,
    load_conversation,
    observe_receipt,
    service_window_key,
)
from processors.dead_letters import poison_letter
from processors.engine.job import (
    Output,
    PartitionBatch,
    Table,
    WallClockTimer,
    json_value,
    key_text,
    record_time_ms,
)
from processors.funnel.deltas import Progress, send_deltas
from processors.funnel.rate_alerts import RateThresholds
from processors.normalize import canonical
from processors.normalize.records import InboundMessage, Receipt, record_from_value
from wapipe import topics
from wapipe.settings import Settings

_PAIRS = "pairs"
_PROGRESS_SECONDS = 1.0  # of the wall clock: how often it says how far it got


class ConversationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.routed = Counter(
            "wapipe_conversations_routed",
            "Inbound messages and receipts by source and outcome: routed (to their pair), "
            "no_pair (no sub-account or customer), not_applicable (another channel, an echo).",
            ["source", "outcome"],
            registry=registry,
        )
        self.events = Counter(
            "wapipe_conversations_events",
            "Pair events by outcome: merged, or stale (older than WAPIPE_MESSAGE_STATE_DAYS).",
            ["outcome"],
            registry=registry,
        )
        self.service_windows = Counter(
            "wapipe_conversations_service_window_records",
            "whatsapp.service_windows records written (one per changed window and batch).",
            registry=registry,
        )
        self.late_changes = Counter(
            "wapipe_conversations_late_changes",
            "Funnel window changes dropped because their window was final "
            "(WAPIPE_FUNNEL_WINDOW_DAYS past its end).",
            registry=registry,
        )


class ConversationsJob:
    name = "conversations"
    aligned = True  # the pair events: their fold decides finality and retention by time

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.metrics = ConversationMetrics(registry)
        prefix = settings.topic_prefix
        self.inbound, self.status = topics.INBOUND.name(prefix), topics.STATUS.name(prefix)
        self.events = topics.CONVERSATIONS_EVENTS.name(prefix)
        self.sources = (self.inbound, self.status, self.events)
        # pair -> its state (JSON); the TTL counts from the pair's last change.
        self.tables = (Table(_PAIRS, ttl_days=settings.message_state_days),)
        self.timers = (WallClockTimer(_PROGRESS_SECONDS, self.send_progress),)
        self.service_windows = topics.SERVICE_WINDOWS.name(prefix)
        self.deltas = topics.FUNNEL_DELTAS.name(prefix)
        self.senders = topics.LIMITS_SENDERS.name(prefix)
        self.deadletter = topics.DEADLETTER.name(prefix)
        self.retention = timedelta(days=settings.message_state_days)
        self.final_after = timedelta(days=settings.funnel_window_days)
        self.rate_alerts = RateThresholds.of(settings)  # its share of them: the free-form counts
        self.progress = Progress("conversations", (self.events, self.inbound, self.status),
                                 self.deltas, self.rate_alerts.to_decision)  # fmt: skip

    def process(self, batch: PartitionBatch) -> None:
        if batch.topic == self.events:
            self._fold(batch)
        else:
            self._route(batch)

    def dead_letter(self, record: Message, error: BaseException) -> Output:
        return poison_letter(record, error, self.deadletter)

    def partitions_revoked(self, partitions: frozenset[int]) -> None:
        self.progress.forget(partitions)

    def send_progress(self, batches: Mapping[int, PartitionBatch], now: datetime) -> None:
        """Tell the funnel's deltas hop how far this job has sent its share of the rate
        alerts' deltas (`funnel.deltas.Progress`)."""
        self.progress.send(batches, now)

    # --- the two hops ------------------------------------------------------------------------
    def _route(self, batch: PartitionBatch) -> None:
        source = "inbound" if batch.topic == self.inbound else "receipt"
        outcomes: collections.Counter[str] = collections.Counter()
        for record in batch.records:
            outcome, routed = self._pair_event(source, json_value(record))
            outcomes[outcome] += 1
            if routed is None:
                continue
            pair, event = routed
            batch.send(self.events, pair.encode(), orjson.dumps(event),
                       timestamp_ms=record_time_ms(record))  # fmt: skip
        for outcome, count in outcomes.items():
            batch.count(self.metrics.routed.labels(source, outcome), count)

    def _pair_event(
        self, source: str, value: dict[str, Any]
    ) -> tuple[str, tuple[str, Event] | None]:
        """(outcome, (pair, its event) when routed)."""
        event: Event | None
        if source == "inbound":
            message = record_from_value(InboundMessage, value)
            at = inbound_at(message)
            sub_account, customer = message.sub_account_id, customer_of(
                message.msisdn, message.channel_user_id)  # fmt: skip
            event = None if at is None else inbound_event(at)
        else:
            receipt = record_from_value(Receipt, value)
            observation = observe_receipt(receipt)
            sub_account, customer = receipt.sub_account_id, customer_of(
                receipt.msisdn, receipt.channel_user_id)  # fmt: skip
            event = None if observation is None else receipt_event(receipt.umid, observation)
        if event is None:
            return "not_applicable", None
        if not sub_account or not customer:
            return "no_pair", None
        return "routed", (service_window_key(sub_account, customer), event)

    def _fold(self, batch: PartitionBatch) -> None:
        pairs = [(key_text(record), json_value(record)) for record in batch.records]
        table = batch.table(_PAIRS)
        stored = table.get_many({pair.encode() for pair, _ in pairs})
        fold = PairFold({key.decode(): load_conversation(value) for key, value in stored.items()
                         if value is not None}, self.retention)  # fmt: skip
        for (pair, event), at in zip(pairs, batch.record_stream_times(), strict=True):
            fold.add(pair, event, at)
        service_windows = fold.service_windows()
        for pair, record in service_windows.items():
            last_inbound_at = str(record["lastInboundAt"])  # a record has had an inbound
            batch.send(self.service_windows, pair.encode(), orjson.dumps(record),
                       timestamp_ms=canonical.timestamp_ms(last_inbound_at))  # fmt: skip
        batch.count(self.metrics.service_windows, len(service_windows))
        for_alerts = self.rate_alerts.horizon()
        deltas, late = fold.window_deltas(self.final_after, for_alerts)
        kinds = {"window": deltas.items(), "alert": for_alerts.deltas.items()}
        send_deltas(batch, self.deltas, kinds, at_window_start=True)
        for sub_account, reach in fold.reach_deltas().items():
            batch.send(self.senders, sub_account.encode(), orjson.dumps({"reach": reach}))
        for pair, state in fold.to_store().items():
            table.put(pair.encode(), dump_conversation(state))
        batch.count(self.metrics.events.labels("merged"), len(pairs) - fold.stale)
        batch.count(self.metrics.events.labels("stale"), fold.stale)
        batch.count(self.metrics.late_changes, late)


def create_job(settings: Settings, registry: CollectorRegistry) -> ConversationsJob:
    return ConversationsJob(settings, registry)
