"""LocalRuntime: the Runtime interface over local agentd processes and their supervisor shims."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import psutil
import redis

from ...agentd import contract
from ..base import (
    AgentSpec,
    LogLine,
    ReplicaStats,
    ReplicaStatus,
    Runtime,
    RuntimeEvent,
    RuntimeFailure,
    RuntimeStatus,
)
from ..shim import STOP_REQUESTED
from .failures import not_ready, port_in_use, shim_failure, start_failure
from .files import read_json, read_pid, wait_for_file, write_json
from .logfiles import LogFollower, iso_timestamp, read_log
from .processes import (
    HOST,
    alive,
    create_time,
    has_flag,
    port_is_free,
    process_from_pid,
    send,
    status_of,
    wait_for_pause,
    wait_gone,
)

PROJECT_ROOT = Path(__file__).resolve().parents[3]
EVENTS_STREAM = "runtime:local:events"
EVENTS_MAXLEN = 10_000
EVENTS_BLOCK_MS = 500
# Outside Linux's default ephemeral range (32768-60999), so outgoing connections do not take them.
DEFAULT_PORT_RANGE = (20000, 29999)
PROBE_TIMEOUT = 0.5
POLL_INTERVAL = 0.1
FOLLOW_INTERVAL = 0.2
SHIM_EXIT_TIMEOUT = 3.0
SLUG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
REPLICA_DIR = re.compile(r"^replica-(\d+)$")
# The only variables agents inherit from the portal's environment: the portal's own secrets
# (database URL, secret key, OAuth credentials) must not leak into every agent.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME")
# Probes go straight to the agent, whatever HTTP(S)_PROXY the portal runs with.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LocalRuntime(Runtime):
    """Agents as local processes under ``root``, events published to ``redis_url``."""

    name = "local"

    def __init__(
        self,
        root: Path | str,
        redis_url: str,
        *,
        events_stream: str = EVENTS_STREAM,
        port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
        python: str = sys.executable,
    ) -> None:
        self.root = Path(root).resolve()
        self.redis_url = redis_url
        self.events_stream = events_stream
        self.port_range = port_range
        self.python = python
        self._shims: list[subprocess.Popen[bytes]] = []
        self._shims_lock = threading.Lock()
        self._measured: dict[tuple[int, float], psutil.Process] = {}
        self._publisher: redis.Redis | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def provision(self, spec: AgentSpec) -> dict[str, Any]:
        """Reserve one free port per replica and the agent's directories.

        Ports already recorded (or given in ``spec.ports``) are kept, even if something holds
        them now: ``start`` then names the holder rather than the agent moving silently.
        """
        directory = self._agent_dir(spec)
        _check_replicas(spec)
        with self._lock("ports"):
            current = list(spec.ports) or read_json(directory / "ports.json", [])
            taken = self._ports_reserved_by_others(spec.slug) | set(current)
            added = []
            while len(current) < spec.replicas:
                port = self._pick_free_port(taken)
                taken.add(port)
                current.append(port)
                added.append(port)
            ports = current[: spec.replicas]
            _check_distinct(spec, ports)
            directory.mkdir(parents=True, exist_ok=True)
            write_json(directory / "ports.json", ports)
        data_dirs = []
        for replica in range(spec.replicas):
            data = self._replica_dir(spec.slug, replica) / "data"
            data.mkdir(parents=True, exist_ok=True)
            data_dirs.append(str(data))
        return {
            "runtime": self.name,
            "directory": str(directory),
            "ports": ports,
            "new_ports": added,
            "data_dirs": data_dirs,
            "queue": contract.task_stream(spec.slug),
        }

    def reassign_ports(self, spec: AgentSpec) -> list[int]:
        """Swap each reserved port that is not free now for a free one."""
        directory = self._agent_dir(spec)
        with self._lock("ports"):
            current = self._ports(spec)
            taken = self._ports_reserved_by_others(spec.slug) | set(current)
            ports = []
            for replica, port in enumerate(current[: spec.replicas]):
                if self._agentd(spec.slug, replica) is None and not port_is_free(port):
                    port = self._pick_free_port(taken)
                    taken.add(port)
                ports.append(port)
            write_json(directory / "ports.json", ports)
        return ports

    def deploy(self, spec: AgentSpec) -> dict[str, Any]:
        """Write the process spec (``spec.json``); nothing is started."""
        _check_replicas(spec)
        ports = self._ports(spec)
        directory = self._agent_dir(spec)
        for replica in range(spec.replicas):
            (self._replica_dir(spec.slug, replica) / "data").mkdir(parents=True, exist_ok=True)
        record = {**spec.to_dict(), "ports": ports, "deployed_at": time.time()}
        write_json(directory / "spec.json", record)
        return {
            "runtime": self.name,
            "spec_path": str(directory / "spec.json"),
            "version": spec.version,
            "replicas": spec.replicas,
            "ports": ports,
        }

    def start(self, spec: AgentSpec) -> dict[str, Any]:
        with self._lock(f"agent-{spec.slug}"):
            return self._start(spec)

    def stop(self, spec: AgentSpec) -> dict[str, Any]:
        with self._lock(f"agent-{spec.slug}"):
            return self._stop(spec, self._known_replicas(spec))

    def restart(self, spec: AgentSpec) -> dict[str, Any]:
        with self._lock(f"agent-{spec.slug}"):
            started = time.monotonic()
            stopped = self._stop(spec, self._known_replicas(spec))
            details = self._start(spec)
        return {
            **details,
            "previous_pids": [r["pid"] for r in stopped["replicas"] if r.get("pid")],
            "stop": stopped,
            "duration_seconds": round(time.monotonic() - started, 3),
        }

    def suspend(self, spec: AgentSpec) -> dict[str, Any]:
        """SIGSTOP every live replica; answers once the kernel shows them stopped."""
        with self._lock(f"agent-{spec.slug}"):
            return self._signal_replicas(spec, pause=True)

    def resume(self, spec: AgentSpec) -> dict[str, Any]:
        """SIGCONT every paused replica."""
        with self._lock(f"agent-{spec.slug}"):
            return self._signal_replicas(spec, pause=False)

    def remove(self, spec: AgentSpec, purge: bool = False) -> dict[str, Any]:
        """Stop the agent, delete its process spec and release its ports; ``purge`` also
        deletes its data and logs (the whole directory)."""
        directory = self._agent_dir(spec)
        with self._lock(f"agent-{spec.slug}"):
            stopped = self._stop(spec, self._known_replicas(spec))
            if purge:
                shutil.rmtree(directory, ignore_errors=True)
            else:
                for name in ("spec.json", "ports.json"):
                    (directory / name).unlink(missing_ok=True)
                for replica in self._replica_numbers(spec.slug):
                    replica_dir = self._replica_dir(spec.slug, replica)
                    for name in ("launch.json", "config.json", "pid", "shim.pid", "exit.json"):
                        (replica_dir / name).unlink(missing_ok=True)
        self._publish(
            RuntimeEvent(
                "removed", spec.slug, 0, time.time(), details={"purge": purge, "runtime": "local"}
            )
        )
        return {"runtime": self.name, "purged": purge, "directory": str(directory), "stop": stopped}

    # --- observation ---------------------------------------------------------------------

    def status(self, spec: AgentSpec) -> RuntimeStatus:
        self._reap_shims()
        deployed = (self._agent_dir(spec) / "spec.json").exists()
        replicas = []
        for replica in self._known_replicas(spec):
            replica_dir = self._replica_dir(spec.slug, replica)
            pid = read_pid(replica_dir / "pid")
            port = read_json(replica_dir / "launch.json", {}).get("port")
            process = self._agentd(spec.slug, replica)
            if replica >= spec.replicas and process is None:
                continue  # a replica from before a scale-down, long gone
            if process is not None:
                paused = status_of(process) == psutil.STATUS_STOPPED
                replicas.append(
                    ReplicaStatus(
                        replica,
                        "paused" if paused else "running",
                        pid=process.pid,
                        port=port,
                        started_at=create_time(process),
                    )
                )
            elif pid is not None:
                ended = read_json(replica_dir / "exit.json", {})
                replicas.append(
                    ReplicaStatus(
                        replica,
                        "exited",
                        pid=pid,
                        port=port,
                        exit_code=ended.get("exit_code"),
                        signal=ended.get("signal"),
                        started_at=ended.get("started_at"),
                        oom=bool(ended.get("oom")),
                    )
                )
            else:
                replicas.append(ReplicaStatus(replica, "created" if deployed else "missing"))
        return RuntimeStatus(spec.slug, replicas)

    def logs(
        self,
        spec: AgentSpec,
        since: float | None = None,
        tail: int | None = 200,
        follow: bool = False,
        stop: threading.Event | None = None,
        replica: int | None = None,
    ) -> Iterator[LogLine]:
        replicas = [replica] if replica is not None else self._replica_numbers(spec.slug)
        since_ts = iso_timestamp(since) if since is not None else None
        lines: list[LogLine] = []
        followers: list[LogFollower] = []
        for number in replicas:
            replica_dir = self._replica_dir(spec.slug, number)
            if since_ts is not None:
                previous = read_log(replica_dir / "previous.log", spec.slug, number)
                current = read_log(replica_dir / "agent.log", spec.slug, number, previous[1])
                own = [line for line in previous[0] + current[0] if line.ts >= since_ts]
            else:
                current = read_log(replica_dir / "agent.log", spec.slug, number, tail=tail)
                own = current[0]
            lines.extend(own[-tail:] if tail is not None else own)
            if follow:
                followers.append(
                    LogFollower(
                        replica_dir / "agent.log", spec.slug, number, current[2], current[1]
                    )
                )
        lines.sort(key=lambda line: line.ts)
        yield from lines[-tail:] if tail is not None else lines
        if not follow:
            return
        stop = stop or threading.Event()
        try:
            while not stop.is_set():
                fresh = [line for follower in followers for line in follower.read_new()]
                yield from sorted(fresh, key=lambda line: line.ts)
                if not fresh:
                    stop.wait(FOLLOW_INTERVAL)
        finally:
            for follower in followers:
                follower.close()

    def stats(self, spec: AgentSpec) -> list[ReplicaStats]:
        processes = {
            replica: process
            for replica in self._known_replicas(spec)
            if (process := self._agentd(spec.slug, replica)) is not None
        }
        measured = {replica: self._measured_process(p) for replica, p in processes.items()}
        if any(first for _, first in measured.values()):
            time.sleep(POLL_INTERVAL)  # cpu_percent needs two samples
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

    def events(self, since_id: str | None, stop: threading.Event) -> Iterator[RuntimeEvent]:
        """Events from ``runtime:local:events`` after ``since_id`` (None: from now on).

        Reconnects with backoff while Redis is away; returns soon after ``stop`` is set.
        """
        last_id = since_id
        client: redis.Redis | None = None
        backoff = 0.2
        try:
            while not stop.is_set():
                try:
                    if client is None:
                        client = redis.Redis.from_url(
                            self.redis_url,
                            decode_responses=True,
                            socket_timeout=EVENTS_BLOCK_MS / 1000 + 5,
                            socket_connect_timeout=2,
                        )
                    if last_id is None:
                        newest = cast(list, client.xrevrange(self.events_stream, count=1))
                        last_id = str(newest[0][0]) if newest else "0-0"
                    answer = cast(
                        list[tuple[str, list[tuple[str, dict[str, str]]]]],
                        client.xread(
                            {self.events_stream: last_id}, count=100, block=EVENTS_BLOCK_MS
                        ),
                    )
                    backoff = 0.2
                except redis.ResponseError as exc:
                    raise RuntimeFailure(
                        f"cannot read runtime events after {last_id!r}: {exc}",
                        reason="bad_config",
                        details={"since_id": last_id},
                    ) from exc
                except (redis.RedisError, OSError):
                    if client is not None:
                        client.close()
                    client = None
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                for _stream, entries in answer or []:
                    for entry_id, fields in entries:
                        last_id = entry_id
                        yield RuntimeEvent.from_fields(entry_id, fields)
        finally:
            if client is not None:
                client.close()

    def adopt(self) -> list[str]:
        """Slugs of the agents under ``root`` with a live agentd process (left from before)."""
        slugs = set()
        for pid_file in self.root.glob("*/replica-*/pid"):
            slug = pid_file.parent.parent.name
            match = REPLICA_DIR.match(pid_file.parent.name)
            if match and self._agentd(slug, int(match[1])) is not None:
                slugs.add(slug)
        return sorted(slugs)

    # --- start and stop ------------------------------------------------------------------

    def _start(self, spec: AgentSpec) -> dict[str, Any]:
        began = time.monotonic()
        self._reap_shims()
        if not (self._agent_dir(spec) / "spec.json").exists():
            raise RuntimeFailure(
                f"{spec.name} is not deployed on the local runtime; deploy it before starting it.",
                reason="not_found",
                details={"slug": spec.slug},
            )
        _check_replicas(spec)
        ports = self._ports(spec)
        # A live shim without agentd yet is a launch in progress (an interrupted start being
        # carried out again): wait for it rather than start a second agentd on the same port.
        to_launch = [
            r
            for r in range(spec.replicas)
            if self._agentd(spec.slug, r) is None and self._shim(spec.slug, r) is None
        ]
        for replica in to_launch:
            if not port_is_free(ports[replica]):
                raise port_in_use(spec, replica, ports[replica], log_lines=[])
        launched: list[int] = []
        try:
            for replica in to_launch:
                self._launch(spec, replica, ports[replica])
                launched.append(replica)
            ready = self._await_ready(spec, ports, began + spec.ready_timeout)
        except BaseException:
            self._stop(spec, launched)  # a failed start leaves nothing half-running
            raise
        return {
            "runtime": self.name,
            "replicas": [
                {**ready[r], "already_running": r not in to_launch} for r in range(spec.replicas)
            ],
            "pids": [ready[r]["pid"] for r in range(spec.replicas)],
            "ports": ports,
            "duration_seconds": round(time.monotonic() - began, 3),
        }

    def _launch(self, spec: AgentSpec, replica: int, port: int) -> None:
        replica_dir = self._replica_dir(spec.slug, replica)
        data_dir = replica_dir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        for name in ("pid", "shim.pid", "exit.json", STOP_REQUESTED):
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
            "port": port,
            "argv": argv,
            "env": env,
            "cwd": str(data_dir),
            "grace_seconds": spec.grace_seconds,
            "memory_mb": spec.memory_mb,
            "events": {
                "redis_url": self.redis_url,
                "stream": self.events_stream,
                "maxlen": EVENTS_MAXLEN,
            },
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

    def _await_ready(
        self, spec: AgentSpec, ports: list[int], deadline: float
    ) -> dict[int, dict[str, Any]]:
        """Wait until every replica answers /readyz with 200; raise as soon as one cannot."""
        pending = set(range(spec.replicas))
        ready: dict[int, dict[str, Any]] = {}
        last_answer: dict[int, Any] = {}
        began = time.monotonic()
        while pending:
            for replica in sorted(pending):
                replica_dir = self._replica_dir(spec.slug, replica)
                ended = read_json(replica_dir / "exit.json", None)
                if ended is not None:
                    raise start_failure(spec, replica, ports[replica], ended, replica_dir)
                process = self._agentd(spec.slug, replica)
                if process is None:
                    if (
                        not self._shim_alive(spec.slug, replica)
                        and wait_for_file(replica_dir / "exit.json", 0.5) is None
                    ):
                        raise shim_failure(spec, replica, ports[replica], replica_dir)
                    continue
                code, body = _probe(ports[replica], "/readyz")
                mine = (
                    isinstance(body, dict)
                    and body.get("slug") == spec.slug
                    and body.get("replica") == replica
                )
                if code == 200 and mine:
                    pending.discard(replica)
                    ready[replica] = {
                        "replica": replica,
                        "pid": process.pid,
                        "shim_pid": read_pid(replica_dir / "shim.pid"),
                        "port": ports[replica],
                        "ready_seconds": round(time.monotonic() - began, 3),
                    }
                else:
                    last_answer[replica] = {"status": code, "body": body}
            if not pending:
                break
            if time.monotonic() >= deadline:
                replica = min(pending)
                raise not_ready(
                    spec,
                    replica,
                    ports[replica],
                    last_answer.get(replica),
                    self._replica_dir(spec.slug, replica),
                )
            time.sleep(POLL_INTERVAL)
        return ready

    def _stop(self, spec: AgentSpec, replicas: Iterable[int]) -> dict[str, Any]:
        """SIGTERM (and SIGCONT, for paused ones), ``grace_seconds``, then SIGKILL."""
        began = time.monotonic()
        self._reap_shims()
        targets = []
        for replica in replicas:
            replica_dir = self._replica_dir(spec.slug, replica)
            process = self._agentd(spec.slug, replica)
            shim = self._shim(spec.slug, replica)
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
        self._reap_shims()
        stopped = []
        for replica, process, shim in targets:
            replica_dir = self._replica_dir(spec.slug, replica)
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
        return {
            "runtime": self.name,
            "replicas": stopped,
            "stopped": len(stopped),
            "duration_seconds": round(time.monotonic() - began, 3),
        }

    def _signal_replicas(self, spec: AgentSpec, pause: bool) -> dict[str, Any]:
        changed = []
        for replica in self._known_replicas(spec):
            process = self._agentd(spec.slug, replica)
            if process is None:
                continue
            send(process, signal.SIGSTOP if pause else signal.SIGCONT)
            wait_for_pause(process, pause)
            changed.append({"replica": replica, "pid": process.pid})
            self._publish(
                RuntimeEvent(
                    "paused" if pause else "resumed",
                    spec.slug,
                    replica,
                    time.time(),
                    details={"pid": process.pid},
                )
            )
        if not changed:
            action = "suspend" if pause else "resume"
            raise RuntimeFailure(
                f"{spec.name} has no running process to {action}; start it first.",
                reason="not_found",
                details={"slug": spec.slug},
            )
        return {"runtime": self.name, "replicas": changed}

    # --- processes, files and ports ------------------------------------------------------

    def _agentd(self, slug: str, replica: int) -> psutil.Process | None:
        """The live (running or paused) agentd of this replica, checked to be the one we
        started: a pid from the file may have been reused by another program since."""
        pid = read_pid(self._replica_dir(slug, replica) / "pid")
        process = process_from_pid(pid)
        if process is None:
            return None
        argv = _command_line(process)
        if argv is None:
            return None
        if "agents.agentd" not in argv or not has_flag(argv, "--slug", slug):
            return None
        return process if has_flag(argv, "--replica", str(replica)) else None

    def _shim(self, slug: str, replica: int) -> psutil.Process | None:
        replica_dir = self._replica_dir(slug, replica)
        process = process_from_pid(read_pid(replica_dir / "shim.pid"))
        if process is None:
            return None
        argv = _command_line(process)
        if argv is None:
            return None
        return process if "agents.runtimes.shim" in argv and str(replica_dir) in argv else None

    def _shim_alive(self, slug: str, replica: int) -> bool:
        self._reap_shims()
        return self._shim(slug, replica) is not None

    def _reap_shims(self) -> None:
        """Collect the exit status of shims this process started, so none lingers a zombie."""
        with self._shims_lock:
            self._shims = [shim for shim in self._shims if shim.poll() is None]

    def _measured_process(self, process: psutil.Process) -> tuple[psutil.Process, bool]:
        key = (process.pid, create_time(process) or 0.0)
        known = self._measured.get(key)
        if known is not None:
            return known, False
        self._measured = {k: p for k, p in self._measured.items() if alive(p)}
        self._measured[key] = process
        with contextlib.suppress(psutil.Error):
            process.cpu_percent(interval=None)
        return process, True

    def _agent_dir(self, spec: AgentSpec) -> Path:
        if not SLUG_PATTERN.match(spec.slug):
            raise RuntimeFailure(
                f"invalid slug {spec.slug!r}: use letters, digits, '.', '_' or '-' "
                "(at most 63 characters, starting with a letter or digit).",
                reason="bad_config",
                details={"slug": spec.slug},
            )
        return self.root / spec.slug

    def _replica_dir(self, slug: str, replica: int) -> Path:
        return self.root / slug / f"replica-{replica}"

    def _replica_numbers(self, slug: str) -> list[int]:
        directory = self.root / slug
        if not directory.is_dir():
            return []
        found = (REPLICA_DIR.match(path.name) for path in directory.iterdir())
        return sorted(int(match[1]) for match in found if match)

    def _known_replicas(self, spec: AgentSpec) -> list[int]:
        self._agent_dir(spec)  # validates the slug
        return sorted(set(range(spec.replicas)) | set(self._replica_numbers(spec.slug)))

    def _ports(self, spec: AgentSpec) -> list[int]:
        """The ports the replicas listen on: the spec's, else those provision recorded."""
        ports = list(spec.ports) or read_json(self._agent_dir(spec) / "ports.json", None)
        if ports is None:
            raise RuntimeFailure(
                f"{spec.name} has not been provisioned on the local runtime; "
                "provision it to reserve its ports.",
                reason="not_found",
                details={"slug": spec.slug},
            )
        if len(ports) < spec.replicas:
            raise RuntimeFailure(
                f"{spec.name} has {len(ports)} port(s) reserved for {spec.replicas} replicas; "
                "provision it again to reserve the rest.",
                reason="bad_config",
                details={"ports": ports, "replicas": spec.replicas},
            )
        ports = ports[: spec.replicas]
        _check_distinct(spec, ports)
        return ports

    def _ports_reserved_by_others(self, slug: str) -> set[int]:
        reserved: set[int] = set()
        for ports_file in self.root.glob("*/ports.json"):
            if ports_file.parent.name != slug:
                reserved.update(read_json(ports_file, []))
        return reserved

    def _pick_free_port(self, taken: set[int]) -> int:
        low, high = self.port_range
        for _ in range(500):
            port = random.randint(low, high)
            if port not in taken and port_is_free(port):
                return port
        raise RuntimeFailure(
            f"no free port found between {low} and {high}; free some or widen the range.",
            reason="port_in_use",
            details={"port_range": [low, high]},
        )

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """An exclusive lock across processes (two workers acting on one agent wait in turn)."""
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{name}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _publish(self, event: RuntimeEvent) -> None:
        """Best effort, like the shim's: an event lost while Redis is away is reconciled later."""
        try:
            if self._publisher is None:
                self._publisher = redis.Redis.from_url(
                    self.redis_url, socket_timeout=2, socket_connect_timeout=2
                )
            self._publisher.xadd(
                self.events_stream,
                event.to_fields(),  # type: ignore[arg-type]
                maxlen=EVENTS_MAXLEN,
                approximate=True,
            )
        except (redis.RedisError, OSError):
            pass


# --- helpers ----------------------------------------------------------------------------


def _check_replicas(spec: AgentSpec) -> None:
    if spec.replicas < 1:
        raise RuntimeFailure(
            f"{spec.name} must have at least one replica (got {spec.replicas}).",
            reason="bad_config",
            details={"replicas": spec.replicas},
        )


def _check_distinct(spec: AgentSpec, ports: list[int]) -> None:
    if len(set(ports)) != len(ports):
        raise RuntimeFailure(
            f"{spec.name} lists one port for several replicas ({ports}); each needs its own.",
            reason="bad_config",
            details={"ports": ports},
        )


def _probe(port: int, path: str) -> tuple[int | None, Any]:
    try:
        with _DIRECT.open(f"http://{HOST}:{port}{path}", timeout=PROBE_TIMEOUT) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    except (OSError, ValueError) as exc:
        return None, str(exc)
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text.decode(errors="replace")[:500]


def _base_environment() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if key in INHERITED_ENV or key.startswith("LC_")
    }


def _python_path(extra: str | None) -> str:
    return os.pathsep.join([str(PROJECT_ROOT), *([extra] if extra else [])])


def _command_line(process: psutil.Process) -> list[str] | None:
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
