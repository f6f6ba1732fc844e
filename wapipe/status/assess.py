"""The verdict of `wapipe status`, pure: a `Snapshot` in, a `Report` out.

Events/s is the rate of `wapipe_processor_records_total` (the ingester: webhooks
accepted) between the scrapes at hand (`run_status` decides which it keeps). The age of
a worker's last commit comes from `wapipe_processor_last_commit_timestamp_seconds` when
the worker exports it; otherwise it is bounded from the commit counter
(`wapipe_processor_commit_duration_seconds_count`) between scrapes: `<2s` when it
moved between the last two, `>60s` when it did not move in the last minute.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from wapipe.status.model import (
    INGESTER,
    REBALANCING,
    CommitAge,
    Endpoint,
    Group,
    Report,
    Scrape,
    ServiceStatus,
    Snapshot,
    TopicLag,
)

RATE_WINDOW_SECONDS = 60.0


def assess(snapshot: Snapshot, max_lag: int, window: float = RATE_WINDOW_SECONDS) -> Report:
    """The verdict on each service of the snapshot (in its order: ingester, then jobs)."""
    services: list[ServiceStatus] = []
    for name, histories in snapshot.scrapes.items():
        if name == INGESTER:
            services.append(_assess_ingester(histories, window))
    for name, group in snapshot.groups.items():
        histories = snapshot.scrapes.get(name, ())
        services.append(_assess_job(name, group, histories, snapshot.at, max_lag, window))
    problems = tuple(f"{s.name}: {problem}" for s in services for problem in s.problems)
    return Report(snapshot.at, snapshot.bootstrap, snapshot.prefix, max_lag,
                  tuple(services), problems)  # fmt: skip


def _endpoints(histories: Sequence[Sequence[Scrape]]) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(h[-1].url, h[-1].error is None, h[-1].ready, h[-1].error)
                 for h in histories if h)  # fmt: skip


def _sum_rates(
    histories: Sequence[Sequence[Scrape]], window: float
) -> tuple[float | None, float | None]:
    rates = [r for h in histories if (r := events_per_second(h, window)) is not None]
    if not rates:
        return None, None
    return sum(rate for rate, _ in rates), min(span for _, span in rates)


def _assess_ingester(histories: Sequence[Sequence[Scrape]], window: float) -> ServiceStatus:
    endpoints = _endpoints(histories)
    latest = [h[-1] for h in histories if h]
    problems = [f"unreachable at {s.url}: {s.error}" for s in latest if s.error is not None]
    problems += [f"not ready at {s.url}: {s.reason or '/readyz answers 503'}"
                 for s in latest if s.error is None and s.ready is False]  # fmt: skip
    reachable = [s for s in latest if s.error is None]
    if not reachable:
        state = "down"
    elif len(reachable) < len(latest):
        state = "degraded"
    elif any(s.ready is False for s in reachable):
        state = "not ready"
    else:
        state = "ok"
    spool = [s.spool_records for s in reachable if s.spool_records is not None]
    rate, span = _sum_rates(histories, window)
    return ServiceStatus(INGESTER, state, tuple(problems), endpoints, events_per_second=rate,
                         rate_seconds=span,
                         spool_records=int(sum(spool)) if spool else None)  # fmt: skip


def _assess_job(
    name: str, group: Group, histories: Sequence[Sequence[Scrape]], now: float, max_lag: int,
    window: float,
) -> ServiceStatus:  # fmt: skip
    endpoints = _endpoints(histories)
    latest = [h[-1] for h in histories if h]
    reachable = [s for s in latest if s.error is None]
    problems = []
    if group.missing_topics:
        missing = ", ".join(group.missing_topics)
        problems.append(f"missing source topics {missing}: create them with "
                        "`wapipe topics create`")  # fmt: skip
    unreachable = [f"{s.url}: {s.error}" for s in latest if s.error]
    state = "ok"
    if not group.members:
        state = "down"
        if latest and not reachable:  # the usual case: not running at all
            problems.append(f"not running: no worker in its consumer group {group.name}, "
                            f"and {'; '.join(unreachable)}")  # fmt: skip
            unreachable = []
        else:
            problems.append(f"no worker in its consumer group {group.name}")
    elif latest and not reachable:
        state = "down"
    elif unreachable:
        state = "degraded"
    problems += [f"web server unreachable at {where}" for where in unreachable]
    remaining = [s.restore_remaining for s in reachable if s.restore_remaining is not None]
    restore = int(sum(remaining)) if remaining else None
    if state == "ok":
        if restore:
            state = "restoring"
            problems.append(f"restoring its tables: {restore:,} changelog records to go")
        elif any(s.ready is False for s in reachable):
            state = "starting"
            problems += [f"not ready at {s.url} (/readyz answers 503)"
                         for s in reachable if s.ready is False]  # fmt: skip
        elif group.state in REBALANCING:
            state = "rebalancing"
            problems.append(f"its group is rebalancing ({group.state})")
    lag = sum(p.lag for p in group.partitions)
    if lag > max_lag:
        problems.append(f"lag {lag:,} records, above {max_lag:,}")
        state = "behind" if state == "ok" else state
    topics = []
    for topic in dict.fromkeys(p.topic for p in group.partitions):
        partitions = [p for p in group.partitions if p.topic == topic]
        owners = tuple(sorted({p.owner for p in partitions if p.owner}))
        topics.append(TopicLag(topic, len(partitions), sum(p.lag for p in partitions), owners))
    ages = [a for h in histories if h and (a := commit_age(h, now)) is not None]
    rate, span = _sum_rates(histories, window)
    return ServiceStatus(
        name, state, tuple(problems), endpoints, group, tuple(topics), lag, rate, span,
        min(ages, key=lambda age: age.seconds) if ages else None, restore,
    )  # fmt: skip


def events_per_second(history: Sequence[Scrape], window: float) -> tuple[float, float] | None:
    """(records per second, over how many seconds) from the scrapes of one endpoint:
    from the oldest within `window` seconds of the newest (at least the two newest).
    A counter that went down restarted with its process: it counts from zero again."""
    points = [(s.at, s.records) for s in history if s.error is None and s.records is not None]
    if len(points) < 2:
        return None
    newest = points[-1][0]
    inside = [index for index, (at, _) in enumerate(points) if newest - at <= window]
    first = min(inside[0], len(points) - 2)
    counted = 0.0
    for (_, before), (_, after) in pairwise(points[first:]):
        counted += after - before if after >= before else after
    span = newest - points[first][0]
    if span <= 0:
        return None
    return counted / span, span


def commit_age(history: Sequence[Scrape], now: float) -> CommitAge | None:
    """How long ago the endpoint's worker last committed a batch (see the module's doc)."""
    points = [s for s in history if s.error is None and s.commits is not None]
    # The exported time reads 0 until the worker's first commit (a gauge starts at 0).
    if points and points[-1].last_commit_at:
        return CommitAge(max(0.0, now - points[-1].last_commit_at), "=")
    if len(points) < 2 or points[-1].commits == 0:  # none since the worker started
        return None
    for earlier, later in reversed(list(pairwise(points))):
        if later.commits != earlier.commits:
            return CommitAge(max(0.0, now - earlier.at), "<")
    return CommitAge(max(0.0, now - points[0].at), ">")
