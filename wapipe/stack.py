"""`wapipe run`: the whole local pipeline in the foreground, stopped by one Ctrl-C.

Starts the local broker (unless WAPIPE_KAFKA_BOOTSTRAP names one), creates the
topics, then runs each service (ingester, processors) as a child process sharing
this terminal: their JSON log lines interleave on stderr. SIGINT or SIGTERM stops the children
(SIGTERM, so each stops gracefully), then the broker if this command started it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from wapipe.local_kafka import LocalBroker, LocalKafkaError
from wapipe.settings import Settings
from wapipe.topics import create_topics

# Each service: `wapipe <args>`, with environment overrides (each worker its own web
# port on one host). More processors join this list with their issues.
SERVICES: dict[str, tuple[list[str], dict[str, str]]] = {
    "ingest": (["ingest"], {}),
    "normalize": (["process", "normalize"], {"WAPIPE_PROCESSOR_WEB_PORT": "6066"}),
    "funnel": (["process", "funnel"], {"WAPIPE_PROCESSOR_WEB_PORT": "6067"}),
    "templates": (["process", "templates"], {"WAPIPE_PROCESSOR_WEB_PORT": "6068"}),
    "phones": (["process", "phones"], {"WAPIPE_PROCESSOR_WEB_PORT": "6069"}),
}
_STOP_GRACE_SECONDS = 30.0


def run_stack(settings: Settings) -> int:
    broker: LocalBroker | None = None  # set when this command started the broker
    environment = dict(os.environ)
    if not settings.bootstrap_is_explicit:
        local = LocalBroker.from_settings(settings)
        if not local.status().running:
            broker = local
            print(f"wapipe run: starting local Kafka on {local.bootstrap} ...", file=sys.stderr)
        try:
            local.up()
        except LocalKafkaError as error:
            print(f"wapipe run: {error}", file=sys.stderr)
            return 1
        environment["WAPIPE_KAFKA_BOOTSTRAP"] = local.bootstrap
        settings = settings.model_copy(update={"kafka_bootstrap": local.bootstrap})
    try:
        for report in asyncio.run(create_topics(settings)):
            if report.created:
                print(f"wapipe run: created topic {report.name}", file=sys.stderr)
        return _supervise(environment)
    finally:
        if broker is not None:
            print("wapipe run: stopping local Kafka", file=sys.stderr)
            broker.down()


def _supervise(environment: dict[str, str]) -> int:
    stop_requested = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}

    def start(name: str) -> subprocess.Popen[bytes]:
        args, overrides = SERVICES[name]
        return subprocess.Popen(
            [sys.executable, "-m", "wapipe", *args],
            env={**environment, **overrides},
            # Own process group: the terminal's Ctrl-C reaches only us, and we
            # stop the children in order.
            start_new_session=True,
        )

    children = {name: start(name) for name in SERVICES}
    print(f"wapipe run: started {', '.join(children)}; Ctrl-C stops everything", file=sys.stderr)
    status = 0
    try:
        while not stop_requested:
            for name, child in children.items():
                if child.poll() is None:
                    continue
                print(f"wapipe run: {name} exited with {child.returncode}; stopping",
                      file=sys.stderr)  # fmt: skip
                status = 1
                stop_requested = True
            time.sleep(0.2)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for child in children.values():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status
