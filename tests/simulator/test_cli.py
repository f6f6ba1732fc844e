"""`wapipe simulate` and `wapipe tail` from the command line."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaProducer

from ingest.app import WEBHOOK_PATH
from simulator import default_url
from simulator.run import WEBHOOK_PATH as SIMULATOR_WEBHOOK_PATH
from simulator.tail import TailError, format_record, resolve_topic, tail
from wapipe.settings import Settings
from wapipe.topics import ALERTS, FUNNEL


def _wapipe(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wapipe", *args],
        env={**os.environ, **environment},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def _wapipe_async(*args: str, **environment: str) -> tuple[int, str, str]:
    """The command as a child process, while this test's event loop keeps serving."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wapipe", *args,
        env={**os.environ, **environment},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def test_simulate_help_lists_every_flag():
    result = _wapipe("simulate", "--help")
    assert result.returncode == 0
    for flag in ("--url", "--rate", "--duration", "--messages", "--time-scale", "--seed",
                 "--expected", "--retry-pauses", "--dry-run"):  # fmt: skip
        assert flag in result.stdout
    assert "tail" in _wapipe("--help").stdout


def test_a_dry_run_writes_the_expected_results_of_a_seed(tmp_path: Path):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    arguments = ("simulate", "--dry-run", "--seed", "42", "--messages", "60", "--duration", "30")
    one = _wapipe(*arguments, "--expected", str(first))
    two = _wapipe(*arguments, "--expected", str(second))
    assert one.returncode == 0, one.stderr
    assert "seed 42" in one.stdout
    assert "messages from 3 sub-accounts to 200 customers" in one.stdout
    expected = orjson.loads(first.read_bytes())
    assert expected["seed"] == 42
    assert sum(counts["sent"] for counts in expected["funnel"].values()) > 0
    # Only the anchor (the run's "now") differs between two runs of one seed.
    second_expected = orjson.loads(second.read_bytes())
    assert {**expected, "anchor": None} == {**second_expected, "anchor": None}
    assert two.returncode == 0


@pytest.mark.parametrize(
    ("flag", "value"), [("--rate", "0"), ("--duration", "-5"), ("--time-scale", "fast")]
)
def test_a_bad_flag_is_refused(flag: str, value: str):
    result = _wapipe("simulate", flag, value, "--dry-run")
    assert result.returncode == 2
    assert flag in result.stderr


def test_bad_retry_pauses_are_refused():
    result = _wapipe("simulate", "--retry-pauses", "1,soon", "--dry-run")
    assert result.returncode == 2
    assert "--retry-pauses" in result.stderr


def test_the_default_url_is_the_local_ingester():
    assert SIMULATOR_WEBHOOK_PATH == WEBHOOK_PATH
    assert default_url(Settings(ingest_port=8123)) == "http://127.0.0.1:8123/webhooks/whatsapp"


async def test_simulate_posts_to_a_url_and_reports(tmp_path: Path):
    received: list[bytes] = []

    async def accept(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.json_response({"status": "accepted"})

    app = web.Application()
    app.router.add_post(WEBHOOK_PATH, accept)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    expected_file = tmp_path / "expected.json"
    try:
        code, stdout, stderr = await _wapipe_async(
            "simulate", "--url", str(server.make_url(WEBHOOK_PATH)), "--seed", "5",
            "--messages", "20", "--duration", "1", "--time-scale", "600", "--rate", "500",
            "--expected", str(expected_file),
        )  # fmt: skip
    finally:
        await server.close()
    assert code == 0, stderr
    expected = orjson.loads(expected_file.read_bytes())
    assert len(received) == expected["events"] > 20
    assert f"{len(received)} acknowledged" in stdout
    assert "0 given up" in stdout
    assert "expected funnel: sent" in stdout


def test_topics_are_named_with_or_without_the_prefix():
    assert resolve_topic("funnel", "whatsapp") == "whatsapp.funnel"
    assert resolve_topic("whatsapp.funnel", "whatsapp") == "whatsapp.funnel"
    assert resolve_topic("webhooks.raw", "acme") == "acme.webhooks.raw"
    assert resolve_topic("someone.elses", "whatsapp") == "someone.elses"


def test_a_record_is_printed_with_its_coordinates_and_indented_json():
    record = SimpleNamespace(
        topic="whatsapp.alerts", partition=2, offset=17, timestamp=1_764_064_980_123,
        key=b"acme", value=b'{"type":"TEMPLATE_QUALITY_RED","details":{"strike":3}}',
        headers=[("wapipe-auth", b"none")],
    )  # fmt: skip
    text = format_record(record)
    assert text.splitlines()[0] == (
        "--- whatsapp.alerts  partition 2  offset 17  2025-11-25T10:03:00.123Z  key acme"
    )
    assert "headers: wapipe-auth=none" in text
    assert '  "details": {\n    "strike": 3\n  }' in text
    record.value = b"not json"
    assert format_record(record).endswith("not json\n")


# --- against a real broker ----------------------------------------------------------------------
async def _produce(settings: Settings, topic: str, key: bytes, value: dict[str, object]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, orjson.dumps(value), key=key)
    finally:
        await producer.stop()


@pytest.mark.kafka
async def test_tail_prints_a_record_of_a_topic(kafka_settings: Settings):
    topic = ALERTS.name(kafka_settings.topic_prefix)
    await _produce(kafka_settings, topic, b"951847263015", {"alertId": "a-1", "strike": 3})
    code, stdout, stderr = await _wapipe_async(
        "tail", "alerts", "--from-beginning", "--count", "1", "--timeout", "60",
        WAPIPE_KAFKA_BOOTSTRAP=kafka_settings.kafka_bootstrap,
        WAPIPE_TOPIC_PREFIX=kafka_settings.topic_prefix,
    )  # fmt: skip
    assert code == 0, stderr
    assert f"--- {topic}  partition 0  offset 0  " in stdout
    assert "key 951847263015" in stdout
    assert '{\n  "alertId": "a-1",\n  "strike": 3\n}' in stdout


@pytest.mark.kafka
async def test_tail_without_from_beginning_prints_only_new_records(kafka_settings: Settings):
    topic = FUNNEL.name(kafka_settings.topic_prefix)
    await _produce(kafka_settings, topic, b"old", {"window": "old"})
    out, ready = io.StringIO(), asyncio.Event()
    tailing = asyncio.create_task(
        tail(kafka_settings, "funnel", out, count=1, stop_after=60, ready=lambda _: ready.set())
    )
    await asyncio.wait_for(ready.wait(), 60)
    await _produce(kafka_settings, topic, b"new", {"window": "new"})
    assert await asyncio.wait_for(tailing, 90) == 1
    assert "key new" in out.getvalue()
    assert "old" not in out.getvalue()


@pytest.mark.kafka
async def test_tail_names_the_topics_when_one_does_not_exist(kafka_settings: Settings):
    with pytest.raises(TailError, match=r"no topic 'nothing\.here'"):
        await tail(kafka_settings, "nothing.here", io.StringIO(), stop_after=5)
