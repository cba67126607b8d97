"""A small process supervisor for ``manage.py up``: the data stores and the app in one terminal.

Two layers of children: the data stores (the embedded PostgreSQL and Redis, in the foreground)
start first, each waited for until it answers; then ``prepare`` runs (migrations) and the app
processes start (web, worker, beat, monitor, collector). On the way down the order reverses:
app processes first, data stores last, so nothing loses its database while it shuts down.

Each child runs in its own session so that a Ctrl-C in the terminal reaches only the supervisor,
which then stops the children: their stop signal, a grace period, SIGKILL. Output lines are
relayed with the child's name in front. A child that exits on its own (a crash, a SIGKILL) is
restarted with the same command, hence the same port and data, with exponential backoff (capped),
so one crash does not take the portal down; what it left behind in its process group (Celery
pool processes, PostgreSQL backends) is killed first, so the new one starts clean.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

COLOURS = ["\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m", "\033[31m"]
RESET = "\033[0m"


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # Run as this system user (the embedded PostgreSQL refuses to run as root).
    user: str | None = None
    # The signal that asks for a clean stop (PostgreSQL: SIGINT, its "fast" shutdown).
    stop_signal: int = signal.SIGTERM
    # True once the child serves; the supervisor waits for it before starting later layers.
    ready: Callable[[], bool] | None = None


@dataclass
class _Child:
    spec: ChildSpec
    colour: str
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    awaiting_ready: bool = False


class StartFailed(Exception):
    """A data store did not come up, so nothing that needs it is started."""


class Supervisor:
    def __init__(
        self,
        specs: list[ChildSpec],
        *,
        stores: Sequence[ChildSpec] = (),
        grace_seconds: float = 10.0,
        max_backoff: float = 30.0,
        ready_timeout: float = 60.0,
        out=None,
    ) -> None:
        every = [*stores, *specs]
        children = [_Child(spec, COLOURS[i % len(COLOURS)]) for i, spec in enumerate(every)]
        self.stores = children[: len(stores)]
        self.apps = children[len(stores) :]
        self.children = children
        self.grace_seconds = grace_seconds
        self.max_backoff = max_backoff
        self.ready_timeout = ready_timeout
        self.out = out or sys.stdout
        self.width = max(len(spec.name) for spec in every)
        self._preparing = False
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
        as_user = {}
        if child.spec.user is not None:
            account = pwd.getpwnam(child.spec.user)
            as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        child.process = subprocess.Popen(
            child.spec.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            **as_user,
        )
        child.started_at = time.monotonic()
        threading.Thread(
            target=self._relay, args=(child, child.process.stdout), daemon=True
        ).start()

    def run(
        self,
        on_started: Callable[[], None] | None = None,
        *,
        prepare: Callable[[], None] | None = None,
    ) -> int:
        """Run until SIGINT/SIGTERM; returns the exit status for the command.

        The data stores start first, one by one, each waited for until ``ready``; then
        ``prepare`` runs (it may use them), then the app processes start and ``on_started`` runs.
        """
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._on_signal)
        try:
            for child in self.stores:
                self._start(child)
                self._wait_until_ready(child)
            if prepare is not None and not self._stopping.is_set():
                self._preparing = True
                try:
                    prepare()
                except KeyboardInterrupt:
                    return 0  # a stop asked for while preparing; the stores stop below
                finally:
                    self._preparing = False
            if self._stopping.is_set():
                return 0
            for child in self.apps:
                self._start(child)
            if on_started is not None:
                on_started()
            while not self._stopping.is_set():
                self._check_children()
                self._stopping.wait(0.2)
        except StartFailed as exc:
            self.say("up", str(exc))
            return 1
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _wait_until_ready(self, child: _Child) -> None:
        if child.spec.ready is None:
            return
        deadline = time.monotonic() + self.ready_timeout
        while not self._stopping.is_set():
            if child.spec.ready():
                return
            code = child.process.poll()
            if code is not None:
                raise StartFailed(
                    f"{child.spec.name} exited with status {code} before it was ready; "
                    "see its output above"
                )
            if time.monotonic() > deadline:
                raise StartFailed(
                    f"{child.spec.name} was not ready after {self.ready_timeout:.0f} s; "
                    "see its output above"
                )
            self._stopping.wait(0.05)

    def _on_signal(self, signum, frame) -> None:
        if not self._stopping.is_set():
            self.say("up", f"received {signal.Signals(signum).name}, stopping everything…")
        self._stopping.set()
        if self._preparing:
            # Migrations run in this process: interrupt them; run() still stops the stores.
            raise KeyboardInterrupt

    def _check_children(self) -> None:
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if process is None:
                if now >= child.next_start:
                    self.say("up", f"restarting {child.spec.name} (restart #{child.restarts})")
                    self._start(child)
                    child.awaiting_ready = child.spec.ready is not None
                continue
            code = process.poll()
            if code is None:
                if child.awaiting_ready and child.spec.ready():
                    child.awaiting_ready = False
                    self.say("up", f"{child.spec.name} is back")
                if now - child.started_at > 60:
                    child.restarts = 0  # healthy for a minute: forget earlier crashes
                continue
            # Orphans (a killed postmaster's backends still attached to its shared memory, a
            # killed worker's pool) would keep the new process from starting or double the work.
            # The group id is the dead child's pid: not reused while any member of it lives.
            self._signal(child, signal.SIGKILL)
            _forget_live_metrics(process.pid)
            child.restarts += 1
            delay = min(self.max_backoff, 2 ** (child.restarts - 1))
            self.say(
                "up", f"{child.spec.name} exited with status {code}; restarting in {delay:.0f} s"
            )
            child.process = None
            child.next_start = now + delay

    def stop(self) -> None:
        """Stop the app processes, then the data stores they were using."""
        self._stopping.set()
        self._stop_layer(self.apps)
        self._stop_layer(self.stores)

    def _stop_layer(self, children: list[_Child]) -> None:
        running = [c for c in children if c.process is not None and c.process.poll() is None]
        for child in reversed(running):
            self._signal(child, child.spec.stop_signal)
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


def _forget_live_metrics(pid: int) -> None:
    """A dead process's "live" gauges (the WebSockets a killed web server held open) stop
    counting in /-/metrics; its counters stay, as Prometheus expects of counters."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)
