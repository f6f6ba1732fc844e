"""The metric names the code exports, and the names a PromQL expression uses: for the
tests that check Prometheus rules and Grafana panels against the code."""

from __future__ import annotations

import importlib
import re
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry

from ingest.metrics import IngestMetrics
from processors.engine.metrics import EngineMetrics
from processors.jobs import JOBS
from wapipe.settings import Settings

_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def exported_metric_names() -> set[str]:
    """Every metric the ingester and each processor's job and engine register (built, not
    started)."""
    registries = [CollectorRegistry()]
    IngestMetrics(registries[0])
    home = Path(tempfile.gettempdir()) / "wapipe-metrics-check"
    settings = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="metrics.check", home=home)
    for module in JOBS.values():
        registry = CollectorRegistry()
        registries.append(registry)
        job = importlib.import_module(module).create_job(settings, registry)
        EngineMetrics(registry, job.name)
    return {family.name for registry in registries for family in registry.collect()}


def metric_names_in(expression: str) -> set[str]:
    """The metrics of ours (wapipe's and the standard process_ ones) an expression names,
    without the exposition suffixes."""
    names = set()
    for name in re.findall(r"\b(?:wapipe|process)_[a-z0-9_]+", expression):
        for suffix in _SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        names.add(name)
    return names
