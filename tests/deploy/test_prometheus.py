"""Prometheus: the config and rules pass promtool, the rules' unit tests pass, every
metric they name is one the code exports, and a real Prometheus scrapes a running
ingester and processor."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from example_bodies import EXAMPLE_PATHS
from exported_metrics import exported_metric_names, metric_names_in

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: `make prometheus` installs Debian's prometheus package"
    return path


def _promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("promtool"), *arguments], cwd=PROMETHEUS, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-compose.yml"])
def test_the_config_and_its_rules_are_valid(config: str) -> None:
    result = _promtool("check", "config", config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_unit_tests_pass() -> None:
    result = _promtool("test", "rules", "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_names_metrics_the_code_exports() -> None:
    exported = exported_metric_names()
    assert "wapipe_ingest_requests" in exported  # the extraction finds names at all
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            unknown = metric_names_in(rule["expr"]) - exported
            assert not unknown, f"{rule['alert']} names metrics nobody exports: {unknown}"


def test_every_processor_job_is_scraped() -> None:
    from processors.jobs import JOBS
    from wapipe.settings import Settings
    from wapipe.stack import worker_ports

    ports = worker_ports(Settings())

    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert jobs.pop("wapipe-ingest") == ["127.0.0.1:8080"]
    for processor in JOBS:
        assert jobs.pop(f"wapipe-{processor}") == [f"127.0.0.1:{ports[processor]}"], processor
    assert not jobs, f"scraped but not a process of `wapipe run`: {jobs}"


@pytest.mark.kafka
@pytest.mark.slow
async def test_a_real_prometheus_scrapes_the_ingester_and_a_processor(
    kafka_settings, start_ingester, start_worker, unused_port, tmp_path
):
    worker_port, prometheus_port = unused_port(), unused_port()
    worker = start_worker("normalize", kafka_settings, WAPIPE_PROCESSOR_WEB_PORT=str(worker_port))
    async with start_ingester(kafka_settings) as ingester:
        assert (await ingester.post(EXAMPLE_PATHS[0].read_bytes()))[0] == 200
        ingest_target = ingester.url("/metrics").split("/")[2]
        config = {
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [
                {"job_name": "wapipe-ingest", "static_configs": [{"targets": [ingest_target]}]},
                {"job_name": "wapipe-normalize",
                 "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
            ],
        }  # fmt: skip
        server = _start_prometheus(config, tmp_path, prometheus_port)
        try:
            api = f"http://127.0.0.1:{prometheus_port}/api/v1"
            async with aiohttp.ClientSession() as session:
                rocksdb_memory = 'wapipe_processor_rocksdb_memory_bytes{table="seen"} > 0'
                # Accepted either way: published, or spooled when the ingester's producer
                # had not reached the broker yet (seen on a loaded machine).
                requests = 'wapipe_ingest_requests_total{outcome=~"published|spooled"} > 0'
                queries = {
                    'up{job="wapipe-ingest"} == 1': "the ingester up",
                    'up{job="wapipe-normalize"} == 1': "the normalize worker up",
                    requests: "the ingester's requests",
                    "wapipe_normalize_events_total": "normalize's events",
                    "wapipe_processor_consumer_lag_records": "normalize's consumer lag",
                    rocksdb_memory: "the memory of normalize's table",
                }
                for query, what in queries.items():
                    await _until_series(session, api, query, what, server, worker, tmp_path)
        finally:
            server.terminate()
            server.wait(timeout=30)


async def _until_series(session: Any, api: str, query: str, what: str, server: Any,
                        worker: Any, tmp_path: Path, timeout: float = 90.0) -> None:  # fmt: skip
    """Query Prometheus until `query` returns a series; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, _tail(tmp_path / "prometheus.log")
        assert worker.poll() is None, _tail(tmp_path / "normalize.log")
        try:
            async with session.get(f"{api}/query", params={"query": query}) as response:
                if response.status == 200 and (await response.json())["data"]["result"]:
                    return
        except aiohttp.ClientConnectionError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"Prometheus did not scrape {what} ({query})"
        await asyncio.sleep(0.5)


def _start_prometheus(config: dict[str, Any], home: Path, port: int) -> subprocess.Popen[bytes]:
    """A Prometheus server on loopback for `config`; its log in `home`/prometheus.log."""
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    return subprocess.Popen(
        [_tool("prometheus"), f"--config.file={home / 'prometheus.yml'}",
         f"--storage.tsdb.path={home / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(home / "prometheus.log").open("wb"),
    )  # fmt: skip


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""
