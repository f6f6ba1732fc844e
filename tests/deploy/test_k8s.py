"""deploy/k8s/base, checked without a cluster: it is the generator's output, parses,
and agrees with the code (commands, settings, jobs, topics) and with what the issue
asks (probes, resources, disruption budgets, grace, KEDA capped at the partitions,
Strimzi topics with replication 3 and min.insync.replicas 2)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from processors.jobs import JOBS
from wapipe.cli import _parser
from wapipe.settings import Settings, environment_variables
from wapipe.topics import TOPICS, CleanupPolicy

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
BASE = K8S / "base"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("generate", K8S / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [document for name in kustomization["resources"]
            for document in yaml.safe_load_all((BASE / name).read_text())]  # fmt: skip


def _kind(kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in _manifests() if m["kind"] == kind}


def test_the_committed_base_is_the_generators_output() -> None:
    committed = {path.name: path.read_text() for path in BASE.glob("*.yaml")}
    assert committed == _generator().render(), "run `python deploy/k8s/generate.py`"


def test_every_manifest_has_the_required_fields() -> None:
    for manifest in _manifests():
        assert {"apiVersion", "kind", "metadata"} <= set(manifest), manifest
        assert manifest["metadata"]["name"], manifest


def _workloads() -> dict[str, dict[str, Any]]:
    return {**_kind("Deployment"), **_kind("StatefulSet")}


def test_a_workload_per_processor_and_the_ingester() -> None:
    assert set(_workloads()) == {"wapipe-ingest", *(f"wapipe-{job}" for job in JOBS)}
    assert set(_kind("StatefulSet")) == {"wapipe-ingest"}  # its spool: a volume per replica


@pytest.mark.parametrize("name", ["wapipe-ingest", *(f"wapipe-{job}" for job in JOBS)])
def test_workload(name: str) -> None:
    workload = _workloads()[name]
    pod = workload["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    _parser().parse_args(container["args"])  # a real wapipe command (exits otherwise)
    job = name.removeprefix("wapipe-")
    assert container["args"] == (["ingest"] if job == "ingest" else ["process", job])
    assert container["image"] == _generator().IMAGE  # overlays set registry and tag
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # A worker is ready once its partitions are restored; the ingester's /readyz fails
    # while Kafka is away, when its spool keeps it accepting.
    readiness = "/healthz" if job == "ingest" else "/readyz"
    assert container["readinessProbe"]["httpGet"]["path"] == readiness
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    assert workload["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"]
    defaults = Settings()
    port = defaults.ingest_port if job == "ingest" else defaults.processor_web_port
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    flush = defaults.shutdown_timeout_seconds + defaults.publish_timeout_ms / 1000
    assert grace > flush, "Kubernetes would kill the process during its producer flush"
    assert name in _kind("PodDisruptionBudget")


def test_the_config_map_sets_only_settings_for_production() -> None:
    (config,) = _kind("ConfigMap").values()
    variables = set(config["data"])
    for workload in _workloads().values():
        for env in workload["spec"]["template"]["spec"]["containers"][0].get("env", []):
            variables.add(env["name"])
    assert variables <= set(environment_variables()), variables - set(environment_variables())
    data = config["data"]
    # Validated as the workers do at start-up.
    settings = Settings(**{key.removeprefix("WAPIPE_").lower(): value
                           for key, value in data.items()})  # fmt: skip
    assert (settings.topic_replication, settings.topic_min_insync_replicas) == (3, 2)
    assert settings.processor_web_host == "0.0.0.0"


def test_keda_scales_each_processor_on_its_lag_up_to_the_partitions() -> None:
    (config,) = _kind("ConfigMap").values()
    partitions = int(config["data"]["WAPIPE_TOPIC_PARTITIONS"])
    prefix = config["data"]["WAPIPE_TOPIC_PREFIX"]
    scaled = _kind("ScaledObject")
    assert set(scaled) == {f"wapipe-{job}" for job in JOBS}
    for name, item in scaled.items():
        spec = item["spec"]
        assert spec["scaleTargetRef"]["name"] == name
        assert spec["maxReplicaCount"] == partitions
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == f"{prefix}.{name.removeprefix('wapipe-')}"
        assert trigger["metadata"]["bootstrapServers"] == config["data"]["WAPIPE_KAFKA_BOOTSTRAP"]


def test_strimzi_topics_are_the_topics_of_the_code() -> None:
    (config,) = _kind("ConfigMap").values()
    prefix = config["data"]["WAPIPE_TOPIC_PREFIX"]
    topics = {t["spec"]["topicName"]: t["spec"] for t in _kind("KafkaTopic").values()}
    assert set(topics) == {spec.name(prefix) for spec in TOPICS}
    for spec in TOPICS:
        topic = topics[spec.name(prefix)]
        assert (topic["replicas"], topic["config"]["min.insync.replicas"]) == (3, 2)
        assert topic["partitions"] == int(config["data"]["WAPIPE_TOPIC_PARTITIONS"])
        assert topic["config"]["cleanup.policy"] == spec.cleanup_policy.value
        if spec.suffix.endswith("_state"):
            assert spec.cleanup_policy is CleanupPolicy.COMPACT
        retention = topic["config"].get("retention.ms")
        assert retention == (None if spec.retention_days is None
                             else spec.retention_days * 86_400_000)  # fmt: skip
