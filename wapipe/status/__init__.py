"""`wapipe status`: how the pipeline is doing, read-only, on one screen.

Three layers: `gather` returns plain dataclasses (`model`); `assess` turns them into a
`Report` with a verdict per service; `render` draws it as a table or as JSON. The last
two are pure. Here, the command: `run_status` gathers, judges and draws, once or, with
`--watch`, again and again. Events/s needs two scrapes: a single run takes two,
`--sample` seconds apart; `--watch` keeps those of the last minute.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from typing import TextIO

from wapipe.settings import Settings
from wapipe.status.assess import RATE_WINDOW_SECONDS, assess, commit_age, events_per_second
from wapipe.status.gather import (
    endpoints,
    job_sources,
    read_groups,
    scrape,
    scrape_ingester,
    scrape_worker,
    tls_check,
)
from wapipe.status.model import (
    DEFAULT_MAX_LAG,
    EXIT_NO_KAFKA,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
    INGESTER,
    SERVICE_NAMES,
    CommitAge,
    Endpoint,
    Group,
    Member,
    Options,
    PartitionOffsets,
    Report,
    Scrape,
    ServiceStatus,
    Snapshot,
    StatusError,
    TopicLag,
)
from wapipe.status.render import render_json, render_table, to_dict

__all__ = [
    "DEFAULT_MAX_LAG",
    "EXIT_NO_KAFKA",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "INGESTER",
    "RATE_WINDOW_SECONDS",
    "SERVICE_NAMES",
    "CommitAge",
    "Endpoint",
    "Group",
    "Member",
    "Options",
    "PartitionOffsets",
    "Report",
    "Scrape",
    "ServiceStatus",
    "Snapshot",
    "StatusError",
    "TopicLag",
    "assess",
    "commit_age",
    "endpoints",
    "events_per_second",
    "job_sources",
    "read_groups",
    "render_json",
    "render_table",
    "run_status",
    "scrape",
    "scrape_ingester",
    "scrape_worker",
    "to_dict",
]


def run_status(
    settings: Settings, options: Options, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    jobs = [service for service in options.services if service != INGESTER]
    sources = {job: job_sources(settings, job) for job in jobs}
    targets = endpoints(settings, options)
    history: dict[tuple[str, str], list[Scrape]] = {target: [] for target in targets}
    https = any(s == INGESTER and url.startswith("https:") for s, url in targets)
    try:
        tls, tls_said = tls_check(settings, options) if https else (None, None)
    except StatusError as error:
        print(f"wapipe status: {error}", file=err)
        return EXIT_USAGE

    def look() -> Report:
        for target, found in zip(targets, scrape(targets, tls), strict=True):
            history[target].append(found)
            keep = [s for s in history[target] if found.at - s.at <= RATE_WINDOW_SECONDS + 1]
            history[target][:] = history[target][-2:] if len(keep) < 2 else keep
        groups = read_groups(settings, sources) if jobs else {}
        scrapes: dict[str, list[list[Scrape]]] = {}
        for (service, _), scraped in history.items():
            scrapes.setdefault(service, []).append(scraped)
        snapshot = Snapshot(time.time(), settings.kafka_bootstrap, settings.topic_prefix,
                            groups, scrapes)  # fmt: skip
        return replace(assess(snapshot, options.max_lag), ingester_tls=tls_said)

    def first_look() -> Report:
        if options.sample > 0 and targets:  # a rate needs two scrapes
            started = time.monotonic()
            for target, found in zip(targets, scrape(targets, tls), strict=True):
                history[target].append(found)
            time.sleep(max(0.0, options.sample - (time.monotonic() - started)))
        return look()

    if options.watch is None:
        try:
            report = first_look()
        except StatusError as error:
            print(f"wapipe status: {error}", file=err)
            return EXIT_NO_KAFKA
        _show(report, options, out, watching=False)
        return report.exit_status

    status = EXIT_PROBLEM
    clear = out.isatty() and not options.json
    try:
        look_now = first_look
        while True:
            started = time.monotonic()
            try:
                report = look_now()
            except StatusError as error:
                status = EXIT_NO_KAFKA
                if clear:
                    out.write("\x1b[H\x1b[2J")
                print(f"wapipe status: {error} (retrying every {options.watch:g} s)",
                      file=out if clear else err, flush=True)  # fmt: skip
            else:
                status = report.exit_status
                if clear:
                    out.write("\x1b[H\x1b[2J")
                elif look_now is look and not options.json:
                    out.write("\n")  # between frames
                _show(report, options, out, watching=True)
            look_now = look
            time.sleep(max(0.0, options.watch - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return status


def _show(report: Report, options: Options, out: TextIO, *, watching: bool) -> None:
    if options.json:
        out.write(render_json(report, indent=None if watching else 2) + "\n")
    else:
        if watching:
            note = (f"(every {options.watch:g} s, events/s over the last minute at most; "
                    "Ctrl-C stops)")  # fmt: skip
        elif options.sample > 0:
            note = f"(events/s over {options.sample:g} s; `--watch` for the last minute)"
        else:
            note = None
        out.write(render_table(report, partitions=options.partitions, note=note) + "\n")
    out.flush()
