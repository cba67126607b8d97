"""LocalRuntime: the Runtime interface over local agentd processes and their supervisor shims."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

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
from ..consumers import forget_consumers
from ..failures import port_in_use, replica_numbers, runs_other_version
from ..ports import (
    pick_free_port,
    port_is_free,
    release_replica_ports,
    replica_ports,
    reserve_ports,
    reserve_replica_ports,
)
from ..probe import answered_by, endpoint_answer
from ..shim import STOP_REQUESTED
from . import backups
from .events import EVENTS_MAXLEN, EVENTS_STREAM, EventPublisher, read_events
from .failures import never_ready, shim_failure, start_failure
from .files import Layout, read_json, read_pid, wait_for_file, write_json
from .logfiles import LogFollower, iso_timestamp, read_log
from .processes import RETIRED, ReplicaProcesses, create_time, launched_version, status_of

# Outside Linux's default ephemeral range (32768-60999), so outgoing connections do not take them.
DEFAULT_PORT_RANGE = (20000, 29999)
POLL_INTERVAL = 0.1
FOLLOW_INTERVAL = 0.2


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
        self.layout = Layout(self.root)
        self.processes = ReplicaProcesses(
            self.layout,
            python,
            events={"redis_url": redis_url, "stream": events_stream, "maxlen": EVENTS_MAXLEN},
        )
        self._publisher = EventPublisher(redis_url, events_stream)

    # --- lifecycle -----------------------------------------------------------------------

    def provision(self, spec: AgentSpec) -> dict[str, Any]:
        """Reserve one free port per replica and the agent's directories.

        Ports already recorded (or given in ``spec.ports``) are kept, even if something holds
        them now: ``start`` then names the holder rather than the agent moving silently.
        """
        directory = self.layout.agent_dir(spec)
        _check_replicas(spec)
        with self.layout.lock("ports"):
            recorded = read_json(directory / "ports.json", [])
            # Replicas launched beyond the count (an upgrade under way) keep their ports.
            beyond = [
                port if self.processes.agentd(spec.slug, replica) is not None else None
                for replica, port in enumerate(recorded)
                if replica >= spec.replicas
            ]
            ports, added = reserve_ports(
                spec,
                list(spec.ports) or recorded,
                self.layout.ports_reserved_by_others(spec.slug) | {p for p in beyond if p},
                self.port_range,
            )
            directory.mkdir(parents=True, exist_ok=True)
            write_json(directory / "ports.json", release_replica_ports([*ports, *beyond], []))
        data_dirs = []
        for replica in range(spec.replicas):
            data = self.layout.replica_dir(spec.slug, replica) / "data"
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
        directory = self.layout.agent_dir(spec)
        with self.layout.lock("ports"):
            current = self._ports(spec)
            taken = self.layout.ports_reserved_by_others(spec.slug) | set(current)
            ports = []
            for replica, port in enumerate(current[: spec.replicas]):
                if self.processes.agentd(spec.slug, replica) is None and not port_is_free(port):
                    port = pick_free_port(self.port_range, taken)
                    taken.add(port)
                ports.append(port)
            write_json(directory / "ports.json", ports)
        return ports

    def deploy(self, spec: AgentSpec) -> dict[str, Any]:
        """Write the process spec (``spec.json``); nothing is started."""
        _check_replicas(spec)
        ports = self._ports(spec)
        directory = self.layout.agent_dir(spec)
        for replica in range(spec.replicas):
            (self.layout.replica_dir(spec.slug, replica) / "data").mkdir(
                parents=True, exist_ok=True
            )
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
        with self.layout.lock(f"agent-{spec.slug}"):
            return self._start(spec)

    def stop(self, spec: AgentSpec) -> dict[str, Any]:
        with self.layout.lock(f"agent-{spec.slug}"):
            return self._stop(spec, self.layout.known_replicas(spec))

    def restart(self, spec: AgentSpec) -> dict[str, Any]:
        with self.layout.lock(f"agent-{spec.slug}"):
            started = time.monotonic()
            stopped = self._stop(spec, self.layout.known_replicas(spec))
            details = self._start(spec)
        return {
            **details,
            "previous_pids": [r["pid"] for r in stopped["replicas"] if r.get("pid")],
            "stop": stopped,
            "duration_seconds": round(time.monotonic() - started, 3),
        }

    def suspend(self, spec: AgentSpec) -> dict[str, Any]:
        """SIGSTOP every live replica; answers once the kernel shows them stopped."""
        with self.layout.lock(f"agent-{spec.slug}"):
            return self._signal_replicas(spec, pause=True)

    def resume(self, spec: AgentSpec) -> dict[str, Any]:
        """SIGCONT every paused replica."""
        with self.layout.lock(f"agent-{spec.slug}"):
            return self._signal_replicas(spec, pause=False)

    def remove(self, spec: AgentSpec, purge: bool = False) -> dict[str, Any]:
        """Stop the agent, delete its process spec and release its ports; ``purge`` also
        deletes its data and logs (the whole directory)."""
        directory = self.layout.agent_dir(spec)
        with self.layout.lock(f"agent-{spec.slug}"):
            stopped = self._stop(spec, self.layout.known_replicas(spec))
            if purge:
                shutil.rmtree(directory, ignore_errors=True)
            else:
                for name in ("spec.json", "ports.json"):
                    (directory / name).unlink(missing_ok=True)
                for replica in self.layout.replica_numbers(spec.slug):
                    replica_dir = self.layout.replica_dir(spec.slug, replica)
                    for name in RECORDS:
                        (replica_dir / name).unlink(missing_ok=True)
        self._publisher.publish(
            RuntimeEvent(
                "removed", spec.slug, 0, time.time(), details={"purge": purge, "runtime": "local"}
            )
        )
        return {"runtime": self.name, "purged": purge, "directory": str(directory), "stop": stopped}

    # --- observation ---------------------------------------------------------------------

    def status(self, spec: AgentSpec) -> RuntimeStatus:
        self.processes.reap_shims()
        deployed = (self.layout.agent_dir(spec) / "spec.json").exists()
        replicas = []
        for replica in self.layout.known_replicas(spec):
            replica_dir = self.layout.replica_dir(spec.slug, replica)
            pid = read_pid(replica_dir / "pid")
            launch = read_json(replica_dir / "launch.json", {})
            port, version = launch.get("port"), launched_version(launch)
            process = self.processes.agentd(spec.slug, replica)
            if process is None and (replica >= spec.replicas or (replica_dir / RETIRED).exists()):
                # From before a scale-down, or stopped on purpose by stop_replicas: neither
                # runs nor crashed.
                continue
            if process is not None:
                paused = status_of(process) == psutil.STATUS_STOPPED
                replicas.append(
                    ReplicaStatus(
                        replica,
                        "paused" if paused else "running",
                        pid=process.pid,
                        port=port,
                        started_at=create_time(process),
                        version=version,
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
                        version=version,
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
        replicas = [replica] if replica is not None else self.layout.replica_numbers(spec.slug)
        since_ts = iso_timestamp(since) if since is not None else None
        lines: list[LogLine] = []
        followers: list[LogFollower] = []
        for number in replicas:
            replica_dir = self.layout.replica_dir(spec.slug, number)
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
        return self.processes.usage(spec.slug, self.layout.known_replicas(spec))

    def events(self, since_id: str | None, stop: threading.Event) -> Iterator[RuntimeEvent]:
        """Events from ``runtime:local:events`` after ``since_id`` (None: from now on).

        Reconnects with backoff while Redis is away; returns soon after ``stop`` is set.
        """
        return read_events(self.redis_url, self.events_stream, since_id, stop)

    def adopt(self) -> list[str]:
        """Slugs of the agents under ``root`` with a live agentd process (left from before)."""
        slugs = {
            slug
            for slug, replica in self.layout.started_replicas()
            if self.processes.agentd(slug, replica) is not None
        }
        return sorted(slugs)

    # --- per-replica operations (upgrades) ----------------------------------------------

    def launch_replicas(self, spec: AgentSpec, replicas: Sequence[int]) -> dict[str, Any]:
        """Start exactly ``replicas`` with this spec's version and config, beside the agent's
        other replicas; numbers beyond the reserved ports get new ones (kept in ports.json)."""
        numbers = replica_numbers(spec, replicas)
        with self.layout.lock(f"agent-{spec.slug}"):
            return self._launch_replicas(spec, numbers)

    def stop_replicas(self, spec: AgentSpec, replicas: Sequence[int]) -> dict[str, Any]:
        """Stop exactly ``replicas`` like :meth:`stop`; then those numbered ``spec.replicas``
        or more are forgotten (records deleted, ports released; data and logs kept) and the
        others marked retired, so that status reports neither (nor a crash)."""
        numbers = replica_numbers(spec, replicas)
        with self.layout.lock(f"agent-{spec.slug}"):
            stopped = self._stop(spec, numbers)
            forgotten = self._retire(spec, numbers)
        return {
            **stopped,
            "forgotten": forgotten,
            "consumers_removed": forget_consumers(spec, numbers),
        }

    def backup_data(self, spec: AgentSpec, destination: str) -> dict[str, Any]:
        """Every replica's ``data`` directory, as ``replica-<n>/data/...`` in a tar.gz."""
        self.layout.agent_dir(spec)  # validates the slug
        return {"runtime": self.name, **backups.backup(self.layout, spec.slug, destination)}

    def restore_data(self, spec: AgentSpec, source: str) -> dict[str, Any]:
        """Put back each replica's data from the archive, file by file (atomically), while the
        agent runs or not; replicas the archive does not hold are left as they are."""
        self.layout.agent_dir(spec)
        with self.layout.lock(f"agent-{spec.slug}"):
            return {"runtime": self.name, **backups.restore(self.layout, spec.slug, source)}

    def _launch_replicas(self, spec: AgentSpec, numbers: list[int]) -> dict[str, Any]:
        began = time.monotonic()
        self.processes.reap_shims()
        self._check_deployed(spec)
        to_launch = []
        for replica in numbers:
            if (
                self.processes.agentd(spec.slug, replica) is None
                and self.processes.shim(spec.slug, replica) is None
            ):
                to_launch.append(replica)
                continue
            launch = read_json(self.layout.replica_dir(spec.slug, replica) / "launch.json", {})
            if launched_version(launch) != spec.version:
                raise runs_other_version(spec, replica, launched_version(launch))
        ports, added = self._reserve_replica_ports(spec, numbers)
        launched: list[int] = []
        try:
            for replica in to_launch:
                if not port_is_free(ports[replica]):
                    raise port_in_use(spec, replica, ports[replica])
            for replica in to_launch:
                self.processes.launch(spec, replica, ports[replica])
                launched.append(replica)
            ready = self._await_ready(spec, ports, began + spec.ready_timeout, numbers)
        except BaseException:
            # A failed launch leaves nothing of its own: what it started is stopped (and
            # retired or forgotten), the ports it reserved are released.
            self._stop(spec, launched)
            self._retire(spec, launched)
            self._release_ports(spec, added)
            raise
        return {
            "runtime": self.name,
            "replicas": [
                {**ready[r], "version": spec.version, "already_running": r not in to_launch}
                for r in numbers
            ],
            "new_ports": {str(r): ports[r] for r in added},
            "duration_seconds": round(time.monotonic() - began, 3),
        }

    def _retire(self, spec: AgentSpec, replicas: Iterable[int]) -> list[int]:
        """Mark stopped ``replicas`` as stopped on purpose; forget those beyond the spec's
        count. Answers the forgotten ones."""
        forgotten = []
        for replica in replicas:
            replica_dir = self.layout.replica_dir(spec.slug, replica)
            if self.processes.agentd(spec.slug, replica) is not None:
                continue  # would not stop: still reported, as it runs
            if replica < spec.replicas:
                if replica_dir.is_dir():
                    write_json(replica_dir / RETIRED, time.time())
                continue
            for name in (*RECORDS, STOP_REQUESTED):
                (replica_dir / name).unlink(missing_ok=True)
            forgotten.append(replica)
        self._release_ports(spec, forgotten)
        return forgotten

    def _reserve_replica_ports(
        self, spec: AgentSpec, replicas: list[int]
    ) -> tuple[dict[int, int], list[int]]:
        """The port of each of ``replicas``: the spec's or the recorded one, else a new free
        one, recorded. Answers them and the replicas given a new port."""
        ports_file = self.layout.agent_dir(spec) / "ports.json"
        with self.layout.lock("ports"):
            recorded = read_json(ports_file, None)
            if recorded is None:
                self._ports(spec)  # raises: not provisioned
            current = [*spec.ports, *recorded[len(spec.ports) :]]
            current, chosen, added = reserve_replica_ports(
                current, replicas, self.layout.ports_reserved_by_others(spec.slug), self.port_range
            )
            if added:
                write_json(ports_file, [*recorded, *current[len(recorded) :]])
        return chosen, added

    def _release_ports(self, spec: AgentSpec, replicas: list[int]) -> None:
        """Release the ports of ``replicas`` numbered ``spec.replicas`` or more."""
        beyond = [replica for replica in replicas if replica >= spec.replicas]
        if not beyond:
            return
        ports_file = self.layout.agent_dir(spec) / "ports.json"
        with self.layout.lock("ports"):
            recorded = read_json(ports_file, None)
            if recorded is not None:
                write_json(ports_file, release_replica_ports(recorded, beyond))

    def _check_deployed(self, spec: AgentSpec) -> None:
        if not (self.layout.agent_dir(spec) / "spec.json").exists():
            raise RuntimeFailure(
                f"{spec.name} is not deployed on the local runtime; deploy it before starting it.",
                reason="not_found",
                details={"slug": spec.slug},
            )

    # --- start and stop ------------------------------------------------------------------

    def _start(self, spec: AgentSpec) -> dict[str, Any]:
        began = time.monotonic()
        self.processes.reap_shims()
        self._check_deployed(spec)
        _check_replicas(spec)
        ports = self._ports(spec)
        # A live shim without agentd yet is a launch in progress (an interrupted start being
        # carried out again): wait for it rather than start a second agentd on the same port.
        to_launch = [
            r
            for r in range(spec.replicas)
            if self.processes.agentd(spec.slug, r) is None
            and self.processes.shim(spec.slug, r) is None
        ]
        for replica in to_launch:
            if not port_is_free(ports[replica]):
                raise port_in_use(spec, replica, ports[replica])
        launched: list[int] = []
        try:
            for replica in to_launch:
                self.processes.launch(spec, replica, ports[replica])
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

    def _await_ready(
        self,
        spec: AgentSpec,
        ports: Sequence[int] | Mapping[int, int],
        deadline: float,
        replicas: Iterable[int] | None = None,
    ) -> dict[int, dict[str, Any]]:
        """Wait until every replica (all the spec's, or ``replicas``) answers /readyz with 200;
        raise as soon as one cannot. ``ports`` is indexed by replica number."""
        pending = set(range(spec.replicas) if replicas is None else replicas)
        ready: dict[int, dict[str, Any]] = {}
        last_answer: dict[int, dict[str, Any]] = {}
        began = time.monotonic()
        while pending:
            for replica in sorted(pending):
                replica_dir = self.layout.replica_dir(spec.slug, replica)
                ended = read_json(replica_dir / "exit.json", None)
                if ended is not None:
                    raise start_failure(spec, replica, ports[replica], ended, replica_dir)
                process = self.processes.agentd(spec.slug, replica)
                if process is None:
                    if (
                        not self.processes.shim_alive(spec.slug, replica)
                        and wait_for_file(replica_dir / "exit.json", 0.5) is None
                    ):
                        raise shim_failure(spec, replica, ports[replica], replica_dir)
                    continue
                answer = endpoint_answer(ports[replica], "/readyz")
                if answer["status"] == 200 and answered_by(answer, spec.slug, replica):
                    pending.discard(replica)
                    ready[replica] = {
                        "replica": replica,
                        "pid": process.pid,
                        "shim_pid": read_pid(replica_dir / "shim.pid"),
                        "port": ports[replica],
                        "ready_seconds": round(time.monotonic() - began, 3),
                    }
                else:
                    last_answer[replica] = answer
            if not pending:
                break
            if time.monotonic() >= deadline:
                replica = min(pending)
                raise never_ready(
                    spec,
                    replica,
                    ports[replica],
                    last_answer.get(replica),
                    self.layout.replica_dir(spec.slug, replica),
                )
            time.sleep(POLL_INTERVAL)
        return ready

    def _stop(self, spec: AgentSpec, replicas: Iterable[int]) -> dict[str, Any]:
        """SIGTERM (and SIGCONT, for paused ones), ``grace_seconds``, then SIGKILL."""
        began = time.monotonic()
        stopped = self.processes.stop(spec, replicas)
        return {
            "runtime": self.name,
            "replicas": stopped,
            "stopped": len(stopped),
            "duration_seconds": round(time.monotonic() - began, 3),
        }

    def _signal_replicas(self, spec: AgentSpec, pause: bool) -> dict[str, Any]:
        changed = self.processes.pause(spec.slug, self.layout.known_replicas(spec), pause)
        for replica in changed:
            self._publisher.publish(
                RuntimeEvent(
                    "paused" if pause else "resumed",
                    spec.slug,
                    replica["replica"],
                    time.time(),
                    details={"pid": replica["pid"]},
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

    # --- ports ---------------------------------------------------------------------------

    def _ports(self, spec: AgentSpec) -> list[int]:
        """The ports the replicas listen on: the spec's, else those provision recorded."""
        ports = list(spec.ports) or read_json(self.layout.agent_dir(spec) / "ports.json", None)
        if ports is None:
            raise RuntimeFailure(
                f"{spec.name} has not been provisioned on the local runtime; "
                "provision it to reserve its ports.",
                reason="not_found",
                details={"slug": spec.slug},
            )
        return replica_ports(spec, ports)


# --- helpers ----------------------------------------------------------------------------

# A replica's records besides its data and logs (deleted by remove, or when it is forgotten).
RECORDS = ("launch.json", "config.json", "pid", "shim.pid", "exit.json", RETIRED)


def _check_replicas(spec: AgentSpec) -> None:
    if spec.replicas < 1:
        raise RuntimeFailure(
            f"{spec.name} must have at least one replica (got {spec.replicas}).",
            reason="bad_config",
            details={"replicas": spec.replicas},
        )
