"""wapipe's Grafana dashboards as code: `python deploy/grafana/dashboards.py` writes
them to deploy/grafana/dashboards/*.json, which Grafana provisions from disk.

Plain JSON from a short script rather than a dashboard SDK: the panels are a
handful of time series, tables and stats, Grafana's JSON model for them is
stable, and the script is the one place a reviewer reads every query. The tests
check that the committed files are this script's output and that every query
names a metric the code exports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "wapipe-prometheus"}
Panel = dict[str, Any]


def panel(title: str, kind: str, queries: list[tuple[str, str]], *, unit: str = "short",
          width: int = 12, height: int = 8, description: str = "",
          defaults: dict[str, Any] | None = None,
          options: dict[str, Any] | None = None) -> Panel:  # fmt: skip
    """One panel; `queries` are (PromQL, legend) pairs; `defaults` adds to its field
    defaults (min, max, thresholds), `options` are the panel type's own."""
    return {
        "title": title,
        "type": kind,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"w": width, "h": height},
        "fieldConfig": {"defaults": {"unit": unit, **(defaults or {})}, "overrides": []},
        "options": options or {},
        "targets": [
            {"refId": chr(ord("A") + n), "datasource": DATASOURCE, "expr": expr,
             "legendFormat": legend, **({"format": "table", "instant": True}
                                        if kind == "table" else {})}
            for n, (expr, legend) in enumerate(queries)
        ],
    }  # fmt: skip


def variable(name: str, label: str, metric: str) -> dict[str, Any]:
    """A template variable listing the values of label `name` of `metric`."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": f"label_values({metric}, {name})", "refId": name},
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
    }


def dashboard(uid: str, title: str, panels: list[Panel],
              variables: list[dict[str, Any]] = ()) -> dict[str, Any]:  # type: ignore[assignment]  # fmt: skip
    """Lay the panels out left to right, top to bottom, in a 24-column grid."""
    x = y = row_height = 0
    for number, item in enumerate(panels, start=1):
        grid = item["gridPos"]
        if x + grid["w"] > 24:
            x, y, row_height = 0, y + row_height, 0
        grid.update(x=x, y=y)
        item["id"] = number
        x, row_height = x + grid["w"], max(row_height, grid["h"])
    return {
        "uid": uid,
        "title": title,
        "tags": ["wapipe"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": list(variables)},
        "annotations": {"list": []},
        "panels": panels,
    }


def window_variable() -> dict[str, Any]:
    """The funnel window size to show (the gauges hold both sizes' current windows)."""
    return {
        "name": "window",
        "label": "Window",
        "type": "custom",
        "query": "1h,1m",
        "current": {"text": "1h", "value": "1h"},
        "options": [{"text": w, "value": w, "selected": w == "1h"} for w in ("1h", "1m")],
    }


_FUNNEL = 'window="$window", sub_account_id=~"$sub_account_id", country=~"$country"'
# wapipe_funnel_window_messages also counts free-form messages sent outside the service
# window in `stage` (the guard-rails dashboard shows them): the funnel's own panels keep
# to the transitions (processors/funnel/windows.py, STAGES).
_TRANSITIONS = 'stage=~"sent|delivered|read|replied|undelivered"'


def funnel() -> dict[str, Any]:
    stages = "wapipe_funnel_window_messages"
    return dashboard("wapipe-funnel", "wapipe / delivery funnel", [
        panel("Messages per stage (current window)", "timeseries",
              [(f'sum by (stage) ({stages}{{{_FUNNEL}, {_TRANSITIONS}}})', "{{stage}}")],
              description="Transitions in the current window, summed over the selection."),
        panel("Rates (current window)", "timeseries",
              [(f'avg by (rate) (wapipe_funnel_window_rate{{{_FUNNEL}}})', "{{rate}}")],
              unit="percentunit",
              description="Ratios of transitions in the same window "
                          "(docs/design.md, funnel windows)."),
        panel("Volume by sub-account and country", "table",
              [(f"sum by (sub_account_id, country, stage) "
                f"({stages}{{{_FUNNEL}, {_TRANSITIONS}}})", "")],
              width=24),
        panel("Time to deliver", "timeseries",
              [(f'max by (quantile) (wapipe_funnel_window_time_to_deliver_seconds{{{_FUNNEL}}})',
                "p{{quantile}}")], unit="s"),
        panel("Time to read", "timeseries",
              [(f'max by (quantile) (wapipe_funnel_window_time_to_read_seconds{{{_FUNNEL}}})',
                "p{{quantile}}")], unit="s"),
        panel("Undelivered by error code", "timeseries",
              [(f'sum by (error_code) (wapipe_funnel_window_undelivered_messages{{{_FUNNEL}}})',
                "{{error_code}}")], width=24),
        panel("Rate alerts active", "table",
              [("wapipe_funnel_rate_alert_active == 1", "")], width=24),
    ], [
        window_variable(),
        variable("sub_account_id", "Sub-account", stages),
        variable("country", "Country", stages),
    ])  # fmt: skip


def quality() -> dict[str, Any]:
    return dashboard("wapipe-quality", "wapipe / templates and phone numbers", [
        panel("Templates with RED strikes", "table",
              [("wapipe_template_red_strikes > 0", "")], width=24,
              description="Strike 3 disables a template for good (docs/design.md, templates)."),
        panel("Paused templates", "stat", [("sum(wapipe_template_paused)", "paused")], width=8),
        panel("Disabled templates", "stat",
              [("sum(wapipe_template_disabled)", "disabled")], width=8),
        panel("Strike disagreements with Meta", "stat",
              [("sum(increase(wapipe_templates_strike_disagreements_total[24h]))", "24 h")],
              width=8),
        panel("Phone numbers by messaging tier", "table",
              [("wapipe_phone_messaging_tier_rank", "")], width=12,
              description="The value is the tier's rank: TIER_250 = 2 ... unlimited = 7."),
        panel("Flagged phone numbers", "table", [("wapipe_phone_flagged == 1", "")], width=12),
        panel("Template and phone alerts sent", "timeseries",
              [("sum by (type) (increase(wapipe_templates_alerts_total[1h]))", "{{type}}"),
               ("sum by (type) (increase(wapipe_phones_alerts_total[1h]))", "{{type}}")],
              width=24),
    ])  # fmt: skip


# A subject of the limits job is a number (digits), or a sub-account whose number is
# unknown (never with a limit). max: a rebalance can show a subject on two workers.
_SUBJECT = 'subject=~"$subject"'
_NUMBER = f'subject_kind="number", {_SUBJECT}'
_REACHED = f"max by (subject) (wapipe_messaging_limit_reached_customers{{{_NUMBER}}})"
_LIMIT = f"max by (subject) (wapipe_messaging_limit_customers{{{_NUMBER}}})"
_SHARE_STEPS = {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                              {"color": "orange", "value": 0.8},
                                              {"color": "red", "value": 1}]}  # fmt: skip
