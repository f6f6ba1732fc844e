"""A worker process supervised as in production: restarted when it asks to be."""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Callable

from wapipe.exit_codes import EXIT_PARTITION_STALLED


class SupervisedWorker:
    """A `wapipe process <job>` child that is restarted when it exits with status 75 (a
    partition stalled: processors/progress.py), as `wapipe run` and Kubernetes restart
    it. Each restart is a pytest warning, so that the run's summary shows it."""

    def __init__(self, start: Callable[[], subprocess.Popen[bytes]], job: str) -> None:
        self._start, self.job = start, job
        self.process = start()
        self.restarts = 0

    def poll(self) -> int | None:
        code = self.process.poll()
        if code != EXIT_PARTITION_STALLED:
            return code
        self.restarts += 1
        warnings.warn(f"{self.job} exited {code} (a partition stalled) and was restarted "
                      f"({self.restarts})", stacklevel=2)  # fmt: skip
        self.process = self._start()
        return None

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def terminate(self) -> None:
        self.process.terminate()

    def kill(self) -> None:
        self.process.kill()

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)
