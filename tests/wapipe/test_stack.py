"""`wapipe run`: its ports, its summary, and the whole stack as a process: quiet until
ready, a log file per service, stopped by SIGTERM; a service that dies stops it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from wapipe.settings import Settings
from wapipe.stack import SERVICES, WORKERS, plan, ports_problem, summary, worker_ports

# --------------------------------------------------------------------------- ports and summary


def test_status_help_says_its_default_max_lag():
    from wapipe.status import DEFAULT_MAX_LAG

    help_text = subprocess.run(
        [sys.executable, "-m", "wapipe", "status", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f"(default {DEFAULT_MAX_LAG:,})" in " ".join(help_text.split())


def test_the_workers_web_ports_follow_the_setting():
    assert worker_ports(Settings()) == {
        "normalize": 6066, "funnel": 6067, "templates": 6068, "phones": 6069,
        "conversations": 6070, "limits": 6071,
    }  # fmt: skip
    assert worker_ports(Settings(processor_web_port=7000)) == {
        "normalize": 7000, "funnel": 7001, "templates": 7002, "phones": 7003,
        "conversations": 7004, "limits": 7005,
    }  # fmt: skip


def test_each_service_logs_json_to_a_file_of_its_own(tmp_path):
    services = plan(Settings(home=tmp_path, processor_web_port=7000, ingest_port=7100))

    assert [s.name for s in services] == list(SERVICES)
    assert {s.name: s.log for s in services} == {
        name: (tmp_path / "logs" / f"{name}.log").resolve() for name in SERVICES
    }
    assert all(s.environment["WAPIPE_LOG_FORMAT"] == "json" for s in services)
    funnel = next(s for s in services if s.name == "funnel")
    assert funnel.environment["WAPIPE_PROCESSOR_WEB_PORT"] == "7001"
    assert funnel.address == "http://127.0.0.1:7001/metrics"
    assert services[0].address == "http://127.0.0.1:7100/webhooks/whatsapp"


def test_ports_that_cannot_work_are_named_with_the_fix():
    clash = Settings(processor_web_port=7000, ingest_port=7002)
    too_high = Settings(processor_web_port=65534)

    assert "WAPIPE_INGEST_PORT=7002 is one of the workers' web ports" in (
        ports_problem(clash, plan(clash)) or ""
    )
    assert "up to 65539, above 65535: choose a lower one" in (
        ports_problem(too_high, plan(too_high)) or ""
    )


def test_a_port_taken_is_named_with_the_setting_that_moves_it(unused_port):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        settings = Settings(processor_web_host="127.0.0.1", processor_web_port=taken - 1,
                            ingest_host="127.0.0.1", ingest_port=unused_port())  # fmt: skip
        if any(p != taken and _taken(p) for p in worker_ports(settings).values()):
            pytest.skip("a neighbouring port is taken by someone else")

        problem = ports_problem(settings, plan(settings))

    assert problem == (
        f"port {taken} (funnel's web port, on 127.0.0.1) is taken by another process: stop "
        "it (another `wapipe run`?), or choose another port with WAPIPE_PROCESSOR_WEB_PORT "
        "(`wapipe run` gives the workers it and the next 5)"
    )


def test_the_summary_says_where_everything_is_and_what_to_try(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings(home=Path(".wapipe"), processor_web_port=7000, ingest_port=7100)
    services = plan(settings)

    text = summary(settings, services, set(SERVICES) - {"phones"}, tmp_path / "kafka.log",
                   ["topic_prefix"], 4.25)  # fmt: skip

    lines = text.splitlines()
    assert lines[1] == (
        "wapipe is partly up after 4.2 s (topic prefix whatsapp). Ctrl-C stops everything."
    )
    assert lines[3].split() == ["SERVICE", "ADDRESS", "LOG"]
    assert lines[4].split() == ["kafka", "localhost:9092", "kafka.log"]
    assert lines[5].split() == ["ingest", "http://127.0.0.1:7100/webhooks/whatsapp",
                                ".wapipe/logs/ingest.log"]  # fmt: skip
    assert lines[9].split() == ["phones", "http://127.0.0.1:7003/metrics", "(not", "ready)",
                                ".wapipe/logs/phones.log"]  # fmt: skip
    # The columns line up, the longest name (conversations) included.
    table = lines[3 : 4 + len(services) + 1]
    assert len({line.index(line.split()[1]) for line in table}) == 1, "\n".join(table)
    for command in ("wapipe status", "wapipe logs funnel -f", "wapipe simulate",
                    "wapipe tail alerts"):  # fmt: skip
        assert any(line.strip().startswith(command) for line in lines), command
    assert "  (in a shell with the same settings as this one: WAPIPE_TOPIC_PREFIX)" in lines


# --------------------------------------------------------------------------- the stack


def _taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _free_run_of_ports(count: int) -> int:
    """The first of `count` consecutive free loopback ports."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            first = sock.getsockname()[1]
        if first + count <= 65535 and not any(_taken(first + i) for i in range(count)):
            return first
    raise AssertionError(f"no {count} consecutive free ports found")


