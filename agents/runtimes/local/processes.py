"""The processes of the local runtime's agents: launching a replica (its supervisor shim, which
runs agentd), finding them again from their pid files, stopping, pausing and measuring them.

Every process is checked to be the one the runtime started before it is signalled: a pid from a
file may have been reused by another program since. The helpers at the end wrap psutil.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

from ..base import AgentSpec, ReplicaStats
from ..ports import HOST
from ..shim import STOP_REQUESTED
from .files import Layout, read_json, read_pid, write_json

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SHIM_EXIT_TIMEOUT = 3.0
# cpu_percent compares two samples: the first measure of a process waits this long for its second.
CPU_SAMPLE_SECONDS = 0.1
# Written by stop_replicas in the directory of a replica it stopped on purpose: status does not
# report it (it neither runs nor crashed) until it is launched again.
RETIRED = "retired"
# The only variables agents inherit from the portal's environment: the portal's own secrets
# (database URL, secret key, OAuth credentials) must not leak into every agent.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME")


class ReplicaProcesses:
    """The agentd and shim processes of the replicas laid out by ``layout``.

    ``python`` runs both; ``events`` (``redis_url``, ``stream``, ``maxlen``) tells the shims
    where to publish what happens to agentd.
    """

    def __init__(self, layout: Layout, python: str, events: dict[str, Any]) -> None:
        self.layout = layout
        self.python = python
        self.events = events
        self._shims: list[subprocess.Popen[bytes]] = []
        self._shims_lock = threading.Lock()
        self._measured: dict[tuple[int, float], psutil.Process] = {}

    # --- finding them ----------------------------------------------------------------------

    def agentd(self, slug: str, replica: int) -> psutil.Process | None:
        """The live (running or paused) agentd of this replica, checked to be the one we
        started: a pid from the file may have been reused by another program since."""
        pid = read_pid(self.layout.replica_dir(slug, replica) / "pid")
        process = process_from_pid(pid)
        if process is None:
            return None
        argv = command_line(process)
        if argv is None:
            return None
        if "agents.agentd" not in argv or not has_flag(argv, "--slug", slug):
            return None
        return process if has_flag(argv, "--replica", str(replica)) else None

    def shim(self, slug: str, replica: int) -> psutil.Process | None:
        replica_dir = self.layout.replica_dir(slug, replica)
        process = process_from_pid(read_pid(replica_dir / "shim.pid"))
        if process is None:
            return None
        argv = command_line(process)
        if argv is None:
            return None
        return process if "agents.runtimes.shim" in argv and str(replica_dir) in argv else None

    def shim_alive(self, slug: str, replica: int) -> bool:
        self.reap_shims()
        return self.shim(slug, replica) is not None

    def reap_shims(self) -> None:
        """Collect the exit status of shims this process started, so none lingers a zombie."""
        with self._shims_lock:
            self._shims = [shim for shim in self._shims if shim.poll() is None]

    # --- launching -------------------------------------------------------------------------

    def launch(self, spec: AgentSpec, replica: int, port: int) -> None:
        """Write the replica's ``launch.json`` (agentd's command line, environment and config)
        and start its shim, in a session of its own so that it outlives this process."""
        replica_dir = self.layout.replica_dir(spec.slug, replica)
        data_dir = replica_dir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        for name in ("pid", "shim.pid", "exit.json", STOP_REQUESTED, RETIRED):
            (replica_dir / name).unlink(missing_ok=True)
        config_file = replica_dir / "config.json"
        write_json(config_file, spec.config)
        argv = [
            self.python, "-m", "agents.agentd",
            "--slug", spec.slug,
            "--name", spec.name,
            "--version", spec.version,
            "--replica", str(replica),
            "--host", HOST,
            "--port", str(port),
            "--config-file", str(config_file),
            "--grace", str(spec.grace_seconds),
        ]  # fmt: skip
        env = _base_environment()
        env.update(spec.env)
        env.update(
            {
                # By environment rather than flag: a URL may carry a password, and command lines
                # are readable by every user of the machine.
                "REDIS_URL": spec.redis_url,
                "PYTHONPATH": _python_path(spec.env.get("PYTHONPATH")),
                "PYTHONUNBUFFERED": "1",
                "AGENT_DATA_DIR": str(data_dir),
            }
        )
        launch = {
            "slug": spec.slug,
            "replica": replica,
            "version": spec.version,
            "port": port,
            "argv": argv,
            "env": env,
            "cwd": str(data_dir),
            "grace_seconds": spec.grace_seconds,
            "memory_mb": spec.memory_mb,
            "events": self.events,
        }
        write_json(replica_dir / "launch.json", launch)
        shim_env = _base_environment()
        shim_env["PYTHONPATH"] = _python_path(None)
        with open(replica_dir / "shim.log", "ab") as shim_log:
            shim = subprocess.Popen(
                [self.python, "-m", "agents.runtimes.shim", str(replica_dir)],
                cwd=PROJECT_ROOT,
                env=shim_env,
                stdin=subprocess.DEVNULL,
                stdout=shim_log,
                stderr=subprocess.STDOUT,
                close_fds=True,
                # Its own session: no signal meant for the starter's process group reaches it.
                start_new_session=True,
            )
        write_json(replica_dir / "shim.pid", shim.pid)
        with self._shims_lock:
            self._shims.append(shim)

    # --- stopping and pausing --------------------------------------------------------------

    def stop(self, spec: AgentSpec, replicas: Iterable[int]) -> list[dict[str, Any]]:
        """SIGTERM (and SIGCONT, for paused ones), ``grace_seconds``, then SIGKILL; answers
        how each replica that was running ended."""
        self.reap_shims()
        targets = []
        for replica in replicas:
            replica_dir = self.layout.replica_dir(spec.slug, replica)
            process = self.agentd(spec.slug, replica)
            shim = self.shim(spec.slug, replica)
            if process is None and shim is None:
                continue
            (replica_dir / STOP_REQUESTED).write_text(str(time.time()))
            if process is not None:
                send(process, signal.SIGTERM)
                send(process, signal.SIGCONT)
            elif shim is not None:
                send(shim, signal.SIGTERM)  # agentd not spawned yet: the shim passes it on
            targets.append((replica, process, shim))
        processes = [p for _, p, _ in targets if p is not None]
        lingering = wait_gone(processes, spec.grace_seconds)
        for process in lingering:
            send(process, signal.SIGKILL)
        wait_gone(lingering, 5)
        wait_gone([s for _, _, s in targets if s is not None], SHIM_EXIT_TIMEOUT)
        self.reap_shims()
        stopped = []
        for replica, process, shim in targets:
            replica_dir = self.layout.replica_dir(spec.slug, replica)
            if shim is not None and alive(shim):
                send(shim, signal.SIGKILL)  # wedged; agentd is gone, so nothing is lost
            ended = read_json(replica_dir / "exit.json", None)
            killed = process in lingering
            if ended is None and process is not None:
                # The shim was gone and could not record the exit: record what we know.
                ended = {
                    "exit_code": None,
                    "signal": int(signal.SIGKILL if killed else signal.SIGTERM),
                    "at": time.time(),
                    "pid": process.pid,
                    "requested_stop": True,
                    "recorded_by": "runtime",
                }
                write_json(replica_dir / "exit.json", ended)
            ended = ended or {}
            stopped.append(
                {
                    "replica": replica,
                    "pid": process.pid if process is not None else None,
                    "exit_code": ended.get("exit_code"),
                    "signal": ended.get("signal"),
                    "killed_after_grace": killed,
                }
            )
        return stopped

    def pause(self, slug: str, replicas: Iterable[int], paused: bool) -> list[dict[str, Any]]:
        """SIGSTOP (or SIGCONT) every live agentd of ``replicas``, answering once the kernel
        shows it so; answers the replicas signalled and their pids."""
        changed = []
        for replica in replicas:
            process = self.agentd(slug, replica)
            if process is None:
                continue
            send(process, signal.SIGSTOP if paused else signal.SIGCONT)
            wait_for_pause(process, paused)
            changed.append({"replica": replica, "pid": process.pid})
        return changed

    # --- measuring -------------------------------------------------------------------------

    def usage(self, slug: str, replicas: Iterable[int]) -> list[ReplicaStats]:
        """CPU and memory of each live agentd of ``replicas``."""
        processes = {
            replica: process
            for replica in replicas
            if (process := self.agentd(slug, replica)) is not None
        }
        measured = {replica: self._measured_process(p) for replica, p in processes.items()}
        if any(first for _, first in measured.values()):
            time.sleep(CPU_SAMPLE_SECONDS)  # cpu_percent needs two samples
        answer = []
        for replica, (process, _) in sorted(measured.items()):
            try:
                with process.oneshot():
                    cpu = process.cpu_percent(interval=None)
                    memory = process.memory_info().rss
            except psutil.Error:
                continue
            answer.append(ReplicaStats(replica, cpu, memory))
        return answer

    def _measured_process(self, process: psutil.Process) -> tuple[psutil.Process, bool]:
        """The process object measured before for this pid (cpu_percent compares with its
        previous call), and whether this is its first measure."""
        key = (process.pid, create_time(process) or 0.0)
        known = self._measured.get(key)
        if known is not None:
            return known, False
        self._measured = {k: p for k, p in self._measured.items() if alive(p)}
        self._measured[key] = process
        with contextlib.suppress(psutil.Error):
            process.cpu_percent(interval=None)
        return process, True


# --- launching helpers -----------------------------------------------------------------------


def launched_version(launch: dict[str, Any]) -> str:
    """The version a replica was launched with, from its ``launch.json`` (older records hold
    it only in agentd's command line)."""
    if launch.get("version"):
        return str(launch["version"])
    argv = launch.get("argv") or []
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "--version":
            return str(value)
    return ""


def _base_environment() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if key in INHERITED_ENV or key.startswith("LC_")
    }


