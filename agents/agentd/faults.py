"""Injected faults.

Faults that act on one task or one request (``fail_rate``, ``latency_ms``, ``refuse_readiness``,
``unhealthy``) are read from the live config where they apply, so a change takes effect on the
next task or request. The faults that act on the whole process, a scheduled crash and held
memory, are kept here and re-applied whenever the config changes.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

from .config import Faults
from .log import JsonLogger

MEBIBYTE = 1024 * 1024


def task_failure(
    fields: Mapping[str, str], payload: Mapping[str, Any], faults: Faults, rng: random.Random
) -> str | None:
    """Why this task attempt must fail, or ``None`` if it succeeds.

    A task fails when it asks to (field ``fail`` = ``"1"``, or ``"fail": true`` in its payload)
    or, by chance, at the configured ``fail_rate``; rates of 0 and 1 are exact, so tests can rely
    on them.
    """
    if fields.get("fail") == "1":
        return "the task asked to fail (fail=1)"
    if payload.get("fail") is True:
        return 'the task asked to fail (payload "fail": true)'
    if rng.random() < faults.fail_rate:
        return f"injected failure (faults.fail_rate={faults.fail_rate})"
    return None


class ProcessFaults:
    """Schedules the injected crash and holds the injected memory allocation."""

    def __init__(self, logger: JsonLogger, exit_process: Callable[[int], object] = os._exit):
        self._log = logger
        self._exit_process = exit_process
        self._lock = threading.Lock()
        self._crash_timer: threading.Timer | None = None
        self._ballast: bytes | None = None

    def apply(self, faults: Faults, previous: Faults | None = None) -> None:
        """Bring the process in line with ``faults``; only what changed since ``previous`` moves.

        A crash is scheduled ``crash_after_seconds`` after the fault is set, at start or by a
        config patch.
        """
        with self._lock:
            crash_changed = previous is None or (
                (previous.crash_after_seconds, previous.crash_exit_code)
                != (faults.crash_after_seconds, faults.crash_exit_code)
            )
            if crash_changed:
                self._schedule_crash(faults.crash_after_seconds, faults.crash_exit_code)
            held_mb = 0 if previous is None else previous.allocate_mb
            if held_mb != faults.allocate_mb:
                self._allocate(faults.allocate_mb)

    def cancel(self) -> None:
        """Cancel a scheduled crash (the process is stopping cleanly)."""
        with self._lock:
            self._schedule_crash(None, 0)

    def _schedule_crash(self, after_seconds: float | None, exit_code: int) -> None:
        if self._crash_timer is not None:
            self._crash_timer.cancel()
            self._crash_timer = None
        if after_seconds is None:
            return
        self._crash_timer = threading.Timer(after_seconds, self._crash, args=(exit_code,))
        self._crash_timer.daemon = True
        self._crash_timer.start()
        self._log.info(
            "crash_scheduled",
            f"injected crash in {after_seconds:g}s with exit code {exit_code}",
            crash_after_seconds=after_seconds,
            exit_code=exit_code,
        )

    def _crash(self, exit_code: int) -> None:
        self._log.error(
            "crash", f"injected crash: exiting with code {exit_code}", exit_code=exit_code
        )
        # os._exit skips every cleanup on purpose: this must look like a real crash.
        self._exit_process(exit_code)

    def _allocate(self, megabytes: int) -> None:
        self._ballast = None
        if megabytes:
            # Filling with a non-zero byte touches every page, so the memory is really resident.
            self._ballast = b"\xa5" * (megabytes * MEBIBYTE)
        self._log.info(
            "memory_allocated",
            f"holding {megabytes} MiB of injected memory",
            allocate_mb=megabytes,
        )
