"""DockerRuntime: the Runtime interface over a Docker engine, through the docker SDK."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
import requests

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
from ..failures import replica_numbers
from ..images import connect_engine, engine_unreachable
from ..ports import reserve_ports
from . import backups
from .containers import (
    AGENT_LABEL,
    MANAGED_FILTER,
    HealthCheck,
    check_spec,
    container_name,
    is_live,
    label_ports,
    name_of,
    replica_status,
    volume_name,
)
from .drift import find_drift
from .events import StopRequests, event_stream, translate_event
from .logs import Follower, follow_lines, read_lines
from .probes import exec_in_container
from .readiness import await_ready
from .replicas import launch, retire, start_containers, stop_containers
from .resources import Resources
from .stats import replica_stats

logger = logging.getLogger(__name__)

# Outside Linux's ephemeral range (32768-60999) and apart from the local runtime's
# (20000-29999), so agents of both runtimes on one host never reserve the same port.
DEFAULT_PORT_RANGE = (30000, 32767)
# One action at a time per agent within this process (the portal's pending-action marker keeps
# two processes from acting on one agent at once); provision picks ports under a lock too.
_agent_locks: dict[str, threading.Lock] = {}
_agent_locks_guard = threading.Lock()
_ports_lock = threading.Lock()


class DockerRuntime(Runtime):
    """Agents as containers of the engine at ``base_url``, from the image ``image:<version>``.

    With ``network="host"`` (the default) agentd listens on the host's loopback at the port
    provision reserved, so the portal probes it exactly as it probes a local agent, and the
    agent reaches the same Redis the portal does. Any other network publishes that port on the
    host's loopback instead.
    """

    name = "docker"

    def __init__(
        self,
        base_url: str,
        image: str,
        redis_url: str,
        network: str = "host",
        *,
        port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
        health: HealthCheck | None = None,
        timeout: float = 60,
    ) -> None:
        self.base_url = base_url
        self.image = image
        self.redis_url = redis_url
        self.network = network
        self.port_range = port_range
        self.health = health or HealthCheck()
        self.timeout = timeout
        self.stop_requests = StopRequests(redis_url)
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self.resources = Resources(
            self.client,
            base_url=base_url,
            repository=image,
            network=network,
            health=self.health,
            stop_requests=self.stop_requests,
        )

    # --- the engine ------------------------------------------------------------------------

    def client(self) -> docker.DockerClient:
        """The engine's client, connected on first use (constructing the runtime never fails
        for want of an engine); :class:`RuntimeFailure` ``engine_unreachable`` otherwise."""
        with self._client_lock:
            if self._client is None:
                self._client = connect_engine(self.base_url, timeout=self.timeout)
            return self._client

    @property
    def api(self) -> docker.APIClient:
        return self.client().api

    @contextlib.contextmanager
    def _engine(self) -> Iterator[None]:
        """Turn the SDK's errors into RuntimeFailures; NotFound is handled where expected."""
        try:
            yield
        except RuntimeFailure:
            raise
        except docker.errors.APIError as error:
            raise RuntimeFailure(
                f"The Docker engine at {self.base_url} refused: {error.explanation or error}",
                reason="unknown",
                details={"docker_host": self.base_url, "status": error.status_code},
            ) from error
        except (docker.errors.DockerException, requests.RequestException) as error:
            with self._client_lock:
                self._client = None
            raise engine_unreachable(self.base_url, error) from error

    # --- lifecycle -----------------------------------------------------------------------

    def provision(self, spec: AgentSpec) -> dict[str, Any]:
        """Reserve one free host port per replica and create the agent's named volume, which
        remembers the reservation in its labels."""
        check_spec(spec)
        with self._engine(), _ports_lock:
            volume = self.resources.volume(spec.slug)
            reserved = label_ports(volume["Labels"] or {}) if volume else []
            ports, added = reserve_ports(
                spec,
                list(spec.ports) or reserved,
                self.resources.ports_reserved_by_others(spec.slug),
                self.port_range,
            )
            if volume is None:
                self.resources.create_volume(spec, ports)
        return {
            "runtime": self.name,
            "volume": volume_name(spec.slug),
            "ports": ports,
            "new_ports": added,
            "queue": contract.task_stream(spec.slug),
            "docker_host": self.base_url,
        }

    def deploy(self, spec: AgentSpec) -> dict[str, Any]:
        """Create one container per replica, not started; a container made from an older spec
        (image, version, limits, config) is replaced, an identical one kept."""
        check_spec(spec)
        with self._agent_lock(spec.slug), self._engine():
            ports = self.resources.ports(spec)
            if self.resources.volume(spec.slug) is None:
                self.resources.create_volume(spec, ports)
            image, image_id = self.resources.image(spec)
            created = []
            for replica in range(spec.replicas):
                plan = self.resources.plan(spec, replica, ports[replica], image, image_id)
                inspected, action = self.resources.ensure_container(spec, plan, keep_running=False)
                created.append(
                    {
                        "replica": replica,
                        "container": plan.name,
                        "container_id": inspected["Id"],
                        "action": action,
                    }
                )
            removed = self.resources.remove_extra_replicas(spec)
        return {
            "runtime": self.name,
            "image": image,
            "image_id": image_id,
            "version": spec.version,
            "replicas": spec.replicas,
            "ports": ports,
            "volume": volume_name(spec.slug),
            "containers": created,
            "container_ids": [item["container_id"] for item in created],
            "removed_replicas": removed,
        }

    def start(self, spec: AgentSpec) -> dict[str, Any]:
        check_spec(spec)
        with self._agent_lock(spec.slug), self._engine():
            return self._start(spec)

    def stop(self, spec: AgentSpec) -> dict[str, Any]:
        """``docker stop`` with the grace period (SIGTERM, then SIGKILL); a paused container is
        unpaused first so that agentd can act on the SIGTERM."""
        check_spec(spec)
        with self._agent_lock(spec.slug), self._engine():
            return self._stop(spec, self.resources.containers(spec.slug).values())

    def restart(self, spec: AgentSpec) -> dict[str, Any]:
        check_spec(spec)
        began = time.monotonic()
        with self._agent_lock(spec.slug), self._engine():
            stopped = self._stop(spec, self.resources.containers(spec.slug).values())
            details = self._start(spec)
        return {
            **details,
            "previous_container_ids": [r["container_id"] for r in stopped["replicas"]],
            "stop": stopped,
            "duration_seconds": round(time.monotonic() - began, 3),
        }

    def suspend(self, spec: AgentSpec) -> dict[str, Any]:
        """``docker pause``: the cgroup freezer stops every process of the container."""
        return self._pause(spec, pause=True)

    def resume(self, spec: AgentSpec) -> dict[str, Any]:
        return self._pause(spec, pause=False)

    def remove(self, spec: AgentSpec, purge: bool = False) -> dict[str, Any]:
        """Stop and delete the agent's containers; ``purge`` also deletes its volume (its data
        and port reservation)."""
        check_spec(spec)
        with self._agent_lock(spec.slug), self._engine():
            containers = self.resources.containers(spec.slug)
            stopped = self._stop(spec, containers.values())
            removed = []
            for inspected in containers.values():
                self.resources.remove_container(inspected["Id"], spec.grace_seconds)
                removed.append(name_of(inspected))
            volume_removed = False
            if purge:
                with contextlib.suppress(docker.errors.NotFound):
                    self.api.remove_volume(volume_name(spec.slug))
                    volume_removed = True
        return {
            "runtime": self.name,
            "purged": purge,
            "removed_containers": removed,
            "volume": volume_name(spec.slug),
            "volume_removed": volume_removed,
            "stop": stopped,
        }

    # --- observation ---------------------------------------------------------------------

    def status(self, spec: AgentSpec) -> RuntimeStatus:
        with self._engine():
            found = self.resources.containers(spec.slug)
        replicas: list[ReplicaStatus] = []
        for replica in sorted(set(range(spec.replicas)) | set(found)):
            inspected = found.get(replica)
            status = replica_status(replica, inspected)
            if status.state not in ("running", "paused") and (
                replica >= spec.replicas
                or (
                    status.container_id is not None
                    and self.stop_requests.is_retired(status.container_id, status.started_at)
                )
            ):
                # From before a scale-down, or stopped on purpose by stop_replicas: neither
                # runs nor crashed.
                continue
            replicas.append(status)
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
        with self._engine():
            found = self.resources.containers(spec.slug)
            replicas = [replica] if replica is not None else sorted(found)
            lines: list[tuple[int, LogLine]] = []
            newest: dict[int, int] = {}
            for number in replicas:
                inspected = found.get(number)
                own = (
                    read_lines(self.api, inspected["Id"], spec.slug, number, since, tail)
                    if inspected is not None
                    else []
                )
                newest[number] = own[-1][0] if own else time.time_ns()
                lines.extend(own[-tail:] if tail is not None else own)
        lines.sort(key=lambda item: item[0])
        yield from (line for _, line in (lines[-tail:] if tail is not None else lines))
        if not follow:
            return
        out: queue.Queue[LogLine] = queue.Queue()
        followers = [
            Follower(self.client, container_name(spec.slug, number), spec.slug, number, after, out)
            for number, after in newest.items()
        ]
        yield from follow_lines(followers, out, stop or threading.Event())

    def stats(self, spec: AgentSpec) -> list[ReplicaStats]:
        """CPU (percent of one CPU, as ``docker stats`` shows it) and memory in use (without
        the page cache) of each running replica; each takes the engine about a second."""
        with self._engine():
            running = {
                replica: inspected
                for replica, inspected in self.resources.containers(spec.slug).items()
                if (inspected.get("State") or {}).get("Running")
            }
            if not running:
                return []
            with ThreadPoolExecutor(max_workers=len(running)) as pool:
                answers = dict(
                    zip(
                        running,
                        pool.map(lambda i: self.api.stats(i["Id"], stream=False), running.values()),
                        strict=True,
                    )
                )
        return [replica_stats(replica, answers[replica]) for replica in sorted(answers)]

    def events(self, since_id: str | None, stop: threading.Event) -> Iterator[RuntimeEvent]:
        """The engine's events for containers labelled ``waooaw.managed=true``: ``start``,
        ``die`` (exit code; the signal when it is 128 + N), ``oom``, ``health_status:
        unhealthy``, ``pause``/``unpause`` and ``destroy`` (as ``removed``). Every event's
        details hold the container's full id; ``die`` and ``destroy`` say ``requested_stop``.
        Reconnects with backoff while the engine is away; returns soon after ``stop`` is set."""
        return event_stream(
            self.client,
            since_id,
            stop,
            lambda raw, moment: translate_event(
                raw, moment, self.stop_requests, self.resources.oom_of
            ),
        )

    def adopt(self) -> list[str]:
        """Slugs of agents whose containers run (or are paused) now; nothing is touched.

        An engine that does not answer adopts nothing (and says so in the log) rather than
        failing: the caller is the monitor starting up, whose event stream and reconciliation
        catch up once the engine answers."""
        try:
            with self._engine():
                found = self.api.containers(
                    filters={"label": [MANAGED_FILTER], "status": ["running", "paused"]}
                )
        except RuntimeFailure as failure:
            logger.warning("cannot adopt Docker agents: %s", failure.message)
            return []
        return sorted({c["Labels"][AGENT_LABEL] for c in found if c["Labels"].get(AGENT_LABEL)})

    # ``probe`` is the interface's (None): agentd listens on the host's loopback (host network,
    # or a port published there), so the portal's own probes reach it; exec ones run here.

    def exec_probe(
        self, slug: str, replica: int, argv: Sequence[str], timeout: float
    ) -> tuple[bool, str]:
        """An exec probe inside the replica's container: (passed, why not)."""
        try:
            api = self.api
        except RuntimeFailure as failure:
            return False, failure.message
        return exec_in_container(api, container_name(slug, replica), argv, timeout)

    # --- drift ---------------------------------------------------------------------------

    def drift(self, expected: list[tuple[AgentSpec, str]]) -> list[dict[str, Any]]:
        with self._engine():
            by_slug = self.resources.all_containers()
        return find_drift(by_slug, expected)

    def reconcile(self, spec: AgentSpec, expected_state: str) -> dict[str, Any]:
        """Bring the agent's containers in line with the portal: remove replicas beyond the
        agent's count and recreate missing containers; then, by the portal's state, start what
        should run (readiness-gated) and unpause it, pause what should be suspended, stop what
        should not run. An ERRORED agent gets its containers back but is not started: its
        restart is the monitor's (by policy) or an operator's. Answers what it did; a start
        that fails is reported among the actions, not raised."""
        check_spec(spec)
        actions: list[str] = []
        with self._agent_lock(spec.slug), self._engine():
            for name in self.resources.remove_extra_replicas(spec, running_too=True):
                actions.append(f"removed {name} (replica beyond the agent's count)")
            found = self.resources.containers(spec.slug)
            missing = [r for r in range(spec.replicas) if r not in found]
            if missing:
                ports = self.resources.ports(spec)
                image, image_id = self.resources.image(spec)
                for replica in missing:
                    plan = self.resources.plan(spec, replica, ports[replica], image, image_id)
                    found[replica], _ = self.resources.ensure_container(
                        spec, plan, keep_running=True
                    )
                    actions.append(f"recreated {plan.name}")
            if expected_state == "RUNNING":
                actions += self._reconcile_running(spec, found)
            for inspected in found.values():
                state, name = inspected["State"], name_of(inspected)
                live = is_live(inspected)
                if expected_state in ("DEPLOYED", "STOPPED") and live:
                    self._stop(spec, [inspected])
                    actions.append(f"stopped {name}")
                elif expected_state == "SUSPENDED" and live and not state.get("Paused"):
                    self.api.pause(inspected["Id"])
                    actions.append(f"paused {name}")
        return {"runtime": self.name, "actions": actions}

    def _reconcile_running(self, spec: AgentSpec, found: dict[int, dict[str, Any]]) -> list[str]:
        actions = []
        for inspected in found.values():
            if inspected["State"].get("Paused"):
                self.api.unpause(inspected["Id"])
                actions.append(f"unpaused {name_of(inspected)}")
        if all(is_live(inspected) for inspected in found.values()):
            return actions
        try:
            started = self._start(spec)
        except RuntimeFailure as failure:
            return [*actions, f"could not start {spec.name}: {failure.message}"]
        return actions + [
            f"started {record['container']}"
            for record in started["replicas"]
            if not record["already_running"]
        ]

    def remove_orphan(self, slug: str) -> dict[str, Any]:
        """Delete every container labelled for ``slug``. Its volume is kept: data is never
        deleted by a reconcile (revoke deletes it; ``docker volume rm`` does by hand)."""
        removed = []
        with self._agent_lock(slug), self._engine():
            for inspected in self.resources.containers(slug).values():
                self.resources.remove_container(inspected["Id"], grace_seconds=10)
                removed.append(name_of(inspected))
        return {"runtime": self.name, "removed": removed}

    # --- per-replica operations (upgrades) ----------------------------------------------

    def launch_replicas(self, spec: AgentSpec, replicas: Sequence[int]) -> dict[str, Any]:
        """Create and start the containers of exactly ``replicas`` from this spec (its image
        ``<repository>:<version>``); numbers beyond the reserved ports get new ones, kept in
        their container's labels."""
        check_spec(spec)
        numbers = replica_numbers(spec, replicas)
        with self._agent_lock(spec.slug), self._engine(), _ports_lock:
            return launch(self.resources, self.stop_requests, spec, numbers, self.port_range)

    def stop_replicas(self, spec: AgentSpec, replicas: Sequence[int]) -> dict[str, Any]:
        """Stop exactly ``replicas`` like :meth:`stop`; then delete the containers of those
        numbered ``spec.replicas`` or more and retire the others (status leaves them out until
        they start again). The volume is kept."""
        check_spec(spec)
        numbers = replica_numbers(spec, replicas)
        with self._agent_lock(spec.slug), self._engine():
            found = self.resources.containers(spec.slug)
            stopped = self._stop(spec, [found[r] for r in numbers if r in found])
            forgotten = retire(self.resources, self.stop_requests, spec, numbers)
        return {
            **stopped,
            "forgotten": forgotten,
            "consumers_removed": forget_consumers(spec, numbers),
        }

    def backup_data(self, spec: AgentSpec, destination: str) -> dict[str, Any]:
        """The agent's volume as ``data/...`` in a tar.gz at ``destination``."""
        check_spec(spec)
        with self._engine():
            return {"runtime": self.name, **backups.backup(self.resources, spec, destination)}

    def restore_data(self, spec: AgentSpec, source: str) -> dict[str, Any]:
        """Make the agent's volume hold exactly the archive's files (it may be running)."""
        check_spec(spec)
        with self._agent_lock(spec.slug), self._engine():
            return {"runtime": self.name, **backups.restore(self.resources, spec, source)}

    # --- start and stop ------------------------------------------------------------------

    def _start(self, spec: AgentSpec) -> dict[str, Any]:
        began = time.monotonic()
        ports = self.resources.ports(spec)
        found = self.resources.containers(spec.slug)
        records: dict[int, dict[str, Any]] = {}
        to_start: list[int] = []
        image: tuple[str, str] | None = None
        for replica in range(spec.replicas):
            inspected = found.get(replica)
            if inspected is not None and is_live(inspected):
                records[replica] = inspected
                continue
            image = image or self.resources.image(spec)
            plan = self.resources.plan(spec, replica, ports[replica], *image)
            records[replica], _ = self.resources.ensure_container(spec, plan, keep_running=True)
            to_start.append(replica)
        started: list[int] = []
        try:
            start_containers(
                self.resources, self.stop_requests, spec, records, ports, to_start, started
            )
            ready = await_ready(self.resources, spec, ports, records, began + spec.ready_timeout)
        except BaseException:
            # A failed start leaves nothing half-running: stop what this call started.
            with contextlib.suppress(RuntimeFailure, docker.errors.DockerException):
                now = [self.resources.inspect(records[replica]["Id"]) for replica in started]
                self._stop(spec, [inspected for inspected in now if inspected is not None])
            raise
        container_ids = [records[replica]["Id"] for replica in range(spec.replicas)]
        return {
            "runtime": self.name,
            "replicas": [
                {**ready[replica], "already_running": replica not in to_start}
                for replica in range(spec.replicas)
            ],
            "container_ids": container_ids,
            "containers": [name_of(records[replica]) for replica in range(spec.replicas)],
            "ports": ports,
            "image": records[0]["Config"]["Image"] if records else None,
            "duration_seconds": round(time.monotonic() - began, 3),
        }

    def _stop(self, spec: AgentSpec, containers: Iterable[dict[str, Any]]) -> dict[str, Any]:
        return stop_containers(self.resources, self.stop_requests, spec, containers)

    def _pause(self, spec: AgentSpec, pause: bool) -> dict[str, Any]:
        check_spec(spec)
        changed = []
        with self._agent_lock(spec.slug), self._engine():
            containers = self.resources.containers(spec.slug)
            live = {r: i for r, i in containers.items() if is_live(i)}
            if not live:
                action = "suspend" if pause else "resume"
                raise RuntimeFailure(
                    f"{spec.name} has no running container to {action}; start it first.",
                    reason="not_found",
                    details={"slug": spec.slug},
                )
            for replica, inspected in sorted(live.items()):
                paused = bool(inspected["State"].get("Paused"))
                if pause and not paused:
                    self.api.pause(inspected["Id"])
                elif not pause and paused:
                    self.api.unpause(inspected["Id"])
                else:
                    continue
                changed.append({"replica": replica, "container_id": inspected["Id"]})
        return {"runtime": self.name, "replicas": changed}

    def _agent_lock(self, slug: str) -> threading.Lock:
        with _agent_locks_guard:
            return _agent_locks.setdefault(f"{self.base_url}|{slug}", threading.Lock())