class Stack:
    """`wapipe run` as a subprocess; its stdout collected line by line as it comes."""

    def __init__(self, tmp_path: Path, bootstrap: str, ingest_port: int) -> None:
        self.home = tmp_path / "home"
        self.base_port = _free_run_of_ports(len(WORKERS))
        self.environment = {
            **os.environ,
            "WAPIPE_KAFKA_BOOTSTRAP": bootstrap,
            "WAPIPE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}.whatsapp",
            "WAPIPE_TOPIC_PARTITIONS": "2",
            "WAPIPE_HOME": str(self.home),
            "WAPIPE_SPOOL_DIR": str(tmp_path / "spool"),
            "WAPIPE_INGEST_HOST": "127.0.0.1",
            "WAPIPE_INGEST_PORT": str(ingest_port),
            "WAPIPE_PROCESSOR_WEB_PORT": str(self.base_port),
        }
        tmp_path.mkdir(parents=True)
        self.stderr_path = tmp_path / "run.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "wapipe", "run"], env=self.environment,
                stdout=subprocess.PIPE, stderr=stderr, text=True,
            )  # fmt: skip
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def stdout(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_for_line(self, start: str, timeout: float) -> None:
        with self._changed:
            ok = self._changed.wait_for(
                lambda: (
                    any(line.startswith(start) for line in self.lines)
                    or self.process.poll() is not None
                ),
                timeout,
            )
        assert ok, f"`wapipe run` printed nothing for {timeout:.0f} s:\n{self.stdout}"
        assert any(line.startswith(start) for line in self.lines), (
            f"`wapipe run` printed no line starting {start!r} within {timeout:.0f} s "
            f"(exit status {self.process.poll()}):\n{self.stdout}\n{self.stderr}"
        )

    def wapipe(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wapipe", *args], env=self.environment,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def stack(kafka_bootstrap, tmp_path, unused_port):
    started: list[Stack] = []

    def start() -> Stack:
        started.append(Stack(tmp_path / f"run-{len(started)}", kafka_bootstrap, unused_port()))
        return started[-1]

    yield start
    for running in started:
        running.stop()


@pytest.mark.kafka
@pytest.mark.slow
def test_run_is_quiet_until_ready_then_summarizes_and_stops_on_sigterm(stack):
    run = stack()
    run.wait_for_line("Errors and exits of the services show here", timeout=180)

    out = run.stdout
    assert "wapipe is up after" in out
    for name in SERVICES:
        assert f"  ready  {name}" in out
    for name, port in [("normalize", run.base_port), ("phones", run.base_port + 3)]:
        assert f"http://127.0.0.1:{port}/metrics" in out, name
        assert str(run.home / "logs" / f"{name}.log") in out
    ingest = run.environment["WAPIPE_INGEST_PORT"]
    assert f"http://127.0.0.1:{ingest}/webhooks/whatsapp" in out
    assert "wapipe status" in out
    assert "wapipe logs funnel -f" in out
    assert not any(line.startswith("{") for line in out.splitlines()), "a JSON log line leaked"
    assert len(out.splitlines()) < 40
    assert "exited" not in run.stderr

    for name in SERVICES:
        lines = (run.home / "logs" / f"{name}.log").read_text().splitlines()
        assert lines, f"{name} logged nothing"
        assert all(json.loads(line)["service"] == name for line in lines)

    logs = run.wapipe("logs", "normalize", "-n", "2")  # a pipe: raw JSON
    assert logs.returncode == 0, logs.stderr
    written = (run.home / "logs" / "normalize.log").read_text().splitlines()
    assert logs.stdout.splitlines() == written[-2:]
    every = run.wapipe("logs")
    assert {json.loads(line)["service"] for line in every.stdout.splitlines()} == set(SERVICES)

    status = run.wapipe("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.rstrip().endswith("All well.")

    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(timeout=90) == 0, run.stdout + run.stderr
    run.wait_for_line("wapipe run: stopped", timeout=5)
    assert "stopped with status" not in run.stderr  # every service stopped gracefully
    last = (run.home / "logs" / "normalize.log").read_text().splitlines()[-1]
    assert json.loads(last)["event"] == "worker stopped"


@pytest.mark.kafka
@pytest.mark.slow
def test_a_service_that_dies_is_one_line_and_stops_everything(stack):
    run = stack()
    run.wait_for_line("Errors and exits of the services show here", timeout=180)
    first = json.loads((run.home / "logs" / "funnel.log").read_text().splitlines()[0])

    os.kill(first["pid"], signal.SIGKILL)

    assert run.process.wait(timeout=90) == 1
    log = run.home / "logs" / "funnel.log"
    assert run.stderr.splitlines() == [
        f"wapipe run: funnel exited with status -9 (its log: {log}); stopping everything"
    ]
    for name in set(SERVICES) - {"funnel"}:  # the others were stopped gracefully
        last = (run.home / "logs" / f"{name}.log").read_text().splitlines()[-1]
        assert json.loads(last)["event"] in ("worker stopped", "ingester stopped"), name