_OUTSIDE = 'window="$window", sub_account_id=~"$sub_account_id"'


def guardrails() -> dict[str, Any]:
    """Before a campaign: each number's customers in 24 h against its messaging limit,
    and the free-form messages sent (and failing) outside customers' service windows."""
    reached = "wapipe_messaging_limit_reached_customers"
    stages = "wapipe_funnel_window_messages"
    return dashboard("wapipe-guardrails", "wapipe / campaign guard-rails", [
        panel("Customers reached in 24 h vs the messaging limit", "timeseries",
              [(_REACHED, "+{{subject}} reached"), (_LIMIT, "+{{subject}} limit")], width=16,
              description="Distinct customers each number reached with business-initiated "
                          "messages in the rolling 24 hours, and its limit (none when "
                          "unlimited or unknown)."),
        panel("Share of the limit used", "bargauge", [(f"{_REACHED} / {_LIMIT}", "+{{subject}}")],
              unit="percentunit", width=8,
              defaults={"min": 0, "max": 1, "thresholds": _SHARE_STEPS},
              options={"displayMode": "gradient", "orientation": "horizontal",
                       "reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                         "values": False}},
              description="Near at 80% (WapipeMessagingLimitNear), reached at 100% "
                          "(WapipeMessagingLimitReached)."),
        panel("Headroom: new customers left in 24 h", "timeseries",
              [(f"{_LIMIT} - {_REACHED}", "+{{subject}}")],
              description="It grows by itself as reached customers leave the 24-hour "
                          "window: oldestLeavesAt on whatsapp.messaging_limits says when."),
        panel("Reach without a limit to watch", "table",
              [(f"max by (subject, subject_kind) ({reached}{{{_SUBJECT}}}) "
                f"unless on (subject) {_LIMIT}", "")],
              description="Unlimited numbers, numbers of unknown tier, and sub-accounts "
                          "whose number is unknown (subject_kind sub_account: set "
                          "WAPIPE_SENDER_NUMBERS)."),
        panel("Messaging-limit alerts sent", "timeseries",
              [("sum by (type) (increase(wapipe_limits_alerts_total[1h]))", "{{type}}")],
              width=24),
        panel("Free-form messages outside the service window (current window)", "timeseries",
              [(f'sum by (sub_account_id) ({stages}{{{_OUTSIDE}, '
                f'stage="freeform_outside_window"}})', "{{sub_account_id}}")],
              description="Sent to customers who had not written in the last 24 hours."),
        panel("Of them failed: service window closed (current window)", "timeseries",
              [(f'sum by (sub_account_id) ({stages}{{{_OUTSIDE}, '
                f'stage="freeform_outside_window_failed"}})', "{{sub_account_id}}")],
              description="Send these customers a template instead."),
        panel("SERVICE_WINDOW_FAILURES alerts active", "table",
              [('max by (sub_account_id) (wapipe_funnel_rate_alert_active{'
                'type="SERVICE_WINDOW_FAILURES", sub_account_id=~"$sub_account_id"}) == 1', "")],
              width=24,
              description="Sub-accounts whose current window raised the alert "
                          "(WapipeServiceWindowFailures)."),
    ], [
        variable("subject", "Subject", reached),
        window_variable(),
        variable("sub_account_id", "Sub-account", stages),
    ])  # fmt: skip


def pipeline() -> dict[str, Any]:
    duration = "wapipe_ingest_request_duration_seconds_bucket"
    return dashboard("wapipe-pipeline", "wapipe / pipeline health", [
        panel("Webhooks per second by outcome", "timeseries",
              [("sum by (outcome) (rate(wapipe_ingest_requests_total[5m]))", "{{outcome}}")],
              unit="reqps"),
        panel("Ingest latency", "timeseries",
              [(f"histogram_quantile({q}, sum by (le) (rate({duration}[5m])))", f"p{q}")
               for q in ("0.5", "0.99")], unit="s"),
        panel("Spool depth", "timeseries",
              [("sum by (instance) (wapipe_ingest_spool_records)", "{{instance}} records")]),
        panel("Oldest spooled event", "timeseries",
              [("max by (instance) (wapipe_ingest_spool_oldest_age_seconds)", "{{instance}}")],
              unit="s"),
        panel("Kafka reachable (ingester)", "stat",
              [("min(wapipe_ingest_kafka_available)", "kafka")], width=8),
        panel("Consumer lag per processor", "timeseries",
              [("sum by (processor) (wapipe_processor_consumer_lag_records)", "{{processor}}")],
              width=16),
        panel("Resident memory per process", "timeseries",
              [("sum by (job) (process_resident_memory_bytes{job=~\"wapipe.*\"})", "{{job}}")],
              unit="bytes", width=12),
        panel("RocksDB memory per processor and kind", "timeseries",
              [("sum by (processor, kind) (wapipe_processor_rocksdb_memory_bytes)",
                "{{processor}} {{kind}}")],
              unit="bytes", width=12),
        panel("Events processed per second", "timeseries", [
            ("sum(rate(wapipe_normalize_events_total[5m]))", "normalize"),
            ("sum(rate(wapipe_funnel_merged_observations_total[5m]))", "funnel"),
            ("sum(rate(wapipe_templates_events_total[5m]))", "templates"),
            ("sum(rate(wapipe_phones_events_total[5m]))", "phones"),
            ("sum(rate(wapipe_conversations_events_total[5m]))", "conversations"),
        ], width=24),
        panel("normalize outcomes", "timeseries",
              [("sum by (outcome) (rate(wapipe_normalize_events_total[5m]))", "{{outcome}}")],
              width=24),
    ])  # fmt: skip


DASHBOARDS = {"funnel": funnel, "quality": quality, "guardrails": guardrails, "pipeline": pipeline}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {f"{name}.json": json.dumps(build(), indent=2, sort_keys=True) + "\n"
            for name, build in DASHBOARDS.items()}  # fmt: skip


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
