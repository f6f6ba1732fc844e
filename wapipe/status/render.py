"""`wapipe status` drawn, pure: a `Report` as a table for people, or as JSON (`--json`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from wapipe.status.model import INGESTER, REBALANCING, Endpoint, Report, ServiceStatus


def render_table(report: Report, *, partitions: bool = False, note: str | None = None) -> str:
    """The report for people: a line per service (then `note`), a line per job's source
    topic (per partition with `partitions`), then the problems."""
    when = datetime.fromtimestamp(report.at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    lines = [f"Kafka {report.bootstrap}   topic prefix {report.prefix}   "
             f"max lag {report.max_lag:,}   {when}", ""]  # fmt: skip
    rows: list[tuple[str, ...]] = [("SERVICE", "STATE", "WORKERS", "PARTITIONS", "LAG",
                                    "EVENTS/S", "LAST COMMIT", "ADDRESS", "")]  # fmt: skip
    for s in report.services:
        group = s.group
        rows.append((
            s.name, s.state,
            "-" if group is None else str(len(group.members)),
            "-" if group is None else f"{s.assigned}/{len(group.partitions)}",
            _count(s.lag), _rate(s.events_per_second),
            "-" if s.last_commit is None else s.last_commit.text(),
            " ".join(e.url for e in s.endpoints) or "-", _note(s),
        ))  # fmt: skip
    lines += _columns(rows, numeric={2, 4, 5})
    if note:
        lines.append(note)
    if report.ingester_tls:
        lines.append(f"ingester HTTPS certificate: {report.ingester_tls}")
    jobs = [s for s in report.services if s.group is not None and s.group.partitions]
    if jobs and not partitions:
        rows = [("JOB", "TOPIC", "PARTITIONS", "LAG", "WORKERS")]
        rows += [(s.name, t.topic, str(t.partitions), f"{t.lag:,}", ", ".join(t.owners) or "-")
                 for s in jobs for t in s.topics]  # fmt: skip
        lines += ["", *_columns(rows, numeric={2, 3})]
    if jobs and partitions:
        rows = [("JOB", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "WORKER")]
        rows += [(s.name, p.topic, str(p.partition), _count(p.committed), f"{p.end:,}",
                  f"{p.lag:,}", p.owner or "-")
                 for s in jobs if s.group for p in s.group.partitions]  # fmt: skip
        lines += ["", *_columns(rows, numeric={2, 3, 4, 5})]
    lines.append("")
    if report.ok:
        lines.append("All well.")
    else:
        count = len(report.problems)
        lines.append(f"{count} problem{'s' * (count > 1)}:")
        lines += [f"  {problem}" for problem in report.problems]
    return "\n".join(lines)


def _note(service: ServiceStatus) -> str:
    notes = []
    if service.spool_records is not None:
        notes.append(f"spool {service.spool_records:,}")
    if service.restore_remaining:
        notes.append(f"restoring {service.restore_remaining:,}")
    if service.group is not None and service.group.state in REBALANCING:
        notes.append(f"group {service.group.state}")
    return ", ".join(notes)


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _columns(rows: Sequence[Sequence[str]], numeric: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
                 for i, cell in enumerate(row)]  # fmt: skip
        lines.append("  ".join(cells).rstrip())
    return lines


def to_dict(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data (what `--json` prints)."""

    def endpoint(e: Endpoint) -> dict[str, Any]:
        return {"url": e.url, "reachable": e.reachable, "ready": e.ready, "error": e.error}

    def service(s: ServiceStatus) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": s.name, "state": s.state, "ok": s.ok, "problems": list(s.problems),
            "endpoints": [endpoint(e) for e in s.endpoints],
            "events_per_second": s.events_per_second, "rate_seconds": s.rate_seconds,
        }  # fmt: skip
        if s.name == INGESTER:
            data["spool_records"] = s.spool_records
            return data
        group = s.group
        data.update({
            "lag": s.lag,
            "last_commit_seconds_ago": None if s.last_commit is None else s.last_commit.seconds,
            "last_commit_bound": None if s.last_commit is None else s.last_commit.bound,
            "restore_remaining_records": s.restore_remaining,
            "group": None if group is None else {
                "name": group.name, "state": group.state,
                "members": [{"instance": m.instance, "host": m.host,
                             "partitions": [{"topic": t, "partition": p}
                                            for t, p in m.partitions]}
                            for m in group.members],
                "missing_topics": list(group.missing_topics),
            },
            "topics": [{"topic": t.topic, "partitions": t.partitions, "lag": t.lag,
                        "workers": list(t.owners)} for t in s.topics],
            "partitions": [] if group is None else [
                {"topic": p.topic, "partition": p.partition, "committed": p.committed,
                 "start": p.start, "end": p.end, "lag": p.lag, "worker": p.owner}
                for p in group.partitions],
        })  # fmt: skip
        return data

    return {
        "ok": report.ok,
        "at": datetime.fromtimestamp(report.at, UTC).isoformat().replace("+00:00", "Z"),
        "kafka": report.bootstrap, "topic_prefix": report.prefix, "max_lag": report.max_lag,
        "problems": list(report.problems),
        "ingester_tls": report.ingester_tls,
        "services": [service(s) for s in report.services],
    }  # fmt: skip


def render_json(report: Report, *, indent: int | None = 2) -> str:
    return json.dumps(to_dict(report), indent=indent)
