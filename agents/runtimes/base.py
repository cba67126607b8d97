"""The interface every runtime implements, and the values that cross it.

A runtime is where agents run: local processes, Docker containers or a Kubernetes Deployment.
The portal's services speak only this interface, so the lifecycle, the monitor and the UI do
not care which runtime an agent is on. This module imports no Django and nothing beyond the
standard library: the local runtime's supervisor shim imports it inside every agent's process
tree.

Every method that changes something answers a JSON-serialisable dict of "runtime details"
(pids, ports, exit codes, durations) that the portal keeps in the agent's history. Every
failure is a :class:`RuntimeFailure` with a sentence an operator can act on and a machine
``reason`` the portal classifies errors by.
"""

from __future__ import annotations

import abc
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# The machine reasons a RuntimeFailure carries; the portal's error classification keys on them.
FAILURE_REASONS = (
    "port_in_use",
    "image_missing",
    "engine_unreachable",
    "not_found",
    "not_ready",
    "crashed_on_start",
    "bad_config",
    "timeout",
    "oom",
    "unknown",
)
REPLICA_STATES = ("running", "paused", "exited", "missing", "created")
EVENT_KINDS = ("started", "exited", "oom", "unhealthy", "paused", "resumed", "removed")


@dataclass(frozen=True)
class AgentSpec:
    """What the portal asks a runtime to run: one agent, its version, replicas and resources."""

    slug: str
    name: str
    version: str
    redis_url: str
    replicas: int = 1
    # agentd's initial config (the JSON object given to --config-file): faults, dependencies...
    config: dict[str, Any] = field(default_factory=dict)
    cpu_millicores: int = 250
    memory_mb: int = 256
    env: dict[str, str] = field(default_factory=dict)
    # One per replica, assigned by provision; empty means "the ones the runtime recorded".
    ports: tuple[int, ...] = ()
    grace_seconds: float = 10
    ready_timeout: float = 20
    # Liveness and readiness probes as the portal stores them (agents.probes.schema); empty
    # means the runtime's own defaults (its HEALTHCHECK, its Kubernetes probes).
    probes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ports"] = list(self.ports)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentSpec:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known["ports"] = tuple(known.get("ports") or ())
        return cls(**known)


class RuntimeFailure(Exception):
    """A runtime could not do what it was asked.

    ``message`` is a sentence a person can act on ("port 20417 is in use by nginx (pid 812)"),
    ``reason`` one of :data:`FAILURE_REASONS`, ``details`` whatever helps diagnose it (exit
    code, the last log lines, the readiness answer); all JSON-serialisable.
    """

    def __init__(
        self, message: str, reason: str = "unknown", details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason if reason in FAILURE_REASONS else "unknown"
        self.details: dict[str, Any] = dict(details or {})

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "reason": self.reason, "details": self.details}


@dataclass(frozen=True)
class ReplicaStatus:
    replica: int
    state: str  # one of REPLICA_STATES
    pid: int | None = None
    port: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    started_at: float | None = None
    oom: bool = False  # the exit was an out-of-memory kill
    # The agentd version this replica runs (replicas of two versions run side by side during an
    # upgrade); "" where the runtime cannot tell.
    version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RuntimeStatus:
    slug: str
    replicas: list[ReplicaStatus]

    @property
    def all_running(self) -> bool:
        return bool(self.replicas) and all(r.state == "running" for r in self.replicas)

    @property
    def any_exited(self) -> bool:
        return any(r.state == "exited" for r in self.replicas)

    def to_dict(self) -> dict[str, Any]:
        return {"slug": self.slug, "replicas": [replica.to_dict() for replica in self.replicas]}


@dataclass(frozen=True)
class ReplicaStats:
    replica: int
    cpu_percent: float
    memory_bytes: int


@dataclass(frozen=True)
class LogLine:
    slug: str
    replica: int
    ts: str  # ISO 8601 UTC, as agentd writes it; "" when nothing tells when the line was written
    text: str


@dataclass(frozen=True)
class RuntimeEvent:
    """Something that happened to an agent's processes, as the runtime saw it."""

    kind: str  # one of EVENT_KINDS
    slug: str
    replica: int
    at: float
    exit_code: int | None = None
    signal: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # The event's position in the runtime's stream; pass it back to events() to resume after it.
    id: str = ""

    def to_fields(self) -> dict[str, str]:
        """The event as the flat string fields of a Redis stream entry (without its id)."""
        return {
            "kind": self.kind,
            "slug": self.slug,
            "replica": str(self.replica),
            "at": repr(self.at),
            "exit_code": "" if self.exit_code is None else str(self.exit_code),
            "signal": "" if self.signal is None else str(self.signal),
            "details": json.dumps(self.details, default=str),
        }

    @classmethod
    def from_fields(cls, event_id: str, fields: Mapping[str, str]) -> RuntimeEvent:
        def optional_int(name: str) -> int | None:
            value = fields.get(name) or ""
            return int(value) if value.lstrip("-").isdecimal() else None

        try:
            details = json.loads(fields.get("details") or "{}")
        except json.JSONDecodeError:
            details = {"raw": fields.get("details")}
        return cls(
            kind=fields.get("kind", ""),
            slug=fields.get("slug", ""),
            replica=optional_int("replica") or 0,
            at=float(fields.get("at") or 0),
            exit_code=optional_int("exit_code"),
            signal=optional_int("signal"),
            details=details if isinstance(details, dict) else {"value": details},
            id=event_id,
        )


