"""`wapipe run`: the whole local pipeline in the foreground, stopped by one Ctrl-C.

Checks that its ports are free, starts the local broker (unless WAPIPE_KAFKA_BOOTSTRAP
names one, which must answer), creates the topics, then runs each service (ingester,
processors) as a child process whose JSON log lines go to a file of its own,
`WAPIPE_HOME/logs/<service>.log` (appended to, through a pipe: rotated by size,
`logfiles.RotatingLog`). The terminal gets a line per service as
it becomes ready (its /readyz answers 200), then a summary (addresses, log files,
commands to try), and afterwards only what needs a person: a child's error lines (rate
limited, `logfiles.ErrorEcho`) and its exit. A child that exits stops everything.
SIGINT or SIGTERM stops the children (SIGTERM, so each stops gracefully), then the
broker if this command started it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from processors.jobs import JOBS
from wapipe.local_kafka import LocalBroker, LocalKafkaError
from wapipe.logfiles import ErrorEcho, Follower, RotatingLog, log_directory, log_file, pump
from wapipe.preflight import kafka_problem, port_taken, port_taken_message
from wapipe.settings import Settings
from wapipe.topics import create_topics

# Each service and its command, `wapipe <args>`: the ingester, then a worker of each
# job. The workers' web ports are WAPIPE_PROCESSOR_WEB_PORT and the ports after it, in
# this order (`worker_ports`).
SERVICES: dict[str, tuple[str, ...]] = {
    "ingest": ("ingest",),
    **{job: ("process", job) for job in JOBS},
}
WORKERS: tuple[str, ...] = tuple(JOBS)
READY_TIMEOUT_SECONDS = 180.0
_STOP_GRACE_SECONDS = 30.0
_POLL_SECONDS = 0.2
_PROBE_TIMEOUT_SECONDS = 1.0
_WORKER_PORT_SETTING = "WAPIPE_PROCESSOR_WEB_PORT (`wapipe run` gives the workers it and the next "
_WORKER_PORT_SETTING += f"{len(WORKERS) - 1})"


def worker_ports(settings: Settings) -> dict[str, int]:
    """Each worker's web port under `wapipe run`: WAPIPE_PROCESSOR_WEB_PORT and the ports
    after it, in SERVICES order (6066-6071 by default)."""
    return {job: settings.processor_web_port + index for index, job in enumerate(WORKERS)}


def loopback(host: str) -> str:
    """Where to reach a server listening on `host` from this machine."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def ingester_url(settings: Settings) -> str:
    scheme = "https" if settings.tls_cert is not None else "http"
    return f"{scheme}://{loopback(settings.ingest_host)}:{settings.ingest_port}"


def worker_url(settings: Settings, job: str) -> str:
    return f"http://{loopback(settings.processor_web_host)}:{worker_ports(settings)[job]}"


@dataclass(frozen=True)
class Service:
    """One child of `wapipe run`."""

    name: str
    args: tuple[str, ...]
    environment: dict[str, str]  # overrides of the inherited environment
    host: str  # where it listens
    port: int
    url: str  # its base URL from this machine
    log: Path

    @property
    def address(self) -> str:
        """What a person uses: the ingester's webhook URL, a worker's metrics."""
        return f"{self.url}/webhooks/whatsapp" if self.name == "ingest" else f"{self.url}/metrics"


def plan(settings: Settings) -> list[Service]:
    """The services `wapipe run` starts, with their ports, URLs and log files."""
    services = []
    for name, args in SERVICES.items():
        # Log files are JSON whatever WAPIPE_LOG_FORMAT says: `wapipe logs` renders them.
        environment = {"WAPIPE_LOG_FORMAT": "json"}
        if name in WORKERS:
            port = worker_ports(settings)[name]
            environment["WAPIPE_PROCESSOR_WEB_PORT"] = str(port)
            host, url = settings.processor_web_host, worker_url(settings, name)
        else:
            host, port, url = settings.ingest_host, settings.ingest_port, ingester_url(settings)
        services.append(Service(name, args, environment, host, port, url,
                                log_file(settings.home, name).resolve()))  # fmt: skip
    return services


def ports_problem(settings: Settings, services: list[Service]) -> str | None:
    """The one line saying why the services cannot have their ports, or None."""
    last = settings.processor_web_port + len(WORKERS) - 1
    if last > 65535:
        return (f"WAPIPE_PROCESSOR_WEB_PORT={settings.processor_web_port}: `wapipe run` "
                f"gives the workers it and the next {len(WORKERS) - 1}, up to {last}, "
                "above 65535: choose a lower one")  # fmt: skip
    if settings.ingest_port in worker_ports(settings).values():
        return (f"WAPIPE_INGEST_PORT={settings.ingest_port} is one of the workers' web ports "
                f"under `wapipe run` ({settings.processor_web_port}-{last}, from "
                "WAPIPE_PROCESSOR_WEB_PORT): choose another for one of them")  # fmt: skip
    for service in services:
        if port_taken(service.host, service.port):
            if service.name == "ingest":
                return port_taken_message(service.port, service.host, "the ingester's port",
                                          "WAPIPE_INGEST_PORT")  # fmt: skip
            whose = f"{service.name}'s web port"
            return port_taken_message(service.port, service.host, whose, _WORKER_PORT_SETTING)
    return None


