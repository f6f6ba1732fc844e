"""wapipe's Kubernetes base (Kustomize), generated from the code's own lists: the
processor jobs (wapipe/cli.py), the topics (wapipe/topics.py) and the settings.

    python deploy/k8s/generate.py     # writes deploy/k8s/base/*.yaml

Generated so that a new job or topic cannot be forgotten here; the tests check that
the committed files are this script's output and that they agree with the code.
Overlays (image tag, replicas, the broker's address, resources) go in
deploy/k8s/overlays/<environment>/ on top of this base.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from processors.jobs import JOBS  # noqa: E402
from wapipe.settings import Settings  # noqa: E402
from wapipe.topics import TOPICS, CleanupPolicy  # noqa: E402

OUT = Path(__file__).resolve().parent / "base"
IMAGE = "wapipe"  # set the registry and tag with `images:` in an overlay
PREFIX = "whatsapp"
PARTITIONS = 12  # each processor scales to at most this many busy workers
REPLICAS, MIN_INSYNC = 3, 2
KAFKA_CLUSTER = "wapipe"  # the Strimzi Kafka resource
BOOTSTRAP = f"{KAFKA_CLUSTER}-kafka-bootstrap:9092"
_DEFAULTS = Settings()
INGEST_PORT, WEB_PORT = _DEFAULTS.ingest_port, _DEFAULTS.processor_web_port
# Longer than the ingester's own grace for in-flight requests plus the producer's
# flush, so Kubernetes never kills it mid-flush.
INGEST_GRACE_SECONDS = int(_DEFAULTS.shutdown_timeout_seconds + _DEFAULTS.publish_timeout_ms / 1000
                           + 20)  # fmt: skip
PROCESSOR_GRACE_SECONDS = 60  # a worker finishes the batch, commits and leaves the group
# The jobs' source topics (their consumer group's lag drives KEDA).
SOURCES = {"normalize": "webhooks.raw", "funnel": "status", "templates": "template",
           "phones": "phone", "conversations": "status", "limits": "limits.senders"}  # fmt: skip

Manifest = dict[str, Any]


def labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "wapipe", "app.kubernetes.io/component": component}


def config_map() -> Manifest:
    return {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "wapipe"},
        "data": {
            "WAPIPE_KAFKA_BOOTSTRAP": BOOTSTRAP,
            "WAPIPE_TOPIC_PREFIX": PREFIX,
            "WAPIPE_TOPIC_PARTITIONS": str(PARTITIONS),
            "WAPIPE_TOPIC_REPLICATION": str(REPLICAS),
            "WAPIPE_TOPIC_MIN_INSYNC_REPLICAS": str(MIN_INSYNC),
            "WAPIPE_LOG_FORMAT": "json",
            "WAPIPE_HOME": "/var/lib/wapipe",
            "WAPIPE_PROCESSOR_WEB_HOST": "0.0.0.0",
        },
    }  # fmt: skip


def container(component: str, command: list[str], port: int, *, readiness: str,
              requests: dict[str, str], limits: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    def probe(path: str, period: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period,
                "timeoutSeconds": 3, "failureThreshold": 3}  # fmt: skip

    return {
        "name": component,
        "image": IMAGE,
        "args": command,
        "envFrom": [{"configMapRef": {"name": "wapipe"}}],
        "ports": [{"name": "http", "containerPort": port}],
        "livenessProbe": probe("/healthz", 10),
        "readinessProbe": probe(readiness, 5),
        "resources": {"requests": requests, "limits": limits},
        "volumeMounts": [{"name": "state", "mountPath": "/var/lib/wapipe"}],
    }


def pod_template(component: str, spec_container: dict[str, Any], grace: int) -> dict[str, Any]:
    return {
        "metadata": {"labels": labels(component), "annotations": {
            "prometheus.io/scrape": "true", "prometheus.io/path": "/metrics",
            "prometheus.io/port": str(spec_container["ports"][0]["containerPort"])}},
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
            "containers": [spec_container],
        },
    }  # fmt: skip


def ingester() -> list[Manifest]:
    """A StatefulSet, not a Deployment: each replica keeps its own spool on its own
    volume, so events answered 200 while Kafka was away survive a pod's restart."""
    spec_container = container(
        "ingest", ["ingest"], INGEST_PORT, readiness="/healthz",
        requests={"cpu": "500m", "memory": "256Mi"}, limits={"memory": "512Mi"},
    )  # fmt: skip
    spec_container["env"] = [{"name": "WAPIPE_SPOOL_DIR", "value": "/var/lib/wapipe/spool"}]
    return [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "wapipe-ingest"},
         "spec": {"serviceName": "wapipe-ingest", "replicas": 2,
                  "selector": {"matchLabels": labels("ingest")},
                  "template": pod_template("ingest", spec_container, INGEST_GRACE_SECONDS),
                  "volumeClaimTemplates": [{"metadata": {"name": "state"}, "spec": {
                      "accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": "10Gi"}}}}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "wapipe-ingest"},
         "spec": {"selector": labels("ingest"),
                  "ports": [{"name": "http", "port": INGEST_PORT, "targetPort": "http"}]}},
        pdb("ingest"),
    ]  # fmt: skip


