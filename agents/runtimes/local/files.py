"""Where the local runtime keeps each agent's files under its root, and the small JSON files
among them: ports, specs, pids, exits (the layout is drawn in :mod:`agents.runtimes.local`)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..base import AgentSpec, RuntimeFailure

SLUG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
REPLICA_DIR = re.compile(r"^replica-(\d+)$")


class Layout:
    """The directories of the agents under ``root``, and locks shared by every process that
    acts on them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def agent_dir(self, spec: AgentSpec) -> Path:
        """The agent's directory; refuses a slug that is not a safe directory name."""
        if not SLUG_PATTERN.match(spec.slug):
            raise RuntimeFailure(
                f"invalid slug {spec.slug!r}: use letters, digits, '.', '_' or '-' "
                "(at most 63 characters, starting with a letter or digit).",
                reason="bad_config",
                details={"slug": spec.slug},
            )
        return self.root / spec.slug

    def replica_dir(self, slug: str, replica: int) -> Path:
        return self.root / slug / f"replica-{replica}"

    def replica_numbers(self, slug: str) -> list[int]:
        """The replicas that have a directory (including those beyond a scale-down)."""
        directory = self.root / slug
        if not directory.is_dir():
            return []
        found = (REPLICA_DIR.match(path.name) for path in directory.iterdir())
        return sorted(int(match[1]) for match in found if match)

    def known_replicas(self, spec: AgentSpec) -> list[int]:
        """The spec's replicas and any other one with a directory."""
        self.agent_dir(spec)  # validates the slug
        return sorted(set(range(spec.replicas)) | set(self.replica_numbers(spec.slug)))

    def started_replicas(self) -> Iterator[tuple[str, int]]:
        """``(slug, replica)`` of every replica with a pid file (started at some time)."""
        for pid_file in self.root.glob("*/replica-*/pid"):
            match = REPLICA_DIR.match(pid_file.parent.name)
            if match:
                yield pid_file.parent.parent.name, int(match[1])

    def ports_reserved_by_others(self, slug: str) -> set[int]:
        reserved: set[int] = set()
        for ports_file in self.root.glob("*/ports.json"):
            if ports_file.parent.name != slug:
                reserved.update(p for p in read_json(ports_file, []) if isinstance(p, int))
        return reserved

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock across processes (two workers acting on one agent wait in turn)."""
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{name}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


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
