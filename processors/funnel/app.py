"""The funnel job: receipts and replies in; each message's state, the funnel windows
and their rate alerts out.

On the stream engine, over four co-partitioned sources (partition p of each with
partition p of the tables), thin wiring around `batch`'s two folds:
- `whatsapp.inbound`: a customer's reply to one of our messages is re-keyed by the
  umid it answers, to `<prefix>.funnel.replies`;
- `whatsapp.status` and `<prefix>.funnel.replies` (both keyed by umid): merged into
  the messages' states (`messages` table); the changed states go to
  `whatsapp.message_state`, and the batch's changes to the windows, one delta per
  window, to `<prefix>.funnel.deltas` keyed by sub-account;
- `<prefix>.funnel.deltas`: summed into the windows' totals (`windows` table) and
  the sub-accounts' windows (`subaccount_windows`, for the rate alerts); each
  touched window's total goes to `whatsapp.funnel`; the billing windows' deltas,
  summed into `billing`, go to `whatsapp.billing`. The hops' progress records
  (`deltas.Progress`: this job's merge hop's, sent by a wall-clock timer, and the
  conversations job's) are kept in `progress`; a sub-account's window is decided once
  the lowest of them passes its end plus the alerts' delay, its alerts to
  `whatsapp.alerts`.

Every hop commits in its batch's transaction with the offsets it read, so each
reply, delta and total is written once: plain sums are exact (`batch` says why).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import orjson
from confluent_kafka import Message
from prometheus_client import CollectorRegistry

from processors.alerts import alert_value
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
from processors.engine.state.schedule import Schedule
from processors.funnel.batch import MessageFold, SubAccountWindow, TotalsFold, decide
from processors.funnel.billing import BillingKey, billing_record, sum_deltas
from processors.funnel.deltas import DeltaWindow, Progress, progressed_to, send_deltas
from processors.funnel.metrics import FunnelMetrics, WindowGauges
from processors.funnel.rate_alerts import RateThresholds
from processors.funnel.state import (
    Observation,
    dump_state,
    load_state,
    message_state_value,
    observe_receipt,
    observe_reply,
)
from processors.funnel.windows import Counts, WindowKey, funnel_record
from processors.normalize import canonical
from processors.normalize.records import InboundMessage, Receipt, record_from_value
from wapipe import topics
from wapipe.settings import Settings

_GAUGE_SWEEP_SECONDS = 10.0
_PROGRESS_SECONDS = 1.0  # of the wall clock: how often the merge hop says how far it got
_MESSAGES, _WINDOWS, _SUBACCOUNTS = "messages", "windows", "subaccount_windows"
_BILLING, _ALERTS_DUE, _PROGRESS = "billing", "alerts_due", "progress"


class FunnelJob:
    name = "funnel"
    aligned = True  # the replies, re-keyed by umid: their merge decides window finality

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.metrics, self.gauges = FunnelMetrics(registry), WindowGauges(registry)
        prefix = settings.topic_prefix
        self.status, self.inbound = topics.STATUS.name(prefix), topics.INBOUND.name(prefix)
        self.replies = topics.FUNNEL_REPLIES.name(prefix)
        self.deltas = topics.FUNNEL_DELTAS.name(prefix)
        self.sources = (self.status, self.replies, self.inbound, self.deltas)
        window_days = settings.funnel_window_days + 1  # a final window takes no more deltas
        self.tables = (
            # umid -> its state (JSON); the TTL counts from the message's last event.
            Table(_MESSAGES, ttl_days=settings.message_state_days),
            Table(_WINDOWS, ttl_days=window_days),  # window id -> its total counts
            Table(_SUBACCOUNTS, ttl_days=window_days),  # -> {"counts", "alerted", "decided"}
            Table(_BILLING, ttl_days=window_days),  # billing window id -> its total counts
            Table(_ALERTS_DUE),  # (decided at, sub-account window id) -> "" until decided
            Table(_PROGRESS),  # "<hop>|<partition>" -> its progress (`deltas.Progress`)
        )
        self.timers = (
            WallClockTimer(_PROGRESS_SECONDS, self.send_progress),
            WallClockTimer(_GAUGE_SWEEP_SECONDS, self.sweep_gauges),
        )
        self.message_state = topics.MESSAGE_STATE.name(prefix)
        self.funnel = topics.FUNNEL.name(prefix)
        self.billing = topics.BILLING.name(prefix)
        self.rate_card = settings.rate_card
        self.alerts = topics.ALERTS.name(prefix)
        self.deadletter = topics.DEADLETTER.name(prefix)
        self.final_after = timedelta(days=settings.funnel_window_days)
        self.limits = RateThresholds.of(settings)
        self.progress = Progress("funnel", (self.status, self.replies, self.inbound),
                                 self.deltas, self.limits.to_decision)  # fmt: skip

    def process(self, batch: PartitionBatch) -> None:
        if batch.topic == self.deltas:
            self._sum_deltas(batch)
        elif batch.topic == self.inbound:
            self._rekey_replies(batch)
        else:
            self._merge(batch)

    def send_progress(self, batches: Mapping[int, PartitionBatch], now: datetime) -> None:
        """Tell the deltas hop how far the merge hop has sent its deltas (`deltas.Progress`)."""
        self.progress.send(batches, now)

    def sweep_gauges(self, _batches: Mapping[int, PartitionBatch], now: datetime) -> None:
        """The gauges show the current windows: the wall clock says which are current."""
        self.gauges.sweep(now)

    def dead_letter(self, record: Message, error: BaseException) -> Output:
        return poison_letter(record, error, self.deadletter)

    def partitions_revoked(self, partitions: frozenset[int]) -> None:
        self.gauges.clear()  # the windows of the partitions kept come back with their totals
        self.progress.forget(partitions)

    # --- the three hops ------------------------------------------------------------------------
    def _rekey_replies(self, batch: PartitionBatch) -> None:
        for record in batch.records:
            link = observe_reply(record_from_value(InboundMessage, json_value(record)))
            if link is not None:
                umid, observation = link
                batch.send(self.replies, umid.encode(), orjson.dumps(observation),
                           timestamp_ms=record_time_ms(record))  # fmt: skip
                batch.count(self.metrics.observations.labels("reply"))

    def _merge(self, batch: PartitionBatch) -> None:
        is_receipt = batch.topic == self.status
        observations: list[tuple[str, Observation]] = []
        for record in batch.records:
            if is_receipt:
                receipt = record_from_value(Receipt, json_value(record))
                observations.append((receipt.umid, observe_receipt(receipt)))
            else:
                observations.append((key_text(record), Observation(**json_value(record))))
        if is_receipt:
            batch.count(self.metrics.observations.labels("status"), len(observations))
        messages = batch.table(_MESSAGES)
        stored = messages.get_many({umid.encode() for umid, _ in observations})
        fold = MessageFold({key.decode(): load_state(value) for key, value in stored.items()
                            if value is not None}, self.final_after)  # fmt: skip
        for (umid, observation), at in zip(observations, batch.record_stream_times(), strict=True):
            fold.add(umid, observation, at)
        for umid, state in fold.changed.items():
            key = umid.encode()
            batch.send(self.message_state, key, orjson.dumps(message_state_value(state)),
                       timestamp_ms=canonical.timestamp_ms(state.last_event_at))  # fmt: skip
            messages.put(key, dump_state(state))
        for_alerts = self.limits.horizon()
        deltas, late_changes = fold.window_deltas(for_alerts)
        billing_deltas, late_billing = fold.billing_deltas()
        kinds: dict[str, Iterable[tuple[DeltaWindow, Counts]]] = {
            "window": deltas.items(), "billing": billing_deltas.items(),
            "alert": for_alerts.deltas.items(),
        }  # fmt: skip
        send_deltas(batch, self.deltas, kinds)
        batch.count(self.metrics.merged, len(observations))
        batch.count(self.metrics.state_changes, len(fold.changed))
        batch.count(self.metrics.late_changes, late_changes + late_billing)

    def _sum_deltas(self, batch: PartitionBatch) -> None:
        deltas: list[dict[str, Any]] = []
        billing: list[dict[str, Any]] = []
        for_alerts: list[tuple[str, Any]] = []  # (sub-account window id, counts)
        progress: list[dict[str, Any]] = []
        for message in batch.records:
            delta = json_value(message)
            if "billing" in delta:
                billing.append(delta)
            elif "alert" in delta:
                for_alerts.append((delta["alert"], delta["counts"]))
            elif "progress" in delta:
                progress.append(delta)
            else:
                deltas.append(delta)
        if billing:
            self._sum_billing(batch, billing)
        windows, subaccounts = batch.table(_WINDOWS), batch.table(_SUBACCOUNTS)
        keys = [WindowKey.decode(delta["window"]) for delta in deltas]
        stored = windows.get_many({key.encode().encode() for key in keys})
        stored_subaccounts = subaccounts.get_many({whole_id.encode()
                                                   for whole_id, _ in for_alerts})  # fmt: skip
        fold = TotalsFold(
            {key.decode(): orjson.loads(value) for key, value in stored.items() if value},
            {key.decode(): _subaccount_window(value)
             for key, value in stored_subaccounts.items() if value},
            self.limits,
        )  # fmt: skip
        for key, delta in zip(keys, deltas, strict=True):
            fold.add(key, delta["counts"])
        for whole_id, counts in for_alerts:
            fold.add_for_alerts(whole_id, counts)
        totals = fold.changed_totals()
        for window_id, counts in totals.items():
            key = WindowKey.decode(window_id)
            record = funnel_record(key, counts)
            batch.send(self.funnel, key.sub_account_id.encode(), orjson.dumps(record),
                       timestamp_ms=canonical.timestamp_ms(key.start))  # fmt: skip
            windows.put(window_id.encode(), orjson.dumps(counts))
            self.gauges.show(key, record)
        alerts_due = Schedule(batch.table(_ALERTS_DUE))
        for whole_id, subaccount in fold.touched_subaccounts.items():
            subaccounts.put(whole_id.encode(), orjson.dumps(subaccount))
            alerts_due.add(self.limits.decides_at(WindowKey.decode(whole_id)), whole_id.encode())
        batch.count(self.metrics.window_records, len(totals))
        batch.count(self.metrics.late_for_alerts, fold.late_for_alerts)
        lowest = progressed_to(batch.table(_PROGRESS), progress)
        if lowest is not None:
            self._decide(batch, lowest)

    def _decide(self, batch: PartitionBatch, until_ms: int) -> None:
        """Decide the sub-accounts' windows due by `until_ms`; send their alerts."""
        alerts_due = Schedule(batch.table(_ALERTS_DUE))
        due = list(alerts_due.due(until_ms))
        if not due:
            return
        subaccounts = batch.table(_SUBACCOUNTS)
        stored = subaccounts.get_many({whole for _, whole in due})
        for decides_at, whole in due:
            alerts_due.done(decides_at, whole)
            value = stored.get(whole)
            if value is None:  # gone with the table's time-to-live
                continue
            window = _subaccount_window(value)
            if window.decided:
                continue
            key = WindowKey.decode(whole.decode())
            decided, alerts = decide(key, window, self.limits)
            subaccounts.put(whole, orjson.dumps(decided))
            for alert in alerts:
                batch.send(self.alerts, key.sub_account_id.encode(),
                           orjson.dumps(alert_value(alert)),
                           timestamp_ms=canonical.timestamp_ms(alert.occurred_at))  # fmt: skip
                batch.count(self.metrics.alerts.labels(alert.type, key.sub_account_id or "unknown"))
                self.gauges.show_alert(alert.type, key)

    def _sum_billing(self, batch: PartitionBatch, deltas: list[dict[str, Any]]) -> None:
        table = batch.table(_BILLING)
        stored = table.get_many({delta["billing"].encode() for delta in deltas})
        known = {key.decode(): orjson.loads(value) for key, value in stored.items() if value}
        totals = sum_deltas(known, ((delta["billing"], delta["counts"]) for delta in deltas))
        for window_id, counts in totals.items():
            key = BillingKey.decode(window_id)
            record = billing_record(key, counts, self.rate_card)
            batch.send(self.billing, key.sub_account_id.encode(), orjson.dumps(record),
                       timestamp_ms=canonical.timestamp_ms(key.start))  # fmt: skip
            table.put(window_id.encode(), orjson.dumps(counts))


def create_job(settings: Settings, registry: CollectorRegistry) -> FunnelJob:
    return FunnelJob(settings, registry)


def _subaccount_window(value: bytes) -> SubAccountWindow:
    raw = orjson.loads(value)  # without "decided": written before windows were decided
    return SubAccountWindow(raw["counts"], tuple(raw["alerted"]), raw.get("decided", False))
