"""What the Docker runtime creates for an agent, and how it reads it back.

Every container and volume carries labels (``waooaw.managed=true``, ``waooaw.agent=<slug>``,
``waooaw.replica=<n>``...), so the runtime finds its own resources by label, never by guessing
from names, and anything labelled as ours that the portal does not know is an orphan.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from docker.types import LogConfig

from ..base import AgentSpec, ReplicaStatus, RuntimeFailure

MANAGED_LABEL = "waooaw.managed"
AGENT_LABEL = "waooaw.agent"
REPLICA_LABEL = "waooaw.replica"
VERSION_LABEL = "waooaw.version"
PORT_LABEL = "waooaw.port"
PORTS_LABEL = "waooaw.ports"
SPEC_LABEL = "waooaw.spec-hash"
MANAGED_FILTER = f"{MANAGED_LABEL}=true"

# Container and volume names are made from it, so it must be a name the engine accepts.
SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
DATA_MOUNT = "/data"
NANOSECONDS = 1_000_000_000
MEBIBYTE = 1024 * 1024
# agentd's logs go to the engine's json-file driver, bounded so a chatty agent cannot fill the
# host's disk (30 MiB per container at most).
LOG_CONFIG = LogConfig(type=LogConfig.types.JSON, config={"max-size": "10m", "max-file": "3"})
# The image's HEALTHCHECK, restated so that any image the portal is pointed at gets it.
HEALTH_TEST = [
    "CMD",
    "python3",
    "-c",
    "import os, sys, urllib.request as u; o = u.build_opener(u.ProxyHandler({})); "
    "sys.exit(0 if o.open('http://127.0.0.1:%s/healthz' % os.environ.get('AGENT_PORT', '8080'),"
    " timeout=2).status == 200 else 1)",
]


# A custom probe's check, run by the engine inside the container with the image's Python (the
# agent image has no curl): the HTTP status, or a TCP connection, on the replica's own port
# (AGENT_PORT) unless the probe names one. An uncaught error exits 1: unhealthy.
HTTP_CHECK = (
    "import http.client as h, os, sys; "
    "c = h.HTTPConnection('127.0.0.1', int(os.environ.get('AGENT_PORT', '8080')), timeout={timeout}); "
    "c.request('GET', {path}); sys.exit(0 if c.getresponse().status == {status} else 1)"
)
TCP_CHECK = (
    "import os, socket; socket.create_connection(('127.0.0.1', {port}), timeout={timeout}).close()"
)


def probe_test(probe: dict[str, Any]) -> list[str]:
    """The engine's health-check command for one probe of ``agents.probes.schema``."""
    timeout = float(probe["timeout_seconds"])
    if probe["kind"] == "exec":
        return ["CMD", *probe["command"]]
    if probe["kind"] == "tcp":
        port = (
            str(int(probe["port"]))
            if probe.get("port")
            else "int(os.environ.get('AGENT_PORT', '8080'))"
        )
        code = TCP_CHECK.format(port=port, timeout=f"{timeout:g}")
    else:
        code = HTTP_CHECK.format(
            path=repr(str(probe["path"])), status=int(probe["status"]), timeout=f"{timeout:g}"
        )
    return ["CMD", "python3", "-c", code]


def health_for_engine(spec: AgentSpec, default: HealthCheck) -> dict[str, Any]:
    """The container's HEALTHCHECK: the agent's liveness probe when it has probes of its own
    (its interval, timeout, and failure threshold as retries; the engine has no success
    threshold: one pass is healthy), else the runtime's default check of /healthz."""
    liveness = (spec.probes or {}).get("liveness")
    if not liveness:
        return default.for_engine()
    return {
        "test": probe_test(liveness),
        "interval": int(float(liveness["interval_seconds"]) * NANOSECONDS),
        "timeout": int(float(liveness["timeout_seconds"]) * NANOSECONDS),
        "retries": int(liveness["failure_threshold"]),
        "start_period": int(default.start_period * NANOSECONDS),
    }


def container_name(slug: str, replica: int) -> str:
    return f"waooaw-{slug}-{replica}"


def volume_name(slug: str) -> str:
    return f"waooaw-{slug}-data"