class Runtime(abc.ABC):
    """Where agents run. Implementations: local processes, Docker, Kubernetes."""

    name: str = ""

    @abc.abstractmethod
    def provision(self, spec: AgentSpec) -> dict[str, Any]:
        """Reserve what the agent needs (ports, directories, queue); answers them, ``ports``
        among them. Calling it again answers the same reservation."""

    @abc.abstractmethod
    def deploy(self, spec: AgentSpec) -> dict[str, Any]:
        """Record how to run the agent (process spec, container, Deployment) without starting it."""

    @abc.abstractmethod
    def start(self, spec: AgentSpec) -> dict[str, Any]:
        """Start every replica and return once each answers ``/readyz`` with 200.

        Raises :class:`RuntimeFailure` (``port_in_use``, ``bad_config``, ``crashed_on_start``,
        ``not_ready``...) with the last log lines in its details, after stopping whatever this
        call started: a failed start leaves nothing half-running.
        """

    @abc.abstractmethod
    def stop(self, spec: AgentSpec) -> dict[str, Any]:
        """Stop gracefully: SIGTERM, ``grace_seconds``, then SIGKILL. Stopping a stopped agent is
        not an error."""

    @abc.abstractmethod
    def suspend(self, spec: AgentSpec) -> dict[str, Any]:
        """Pause the agent's processes without ending them."""

    @abc.abstractmethod
    def resume(self, spec: AgentSpec) -> dict[str, Any]:
        """Let paused processes run again."""

    @abc.abstractmethod
    def restart(self, spec: AgentSpec) -> dict[str, Any]:
        """Stop, then start, readiness-gated like :meth:`start`."""

    @abc.abstractmethod
    def remove(self, spec: AgentSpec, purge: bool = False) -> dict[str, Any]:
        """Stop the agent and delete what deploy created; ``purge`` also deletes data and logs."""

    @abc.abstractmethod
    def status(self, spec: AgentSpec) -> RuntimeStatus:
        """The state of every replica, as the runtime sees it now."""

    @abc.abstractmethod
    def logs(
        self,
        spec: AgentSpec,
        since: float | None = None,
        tail: int | None = 200,
        follow: bool = False,
        stop: threading.Event | None = None,
        replica: int | None = None,
    ) -> Iterator[LogLine]:
        """The agent's log lines, oldest first: the last ``tail`` (None: all), those written at or
        after ``since`` (a Unix time), then, with ``follow``, new lines as they come until
        ``stop`` is set. ``replica`` narrows them to one replica."""

    @abc.abstractmethod
    def stats(self, spec: AgentSpec) -> list[ReplicaStats]:
        """CPU and memory use of each running replica."""

    @abc.abstractmethod
    def events(self, since_id: str | None, stop: threading.Event) -> Iterator[RuntimeEvent]:
        """A blocking stream of runtime events after ``since_id`` (None: from now on) until
        ``stop`` is set; survives the event source going away for a while."""

    @abc.abstractmethod
    def adopt(self) -> list[str]:
        """Find agents left running from before (the portal restarted); answers their slugs.
        Nothing is started, stopped or duplicated."""

    def probe(self, spec: AgentSpec, details: dict[str, Any]) -> tuple[str, str] | None:
        """Health as the runtime itself sees it: ``(health, detail)`` with health one of
        ``healthy``, ``degraded``, ``unhealthy``; or None to let the portal call each replica's
        ``/healthz`` and ``/readyz`` on 127.0.0.1 at the ports in ``details`` (the agent's
        recorded runtime details). Runtimes whose agents the portal cannot reach directly
        (Kubernetes) answer from their own view (pod readiness)."""
        return None

    def drift(self, expected: list[tuple[AgentSpec, str]]) -> list[dict[str, Any]]:
        """Differences between what the portal expects and what the runtime has.

        ``expected`` pairs each agent the portal believes is deployed here with its portal state
        (DEPLOYED, RUNNING, SUSPENDED, STOPPED, ERRORED). Answers ``{"slug", "kind", "message"}``
        items, kind one of ``missing`` (expected, not found), ``orphan`` (labelled as ours, not
        expected: a slug the portal has no deployed agent for) or ``unexpected_state`` (e.g. a
        container running while the portal says STOPPED). The default finds nothing."""
        return []

    def reconcile(self, spec: AgentSpec, expected_state: str) -> dict[str, Any]:
        """Make the runtime match the portal for one agent where that is safe (remove an orphan,
        stop what should be stopped, pause what should be suspended); answers what it did.
        The default does nothing."""
        return {"actions": []}

    def reassign_ports(self, spec: AgentSpec) -> list[int]:
        """Replace the agent's ports that something else holds with free ones; answers the
        ports now reserved. Runtimes that do not hand out host ports cannot."""
        raise RuntimeFailure(
            f"The {self.name} runtime does not assign host ports; free the port instead.",
            reason="bad_config",
        )

    def remove_orphan(self, slug: str) -> dict[str, Any]:
        """Delete resources labelled for ``slug`` that no agent of the portal owns."""
        return {"removed": []}

    # --- per-replica operations (upgrades: blue-green, canary, rolling) ------------------------

    # Said after a refusal of the per-replica operations and of backup/restore; runtimes that
    # upgrade their own way say how.
    replica_ops_instead = (
        "upgrade the agent as a whole instead: stop it, deploy the new version, start it."
    )
    backup_instead = "copy the agent's data with the runtime's own tools instead."

    def launch_replicas(self, spec: AgentSpec, replicas: Sequence[int]) -> dict[str, Any]:
        """Start exactly ``replicas`` (numbers) with this spec's version and config, beside
        whatever else of the agent runs, readiness-gated like :meth:`start`.

        Numbers beyond the reserved ports get new free ports, reserved like :meth:`provision`
        does. A number already running is left when it runs ``spec.version``
        (``already_running``) and refused otherwise. A failure stops only what this call
        started and raises the :class:`RuntimeFailure`. Answers ``{"runtime", "replicas":
        [{"replica", "port", "pid" or "container_id", "version", "already_running"}],
        "duration_seconds"}``.
        """
        raise RuntimeFailure(
            f"The {self.name} runtime cannot launch single replicas; {self.replica_ops_instead}",
            reason="bad_config",
            details={"runtime": self.name, "operation": "launch_replicas"},
        )

    def stop_replicas(self, spec: AgentSpec, replicas: Sequence[int]) -> dict[str, Any]:
        """Stop exactly ``replicas`` gracefully (SIGTERM, ``grace_seconds``, then kill);
        stopping a stopped one is no error.

        A replica stopped this way is no longer reported by :meth:`status` until it is launched
        or started again, so it never looks like a crash; replicas numbered ``spec.replicas``
        or more are forgotten (their records removed, their ports released)."""
        raise RuntimeFailure(
            f"The {self.name} runtime cannot stop single replicas; {self.replica_ops_instead}",
            reason="bad_config",
            details={"runtime": self.name, "operation": "stop_replicas"},
        )

    def rolling_restart(self, spec: AgentSpec) -> dict[str, Any]:
        """Restart a running agent of several replicas without ever having fewer ready ones
        than before: a spare replica (numbered ``spec.replicas``) is launched and ready first,
        then each replica in turn is stopped and launched again, readiness-gated, and the spare
        goes last. Tasks keep flowing to the others meanwhile; what a stopped replica held is
        claimed by another. Runtimes that roll by themselves (Kubernetes) override this.

        A replica that fails to come back stops the restart there: the spare is stopped and the
        failure raised (the replicas already restarted keep running). Answers ``{"runtime",
        "rolled", "replicas": [launch answers], "surge", "duration_seconds"}``."""
        began = time.monotonic()
        spare = spec.replicas
        surge = self.launch_replicas(spec, [spare])
        relaunched: list[dict[str, Any]] = []
        try:
            for replica in range(spec.replicas):
                self.stop_replicas(spec, [replica])
                relaunched.extend(self.launch_replicas(spec, [replica])["replicas"])
        finally:
            self.stop_replicas(spec, [spare])  # numbered past the agent's: forgotten
        answer: dict[str, Any] = {
            "runtime": self.name,
            "rolled": True,
            "replicas": relaunched,
            "surge": surge["replicas"],
            "ports": [r.get("port") for r in relaunched],
            "duration_seconds": round(time.monotonic() - began, 3),
        }
        # What a start answers, so the agent's runtime details name the new processes.
        for key, field_ in (("pids", "pid"), ("container_ids", "container_id")):
            if all(field_ in r for r in relaunched):
                answer[key] = [r[field_] for r in relaunched]
        return answer

    def backup_data(self, spec: AgentSpec, destination: str) -> dict[str, Any]:
        """Write a tar.gz snapshot of the agent's data to the file ``destination``; answers
        ``{"runtime", "path", "bytes", "sha256", "files"}``."""
        raise RuntimeFailure(
            f"The {self.name} runtime cannot back up an agent's data; {self.backup_instead}",
            reason="bad_config",
            details={"runtime": self.name, "operation": "backup_data"},
        )

    def restore_data(self, spec: AgentSpec, source: str) -> dict[str, Any]:
        """Replace the agent's data with that of the archive :meth:`backup_data` wrote to
        ``source`` (the agent may be running); a missing or corrupt archive, or one with a path
        outside its directory, is refused before anything changes. Answers like
        :meth:`backup_data`."""
        raise RuntimeFailure(
            f"The {self.name} runtime cannot restore an agent's data; {self.backup_instead}",
            reason="bad_config",
            details={"runtime": self.name, "operation": "restore_data"},
        )
