"""The local broker manager's failure modes: each with a message that says what to do."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from wapipe import local_kafka
from wapipe.local_kafka import LocalBroker, LocalCluster, LocalKafkaError
from wapipe.settings import Settings
from wapipe.topics import RAW, create_topics

REPO = Path(__file__).resolve().parents[2]


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


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_a_three_node_cluster_keeps_taking_acks_all_writes_with_a_node_killed(tmp_path):
    cluster = LocalCluster(tmp_path / "cluster", REPO / ".wapipe" / "kafka-jars", nodes=3)
    settings = Settings(
        kafka_bootstrap=cluster.bootstrap,
        topic_prefix="cluster",
        topic_partitions=3,
        topic_replication=3,
        topic_min_insync_replicas=2,
    )
    topic = RAW.name(settings.topic_prefix)
    try:
        statuses = await asyncio.to_thread(cluster.up)
        assert all(status.answering for status in statuses)
        assert await asyncio.to_thread(cluster.brokers) == {1, 2, 3}
        await create_topics(settings, (RAW,))
        partitions, min_insync = await _describe(cluster.bootstrap, topic)
        assert min_insync == "2"
        assert [len(p["replicas"]) for p in partitions] == [3, 3, 3]
        await _write(cluster.bootstrap, topic, [b"before-%d" % n for n in range(30)])

        victim = partitions[0]["leader"]
        await asyncio.to_thread(cluster.kill, victim)
        assert await asyncio.to_thread(cluster.wait_for_brokers, 2, 60) == {1, 2, 3} - {victim}
        # Two replicas in sync of three: acks=all writes still succeed, on new leaders.
        await _write(cluster.bootstrap, topic, [b"during-%d" % n for n in range(30)])
        partitions, _ = await _describe(cluster.bootstrap, topic)
        assert victim not in {p["leader"] for p in partitions}

        await asyncio.to_thread(cluster.restart, victim)
        assert await asyncio.to_thread(cluster.brokers) == {1, 2, 3}
        values = await _read(cluster.bootstrap, topic, 60)
        assert sorted(values) == sorted([b"before-%d" % n for n in range(30)]
                                        + [b"during-%d" % n for n in range(30)])  # fmt: skip
    finally:
        await asyncio.to_thread(cluster.down)
    assert not any(node.status().running for node in cluster)


async def _describe(
    bootstrap: str, topic: str, within: float = 30.0
) -> tuple[list[dict[str, Any]], str]:
    """The topic's partitions (leader, replicas, isr) and its min.insync.replicas, once
    the broker asked knows them: a new topic reaches each broker's metadata a moment
    after the controller created it (CI 4 described one without partitions)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    deadline = time.monotonic() + within
    try:
        (described,) = await admin.describe_topics([topic])
        while not described["partitions"]:
            assert time.monotonic() < deadline, f"no partitions of {topic} in {within:.0f} s"
            await asyncio.sleep(0.2)
            (described,) = await admin.describe_topics([topic])
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": ""})]
        )
    finally:
        await admin.close()
    configs = {entry[0]: entry[1] for entry in response.resources[0][4]}
    return sorted(described["partitions"], key=lambda p: p["partition"]), configs[
        "min.insync.replicas"
    ]


async def _write(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                request_timeout_ms=20_000)  # fmt: skip
    await producer.start()
    try:
        for value in values:  # one at a time, each acknowledged by 2 or 3 replicas
            await producer.send_and_wait(topic, value, key=value)
    finally:
        await producer.stop()


async def _read(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                isolation_level="read_committed",
                                auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(60):
            while len(values) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    values.extend(record.value for record in records)
    finally:
        await consumer.stop()
    return values
