"""docker-compose.yml, checked without a Docker engine: every service's command is a
`wapipe` command, every WAPIPE_* variable is a setting, ports agree with the contract,
each processor is its own scalable service, and Prometheus and Grafana get their
files."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from processors.jobs import JOBS
from wapipe.cli import _parser
from wapipe.settings import Settings, environment_variables

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
WAPIPE = {name: service for name, service in SERVICES.items()
          if service.get("image") == "wapipe:local"}  # fmt: skip


def _environment(service: dict[str, Any]) -> dict[str, str]:
    return {str(key): str(value) for key, value in (service.get("environment") or {}).items()}


def test_the_services_are_the_pipeline() -> None:
    assert set(WAPIPE) == {"topics", "ingest", *JOBS}
    assert {"kafka", "prometheus", "grafana"} <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(WAPIPE))
def test_every_command_is_a_wapipe_command(name: str) -> None:
    try:
        arguments = _parser().parse_args(WAPIPE[name]["command"])
    except SystemExit:  # argparse's way of refusing
        pytest.fail(f"{name}: `wapipe {' '.join(WAPIPE[name]['command'])}` is no command")
    assert isinstance(arguments, argparse.Namespace)


def test_every_processor_is_its_own_scalable_service() -> None:
    for job in JOBS:
        service = WAPIPE[job]
        assert service["command"] == ["process", job]
        # `--scale` needs no fixed container name and no published host port.
        assert "container_name" not in service
        assert "ports" not in service
        assert _environment(service)["WAPIPE_PROCESSOR_WEB_HOST"] == "0.0.0.0"


def test_every_wapipe_variable_is_a_setting() -> None:
    known = set(environment_variables())
    for name, service in WAPIPE.items():
        unknown = {key for key in _environment(service) if key.startswith("WAPIPE_")} - known
        assert not unknown, f"{name} sets variables no setting reads: {unknown}"
    commented = set(re.findall(r"WAPIPE_[A-Z_]+", (ROOT / "docker-compose.yml").read_text()))
    assert commented <= known, commented - known
    assert _environment(WAPIPE["ingest"])["WAPIPE_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_ports_agree_with_the_contract() -> None:
    defaults = Settings()
    assert defaults.ingest_port == 8080  # docs/interface.md: the ingester's port
    assert WAPIPE["ingest"]["ports"] == [f"{defaults.ingest_port}:{defaults.ingest_port}"]
    assert str(defaults.ingest_port) in " ".join(WAPIPE["ingest"]["healthcheck"]["test"])
    for job in JOBS:
        check = " ".join(WAPIPE[job]["healthcheck"]["test"])
        assert f"127.0.0.1:{defaults.processor_web_port}/healthz" in check, job
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus-compose.yml").read_text())
    targets = {job["job_name"]: job["dns_sd_configs"][0] for job in scrape["scrape_configs"]}
    assert targets.pop("wapipe-ingest") == {"names": ["ingest"], "type": "A",
                                            "port": defaults.ingest_port}  # fmt: skip
    for job in JOBS:
        assert targets.pop(f"wapipe-{job}") == {"names": [job], "type": "A",
                                                "port": defaults.processor_web_port}  # fmt: skip
    assert not targets


def test_long_running_services_have_health_checks_and_the_pipeline_waits_for_topics() -> None:
    for name, service in SERVICES.items():
        if name != "topics":
            assert service.get("healthcheck", {}).get("test"), name
    for name in {"ingest", *JOBS}:
        depends = WAPIPE[name]["depends_on"]
        assert depends["topics"]["condition"] == "service_completed_successfully", name
    assert WAPIPE["topics"]["command"] == ["topics", "create"]


def test_prometheus_and_grafana_mount_files_that_exist() -> None:
    for name in ("prometheus", "grafana"):
        for volume in SERVICES[name]["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"
    mounts = " ".join(SERVICES["prometheus"]["volumes"])
    assert "prometheus-compose.yml:/etc/prometheus/prometheus.yml" in mounts
    assert "rules.yml:/etc/prometheus/rules.yml" in mounts
    grafana = " ".join(SERVICES["grafana"]["volumes"])
    assert "deploy/grafana/dashboards:/var/lib/grafana/dashboards/wapipe" in grafana
