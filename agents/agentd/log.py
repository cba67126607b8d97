"""Structured logging: one JSON object per line on stdout.

Every line carries ``ts`` (ISO 8601, UTC, milliseconds), ``level``, ``slug``, ``replica``,
``event`` (a stable machine name such as ``task_failed``), ``message`` (for people) and any fields
the event adds. The portal reads these lines, so the keys are a contract.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

LEVEL_NUMBERS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def utc_timestamp() -> str:
    """The current time as ``2025-01-31T12:00:00.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLogger:
    """Writes log events as JSON lines; safe to call from any thread."""

    def __init__(self, slug: str, replica: int, level: str = "info", stream: TextIO | None = None):
        self.slug = slug
        self.replica = replica
        self.threshold = LEVEL_NUMBERS[level]
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()

    def log(self, level: str, event: str, message: str, **fields: Any) -> None:
        """Write one line if ``level`` is at or above the threshold."""
        if LEVEL_NUMBERS[level] < self.threshold:
            return
        record: dict[str, Any] = {
            "ts": utc_timestamp(),
            "level": level,
            "slug": self.slug,
            "replica": self.replica,
            "event": event,
            "message": message,
        }
        for key, value in fields.items():
            record.setdefault(key, value)
        line = json.dumps(record, default=str) + "\n"
        with self._lock:
            try:
                self._stream.write(line)
                self._stream.flush()
            except (OSError, ValueError):
                # Nobody reads our output any more (closed pipe); logging must never kill the agent.
                pass

    def debug(self, event: str, message: str, **fields: Any) -> None:
        self.log("debug", event, message, **fields)

    def info(self, event: str, message: str, **fields: Any) -> None:
        self.log("info", event, message, **fields)

    def warning(self, event: str, message: str, **fields: Any) -> None:
        self.log("warning", event, message, **fields)

    def error(self, event: str, message: str, **fields: Any) -> None:
        self.log("error", event, message, **fields)
