"""The services' log files: formatting for people, merging by time, following, the errors
`wapipe run` echoes, and `wapipe logs` itself."""

from __future__ import annotations

import io
import json
import os
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from wapipe.logfiles import (
    ErrorEcho,
    Follower,
    LogLine,
    RotatingLog,
    all_lines,
    chain,
    format_line,
    is_error,
    last_lines,
    merged,
    pump,
    rotated,
    show_logs,
)
from wapipe.settings import Settings


def log(time: str, event: str, level: str = "info", service: str = "funnel", **fields: Any) -> str:
    record = {"event": event, **fields, "service": service, "pid": 4242, "level": level,
              "logger": "processors.engine.loop", "timestamp": f"2026-06-01T{time}Z"}  # fmt: skip
    return json.dumps(record)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# --------------------------------------------------------------------------- formatting


def test_a_json_line_becomes_time_service_level_event_and_pairs():
    text = log("12:00:01.123456", "partitions assigned", job="funnel",
               partitions=["a[0]", "a[1]"], note="two words", count=3)  # fmt: skip

    assert format_line(text, "funnel") == (
        "12:00:01.123 funnel    info     partitions assigned  job=funnel "
        'partitions=["a[0]","a[1]"] note="two words" count=3'
    )


def test_a_line_that_is_not_json_keeps_its_text():
    assert format_line("Traceback (most recent call last):", "ingest") == (
        "             ingest    Traceback (most recent call last):"
    )


def test_an_exception_follows_indented_or_is_cut_to_one_row():
    text = log("12:00:02.000000", "batch failed", "error",
               exception="Traceback:\n  File x\nValueError: bad")  # fmt: skip

    assert format_line(text, "funnel").splitlines() == [
        "12:00:02.000 funnel    error    batch failed",
        "    Traceback:",
        "      File x",
        "    ValueError: bad",
    ]
    one_row = format_line(text, "funnel", width=30)
    assert one_row == "12:00:02.000 funnel    error …"
    assert len(one_row) == 30


def test_colors_only_when_asked():
    text = log("12:00:03.000000", "consumer error", "warning")

    assert "\x1b[" not in format_line(text, "funnel")
    assert "\x1b[33mwarning" in format_line(text, "funnel", color=True)


# --------------------------------------------------------------------------- reading


def test_merged_interleaves_services_by_time_and_keeps_tracebacks_in_place(tmp_path):
    funnel, ingest = tmp_path / "funnel.log", tmp_path / "ingest.log"
    funnel.write_text("\n".join([log("12:00:01.000000", "f1"), "Traceback: f",
                                 log("12:00:04.000000", "f2")]) + "\n")  # fmt: skip
    first, second = (log(f"12:00:0{n}.000000", f"i{n - 1}", service="ingest") for n in (2, 3))
    ingest.write_text(f"{first}\n{second}\n")
    files = {"funnel": funnel, "ingest": ingest}

    every = [(line.service, json.loads(line.text)["event"] if line.text[0] == "{" else line.text)
             for line in merged(files)]  # fmt: skip

    assert every == [("funnel", "f1"), ("funnel", "Traceback: f"), ("ingest", "i1"),
                     ("ingest", "i2"), ("funnel", "f2")]  # fmt: skip
    assert [line.service for line in merged(files, last=2)] == ["ingest", "funnel"]
    assert list(merged(files, last=0)) == []
    assert len(list(merged(files, last=50))) == 5  # fewer than asked: all of them


def test_last_lines_reads_from_the_end_across_blocks(tmp_path):
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {n} " + "x" * 100 + "\n" for n in range(2000)))

    tail = last_lines(path, 1500)  # more than one 64 KiB block back

    assert [line.split()[1] for line in tail[:2] + tail[-1:]] == ["500", "501", "1999"]
    last = len(f"line 1999 {'x' * 100}\n")
    assert last_lines(path, 1, end=path.stat().st_size - last)[0].startswith("line 1998 ")


