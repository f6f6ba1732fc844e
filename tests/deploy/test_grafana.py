"""Grafana: the committed dashboards are the generator's output, every panel's query
names metrics the code exports, and the provisioning files point at them."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import yaml
from exported_metrics import exported_metric_names, metric_names_in

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
# What the issue asks the dashboards to show: funnel (volumes, rates, time to deliver
# and read, failures by code), templates, phone tiers, ingest, spool, consumer lag.
WATCHED = (
    "wapipe_funnel_window_messages",
    "wapipe_funnel_window_rate",
    "wapipe_funnel_window_time_to_deliver_seconds",
    "wapipe_funnel_window_time_to_read_seconds",
    "wapipe_funnel_window_undelivered_messages",
    "wapipe_template_red_strikes",
    "wapipe_template_paused",
    "wapipe_template_disabled",
    "wapipe_phone_messaging_tier_rank",
    "wapipe_ingest_requests_total",
    "wapipe_ingest_request_duration_seconds_bucket",
    "wapipe_ingest_spool_records",
    "wapipe_processor_consumer_lag_records",
    # Campaign guard-rails (issue 20): each number's reach against its messaging limit.
    "wapipe_messaging_limit_reached_customers",
    "wapipe_messaging_limit_customers",
)


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("dashboards", GRAFANA / "dashboards.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _committed() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text())
            for path in sorted((GRAFANA / "dashboards").glob("*.json"))}  # fmt: skip


def test_the_committed_dashboards_are_the_generators_output() -> None:
    rendered = _generator().render()
    committed = {path.name: path.read_text() for path in (GRAFANA / "dashboards").glob("*.json")}
    assert committed == rendered, "run `python deploy/grafana/dashboards.py` and commit"


def test_every_panel_query_names_metrics_the_code_exports() -> None:
    exported = exported_metric_names()
    queries = 0
    for name, dashboard in _committed().items():
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                used = metric_names_in(target["expr"])
                assert used, f"{name} / {panel['title']}: no wapipe metric in {target['expr']}"
                assert used <= exported, f"{name} / {panel['title']}: {used - exported}"
                queries += 1
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                assert metric_names_in(variable["query"]["query"]) <= exported
    assert queries >= 20


def test_the_dashboards_cover_what_operators_watch() -> None:
    expressions = " ".join(
        target["expr"]
        for dashboard in _committed().values()
        for panel in dashboard["panels"]
        for target in panel["targets"]
    )
    for metric in WATCHED:
        assert metric in expressions, metric


def test_every_funnel_messages_query_picks_its_stages() -> None:
    """wapipe_funnel_window_messages's `stage` holds the funnel's transitions and the
    free-form messages outside the service window: no panel adds the two up, and the
    funnel's panels show the transitions alone."""
    from processors.funnel.windows import STAGES

    picked = []
    for name, dashboard in _committed().items():
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                if "wapipe_funnel_window_messages" not in expr:
                    continue
                stage = re.search(r'\bstage(=~?)"([^"]*)"', expr)
                assert stage, f"{name} / {panel['title']}: all stages summed in {expr}"
                if name == "funnel.json":
                    assert stage.groups() == ("=~", "|".join(STAGES)), panel["title"]
                picked.append(stage[2])
    assert "freeform_outside_window" in picked
    assert "freeform_outside_window_failed" in picked


def test_panels_do_not_overlap_and_fit_the_grid() -> None:
    for name, dashboard in _committed().items():
        cells: set[tuple[int, int]] = set()
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{name} / {panel['title']}"
            area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                    for y in range(grid["y"], grid["y"] + grid["h"])}  # fmt: skip
            assert not area & cells, f"{name} / {panel['title']} overlaps"
            cells |= area
        assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = sources["datasources"]
    uids = {target["datasource"]["uid"] for dashboard in _committed().values()
            for panel in dashboard["panels"] for target in panel["targets"]}  # fmt: skip
    assert uids == {source["uid"]}
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/wapipe.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/wapipe"