def processor(job: str) -> list[Manifest]:
    spec_container = container(
        job, ["process", job], WEB_PORT, readiness="/readyz",
        requests={"cpu": "500m", "memory": "512Mi"}, limits={"memory": "1Gi"},
    )  # fmt: skip
    # The worker's slot, hence its transactional.id: the pod's name, unique per pod.
    pod_name = {"fieldRef": {"fieldPath": "metadata.name"}}
    spec_container["env"] = [{"name": "WAPIPE_PROCESSOR_INSTANCE", "valueFrom": pod_name}]
    template = pod_template(job, spec_container, PROCESSOR_GRACE_SECONDS)
    # RocksDB is a cache of the changelogs: an emptyDir is enough (rebuilt on a new pod).
    template["spec"]["volumes"] = [{"name": "state", "emptyDir": {}}]
    name = f"wapipe-{job}"
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels(job)},
                  "template": template}},
        pdb(job),
        {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name},
         "spec": {"scaleTargetRef": {"name": name}, "minReplicaCount": 1,
                  "maxReplicaCount": PARTITIONS, "cooldownPeriod": 300,
                  "triggers": [{"type": "kafka", "metadata": {
                      "bootstrapServers": BOOTSTRAP, "consumerGroup": f"{PREFIX}.{job}",
                      "topic": f"{PREFIX}.{SOURCES[job]}", "lagThreshold": "5000",
                      "allowIdleConsumers": "false"}}]}},
    ]  # fmt: skip


def pdb(component: str) -> Manifest:
    selector = {"matchLabels": labels(component)}
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": f"wapipe-{component}"},
            "spec": {"maxUnavailable": 1, "selector": selector}}  # fmt: skip


def kafka_topics() -> list[Manifest]:
    """Every topic of wapipe/topics.py as a Strimzi KafkaTopic."""
    manifests = []
    for spec in TOPICS:
        config: dict[str, Any] = {"cleanup.policy": spec.cleanup_policy.value,
                                  "min.insync.replicas": MIN_INSYNC}  # fmt: skip
        if spec.retention_days is not None:
            config["retention.ms"] = spec.retention_days * 86_400_000
        if spec.cleanup_policy is CleanupPolicy.COMPACT:
            config["min.compaction.lag.ms"] = 3_600_000  # an hour of changes stays readable
        manifests.append({
            "apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaTopic",
            "metadata": {"name": f"{PREFIX}.{spec.suffix}".replace("_", "-"),
                         "labels": {"strimzi.io/cluster": KAFKA_CLUSTER}},
            "spec": {"topicName": f"{PREFIX}.{spec.suffix}", "partitions": PARTITIONS,
                     "replicas": REPLICAS, "config": config},
        })  # fmt: skip
    return manifests


def files() -> dict[str, list[Manifest]]:
    result = {"config.yaml": [config_map()], "ingest.yaml": ingester(),
              "topics.yaml": kafka_topics()}  # fmt: skip
    for job in JOBS:
        result[f"{job}.yaml"] = processor(job)
    return result


def render() -> dict[str, str]:
    """File name -> YAML text of every file of the base, kustomization.yaml included."""
    header = "# Generated by deploy/k8s/generate.py from the code: edit that, not this.\n"
    texts = {name: header + yaml.safe_dump_all(manifests, sort_keys=False)
             for name, manifests in files().items()}  # fmt: skip
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "labels": [{"pairs": {"app.kubernetes.io/part-of": "wapipe"}}],
                     "resources": sorted(texts)}  # fmt: skip
    texts["kustomization.yaml"] = header + yaml.safe_dump(kustomization, sort_keys=False)
    return texts


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
