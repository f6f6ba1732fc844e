"""The services' log files under WAPIPE_HOME/logs: read, merge, format, follow.

`wapipe run` sends each child's stdout and stderr to `<home>/logs/<service>.log`
(appending; one JSON object per line, `wapipe.logs`) through `RotatingLog`, which moves
the file aside to `<service>.log.1` (`.1` to `.2`, ...) once it passes
WAPIPE_LOG_FILE_MB, keeping WAPIPE_LOG_FILES_KEPT of them. It follows those files to
echo errors on its terminal (`ErrorEcho`), and `wapipe logs` shows them, the files
moved aside included: merged by time, human-readable (`format_line`) or raw.
Everything but the file reading and writing is pure.
"""

from __future__ import annotations

import heapq
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from wapipe.settings import Settings

LOG_DIRECTORY = "logs"
# Fields every line has; the rest are the event's key=value pairs.
_SHOWN_APART = ("timestamp", "level", "event", "service", "logger", "pid", "exception")
_ERROR_LEVELS = frozenset({"error", "critical", "exception", "fatal"})
_COLORS = {"critical": "\x1b[1;31m", "error": "\x1b[31m", "warning": "\x1b[33m",
           "debug": "\x1b[2m"}  # fmt: skip
_SERVICE_COLOR, _RESET = "\x1b[36m", "\x1b[0m"
_READ_BLOCK = 64 * 1024


def log_directory(home: Path) -> Path:
    return home / LOG_DIRECTORY


def log_file(home: Path, service: str) -> Path:
    return log_directory(home) / f"{service}.log"


def rotated(path: Path, number: int) -> Path:
    """The `number`th file moved aside from `path` (1: the newest)."""
    return path.with_name(f"{path.name}.{number}")


def chain(path: Path) -> list[Path]:
    """A log's files, oldest first: those moved aside (`.N` ... `.1`), then `path` itself."""
    aside = []
    number = 1
    while rotated(path, number).exists():
        aside.append(rotated(path, number))
        number += 1
    return [*reversed(aside), path]


class RotatingLog:
    """A service's log file as `wapipe run` writes it, line by line from the service's
    output: once the file passes `max_bytes`, at the end of a line, it is moved aside to
    `.1` (and `.1` to `.2`, ..., the one beyond `keep` deleted) and a new one begun. A
    child that wrote to the file itself could not be rotated without losing lines (or
    copying and truncating under it, as logrotate's copytruncate does, losing those
    written in between): its output comes through a pipe instead (`pump`)."""

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self._file = path.open("ab")
        self._size = self._file.tell()

    def write(self, line: bytes) -> None:
        self._file.write(line)
        self._file.flush()  # `wapipe logs -f` and the error echo read the file as it grows
        self._size += len(line)
        if self._size >= self.max_bytes and line.endswith(b"\n"):
            self._rotate()

    def close(self) -> None:
        self._file.close()

    def _rotate(self) -> None:
        self._file.close()
        rotated(self.path, self.keep).unlink(missing_ok=True)
        for number in range(self.keep - 1, 0, -1):
            if rotated(self.path, number).exists():
                rotated(self.path, number).replace(rotated(self.path, number + 1))
        self.path.replace(rotated(self.path, 1))
        self._file, self._size = self.path.open("ab"), 0


def pump(output: IO[bytes], log: RotatingLog) -> None:
    """Copy a child's output into its log, line by line, until the child closes it."""
    try:
        for line in iter(output.readline, b""):
            log.write(line)
    finally:
        log.close()
        output.close()


def parse(text: str) -> dict[str, Any] | None:
    """A log line as its JSON object; None when it is not one (a traceback, a print)."""
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True, order=True)
class LogLine:
    """One line of a service's log. `key` orders lines of several files by time: the
    line's timestamp, or for a line without one (a traceback), its predecessor's."""

    key: str
    service: str = field(compare=False)
    text: str = field(compare=False)


# --------------------------------------------------------------------------- formatting


def format_line(text: str, service: str, *, color: bool = False, width: int | None = None) -> str:
    """A log line for people: `time service level event key=value ...` (time in UTC).

    A line that is not JSON keeps its text after the service's name. `width` cuts the
    line to one terminal row (and drops a traceback: it stays in the file); without
    it, a traceback follows on the next lines, indented.
    """
    record = parse(text)
    name = f"{_SERVICE_COLOR}{service:<9}{_RESET}" if color else f"{service:<9}"
    if record is None:
        return _cut(f"{'':12} {name} {text}", width)
    level = str(record.get("level", "")).lower()
    shown_level = f"{level:<8}"
    if color and level in _COLORS:
        shown_level = f"{_COLORS[level]}{shown_level}{_RESET}"
    pairs = " ".join(
        f"{key}={_value(value)}" for key, value in record.items() if key not in _SHOWN_APART
    )
    event = str(record.get("event", ""))
    line = f"{_clock(record.get('timestamp'))} {name} {shown_level} {event}"
    if pairs:
        line += f"  {pairs}"
    exception = record.get("exception")
    if width is not None:
        return _cut(line, width)
    if exception:
        line += "\n" + "\n".join(f"    {row}" for row in str(exception).splitlines())
    return line


