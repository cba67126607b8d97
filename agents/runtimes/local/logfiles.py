"""Reading agentd's log files: the last lines, lines since a time, and following new ones."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ..base import LogLine


class LogFollower:
    """Reads what is appended to one replica's agent.log, across restarts (the file is
    renamed to previous.log and a new one begins)."""

    def __init__(self, path: Path, slug: str, replica: int, offset: int, last_ts: str) -> None:
        self.path, self.slug, self.replica = path, slug, replica
        self.last_ts = last_ts
        self._handle: BinaryIO | None = None
        self._partial = b""
        with contextlib.suppress(OSError):
            self._handle = open(path, "rb")  # noqa: SIM115 - held open across calls
            self._handle.seek(offset)

    def read_new(self) -> list[LogLine]:
        lines = self._drain()
        try:
            current_inode = self.path.stat().st_ino
        except OSError:
            return lines
        if self._handle is None or os.fstat(self._handle.fileno()).st_ino != current_inode:
            if self._handle is not None:
                lines += self._drain()  # what was written between the drain and the rename
                self._handle.close()
            self._partial = b""
            self._handle = open(self.path, "rb")  # noqa: SIM115
            lines += self._drain()
        return lines

    def _drain(self) -> list[LogLine]:
        if self._handle is None:
            return []
        data = self._partial + self._handle.read()
        *complete, self._partial = data.split(b"\n")
        out = []
        for raw in complete:
            line = _log_line(raw, self.slug, self.replica, self.last_ts)
            self.last_ts = line.ts
            out.append(line)
        return out

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def read_log(
    path: Path, slug: str, replica: int, last_ts: str = "", tail: int | None = None
) -> tuple[list[LogLine], str, int]:
    """The complete lines of a log file (the last ``tail`` of them), the last timestamp seen,
    and the byte offset just after the last complete line."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = _tail_offset(handle, size, tail + 1) if tail is not None else 0
            handle.seek(start)
            data = handle.read(size - start)
    except OSError:
        return [], last_ts, 0
    end = data.rfind(b"\n") + 1
    lines = []
    for raw in data[:end].split(b"\n")[:-1]:
        line = _log_line(raw, slug, replica, last_ts)
        last_ts = line.ts
        lines.append(line)
    if tail is not None:
        lines = lines[-tail:] if tail else []
    return lines, last_ts, start + end


def _tail_offset(handle: BinaryIO, size: int, lines: int) -> int:
    """Where the last ``lines`` lines of the file begin (reading backwards in blocks)."""
    block = 64 * 1024
    position = size
    found = 0
    while position > 0:
        step = min(block, position)
        position -= step
        handle.seek(position)
        chunk = handle.read(step)
        found += chunk.count(b"\n")
        if found > lines:
            excess = found - lines
            cut = -1
            for _ in range(excess):
                cut = chunk.index(b"\n", cut + 1)
            return position + cut + 1
    return 0


def _log_line(raw: bytes, slug: str, replica: int, last_ts: str) -> LogLine:
    """A log line; a line that is not agentd's JSON (a traceback) takes the time of the line
    before it."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r")
    ts = last_ts
    if text.startswith("{"):
        with contextlib.suppress(ValueError):
            record = json.loads(text)
            if isinstance(record, dict) and isinstance(record.get("ts"), str):
                ts = record["ts"]
    return LogLine(slug, replica, ts, text)


def last_lines(path: Path, count: int) -> list[str]:
    return [line.text for line in read_log(path, "", 0, tail=count)[0]]


def iso_timestamp(moment: float) -> str:
    return (
        datetime.fromtimestamp(moment, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
