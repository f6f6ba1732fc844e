"""What `wapipe status` reads from outside, read-only: no group is joined, nothing committed.

For each job, from the broker: its consumer group (`<prefix>.<job>`) with members and
their partitions, and its lag per source topic: the end offsets a read_committed reader
sees (the last stable offsets) minus the group's committed offsets. From each worker's
web server: /readyz, and on /metrics the records it processed (events/s, from two
samples or more), its commits, and its restore progress. From the ingester: /readyz and
the spool's depth. Each returns plain dataclasses of `wapipe.status.model`.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from wapipe.preflight import cannot_reach_kafka, describe_os_error, tcp_problem
from wapipe.settings import Settings
from wapipe.stack import ingester_url, worker_url
from wapipe.status.model import (
    INGESTER,
    Group,
    Member,
    Options,
    PartitionOffsets,
    Scrape,
    StatusError,
)

_HTTP_TIMEOUT_SECONDS = 2.0
_KAFKA_TIMEOUT_SECONDS = 10.0
_MARKER_CHECK_SECONDS = 5.0


# --------------------------------------------------------------------------- the web servers


def tls_check(settings: Settings, options: Options) -> tuple[ssl.SSLContext, str]:
    """How to check the ingester's HTTPS certificate, and that said in words: against
    `--ca-file`, else against WAPIPE_TLS_CERT (the certificate `wapipe run` serves: a
    self-signed one is its own CA), else the system's CAs; or not at all (`--insecure`)."""
    if options.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context, "not verified (--insecure)"
    ca_file = options.ca_file or settings.tls_cert
    if ca_file is None:
        return ssl.create_default_context(), "verified against the system's CAs"
    where = "--ca-file" if options.ca_file else "WAPIPE_TLS_CERT"
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as error:
        raise StatusError(f"cannot read the CA file {ca_file} ({where}): {error}") from None
    return context, f"verified against {ca_file} ({where})"


