"""No job reads the wall clock: every derived record is a function of the events, so a
replay derives what the live run did (docs/design.md, Time). The engine hands the jobs
stream time, and the wall-clock time only to wall-clock timers (gauges, the present);
the engine itself and the jobs' metrics modules may read the clock."""

from __future__ import annotations

import ast
from pathlib import Path

PROCESSORS = Path(__file__).resolve().parents[2] / "processors"
ALLOWED = {PROCESSORS / "engine"}  # the engine: batch timing, timers, metrics
CLOCKS = {
    ("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
    ("time", "time"), ("time", "time_ns"), ("time", "monotonic"), ("time", "monotonic_ns"),
    ("time", "perf_counter"), ("time", "localtime"), ("time", "gmtime"),
}  # fmt: skip


def _job_modules() -> list[Path]:
    return sorted(
        path for path in PROCESSORS.rglob("*.py")
        if not any(allowed in path.parents for allowed in ALLOWED) and path.name != "metrics.py"
    )  # fmt: skip


def _clock_reads(path: Path, source: str | None = None, name: Path | None = None) -> list[str]:
    """`datetime.now()`, `time.monotonic()`, ... in the module, and clocks imported by name."""
    found = []
    where = (name or path).relative_to(PROCESSORS)
    for node in ast.walk(ast.parse(source or path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in CLOCKS:
                found.append(f"{where}:{node.lineno} {node.value.id}.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            names = {alias.name for alias in node.names} & {name for _, name in CLOCKS}
            found += [f"{where}:{node.lineno} from time import {clock}"
                      for clock in sorted(names)]  # fmt: skip
    return found


def test_the_scan_sees_the_jobs_and_finds_a_clock(tmp_path: Path) -> None:
    modules = _job_modules()
    assert PROCESSORS / "funnel" / "windows.py" in modules
    assert PROCESSORS / "engine" / "loop.py" not in modules
    sample = PROCESSORS / "sample.py"  # as if it were a job's module
    source = "from time import monotonic\nimport datetime\nx = datetime.now(UTC)\n"
    reads = _clock_reads(tmp_path / "sample.py", source, sample)
    assert reads == ["sample.py:1 from time import monotonic", "sample.py:3 datetime.now"]


def test_no_job_module_reads_the_wall_clock() -> None:
    reads = [read for path in _job_modules() for read in _clock_reads(path)]
    assert not reads, (
        "a job decides with the wall clock (use the batch's stream time, or a "
        f"WallClockTimer for what describes the present): {reads}"
    )