def _clock(timestamp: object) -> str:
    """`2025-06-01T12:00:00.123456Z` -> `12:00:00.123`; anything else as far as it goes."""
    text = str(timestamp or "")
    _, _, time_of_day = text.partition("T")
    time_of_day = time_of_day.rstrip("Z").split("+")[0]
    return f"{time_of_day[:12]:<12}"


def _value(value: object) -> str:
    if isinstance(value, str):
        return (
            value
            if value and not any(c.isspace() or c in "\"'=" for c in value)
            else (json.dumps(value, ensure_ascii=False))
        )
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _cut(line: str, width: int | None) -> str:
    if width is None or len(line) <= width:
        return line
    return line[: max(1, width - 1)] + "…"


# --------------------------------------------------------------------------- reading


def with_keys(service: str, texts: Iterable[str], previous: str = "") -> Iterator[LogLine]:
    """The lines of one service with their ordering keys (see `LogLine`)."""
    key = previous
    for text in texts:
        record = parse(text)
        if record is not None and isinstance(record.get("timestamp"), str):
            key = record["timestamp"]
        yield LogLine(key, service, text)


def last_lines(path: Path, count: int, end: int | None = None) -> list[str]:
    """The last `count` lines of a log (without their newlines), the current file read
    before byte `end` (default: its end), then the files moved aside, newest first."""
    lines = _last_lines_of(path, count, end)
    for older in reversed(chain(path)[:-1]):
        if len(lines) >= count:
            break
        lines = _last_lines_of(older, count - len(lines)) + lines
    return lines


def _last_lines_of(path: Path, count: int, end: int | None = None) -> list[str]:
    """The last `count` lines of one file before byte `end`, read backwards."""
    if count <= 0:
        return []
    with path.open("rb") as file:
        size = file.seek(0, os.SEEK_END)
        data, position = b"", size if end is None else min(end, size)
        while position > 0 and data.count(b"\n") <= count:
            step = min(_READ_BLOCK, position)
            position -= step
            file.seek(position)
            data = file.read(step) + data
    lines = data.decode(errors="replace").splitlines()
    return lines[-count:]


def all_lines(path: Path, end: int | None = None) -> Iterator[str]:
    """A log's lines (without their newlines): the files moved aside, oldest first, then
    the current one before byte `end` (default: all)."""
    for older in chain(path)[:-1]:
        yield from _all_lines_of(older)
    yield from _all_lines_of(path, end)


def _all_lines_of(path: Path, end: int | None = None) -> Iterator[str]:
    with path.open("rb") as file:
        position = 0
        for line in file:
            position += len(line)
            if end is not None and position > end:
                if position - len(line) < end:  # the line `end` cuts: what is before it
                    yield line[: end - position + len(line)].decode(errors="replace").rstrip("\n")
                return
            yield line.decode(errors="replace").rstrip("\n")


def merged(
    files: dict[str, Path], last: int | None = None, ends: dict[str, int] | None = None
) -> Iterator[LogLine]:
    """The lines of several services' files in time order: all of them, streamed, or
    the `last` lines over all files; each file read up to its byte in `ends`, if given.
    Each file is in time order already; a line without a time (a traceback) stays
    after the line it followed."""
    ends = ends or {}
    if last is None:
        streams = [with_keys(service, all_lines(path, ends.get(service)))
                   for service, path in files.items()]  # fmt: skip
        yield from heapq.merge(*streams)
        return
    tails = [list(with_keys(service, last_lines(path, last, ends.get(service))))
             for service, path in files.items()]  # fmt: skip
    lines = list(heapq.merge(*tails))
    yield from lines[max(0, len(lines) - last) :]