def run_stack(settings: Settings, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    explicit = sorted(settings.model_fields_set)
    services = plan(settings)
    problem = ports_problem(settings, services)
    if problem is not None:
        print(f"wapipe run: {problem}", file=err)
        return 1
    broker: LocalBroker | None = None  # set when this command started the broker
    kafka_log: Path | None = None
    environment = dict(os.environ)
    if settings.bootstrap_is_explicit:
        problem = kafka_problem(settings.kafka_bootstrap)
        if problem is not None:
            print(f"wapipe run: {problem}", file=err)
            return 1
        print(f"wapipe run: Kafka answers at {settings.kafka_bootstrap}", file=out, flush=True)
    else:
        local = LocalBroker.from_settings(settings)
        kafka_log = local.log_file
        if not local.status().running:
            broker = local
            print(f"wapipe run: starting local Kafka on {local.bootstrap} ...", file=out,
                  flush=True)  # fmt: skip
        try:
            local.up()
        except LocalKafkaError as error:
            print(f"wapipe run: {error}", file=err)
            return 1
        environment["WAPIPE_KAFKA_BOOTSTRAP"] = local.bootstrap
        settings = settings.model_copy(update={"kafka_bootstrap": local.bootstrap})
    try:
        reports = asyncio.run(create_topics(settings))
        created = sum(report.created for report in reports)
        print(f"wapipe run: the {len(reports)} topics of prefix {settings.topic_prefix} "
              f"exist ({created} created now)", file=out, flush=True)  # fmt: skip
        for report in reports:
            if report.problem:
                print(f"wapipe run: warning: topic {report.name} {report.problem}", file=err)
        supervisor = _Supervisor(settings, services, environment, out, err)
        return supervisor.run(kafka_log, explicit)
    finally:
        if broker is not None:
            print("wapipe run: stopping local Kafka", file=out, flush=True)
            broker.down()
        print("wapipe run: stopped", file=out, flush=True)


class _Supervisor:
    def __init__(
        self, settings: Settings, services: list[Service], environment: dict[str, str],
        out: TextIO, err: TextIO,
    ) -> None:  # fmt: skip
        self.settings, self.services, self.environment = settings, services, environment
        self._name_width = max(len(service.name) for service in services)  # conversations
        self.out, self.err = out, err
        self.stop_requested = False
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.pumps: list[threading.Thread] = []  # each child's output into its log file
        self.echo = ErrorEcho()
        self.follower: Follower | None = None

    def run(self, kafka_log: Path | None, explicit: list[str]) -> int:
        def request_stop(signum: int, _frame: object) -> None:
            self.stop_requested = True

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        status = 0
        try:
            self._start_all()
            status = self._watch(kafka_log, explicit)
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return status

    def _start_all(self) -> None:
        directory = log_directory(self.settings.home).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        # Follow each log from its end now: what earlier runs wrote is not news.
        self.follower = Follower({service.name: service.log for service in self.services})
        max_bytes = self.settings.log_file_mb * 1024 * 1024
        for service in self.services:
            child = subprocess.Popen(
                [sys.executable, "-m", "wapipe", *service.args],
                env={**self.environment, **service.environment},
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                # Own process group: the terminal's Ctrl-C reaches only us, and we
                # stop the children in order.
                start_new_session=True,
            )  # fmt: skip
            self.children[service.name] = child
            log = RotatingLog(service.log, max_bytes, self.settings.log_files_kept)
            pump_thread = threading.Thread(target=pump, args=(child.stdout, log),
                                           name=f"log-{service.name}", daemon=True)  # fmt: skip
            pump_thread.start()
            self.pumps.append(pump_thread)
        print(f"wapipe run: started {', '.join(self.children)}; their logs are in "
              f"{_shown(directory)}/; waiting until each is ready ...", file=self.out,
              flush=True)  # fmt: skip

    def _watch(self, kafka_log: Path | None, explicit: list[str]) -> int:
        started = time.monotonic()
        ready: dict[str, float] = {}
        summarized = False
        while not self.stop_requested:
            self._echo_errors()
            for name, child in self.children.items():
                if child.poll() is not None:
                    self._echo_errors(final=True)
                    log = _shown(self._service(name).log)
                    print(f"wapipe run: {name} exited with status {child.returncode} (its log: "
                          f"{log}); stopping everything", file=self.err, flush=True)  # fmt: skip
                    return 1
            waiting = [s for s in self.services if s.name not in ready]
            for service in waiting:
                if _answers(f"{service.url}/readyz"):
                    ready[service.name] = time.monotonic() - started
                    print(f"  ready  {service.name:<{self._name_width}} {service.address}  "
                          f"({ready[service.name]:.1f} s)", file=self.out, flush=True)  # fmt: skip
            overdue = time.monotonic() - started > READY_TIMEOUT_SECONDS
            if not summarized and (len(ready) == len(self.services) or overdue):
                late = [s.name for s in self.services if s.name not in ready]
                if late:
                    print(f"wapipe run: not ready after {READY_TIMEOUT_SECONDS:.0f} s: "
                          f"{', '.join(late)} (`wapipe logs {late[0]}` says why); still "
                          "waiting", file=self.err, flush=True)  # fmt: skip
                print(summary(self.settings, self.services, set(ready), kafka_log, explicit,
                              time.monotonic() - started), file=self.out, flush=True)  # fmt: skip
                summarized = True
            time.sleep(_POLL_SECONDS)  # children and HTTP endpoints: nothing to await on
        return 0

    def _echo_errors(self, final: bool = False) -> None:
        if self.follower is None:
            return
        now = float("inf") if final else time.monotonic()
        echoed: list[str] = []
        for line in self.follower.poll():
            echoed.extend(self.echo.offer(line, time.monotonic()))
        echoed.extend(self.echo.flush(now))
        for text in echoed:
            print(text, file=self.err, flush=True)

    def _stop_all(self) -> None:
        running = [child for child in self.children.values() if child.poll() is None]
        if running:
            print("wapipe run: stopping the services ...", file=self.out, flush=True)
        for child in running:
            child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for name, child in self.children.items():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"wapipe run: {name} did not stop within {_STOP_GRACE_SECONDS:.0f} s; "
                      "killed", file=self.err, flush=True)  # fmt: skip
                child.kill()
                child.wait()
            else:
                if child in running and child.returncode != 0:
                    print(f"wapipe run: {name} stopped with status {child.returncode}",
                          file=self.err, flush=True)  # fmt: skip
        for pump_thread in self.pumps:  # each ends at its child's last line
            pump_thread.join(_STOP_GRACE_SECONDS)
        self._echo_errors(final=True)

    def _service(self, name: str) -> Service:
        return next(service for service in self.services if service.name == name)


