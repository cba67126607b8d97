"""The small JSON files the local runtime keeps per agent: ports, specs, pids, exits."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def write_json(path: Path, value: Any) -> None:
    """Write atomically, readable by the owner only (specs and launch files hold the env)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(value, handle, indent=2)
    os.replace(temporary, path)


def read_pid(path: Path) -> int | None:
    value = read_json(path, None)
    return value if isinstance(value, int) and value > 0 else None


def wait_for_file(path: Path, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = read_json(path, None)
        if value is not None or time.monotonic() >= deadline:
            return value
        time.sleep(0.05)