def agent_filters(slug: str | None = None) -> dict[str, list[str]]:
    labels = [MANAGED_FILTER]
    if slug is not None:
        labels.append(f"{AGENT_LABEL}={slug}")
    return {"label": labels}


@dataclass(frozen=True)
class HealthCheck:
    """Timings of the engine's health check of each agent container, in seconds.

    Each check runs a Python process in the container; every 5 s keeps that cheap (14 agents:
    about three short processes a second) while an agent that stops answering /healthz is
    reported unhealthy within 15 s.
    """

    interval: float = 5.0
    timeout: float = 3.0
    retries: int = 3
    # Failures while agentd starts (it is ready in well under a second) do not count.
    start_period: float = 5.0

    def for_engine(self) -> dict[str, Any]:
        return {
            "test": HEALTH_TEST,
            "interval": int(self.interval * NANOSECONDS),
            "timeout": int(self.timeout * NANOSECONDS),
            "retries": self.retries,
            "start_period": int(self.start_period * NANOSECONDS),
        }


@dataclass(frozen=True)
class ContainerPlan:
    """Everything ``containers.create`` is given for one replica, and the hash that says when
    an existing container no longer matches it."""

    name: str
    replica: int
    port: int
    image: str
    image_id: str
    kwargs: dict[str, Any]
    spec_hash: str


def plan_container(
    spec: AgentSpec,
    replica: int,
    port: int,
    *,
    image: str,
    image_id: str,
    network: str,
    health: HealthCheck,
) -> ContainerPlan:
    host_network = network == "host"
    healthcheck = health_for_engine(spec, health)
    environment = {
        **spec.env,
        "AGENT_SLUG": spec.slug,
        "AGENT_NAME": spec.name,
        "AGENT_VERSION": spec.version,
        "AGENT_REPLICA": str(replica),
        "AGENT_PORT": str(port),
        # On the host's network agentd listens on loopback only, like a local agent: the portal
        # probes it there and nothing else should reach it. On a bridge network it must listen
        # on the container's interface, and the port is published on the host's loopback.
        "AGENT_HOST": "127.0.0.1" if host_network else "0.0.0.0",
        "AGENT_GRACE_SECONDS": f"{spec.grace_seconds:g}",
        "AGENT_CONFIG": json.dumps(spec.config, sort_keys=True),
        "AGENT_DATA_DIR": DATA_MOUNT,
        "REDIS_URL": spec.redis_url,
    }
    memory = spec.memory_mb * MEBIBYTE
    identity = {
        "image": image,
        "image_id": image_id,
        "network": network,
        "environment": environment,
        "cpu_millicores": spec.cpu_millicores,
        "memory_mb": spec.memory_mb,
        "grace_seconds": spec.grace_seconds,
        "health": healthcheck,
    }
    spec_hash = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    labels = {
        MANAGED_LABEL: "true",
        AGENT_LABEL: spec.slug,
        REPLICA_LABEL: str(replica),
        VERSION_LABEL: spec.version,
        PORT_LABEL: str(port),
        SPEC_LABEL: spec_hash,
        "waooaw.name": spec.name,
    }
    kwargs: dict[str, Any] = {
        "image": image,
        "name": container_name(spec.slug, replica),
        "labels": labels,
        "environment": environment,
        "volumes": {volume_name(spec.slug): {"bind": DATA_MOUNT, "mode": "rw"}},
        "nano_cpus": spec.cpu_millicores * NANOSECONDS // 1000,
        "mem_limit": memory,
        # As much swap as memory means no swap: over the limit the agent is OOM-killed, as it
        # would be on Kubernetes, rather than slowing the host down.
        "memswap_limit": memory,
        # No restart by the engine: the portal's monitor restarts agents by their restart
        # policy (with backoff, attempts and history), and two restarters would fight.
        "restart_policy": {"Name": "no"},
        "healthcheck": healthcheck,
        "stop_signal": "SIGTERM",
        "log_config": LOG_CONFIG,
        "detach": True,
    }
    if host_network:
        kwargs["network_mode"] = "host"
    else:
        kwargs["network"] = network
        kwargs["ports"] = {f"{port}/tcp": ("127.0.0.1", port)}
    return ContainerPlan(
        name=kwargs["name"],
        replica=replica,
        port=port,
        image=image,
        image_id=image_id,
        kwargs=kwargs,
        spec_hash=spec_hash,
    )


