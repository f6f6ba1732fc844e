"""The local broker manager's failure modes: each with a message that says what to do."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from wapipe import local_kafka
from wapipe.local_kafka import LocalBroker, LocalKafkaError


def _broker(tmp_path: Path, port: int, controller_port: int) -> LocalBroker:
    return LocalBroker(
        directory=tmp_path / "kafka",
        jar_cache=tmp_path / "jars",
        port=port,
        controller_port=controller_port,
    )


def test_a_broker_never_started_is_not_running(tmp_path, unused_port):
    broker = _broker(tmp_path, unused_port(), unused_port())
    status = broker.status()
    assert not status.running
    assert not status.answering
    assert broker.down() is False


def test_port_taken_is_reported_with_the_way_out(tmp_path, unused_port):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        broker = _broker(tmp_path, listener.getsockname()[1], unused_port())
        with pytest.raises(LocalKafkaError, match=r"port \d+ is taken") as raised:
            broker.up(timeout=5)
    assert "WAPIPE_LOCAL_KAFKA_PORT" in str(raised.value)
    assert "WAPIPE_KAFKA_BOOTSTRAP" in str(raised.value)


def test_missing_java_is_reported(tmp_path, unused_port, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "java" else "/bin/true")
    with pytest.raises(LocalKafkaError, match="Java 17"):
        _broker(tmp_path, unused_port(), unused_port()).up(timeout=5)


def test_missing_maven_with_an_empty_jar_cache_is_reported(tmp_path, unused_port, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "mvn" else "/bin/true")
    with pytest.raises(LocalKafkaError, match=r"Maven \(`mvn`\) is not installed"):
        _broker(tmp_path, unused_port(), unused_port()).jars()


def test_maven_failing_offline_is_reported_with_its_output(tmp_path, unused_port, monkeypatch):
    # A stand-in for Maven without network: it fails the way Maven does offline.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    mvn = fake_bin / "mvn"
    mvn.write_text(
        "#!/bin/sh\necho '[ERROR] Could not transfer artifact "
        "org.apache.kafka:kafka_2.13:pom:4.4.0 from/to central: Unknown host'\nexit 1\n"
    )
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(LocalKafkaError, match="could not resolve the Kafka jars") as raised:
        _broker(tmp_path, unused_port(), unused_port()).jars()
    assert "Could not transfer artifact" in str(raised.value)


def test_kafka_status_command_exits_1_when_not_running(tmp_path, unused_port):
    result = subprocess.run(
        [sys.executable, "-m", "wapipe", "kafka", "status"],
        env={**os.environ, "WAPIPE_HOME": str(tmp_path),
             "WAPIPE_LOCAL_KAFKA_PORT": str(unused_port())},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "not running" in result.stdout


@pytest.mark.slow
def test_a_cluster_id_beginning_with_a_dash_formats_and_starts(local_broker, monkeypatch):
    # One random id in 32 starts with "-", which Kafka's argument parser once took
    # for an option: the broker must start whatever the id.
    monkeypatch.setattr(local_kafka, "new_cluster_id", lambda: "-AbCdEfGhIjKlMnOpQrStU")
    broker = local_broker()
    assert broker.up().answering
    meta = (broker.directory / "data" / "meta.properties").read_text()
    assert "cluster.id=-AbCdEfGhIjKlMnOpQrStU" in meta
