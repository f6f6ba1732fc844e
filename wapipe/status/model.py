"""The plain data of `wapipe status`: what is gathered (a `Snapshot` and its parts), the
verdict drawn from it (a `Report`), the command's `Options`, and the constants they share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from wapipe.stack import WORKERS

INGESTER = "ingest"
SERVICE_NAMES: tuple[str, ...] = (INGESTER, *WORKERS)
DEFAULT_MAX_LAG = 1000
EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_NO_KAFKA = 0, 1, 2, 3
REBALANCING = ("PreparingRebalance", "CompletingRebalance")


class StatusError(Exception):
    """The broker cannot be asked; the message is the one line to print."""


# --------------------------------------------------------------------------- gathered data


@dataclass(frozen=True)
class Member:
    """A worker in a job's consumer group, as the broker sees it."""

    instance: str  # WAPIPE_PROCESSOR_INSTANCE (from its client id), else the client id
    host: str
    partitions: tuple[tuple[str, int], ...]

    @property
    def name(self) -> str:
        return f"{self.instance}@{self.host}" if self.host else self.instance


@dataclass(frozen=True)
class PartitionOffsets:
    """One partition of a job's source: where the group is, where the topic ends."""

    topic: str
    partition: int
    committed: int | None  # None: the group never committed here (it starts at `start`)
    start: int  # the log start offset
    end: int  # the last stable offset: the end a read_committed reader sees
    # Between the committed offset and the end lie only transaction markers (a topic
    # written in transactions has one after each batch): nothing left to read.
    markers_only: bool = False
    owner: str | None = None  # the member it is assigned to

    @property
    def lag(self) -> int:
        if self.markers_only:
            return 0
        return max(0, self.end - (self.start if self.committed is None else self.committed))


@dataclass(frozen=True)
class Group:
    name: str
    state: str  # Stable, Empty, Dead, PreparingRebalance, CompletingRebalance, Unknown
    members: tuple[Member, ...]
    partitions: tuple[PartitionOffsets, ...]  # every partition of the job's sources
    missing_topics: tuple[str, ...] = ()  # sources the broker does not know


@dataclass(frozen=True)
class Scrape:
    """One look at a service's web server: /readyz and /metrics."""

    url: str  # base URL, e.g. http://127.0.0.1:6066
    at: float  # Unix time
    error: str | None = None  # why it could not be asked (then the rest is None)
    ready: bool | None = None
    reason: str | None = None  # the ingester's /readyz reason
    records: float | None = None  # records processed (worker), webhooks accepted (ingester)
    commits: float | None = None  # transactions committed (worker)
    last_commit_at: float | None = None  # Unix time of the last commit, when exported
    restore_remaining: float | None = None  # changelog records still to restore (worker)
    spool_records: float | None = None  # events in the spool (ingester)


@dataclass(frozen=True)
class Snapshot:
    """Everything gathered for one report. `scrapes`: per service, per endpoint, the
    scrapes so far, oldest first (the last one is the current state)."""

    at: float
    bootstrap: str
    prefix: str
    groups: Mapping[str, Group]
    scrapes: Mapping[str, Sequence[Sequence[Scrape]]]


# --------------------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class CommitAge:
    seconds: float
    bound: Literal["=", "<", ">"]  # exactly, at most, at least

    def text(self) -> str:
        shown = f"{self.seconds:.0f}s" if self.seconds >= 1 or self.bound != "<" else "1s"
        return shown if self.bound == "=" else f"{self.bound}{shown}"


@dataclass(frozen=True)
class Endpoint:
    url: str
    reachable: bool
    ready: bool | None
    error: str | None


@dataclass(frozen=True)
class TopicLag:
    topic: str
    partitions: int
    lag: int
    owners: tuple[str, ...]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # ok, behind, down, degraded, restoring, starting, rebalancing, not ready
    problems: tuple[str, ...]
    endpoints: tuple[Endpoint, ...] = ()
    group: Group | None = None
    topics: tuple[TopicLag, ...] = ()
    lag: int | None = None
    events_per_second: float | None = None
    rate_seconds: float | None = None  # the span events/s is measured over
    last_commit: CommitAge | None = None
    restore_remaining: int | None = None
    spool_records: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def assigned(self) -> int | None:
        if self.group is None:
            return None
        return sum(len(member.partitions) for member in self.group.members)


@dataclass(frozen=True)
class Report:
    at: float
    bootstrap: str
    prefix: str
    max_lag: int
    services: tuple[ServiceStatus, ...]
    problems: tuple[str, ...] = field(default=())  # "service: problem", in service order
    ingester_tls: str | None = None  # how the ingester's HTTPS certificate was checked

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_status(self) -> int:
        return EXIT_OK if self.ok else EXIT_PROBLEM


# --------------------------------------------------------------------------- the command's options


@dataclass(frozen=True)
class Options:
    services: tuple[str, ...] = SERVICE_NAMES
    workers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # job -> base URLs
    ingester: str | None = None
    max_lag: int = DEFAULT_MAX_LAG
    sample: float = 1.0
    watch: float | None = None
    json: bool = False
    partitions: bool = False
    broker_only: bool = False
    ca_file: Path | None = None  # the CA that signed the ingester's HTTPS certificate
    insecure: bool = False  # do not verify the ingester's HTTPS certificate