class Follower:
    """New complete lines appended to a set of files since the last `poll` (as `tail -F`):
    a file that does not exist yet is read from its start once it appears, one that
    shrank (truncated) from its start again, and one moved aside (`RotatingLog`) to its
    end under its new name, then the new file from its start."""

    def __init__(self, files: dict[str, Path], *, from_end: bool = True) -> None:
        self._files = dict(files)
        self._offsets = {
            service: (path.stat().st_size if from_end and path.exists() else 0)
            for service, path in files.items()
        }
        self._inodes = {service: _inode(path) for service, path in files.items()}
        self._partial = {service: b"" for service in files}
        self._keys = {service: "" for service in files}

    @property
    def offsets(self) -> dict[str, int]:
        """How far each file has been read (the bytes before are not news)."""
        return dict(self._offsets)

    def poll(self) -> list[LogLine]:
        found: list[LogLine] = []
        for service, path in self._files.items():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if (stat.st_dev, stat.st_ino) != self._inodes[service]:  # a new file
                moved = rotated(path, 1)
                if self._inodes[service] is not None and _inode(moved) == self._inodes[service]:
                    found.extend(self._read(service, moved, moved.stat().st_size))
                self._inodes[service] = (stat.st_dev, stat.st_ino)
                self._offsets[service], self._partial[service] = 0, b""
            elif stat.st_size < self._offsets[service]:  # truncated
                self._offsets[service], self._partial[service] = 0, b""
            found.extend(self._read(service, path, stat.st_size))
        return sorted(found)  # stable: a file's own lines keep their order

    def _read(self, service: str, path: Path, size: int) -> list[LogLine]:
        """The complete lines of `service`'s file from where it was read up to `size`."""
        if size <= self._offsets[service]:
            return []
        with path.open("rb") as file:
            file.seek(self._offsets[service])
            data = file.read(size - self._offsets[service])
        self._offsets[service] += len(data)
        *complete, self._partial[service] = (self._partial[service] + data).split(b"\n")
        texts = [line.decode(errors="replace") for line in complete]
        lines = list(with_keys(service, texts, self._keys[service]))
        if lines:
            self._keys[service] = lines[-1].key
        return lines


def _inode(path: Path) -> tuple[int, int] | None:
    """The file's identity (device, inode), None when there is none."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


# --------------------------------------------------------------------------- echoing errors


def is_error(text: str) -> bool:
    """Worth a line on `wapipe run`'s terminal: an error-level log line, or a line that
    is not a log line at all (a traceback, a message a process printed before exiting)."""
    if not text.strip():
        return False
    record = parse(text)
    if record is None:
        return True
    return str(record.get("level", "")).lower() in _ERROR_LEVELS


class ErrorEcho:
    """Decides which error lines `wapipe run` prints: each one, up to `burst` lines per
    service every `window` seconds; beyond that (a client logging each failed connection
    while the broker is away), one line saying how many more went to the log."""

    def __init__(self, burst: int = 5, window: float = 30.0, width: int = 200) -> None:
        self.burst, self.window, self.width = burst, window, width
        self._since: dict[str, float] = {}
        self._shown: dict[str, int] = {}
        self._held: dict[str, int] = {}

    def offer(self, line: LogLine, now: float) -> list[str]:
        if not is_error(line.text):
            return []
        out = self.flush(now)
        if line.service not in self._since:
            self._since[line.service], self._shown[line.service] = now, 0
            self._held[line.service] = 0
        if self._shown[line.service] < self.burst:
            self._shown[line.service] += 1
            out.append(format_line(line.text, line.service, width=self.width))
        else:
            self._held[line.service] += 1
        return out

    def flush(self, now: float) -> list[str]:
        """Close the windows that ended: say how many lines each one held back."""
        out = []
        for service, since in list(self._since.items()):
            if now - since < self.window:
                continue
            held = self._held[service]
            if held:
                out.append(f"{'':12} {service:<9} {held} more error line{'s' * (held > 1)} in "
                           f"{self.window:g} s: `wapipe logs {service}`")  # fmt: skip
            del self._since[service], self._shown[service], self._held[service]
        return out


# --------------------------------------------------------------------------- `wapipe logs`


def show_logs(
    settings: Settings, service: str | None, *, follow: bool = False, lines: int | None = None,
    raw: bool = False, out: TextIO | None = None, poll_seconds: float = 0.25,
) -> int:  # fmt: skip
    """`wapipe logs [SERVICE] [-f] [-n N] [--json]`; its exit status."""
    from wapipe.stack import SERVICES

    out = out or sys.stdout
    raw = raw or not out.isatty()
    if service == "kafka":  # the broker's own log: not JSON, printed as it is
        files = {"kafka": settings.home / "kafka" / "server.log"}
    elif service is not None:
        files = {service: log_file(settings.home, service)}
    else:
        found = sorted(log_directory(settings.home).glob("*.log"))
        files = {path.stem: path for path in found}
        if follow:
            files = {name: log_file(settings.home, name) for name in SERVICES} | files
    existing = {name: path for name, path in files.items() if path.exists()}
    if not existing and not follow:
        where = next(iter(files.values()), log_directory(settings.home))
        print(f"wapipe logs: no log at {where}: `wapipe run` writes the services' logs under "
              "WAPIPE_HOME/logs (is WAPIPE_HOME the same as its?)", file=sys.stderr)  # fmt: skip
        return 1

    def write(line: LogLine) -> None:
        if raw or line.service == "kafka":
            out.write(line.text + "\n")
        else:
            out.write(format_line(line.text, line.service, color=True) + "\n")

    follower = Follower(files)  # before reading: no line is missed or shown twice
    last = lines if lines is not None else (10 if follow else None)
    try:
        for line in merged(existing, last, follower.offsets):
            write(line)
        out.flush()
        while follow:
            for line in follower.poll():
                write(line)
            out.flush()
            time.sleep(poll_seconds)  # files grow: nothing to await on
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `wapipe logs | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())  # no second error when Python flushes at exit
        return 0
    return 0
