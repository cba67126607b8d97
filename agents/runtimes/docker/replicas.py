"""Stopping an agent's containers, and the per-replica operations upgrades build on: launching
chosen replicas (possibly of another version) beside the running ones, and retiring the ones
stopped on purpose so that they look neither running nor crashed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from typing import Any

import docker
import docker.errors

from ..base import AgentSpec, RuntimeFailure
from ..failures import runs_other_version
from ..ports import pick_free_port
from . import failures
from .containers import (
    PORT_LABEL,
    VERSION_LABEL,
    is_live,
    labelled_replica,
    labels_of,
    replica_status,
)
from .events import StopRequests
from .readiness import await_ready
from .resources import Resources


def stop_containers(
    resources: Resources,
    stop_requests: StopRequests,
    spec: AgentSpec,
    containers: Iterable[dict[str, Any]],
) -> dict[str, Any]:
    """``docker stop`` each live container (unpaused first, so agentd can act on SIGTERM) with
    the grace period, marked as a stop the portal asked for; answers how each ended."""
    began = time.monotonic()
    timeout = max(1, round(spec.grace_seconds))
    stopped = []
    for inspected in containers:
        if not is_live(inspected):
            continue
        container_id = inspected["Id"]
        stop_requests.mark(container_id, spec.grace_seconds)
        with contextlib.suppress(docker.errors.NotFound):
            if inspected["State"].get("Paused"):
                resources.api.unpause(container_id)
            resources.api.stop(container_id, timeout=timeout)
        after = resources.inspect(container_id) or inspected
        status = replica_status(labelled_replica(labels_of(after)) or 0, after)
        stopped.append(
            {
                "replica": status.replica,
                "container_id": container_id,
                "exit_code": status.exit_code,
                "signal": status.signal,
                "killed_after_grace": status.exit_code == 137 and not status.oom_killed,
            }
        )
    return {
        "runtime": "docker",
        "replicas": stopped,
        "stopped": len(stopped),
        "duration_seconds": round(time.monotonic() - began, 3),
    }


def retire(
    resources: Resources, stop_requests: StopRequests, spec: AgentSpec, replicas: Iterable[int]
) -> list[int]:
    """After a purposeful stop: delete the containers of ``replicas`` numbered ``spec.replicas``
    or more (their port labels go with them) and mark the others retired. Answers the replicas
    deleted. A container still live (it would not stop) is left as it is."""
    found = resources.containers(spec.slug)
    forgotten = []
    for replica in replicas:
        inspected = found.get(replica)
        if inspected is None or is_live(inspected):
            continue
        if replica >= spec.replicas:
            resources.remove_container(inspected["Id"], spec.grace_seconds)
            forgotten.append(replica)
        else:
            stop_requests.retire(inspected["Id"])
    return forgotten


def launch(
    resources: Resources,
    stop_requests: StopRequests,
    spec: AgentSpec,
    numbers: list[int],
    port_range: tuple[int, int],
) -> dict[str, Any]:
    """Create and start the containers of replicas ``numbers`` from this spec, readiness-gated;
    a failure stops (and retires or deletes) what this call started, then raises."""
    began = time.monotonic()
    reserved = resources.reserved_ports(spec)
    found = resources.containers(spec.slug)
    records: dict[int, dict[str, Any]] = {}
    ports: dict[int, int] = {}
    to_start: list[int] = []
    for replica in numbers:
        inspected = found.get(replica)
        if inspected is not None and is_live(inspected):
            running = labels_of(inspected).get(VERSION_LABEL, "")
            if running != spec.version:
                raise runs_other_version(spec, replica, running)
            records[replica], ports[replica] = inspected, _port_label(inspected) or 0
    image = resources.image(spec)
    taken = (
        resources.ports_reserved_by_others(spec.slug)
        | set(reserved)
        | {port for inspected in found.values() if (port := _port_label(inspected))}
    )
    for replica in numbers:
        if replica in records:
            continue
        existing = found.get(replica)
        port = reserved[replica] if replica < len(reserved) else None
        port = port or (_port_label(existing) if existing is not None else None)
        if port is None:
            port = pick_free_port(port_range, taken)
            taken.add(port)
        ports[replica] = port
        plan = resources.plan(spec, replica, port, *image)
        records[replica], _ = resources.ensure_container(spec, plan, keep_running=False)
        to_start.append(replica)
    started: list[int] = []
    try:
        start_containers(resources, stop_requests, spec, records, ports, to_start, started)
        ready = await_ready(resources, spec, ports, records, began + spec.ready_timeout)
    except BaseException:
        # Leave nothing of this call's: stop what it started, delete the containers it made
        # beyond the agent's count (with their ports), retire the others.
        with contextlib.suppress(RuntimeFailure, docker.errors.DockerException):
            now = [resources.inspect(records[replica]["Id"]) for replica in started]
            stop_containers(resources, stop_requests, spec, [i for i in now if i is not None])
            retire(resources, stop_requests, spec, to_start)
        raise
    return {
        "runtime": "docker",
        "replicas": [
            {
                **ready[replica],
                "version": spec.version,
                "already_running": replica not in to_start,
            }
            for replica in numbers
        ],
        "image": image[0],
        "duration_seconds": round(time.monotonic() - began, 3),
    }


def _port_label(inspected: dict[str, Any] | None) -> int | None:
    value = str(labels_of(inspected or {}).get(PORT_LABEL, ""))
    return int(value) if value.isdecimal() else None


def start_containers(
    resources: Resources,
    stop_requests: StopRequests,
    spec: AgentSpec,
    records: dict[int, dict[str, Any]],
    ports: Sequence[int] | dict[int, int],
    numbers: Iterable[int],
    started: list[int],
) -> None:
    """Start the containers (made already) of replicas ``numbers``, adding each to ``started``
    as it starts, so that a caller whose start fails knows what to stop."""
    for replica in numbers:
        container_id = records[replica]["Id"]
        stop_requests.started(container_id)
        try:
            resources.api.start(container_id)
        except docker.errors.APIError as error:
            explanation = str(error.explanation or error)
            raise failures.engine_refused_start(
                spec, replica, ports[replica], explanation, container_id
            ) from error
        started.append(replica)