def _python_path(extra: str | None) -> str:
    return os.pathsep.join([str(PROJECT_ROOT), *([extra] if extra else [])])


# --- psutil ----------------------------------------------------------------------------------


def command_line(process: psutil.Process) -> list[str] | None:
    """A process's argv, or None if it is gone. Right after a fork, while the child is still
    exec-ing (several agents starting at once makes this likely), the kernel shows an empty
    command line for a moment: ask again rather than take it for someone else's process."""
    for _ in range(20):
        try:
            argv = process.cmdline()
        except psutil.Error:
            return None
        if argv:
            return argv
        time.sleep(0.01)
    return []


def has_flag(argv: list[str], flag: str, value: str) -> bool:
    return any(a == flag and b == value for a, b in zip(argv, argv[1:], strict=False))


def process_from_pid(pid: int | None) -> psutil.Process | None:
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
    except psutil.Error:
        return None
    return process if alive(process) else None


def alive(process: psutil.Process) -> bool:
    """Running or paused; a zombie has ended (it only waits for its parent to notice)."""
    try:
        return process.is_running() and process.status() not in (
            psutil.STATUS_ZOMBIE,
            psutil.STATUS_DEAD,
        )
    except psutil.Error:
        return False


def status_of(process: psutil.Process) -> str:
    try:
        return process.status()
    except psutil.Error:
        return psutil.STATUS_DEAD


def create_time(process: psutil.Process) -> float | None:
    try:
        return process.create_time()
    except psutil.Error:
        return None


def send(process: psutil.Process, signum: int) -> None:
    with contextlib.suppress(psutil.Error):
        process.send_signal(signum)


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has ended (zombies count as ended); answers those left."""
    deadline = time.monotonic() + timeout
    left = [p for p in processes if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


def wait_for_pause(process: psutil.Process, paused: bool, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (status_of(process) == psutil.STATUS_STOPPED) == paused or not alive(process):
            return
        time.sleep(0.01)
