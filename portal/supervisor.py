"""A small process supervisor for ``manage.py up``: web, worker, beat and monitor in one terminal.

Each child runs in its own session so that a Ctrl-C in the terminal reaches only the supervisor,
which then stops the children in order: SIGTERM, a grace period, SIGKILL. Output lines are
relayed with the child's name in front. A child that exits on its own is restarted with
exponential backoff (capped), so one crash does not take the portal down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

COLOURS = ["\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m", "\033[31m"]
RESET = "\033[0m"


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class _Child:
    spec: ChildSpec
    colour: str
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0


class Supervisor:
    def __init__(
        self,
        specs: list[ChildSpec],
        *,
        grace_seconds: float = 10.0,
        max_backoff: float = 30.0,
        out=None,
    ) -> None:
        self.children = [_Child(spec, COLOURS[i % len(COLOURS)]) for i, spec in enumerate(specs)]
        self.grace_seconds = grace_seconds
        self.max_backoff = max_backoff
        self.out = out or sys.stdout
        self.width = max(len(spec.name) for spec in specs)
        self._stopping = threading.Event()
        self._write_lock = threading.Lock()
        self._colour = self.out.isatty() if hasattr(self.out, "isatty") else False

    # --- output ------------------------------------------------------------------------

    def say(self, name: str, line: str, colour: str = "") -> None:
        prefix = f"{name:<{self.width}} | "
        if self._colour and colour:
            prefix = f"{colour}{prefix}{RESET}"
        with self._write_lock:
            self.out.write(prefix + line.rstrip("\n") + "\n")
            self.out.flush()

    def _relay(self, child: _Child, stream) -> None:
        for raw in iter(stream.readline, b""):
            self.say(child.spec.name, raw.decode(errors="replace"), child.colour)
        stream.close()

    # --- lifecycle ---------------------------------------------------------------------

    def _start(self, child: _Child) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **child.spec.env}
        child.process = subprocess.Popen(
            child.spec.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        child.started_at = time.monotonic()
        threading.Thread(
            target=self._relay, args=(child, child.process.stdout), daemon=True
        ).start()

    def run(self, on_started: Callable[[], None] | None = None) -> int:
        """Run until SIGINT/SIGTERM; returns the exit status for the command."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._on_signal)
        try:
            for child in self.children:
                self._start(child)
            if on_started is not None:
                on_started()
            while not self._stopping.is_set():
                self._check_children()
                self._stopping.wait(0.2)
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _on_signal(self, signum, frame) -> None:
        if not self._stopping.is_set():
            self.say("up", f"received {signal.Signals(signum).name}, stopping everything…")
        self._stopping.set()

    def _check_children(self) -> None:
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if process is None:
                if now >= child.next_start:
                    self.say("up", f"restarting {child.spec.name} (restart #{child.restarts})")
                    self._start(child)
                continue
            code = process.poll()
            if code is None:
                if now - child.started_at > 60:
                    child.restarts = 0  # healthy for a minute: forget earlier crashes
                continue
            child.restarts += 1
            delay = min(self.max_backoff, 2 ** (child.restarts - 1))
            self.say(
                "up", f"{child.spec.name} exited with status {code}; restarting in {delay:.0f} s"
            )
            child.process = None
            child.next_start = now + delay

    def stop(self) -> None:
        self._stopping.set()
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        for child in reversed(running):
            self._signal(child, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        for child in running:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                child.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                self.say(
                    "up",
                    f"{child.spec.name} did not stop within {self.grace_seconds:.0f} s; killing it",
                )
                self._signal(child, signal.SIGKILL)
                child.process.wait()
        for child in running:
            self.say("up", f"{child.spec.name} stopped (status {child.process.returncode})")

    @staticmethod
    def _signal(child: _Child, sig: int) -> None:
        try:
            if sig == signal.SIGKILL:
                # The whole process group, so no Celery pool process outlives its parent.
                os.killpg(child.process.pid, sig)
            else:
                # The parent alone: it shuts its own children down in order (Celery's warm shutdown).
                child.process.send_signal(sig)
        except ProcessLookupError:
            pass