def test_the_follower_sees_appended_lines_new_files_and_truncation(tmp_path):
    funnel, ingest = tmp_path / "funnel.log", tmp_path / "ingest.log"
    funnel.write_text(log("12:00:00.000000", "old") + "\n")
    follower = Follower({"funnel": funnel, "ingest": ingest})

    assert follower.poll() == []  # what was there before is not news
    with funnel.open("a") as file:
        file.write(log("12:00:05.000000", "new") + "\n" + '{"event": "half')  # mid-write
    ingest.write_text(log("12:00:04.000000", "born", service="ingest") + "\n")

    assert [(line.service, line.key) for line in follower.poll()] == [
        ("ingest", "2026-06-01T12:00:04.000000Z"), ("funnel", "2026-06-01T12:00:05.000000Z"),
    ]  # fmt: skip
    with funnel.open("a") as file:
        file.write(' line"}\n')
    assert [line.text for line in follower.poll()] == ['{"event": "half line"}']
    funnel.write_text("fresh\n")  # truncated and written again
    assert [line.text for line in follower.poll()] == ["fresh"]


def test_a_child_s_output_is_rotated_by_size_at_line_ends_and_read_across_the_files(tmp_path):
    """A real child's output through the pipe `wapipe run` gives it: 310 lines of 100
    bytes into files moved aside at 2,000 bytes (20 lines), 3 kept besides the current
    one: the last 70 lines are kept, whole and in order, and read as one log."""
    path = tmp_path / "funnel.log"
    child = subprocess.Popen(
        [sys.executable, "-c", "for n in range(310): print(f'{n:05d} ' + 'x' * 93)"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert child.stdout is not None
    pump(child.stdout, RotatingLog(path, max_bytes=2_000, keep=3))
    assert child.wait(timeout=30) == 0

    assert chain(path) == [rotated(path, 3), rotated(path, 2), rotated(path, 1), path]
    assert not rotated(path, 4).exists()
    assert [p.stat().st_size for p in chain(path)] == [2_000, 2_000, 2_000, 1_000]
    assert [int(line.split()[0]) for line in all_lines(path)] == list(range(240, 310))
    assert [int(line.split()[0]) for line in last_lines(path, 50)] == list(range(260, 310))
    assert [int(line.split()[0]) for line in last_lines(path, 500)] == list(range(240, 310))


def test_the_follower_reads_a_file_moved_aside_to_its_end_then_the_new_one(tmp_path):
    path = tmp_path / "funnel.log"
    lines = [log(f"12:00:{n:02d}.000000", f"e{n}") for n in range(3)]
    log_file = RotatingLog(path, max_bytes=2 * len(lines[0]) + 2, keep=2)  # 2 lines a file
    follower = Follower({"funnel": path})
    log_file.write(f"{lines[0]}\n".encode())
    assert [line.text for line in follower.poll()] == lines[:1]
    for line in lines[1:]:  # the second line fills the file: it is moved aside
        log_file.write(f"{line}\n".encode())
    log_file.close()
    assert rotated(path, 1).read_text().splitlines() == lines[:2]
    assert [line.text for line in follower.poll()] == lines[1:]


# --------------------------------------------------------------------------- what run echoes


def test_errors_and_lines_that_are_no_log_lines_are_echoed():
    assert is_error(log("12:00:00.000000", "worker cannot go on", "critical"))
    assert is_error(log("12:00:00.000000", "transaction failed", "error"))
    assert is_error("wapipe process funnel: the producer was fenced")
    assert not is_error(log("12:00:00.000000", "partitions assigned"))
    assert not is_error(log("12:00:00.000000", "consumer error", "warning"))
    assert not is_error("  ")


def test_error_echo_holds_back_a_flood_and_says_how_much():
    echo = ErrorEcho(burst=2, window=10, width=60)

    def line(n: int) -> LogLine:
        text = log("12:00:00.000000", f"FAIL connect {n}", "error", service="ingest")
        return LogLine("", "ingest", text)

    shown = [out for n in range(5) for out in echo.offer(line(n), now=100.0 + n)]
    assert shown == [
        "12:00:00.000 ingest    error    FAIL connect 0",
        "12:00:00.000 ingest    error    FAIL connect 1",
    ]
    assert echo.flush(now=105.0) == []  # the window is still open
    assert echo.flush(now=110.0) == [
        "             ingest    3 more error lines in 10 s: `wapipe logs ingest`"
    ]
    assert echo.offer(line(9), now=111.0) == ["12:00:00.000 ingest    error    FAIL connect 9"]
    assert echo.offer(LogLine("", "ingest", log("12:00:00.000000", "fine")), now=112.0) == []


# --------------------------------------------------------------------------- `wapipe logs`


def _home_with_logs(tmp_path: Path) -> Settings:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "funnel.log").write_text(log("12:00:01.000000", "funnel started") + "\n"
                                     + log("12:00:03.000000", "funnel busy") + "\n")  # fmt: skip
    (logs / "ingest.log").write_text(log("12:00:02.000000", "ingester listening",
                                         service="ingest") + "\n")  # fmt: skip
    return Settings(home=tmp_path)


def test_logs_on_a_terminal_are_for_people(tmp_path):
    settings, out = _home_with_logs(tmp_path), Terminal()

    assert show_logs(settings, None, out=out) == 0

    assert out.getvalue().splitlines() == [
        "12:00:01.000 \x1b[36mfunnel   \x1b[0m info     funnel started",
        "12:00:02.000 \x1b[36mingest   \x1b[0m info     ingester listening",
        "12:00:03.000 \x1b[36mfunnel   \x1b[0m info     funnel busy",
    ]


def test_logs_raw_json_with_the_flag_or_into_a_pipe(tmp_path):
    settings = _home_with_logs(tmp_path)
    out, piped = Terminal(), io.StringIO()

    assert show_logs(settings, "funnel", raw=True, lines=1, out=out) == 0
    assert show_logs(settings, "funnel", out=piped) == 0

    assert json.loads(out.getvalue())["event"] == "funnel busy"
    assert [json.loads(line)["event"] for line in piped.getvalue().splitlines()] == [
        "funnel started", "funnel busy",
    ]  # fmt: skip


def test_logs_say_where_they_looked_when_there_are_none(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "wapipe", "logs", "funnel"],
        env={**os.environ, "WAPIPE_HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"wapipe logs: no log at {tmp_path / 'logs' / 'funnel.log'}: `wapipe run` writes the "
        "services' logs under WAPIPE_HOME/logs (is WAPIPE_HOME the same as its?)"
    ]


def test_logs_follow_prints_new_lines_until_interrupted(tmp_path):
    settings = _home_with_logs(tmp_path)
    funnel = settings.home / "logs" / "funnel.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "wapipe", "logs", "funnel", "-f", "-n", "1"],
        env={**os.environ, "WAPIPE_HOME": str(tmp_path)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        reader = _lines(process.stdout)
        assert json.loads(next(reader))["event"] == "funnel busy"  # the last line first
        with funnel.open("a") as file:
            file.write(log("12:00:09.000000", "funnel again") + "\n")
        assert json.loads(next(reader))["event"] == "funnel again"
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child: SIGINT delivered and handled by default, as for a command typed in a
    terminal, whatever started the test run. A child inherits an ignored SIGINT, and
    Python then raises no KeyboardInterrupt: a clean-clone run started in the background
    by a shell without job control (`(sh -c 'bash .ci/run' &)`: SigIgn 0x7, SIGHUP, SIGINT
    and SIGQUIT ignored) waited 30 s for `wapipe logs -f` to stop after SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _lines(stream: IO[str], timeout: float = 30.0) -> Iterator[str]:
    """Lines of a child's output, each awaited at most `timeout` seconds."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while True:
            assert selector.select(timeout), f"no line within {timeout:.0f} s"
            yield stream.readline()
