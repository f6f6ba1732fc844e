"""`wapipe ingest` as operators run it: a process, JSON logs, a graceful SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _request(url: str, body: bytes | None = None, context: ssl.SSLContext | None = None) -> int:
    request = urllib.request.Request(  # noqa: S310 - loopback only
        url, data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def _wait_for_status(
    url: str, status: int, timeout: float, context: ssl.SSLContext | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while (got := _request(url, context=context)) != status:
        assert time.monotonic() < deadline, f"{url} answered {got}, not {status}, for {timeout} s"
        time.sleep(0.1)


async def test_ingest_process_serves_and_stops_gracefully_on_sigterm(
    kafka_settings, unused_port, read_raw, tmp_path
):
    port = unused_port()
    environment = {
        **os.environ,
        "WAPIPE_KAFKA_BOOTSTRAP": kafka_settings.kafka_bootstrap,
        "WAPIPE_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "WAPIPE_INGEST_HOST": "127.0.0.1",
        "WAPIPE_INGEST_PORT": str(port),
        "WAPIPE_SPOOL_DIR": str(tmp_path / "spool"),
    }
    log_path = tmp_path / "ingest.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: ASYNC220 - nothing else runs on this loop meanwhile
            [sys.executable, "-m", "wapipe", "ingest"], env=environment, stderr=log, stdout=log
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_status(f"{base}/healthz", 200, 30)
        _wait_for_status(f"{base}/readyz", 200, 30)
        bodies = [b'{"eventId": "p-%d", "eventType": "x"}' % n for n in range(10)]
        assert [_request(f"{base}/webhooks/whatsapp", body) for body in bodies] == [200] * 10
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    records = await read_raw(kafka_settings, len(bodies))
    assert sorted(r.value for r in records) == sorted(bodies)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    events = [line["event"] for line in lines]
    assert "ingester listening" in events
    assert "ingester stopped" in events
    assert all({"timestamp", "level", "logger", "service"} <= line.keys() for line in lines)


def test_ingest_process_serves_https_when_given_a_certificate(unused_port, tmp_path):
    # No broker needed: the ingester serves (and spools) while Kafka is away.
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = unused_port()
    environment = {
        **os.environ,
        "WAPIPE_KAFKA_BOOTSTRAP": f"127.0.0.1:{unused_port()}",
        "WAPIPE_INGEST_HOST": "127.0.0.1",
        "WAPIPE_INGEST_PORT": str(port),
        "WAPIPE_SPOOL_DIR": str(tmp_path / "spool"),
        "WAPIPE_TLS_CERT": str(certificate),
        "WAPIPE_TLS_KEY": str(key),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "wapipe", "ingest"], env=environment,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    trusted = ssl.create_default_context(cafile=str(certificate))
    trusted.check_hostname = False
    try:
        _wait_for_status(f"https://127.0.0.1:{port}/healthz", 200, 30, context=trusted)
        # Plain HTTP on the TLS port gets no answer.
        assert _request(f"http://127.0.0.1:{port}/healthz") != 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0
    assert b'"scheme": "https"' in stderr


def test_bad_setting_fails_at_start_with_the_variable_named():
    result = subprocess.run(
        [sys.executable, "-m", "wapipe", "ingest"],
        env={**os.environ, "WAPIPE_INGEST_PORT": "eighty"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "WAPIPE_INGEST_PORT" in result.stderr
