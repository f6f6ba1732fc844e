"""Shared fixtures: one real Kafka broker per test session, a fresh topic prefix per test.

The broker is, in order of preference: the one WAPIPE_KAFKA_BOOTSTRAP names; a
testcontainers Kafka container when a Docker engine answers; else a local
KRaft broker from the Maven Central jars (`wapipe.local_kafka`) on free ports.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wapipe.local_kafka import LocalBroker
from wapipe.settings import Settings
from wapipe.topics import create_topics

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "tests" / "fixtures" / "examples"
# Read before any test clears the environment: the one setting tests honour.
_EXPLICIT_BOOTSTRAP = os.environ.get("WAPIPE_KAFKA_BOOTSTRAP")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def example_files() -> list[Path]:
    return sorted(EXAMPLES.rglob("*.json"))


def make_local_broker(directory: Path) -> LocalBroker:
    """A broker of its own for a test, sharing the repository's jar cache."""
    return LocalBroker(
        directory=directory,
        jar_cache=REPO / ".wapipe" / "kafka-jars",
        port=free_port(),
        controller_port=free_port(),
    )


@pytest.fixture
def local_broker(tmp_path: Path) -> Iterator[Callable[[], LocalBroker]]:
    """Make brokers of a test's own (to stop, kill, restart); all are stopped afterwards."""
    brokers: list[LocalBroker] = []

    def make() -> LocalBroker:
        brokers.append(make_local_broker(tmp_path / f"kafka-{len(brokers)}"))
        return brokers[-1]

    yield make
    for broker in brokers:
        broker.down()


@pytest.fixture
def unused_port() -> Callable[[], int]:
    """A function that returns a loopback TCP port nothing listens on."""
    return free_port


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer's WAPIPE_* variable leaks into a test's Settings."""
    for name in list(os.environ):
        if name.startswith("WAPIPE_"):
            monkeypatch.delenv(name)


def _docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if _EXPLICIT_BOOTSTRAP:
        yield _EXPLICIT_BOOTSTRAP
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    broker = make_local_broker(tmp_path_factory.mktemp("kafka"))
    broker.up()
    try:
        yield broker.bootstrap
    finally:
        broker.down()


@pytest.fixture
def settings_for(tmp_path: Path) -> Any:
    """Build Settings for a test: its own spool directory, then the given overrides."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"spool_dir": tmp_path / "spool", "log_format": "console"}
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
async def kafka_settings(kafka_bootstrap: str, settings_for: Any) -> AsyncIterator[Settings]:
    """Settings with a fresh topic prefix whose topics exist (1 partition each: fast)."""
    settings: Settings = settings_for(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.whatsapp",
        topic_partitions=1,
    )
    await create_topics(settings)
    return settings