@dataclass(frozen=True)
class DockerReplicaStatus(ReplicaStatus):
    """A replica's state with what only Docker tells: the container, OOM kills, health."""

    container_id: str | None = None
    name: str | None = None
    oom_killed: bool = False
    health: str | None = None


def replica_status(replica: int, inspected: dict[str, Any] | None) -> DockerReplicaStatus:
    """The status of one replica from ``docker inspect`` (None: no container)."""
    if inspected is None:
        return DockerReplicaStatus(replica, "missing")
    state = inspected.get("State") or {}
    labels = (inspected.get("Config") or {}).get("Labels") or {}
    port = int(labels[PORT_LABEL]) if str(labels.get(PORT_LABEL, "")).isdecimal() else None
    status = state.get("Status")
    live = bool(state.get("Running")) or status in ("running", "restarting")
    paused = live and (bool(state.get("Paused")) or status == "paused")
    exit_code = None if live or status == "created" else state.get("ExitCode")
    if live:
        shown = "paused" if paused else "running"
    else:
        shown = "created" if status == "created" else "exited"
    return DockerReplicaStatus(
        replica,
        shown,
        pid=(state.get("Pid") or None) if live else None,
        port=port,
        exit_code=exit_code,
        signal=exit_signal(exit_code),
        started_at=engine_time(state.get("StartedAt")),
        version=str(labels.get(VERSION_LABEL) or ""),
        container_id=inspected.get("Id"),
        name=str(inspected.get("Name") or "").lstrip("/") or None,
        oom_killed=bool(state.get("OOMKilled")),
        health=(state.get("Health") or {}).get("Status"),
    )


def exit_signal(exit_code: int | None) -> int | None:
    """The signal that ended a container, from its exit code: the engine reports a death by
    signal N as 128 + N, like a shell."""
    if exit_code is not None and 128 < exit_code < 160:
        return exit_code - 128
    return None


def engine_time(value: str | None) -> float | None:
    """A Unix time from the engine's RFC 3339 timestamps (nanoseconds; zero means never)."""
    if not value or value.startswith("0001-"):
        return None
    text = value.rstrip("Z")
    whole, _, fraction = text.partition(".")
    try:
        moment = datetime.fromisoformat(whole + "+00:00").timestamp()
    except ValueError:
        return None
    return moment + (float(f"0.{fraction}") if fraction.isdecimal() else 0.0)


def labelled_replica(labels: dict[str, str]) -> int | None:
    value = labels.get(REPLICA_LABEL, "")
    return int(value) if value.isdecimal() else None


def label_ports(labels: dict[str, str]) -> list[int]:
    """The ports a volume's labels hold (provision's reservation)."""
    return [int(part) for part in str(labels.get(PORTS_LABEL, "")).split(",") if part.isdecimal()]


def labels_of(container: dict[str, Any]) -> dict[str, str]:
    """Labels of a container as inspected or as listed."""
    return (container.get("Config") or {}).get("Labels") or container.get("Labels") or {}


def name_of(container: dict[str, Any]) -> str:
    """Name of a container as inspected (``Name``) or as listed (``Names``)."""
    if container.get("Name"):
        return str(container["Name"]).lstrip("/")
    names = container.get("Names") or [""]
    return str(names[0]).lstrip("/")


def is_live(inspected: dict[str, Any]) -> bool:
    """Running or paused: its processes exist."""
    state = inspected.get("State") or {}
    return bool(state.get("Running") or state.get("Paused"))


def check_spec(spec: AgentSpec) -> None:
    """Refuse a spec the engine could not name resources for, or with no replica."""
    if not SLUG_PATTERN.match(spec.slug):
        raise RuntimeFailure(
            f"invalid slug {spec.slug!r} for Docker: use lower-case letters, digits and '-' "
            "(at most 63 characters, starting with a letter or digit).",
            reason="bad_config",
            details={"slug": spec.slug},
        )
    if spec.replicas < 1:
        raise RuntimeFailure(
            f"{spec.name} must have at least one replica (got {spec.replicas}).",
            reason="bad_config",
            details={"replicas": spec.replicas},
        )
