"""The ingester's Prometheus metrics (names and units after Prometheus' conventions)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

# Latency buckets from 0.5 ms to the sender's 5 s timeout.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


class IngestMetrics:
    """Every series the ingester exports, registered on one registry (one per app)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        ProcessCollector(registry=registry)  # process_resident_memory_bytes, CPU, open files
        self._request_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.requests = Counter(
            "wapipe_ingest_requests",
            "Webhook requests by event type and outcome (published, spooled, or the refusal).",
            ["event_type", "outcome"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "wapipe_ingest_request_duration_seconds",
            "Time from reading a webhook request to answering it.",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.received_bytes = Counter(
            "wapipe_ingest_received_bytes",
            "Bytes of webhook bodies accepted.",
            registry=registry,
        )
        self.publish_duration = Histogram(
            "wapipe_ingest_publish_duration_seconds",
            "Time from handing an event to the Kafka producer to the broker's acknowledgement.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.producer_errors = Counter(
            "wapipe_ingest_producer_errors",
            "Publishes that failed or timed out (the event then went to the spool).",
            ["reason"],
            registry=registry,
        )
        self.auth_failures = Counter(
            "wapipe_ingest_auth_failures",
            "Requests refused by network, authorization or signature checks.",
            ["reason"],
            registry=registry,
        )
        self.kafka_available = Gauge(
            "wapipe_ingest_kafka_available",
            "1 while events go straight to Kafka, 0 while they go to the spool.",
            registry=registry,
        )
        self.spool_records = Gauge(
            "wapipe_ingest_spool_records",
            "Events in the local spool waiting for Kafka.",
            registry=registry,
        )
        self.spool_bytes = Gauge(
            "wapipe_ingest_spool_bytes",
            "Bytes of the local spool's segment files.",
            registry=registry,
        )
        self.spool_oldest_age = Gauge(
            "wapipe_ingest_spool_oldest_age_seconds",
            "Age of the oldest event in the spool (0 when empty).",
            registry=registry,
        )
        self.spool_drained = Counter(
            "wapipe_ingest_spool_drained_records",
            "Events moved from the spool to Kafka.",
            registry=registry,
        )

    def observe_request(self, event_type: str, outcome: str, seconds: float) -> None:
        """Count one answered webhook request (label children cached: this is per request)."""
        children = self._request_children.get((event_type, outcome))
        if children is None:
            children = (
                self.requests.labels(event_type, outcome),
                self.request_duration.labels(outcome),
            )
            self._request_children[(event_type, outcome)] = children
        children[0].inc()
        children[1].observe(seconds)