def summary(
    settings: Settings, services: list[Service], ready: set[str], kafka_log: Path | None,
    explicit: list[str], seconds: float,
) -> str:  # fmt: skip
    """What `wapipe run` prints once its services are up: where each one is, where it
    logs, and what to try next."""
    rows = [("kafka", settings.kafka_bootstrap,
             _shown(kafka_log) if kafka_log else "(yours: WAPIPE_KAFKA_BOOTSTRAP)")]  # fmt: skip
    rows += [(s.name, s.address + ("" if s.name in ready else "  (not ready)"), _shown(s.log))
             for s in services]  # fmt: skip
    width = max(len(address) for _, address, _ in rows)
    named = max(len("SERVICE"), *(len(name) for name, _, _ in rows))
    what = "is up" if len(ready) == len(services) else "is partly up"
    lines = [
        "",
        f"wapipe {what} after {seconds:.1f} s (topic prefix {settings.topic_prefix}). "
        "Ctrl-C stops everything.",
        "",
        f"  {'SERVICE':<{named}} {'ADDRESS':<{width}}  LOG",
        *(f"  {name:<{named}} {address:<{width}}  {log}" for name, address, log in rows),
        "",
        "Try:",
        "  wapipe status                 how each job is doing: workers, lag, events/s",
        "  wapipe logs funnel -f         follow one service's log (every service: wapipe logs -f)",
        "  wapipe simulate --time-scale 1440 --duration 60 --rate 40",
        "                                post a day of realistic webhooks in a minute",
        "  wapipe tail alerts            the alerts as they are written",
    ]
    if explicit:
        names = ", ".join(f"WAPIPE_{name.upper()}" for name in explicit)
        lines.append(f"  (in a shell with the same settings as this one: {names})")
    lines += ["", "Errors and exits of the services show here; everything else is in the logs."]
    return "\n".join(lines)


def _answers(url: str) -> bool:
    """True when GET `url` answers 200 (a loopback service of ours: TLS not verified)."""
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(  # noqa: S310 - http(s) URLs of our own services
            url, timeout=_PROBE_TIMEOUT_SECONDS, context=context
        ) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def _shown(path: Path) -> str:
    """A path as short as it is clear: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
