"""`wapipe ingest` as a real process for tests: started on a loopback port, waited for,
measured (resident memory), stopped with SIGTERM."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from wapipe.settings import Settings


@dataclass
class IngesterProcess:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def rss_kib(self) -> int:
        """Resident memory now, in KiB."""
        return rss_kib(self.process.pid)

    def request(
        self, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None, timeout: float = 30.0,
    ) -> tuple[int, bytes]:  # fmt: skip
        """One request on a fresh connection: (status, body)."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def assert_running(self) -> None:
        assert self.process.poll() is None, (
            f"the ingester exited with {self.process.returncode}:\n{self.log_tail()}"
        )


@contextmanager
def run_ingester(
    settings: Settings, port: int, directory: Path, **environment: str
) -> Iterator[IngesterProcess]:
    """Run `wapipe ingest` for `settings`' broker and topics on 127.0.0.1:`port` until the
    block ends; wait (at most 60 s) until /readyz answers 200 first."""
    variables = {
        **os.environ,
        "WAPIPE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "WAPIPE_TOPIC_PREFIX": settings.topic_prefix,
        "WAPIPE_INGEST_HOST": "127.0.0.1",
        "WAPIPE_INGEST_PORT": str(port),
        "WAPIPE_SPOOL_DIR": str(directory / "spool"),
        **environment,
    }
    log_path = directory / "ingest.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "wapipe", "ingest"], env=variables, stdout=log, stderr=log
        )
    ingester = IngesterProcess(process, "127.0.0.1", port, log_path)
    try:
        _wait_until_ready(ingester, timeout=60.0)
        yield ingester
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_ready(ingester: IngesterProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    status: int | str = "no answer"
    while time.monotonic() < deadline:
        ingester.assert_running()
        try:
            status = ingester.request("GET", "/readyz", timeout=5)[0]
        except OSError as error:
            status = repr(error)
        if status == 200:
            return
        time.sleep(0.1)
    raise AssertionError(
        f"the ingester was not ready within {timeout:.0f} s (last: {status}):\n"
        f"{ingester.log_tail()}"
    )


def rss_kib(pid: int) -> int:
    """A process's resident memory now (VmRSS of /proc/<pid>/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")
