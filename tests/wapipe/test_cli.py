"""The `wapipe` command a newcomer meets first."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from wapipe.topics import TOPICS


def _wapipe(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wapipe", *args],
        env={**os.environ, **environment},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_help_lists_every_command():
    result = _wapipe("--help")
    assert result.returncode == 0
    for command in ("kafka", "topics", "ingest", "run", "config"):
        assert command in result.stdout


def test_no_command_prints_help_and_fails():
    result = _wapipe()
    assert result.returncode == 2
    assert "usage: wapipe" in result.stdout


def test_topics_list_names_every_topic_with_the_prefix():
    result = _wapipe("topics", "list", WAPIPE_TOPIC_PREFIX="acme")
    assert result.returncode == 0
    for spec in TOPICS:
        assert f"acme.{spec.suffix}" in result.stdout


def test_config_shows_values_and_masks_secrets():
    result = _wapipe("config", WAPIPE_WEBHOOK_SECRET="very-secret-value", WAPIPE_INGEST_PORT="9999")
    assert result.returncode == 0
    assert "WAPIPE_INGEST_PORT = 9999" in result.stdout
    assert "very-secret-value" not in result.stdout
    assert "WAPIPE_WEBHOOK_SECRET = **********" in result.stdout


def test_help_lists_status_and_logs():
    result = _wapipe("--help")
    for command in ("status", "logs"):
        assert command in result.stdout
    assert "--max-lag" in _wapipe("status", "--help").stdout
    assert "--follow" in _wapipe("logs", "--help").stdout


# --------------------------------------------------------------------------- the first errors
# Each is one line on stderr that names the cause and the way out, and a non-zero exit.

KAFKA_HINT = "start it with `wapipe kafka up` or set WAPIPE_KAFKA_BOOTSTRAP"


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another process (this one) listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_ingester_port_taken(taken_port, unused_port, tmp_path):
    result = _wapipe("ingest", WAPIPE_INGEST_HOST="127.0.0.1", WAPIPE_INGEST_PORT=str(taken_port),
                     WAPIPE_KAFKA_BOOTSTRAP=f"127.0.0.1:{unused_port()}",
                     WAPIPE_SPOOL_DIR=str(tmp_path / "spool"))  # fmt: skip

    assert result.returncode == 1
    assert _one_line(result) == (
        f"wapipe ingest: port {taken_port} (the ingester's port, on 127.0.0.1) is taken by "
        "another process: stop it (another `wapipe run`?), or choose another port with "
        "WAPIPE_INGEST_PORT"
    )


def test_worker_web_port_taken(taken_port, unused_port, tmp_path):
    result = _wapipe("process", "normalize", WAPIPE_PROCESSOR_WEB_HOST="127.0.0.1",
                     WAPIPE_PROCESSOR_WEB_PORT=str(taken_port), WAPIPE_HOME=str(tmp_path),
                     WAPIPE_KAFKA_BOOTSTRAP=f"127.0.0.1:{unused_port()}")  # fmt: skip

    assert result.returncode == 1
    assert _one_line(result) == (
        f"wapipe process normalize: port {taken_port} (normalize's web port, on 127.0.0.1) is "
        "taken by another process: stop it (another `wapipe run`?), or choose another port "
        "with WAPIPE_PROCESSOR_WEB_PORT"
    )


def test_run_checks_every_port_before_starting_anything(taken_port, unused_port, tmp_path):
    result = _wapipe("run", WAPIPE_INGEST_HOST="127.0.0.1", WAPIPE_INGEST_PORT=str(taken_port),
                     WAPIPE_PROCESSOR_WEB_PORT=str(unused_port()), WAPIPE_HOME=str(tmp_path),
                     WAPIPE_KAFKA_BOOTSTRAP=f"127.0.0.1:{unused_port()}")  # fmt: skip

    assert result.returncode == 1
    assert _one_line(result).startswith(f"wapipe run: port {taken_port} (the ingester's port")
    assert "WAPIPE_INGEST_PORT" in result.stderr
    assert not (tmp_path / "logs").exists()  # nothing was started


def test_kafka_up_without_java(tmp_path, unused_port):
    empty = tmp_path / "bin"
    empty.mkdir()

    result = _wapipe("kafka", "up", PATH=str(empty), WAPIPE_HOME=str(tmp_path / "home"),
                     WAPIPE_LOCAL_KAFKA_PORT=str(unused_port()),
                     WAPIPE_LOCAL_KAFKA_CONTROLLER_PORT=str(unused_port()))  # fmt: skip

    assert result.returncode == 1
    assert _one_line(result) == (
        "wapipe kafka up: Java is not installed: the local broker needs Java 17 or newer "
        "(Debian: apt-get install openjdk-17-jre-headless)"
    )


@pytest.mark.parametrize(
    ("args", "status"),
    [
        pytest.param(("topics", "create"), 1, id="topics-create"),
        pytest.param(("tail", "alerts", "--timeout", "5"), 1, id="tail"),
        pytest.param(("status",), 3, id="status"),
        pytest.param(("run",), 1, id="run"),
    ],
)
def test_a_broker_that_does_not_answer(args, status, unused_port, tmp_path):
    bootstrap = f"127.0.0.1:{unused_port()}"

    result = _wapipe(*args, WAPIPE_KAFKA_BOOTSTRAP=bootstrap, WAPIPE_HOME=str(tmp_path),
                     WAPIPE_INGEST_HOST="127.0.0.1", WAPIPE_INGEST_PORT=str(unused_port()),
                     WAPIPE_PROCESSOR_WEB_PORT=str(unused_port()))  # fmt: skip

    assert result.returncode == status
    command = " ".join(args[:2]) if args[0] == "topics" else args[0]
    assert _one_line(result) == (
        f"wapipe {command}: cannot reach Kafka at {bootstrap}: connection refused — {KAFKA_HINT}"
    )


@pytest.mark.parametrize("command", [("status",), ("run",), ("ingest",), ("logs",)])
def test_a_bad_setting(command):
    result = _wapipe(*command, WAPIPE_INGEST_PORT="eighty")

    assert result.returncode == 2
    assert _one_line(result) == (
        "wapipe: invalid configuration: WAPIPE_INGEST_PORT: Input should be a valid integer, "
        "unable to parse string as an integer"
    )