def _get(url: str, timeout: float, tls: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """GET `url`: its status and body; OSError when it cannot be asked."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=tls) as answer:  # noqa: S310
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


Sample = tuple[str, dict[str, str], float]  # name, labels, value


def _samples(text: str) -> list[Sample]:
    from prometheus_client.parser import text_string_to_metric_families

    return [(s.name, s.labels, s.value)
            for family in text_string_to_metric_families(text) for s in family.samples]  # fmt: skip


def _why(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        error = error.reason if isinstance(error.reason, BaseException) else error
    if isinstance(error, OSError):
        return describe_os_error(error)
    return str(error) or type(error).__name__


def _read(
    url: str, timeout: float, tls: ssl.SSLContext | None = None
) -> tuple[int, bytes, list[Sample]] | str:  # fmt: skip
    """A web server's /readyz answer (status, body) and its /metrics samples, or why not."""
    try:
        ready_status, ready_body = _get(f"{url}/readyz", timeout, tls)
        status, body = _get(f"{url}/metrics", timeout, tls)
        if status != 200:
            return f"/metrics answers {status}"
        return ready_status, ready_body, _samples(body.decode(errors="replace"))
    except (OSError, ValueError) as error:
        why = _why(error)
        if "CERTIFICATE_VERIFY_FAILED" in why:
            why += " (trust its CA with --ca-file FILE, or skip the check with --insecure)"
        return why


def scrape_worker(url: str, job: str, timeout: float = _HTTP_TIMEOUT_SECONDS) -> Scrape:
    at = time.time()
    read = _read(url, timeout)
    if isinstance(read, str):
        return Scrape(url, at, error=read)
    ready_status, _, samples = read

    def value(name: str) -> float | None:
        found = [v for n, labels, v in samples if n == name and labels.get("processor") == job]
        return sum(found) if found else None

    records = value("wapipe_processor_records_total")
    if records is None:
        return Scrape(url, at, error=f"serves no metrics of the {job} job (another process "
                                     "on this port?)")  # fmt: skip
    return Scrape(
        url, at, ready=ready_status == 200, records=records,
        commits=value("wapipe_processor_commit_duration_seconds_count"),
        last_commit_at=value("wapipe_processor_last_commit_timestamp_seconds"),
        restore_remaining=value("wapipe_processor_restore_remaining_records") or 0.0,
    )  # fmt: skip


def scrape_ingester(
    url: str, timeout: float = _HTTP_TIMEOUT_SECONDS, tls: ssl.SSLContext | None = None
) -> Scrape:  # fmt: skip
    at = time.time()
    read = _read(url, timeout, tls)
    if isinstance(read, str):
        return Scrape(url, at, error=read)
    ready_status, ready_body, samples = read
    reason = None
    with contextlib.suppress(ValueError, AttributeError):
        reason = json.loads(ready_body).get("reason")
    accepted = [v for name, labels, v in samples if name == "wapipe_ingest_requests_total"
                and labels.get("outcome") in ("published", "spooled")]  # fmt: skip
    spool = [v for name, _, v in samples if name == "wapipe_ingest_spool_records"]
    if not spool and not accepted:
        return Scrape(url, at, error="serves no ingester metrics (another process on this port?)")
    return Scrape(url, at, ready=ready_status == 200, reason=reason, records=sum(accepted),
                  spool_records=spool[0] if spool else None)  # fmt: skip


def scrape(
    endpoints: Sequence[tuple[str, str]], tls: ssl.SSLContext | None = None
) -> list[Scrape]:  # fmt: skip
    """Scrape (service, url) endpoints at once, in their order; `tls` checks the
    ingester's HTTPS certificate."""
    if not endpoints:
        return []

    def one(endpoint: tuple[str, str]) -> Scrape:
        service, url = endpoint
        if service == INGESTER:
            return scrape_ingester(url, tls=tls)
        return scrape_worker(url, service)

    with ThreadPoolExecutor(max_workers=min(16, len(endpoints))) as pool:
        return list(pool.map(one, endpoints))


def endpoints(settings: Settings, options: Options) -> list[tuple[str, str]]:
    """(service, base URL) of every web server to scrape: the flags', else `wapipe run`'s."""
    if options.broker_only:
        return []
    found = []
    for service in options.services:
        if service == INGESTER:
            found.append((service, (options.ingester or ingester_url(settings)).rstrip("/")))
        else:
            urls = options.workers.get(service) or (worker_url(settings, service),)
            found += [(service, url.rstrip("/")) for url in urls]
    return found


# --------------------------------------------------------------------------- the broker


def job_sources(settings: Settings, job: str) -> tuple[str, ...]:
    """The job's source topics, as its worker subscribes to them."""
    from prometheus_client import CollectorRegistry

    from processors.jobs import create_job

    return tuple(create_job(job, settings, CollectorRegistry()).sources)


def _kafka_failure(bootstrap: str, error: BaseException) -> StatusError:
    from confluent_kafka import KafkaException

    if isinstance(error, KafkaException) and error.args:
        reason = getattr(error.args[0], "str", lambda: str(error))()
    else:
        reason = str(error) or type(error).__name__
    return StatusError(cannot_reach_kafka(bootstrap, str(reason)))


def read_groups(
    settings: Settings, sources: Mapping[str, Sequence[str]],
    timeout: float = _KAFKA_TIMEOUT_SECONDS,
) -> dict[str, Group]:  # fmt: skip
    """Each job's consumer group and the offsets of its sources (`sources`: job -> topics)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

    spec: Any = OffsetSpec  # untyped: not exported by confluent_kafka.admin's __all__

    bootstrap = settings.kafka_bootstrap
    problem = tcp_problem(bootstrap, min(timeout, 5.0))
    if problem is not None:
        raise StatusError(cannot_reach_kafka(bootstrap, problem))
    admin = AdminClient({
        "bootstrap.servers": bootstrap, "client.id": "wapipe-status",
        "socket.connection.setup.timeout.ms": 5_000, "log_level": 0,  # errors come as exceptions
    })  # fmt: skip
    groups = {job: f"{settings.topic_prefix}.{job}" for job in sources}
    try:
        metadata = admin.list_topics(timeout=timeout)
        futures = admin.describe_consumer_groups(list(groups.values()), request_timeout=timeout)
        described = {job: futures[group].result() for job, group in groups.items()}
        committed: dict[tuple[str, int], int] = {}
        for job, group in groups.items():
            request = [ConsumerGroupTopicPartitions(group)]
            [future] = admin.list_consumer_group_offsets(request, request_timeout=timeout).values()
            for tp in future.result().topic_partitions or []:
                if tp.offset >= 0 and tp.topic in sources[job]:
                    committed[(job + "/" + tp.topic, tp.partition)] = tp.offset
        partitions = {topic: sorted(metadata.topics[topic].partitions)
                      for topics in sources.values() for topic in topics
                      if topic in metadata.topics}  # fmt: skip
        wanted = [TopicPartition(t, p) for t, ps in partitions.items() for p in ps]
        committed_only = IsolationLevel.READ_COMMITTED
        ends = _offsets(admin, wanted, spec.latest(), committed_only, timeout)
        starts = _offsets(admin, wanted, spec.earliest(), committed_only, timeout)
    except Exception as error:  # librdkafka's KafkaException, a timeout
        raise _kafka_failure(bootstrap, error) from None
    result: dict[str, Group] = {}
    for job, group in groups.items():
        description = described[job]
        members = tuple(sorted(
            (Member(_instance(m.client_id, group), m.host.lstrip("/"),
                    tuple(sorted((tp.topic, tp.partition)
                                 for tp in m.assignment.topic_partitions)))
             for m in description.members), key=lambda m: m.name))  # fmt: skip
        owners = {tp: member.name for member in members for tp in member.partitions}
        offsets = tuple(
            PartitionOffsets(topic, p, committed.get((job + "/" + topic, p)), starts[(topic, p)],
                             ends[(topic, p)], owner=owners.get((topic, p)))
            for topic in sources[job] for p in partitions.get(topic, ())
        )  # fmt: skip
        missing = tuple(topic for topic in sources[job] if topic not in partitions)
        result[job] = Group(group, _state(description.state), members, offsets, missing)
    return _check_markers(bootstrap, settings.topic_prefix, result)


def _offsets(
    admin: Any, partitions: list[Any], spec: Any, isolation: Any, timeout: float
) -> dict[tuple[str, int], int]:
    if not partitions:
        return {}
    futures = admin.list_offsets({tp: spec for tp in partitions}, isolation_level=isolation,
                                 request_timeout=timeout)  # fmt: skip
    return {(tp.topic, tp.partition): int(future.result().offset)
            for tp, future in futures.items()}  # fmt: skip


def _instance(client_id: str, group: str) -> str:
    """The worker's WAPIPE_PROCESSOR_INSTANCE: its client id is `<group>.<instance>.consumer`."""
    if client_id.startswith(f"{group}.") and client_id.endswith(".consumer"):
        return client_id[len(group) + 1 : -len(".consumer")]
    return client_id


def _state(state: object) -> str:
    name = str(getattr(state, "name", state))
    return {"STABLE": "Stable", "EMPTY": "Empty", "DEAD": "Dead",
            "PREPARING_REBALANCING": "PreparingRebalance",
            "COMPLETING_REBALANCING": "CompletingRebalance"}.get(name, name.title())  # fmt: skip


def _check_markers(bootstrap: str, prefix: str, groups: dict[str, Group]) -> dict[str, Group]:
    """Read the partitions one offset behind: a worker commits the offset after its
    batch's last record, and the transaction's commit marker takes the next one, so
    a caught-up partition of a topic written in transactions ends one offset later
    (until the worker's next idle round commits its position past the marker).
    Those with nothing to read there have no lag."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    suspects = {(p.topic, p.partition): p.committed for g in groups.values()
                for p in g.partitions if p.lag == 1 and p.committed is not None}  # fmt: skip
    if not suspects:
        return groups
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"{prefix}.wapipe-status",  # never joined
        "client.id": "wapipe-status", "isolation.level": "read_committed",
        "enable.auto.commit": False, "enable.partition.eof": True, "log_level": 0,
    })  # fmt: skip
    empty: set[tuple[str, int]] = set()
    try:
        consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in suspects.items()])
        pending = set(suspects)
        deadline = time.monotonic() + _MARKER_CHECK_SECONDS
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            key = (str(message.topic()), int(message.partition() or 0))
            error = message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                if key in pending:
                    empty.add(key)
            elif error is not None:
                continue
            pending.discard(key)
    finally:
        consumer.close()
    if not empty:
        return groups
    return {job: Group(g.name, g.state, g.members, tuple(
        PartitionOffsets(p.topic, p.partition, p.committed, p.start, p.end,
                         (p.topic, p.partition) in empty, p.owner) for p in g.partitions
    ), g.missing_topics) for job, g in groups.items()}  # fmt: skip
