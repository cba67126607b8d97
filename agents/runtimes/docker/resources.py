"""An agent's objects in the engine (containers, its volume, its image), found by label, and
made from the agent's spec."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import docker
import docker.errors
import requests

from ..base import AgentSpec, RuntimeFailure
from ..failures import FAILURE_LOG_LINES
from ..images import agent_image_ref
from ..ports import replica_ports
from . import failures
from .containers import (
    AGENT_LABEL,
    MANAGED_FILTER,
    MANAGED_LABEL,
    PORT_LABEL,
    PORTS_LABEL,
    SPEC_LABEL,
    ContainerPlan,
    HealthCheck,
    agent_filters,
    is_live,
    label_ports,
    labelled_replica,
    labels_of,
    name_of,
    plan_container,
    volume_name,
)
from .events import StopRequests


class Resources:
    """Finds, creates and deletes the engine objects of agents, through ``client`` (a callable,
    so that the engine is connected to only when first needed)."""

    def __init__(
        self,
        client: Callable[[], docker.DockerClient],
        *,
        base_url: str,
        repository: str,
        network: str,
        health: HealthCheck,
        stop_requests: StopRequests,
    ) -> None:
        self.client = client
        self.base_url = base_url
        self.repository = repository
        self.network = network
        self.health = health
        self.stop_requests = stop_requests

    @property
    def api(self) -> docker.APIClient:
        return self.client().api

    def plan(
        self, spec: AgentSpec, replica: int, port: int, image: str, image_id: str
    ) -> ContainerPlan:
        return plan_container(
            spec,
            replica,
            port,
            image=image,
            image_id=image_id,
            network=self.network,
            health=self.health,
        )

    def ensure_container(
        self, spec: AgentSpec, plan: ContainerPlan, keep_running: bool
    ) -> tuple[dict[str, Any], str]:
        """The replica's container made from ``plan``: kept when it already is, recreated when
        it was made from another spec, created when missing. A live container from another
        spec is kept if ``keep_running``, refused otherwise."""
        existing = self.inspect(plan.name)
        action = "created"
        if existing is not None:
            labels = labels_of(existing)
            if (
                labels.get(MANAGED_LABEL) != "true"
                or labels.get(AGENT_LABEL) != spec.slug
                or labelled_replica(labels) != plan.replica
            ):
                raise failures.name_conflict(spec, plan.name, labels)
            if labels.get(SPEC_LABEL) == plan.spec_hash:
                return existing, "kept"
            if is_live(existing):
                if keep_running:
                    return existing, "kept"
                raise RuntimeFailure(
                    f"{plan.name} runs an older spec of {spec.name}; stop it before deploying.",
                    reason="bad_config",
                    details={"container": plan.name, "container_id": existing["Id"]},
                )
            self.api.remove_container(existing["Id"], force=True)
            action = "recreated"
        try:
            container = self.client().containers.create(**plan.kwargs)
        except docker.errors.ImageNotFound as error:
            raise failures.image_missing(spec, plan.image, self.base_url) from error
        except docker.errors.APIError as error:
            if error.status_code == 409:  # created meanwhile by someone else
                other = self.inspect(plan.name) or {}
                raise failures.name_conflict(spec, plan.name, labels_of(other)) from error
            raise
        return self.inspect(container.id) or {"Id": container.id}, action

    def remove_extra_replicas(self, spec: AgentSpec, running_too: bool = False) -> list[str]:
        """Delete containers of replicas beyond ``spec.replicas`` (after a scale-down)."""
        removed = []
        for replica, inspected in self.containers(spec.slug).items():
            if replica >= spec.replicas and (running_too or not is_live(inspected)):
                self.remove_container(inspected["Id"], spec.grace_seconds)
                removed.append(name_of(inspected))
        return removed

    def remove_container(self, container_id: str, grace_seconds: float) -> None:
        self.stop_requests.mark(container_id, grace_seconds)
        with contextlib.suppress(docker.errors.NotFound):
            self.api.remove_container(container_id, force=True, v=True)

    def containers(self, slug: str) -> dict[int, dict[str, Any]]:
        """The agent's containers, inspected, by replica number."""
        found: dict[int, dict[str, Any]] = {}
        for summary in self.api.containers(all=True, filters=agent_filters(slug)):
            replica = labelled_replica(summary.get("Labels") or {})
            inspected = self.inspect(summary["Id"]) if replica is not None else None
            if replica is not None and inspected is not None:
                found[replica] = inspected
        return dict(sorted(found.items()))

    def all_containers(self) -> dict[str, dict[int, dict[str, Any]]]:
        """Every container labelled as ours (as listed, not inspected), by slug and replica."""
        by_slug: dict[str, dict[int, dict[str, Any]]] = {}
        for summary in self.api.containers(all=True, filters=agent_filters()):
            labels = summary.get("Labels") or {}
            slug, replica = labels.get(AGENT_LABEL), labelled_replica(labels)
            if slug and replica is not None:
                by_slug.setdefault(slug, {})[replica] = summary
        return by_slug

    def inspect(self, name_or_id: str) -> dict[str, Any] | None:
        try:
            return self.api.inspect_container(name_or_id)
        except docker.errors.NotFound:
            return None

    def oom_of(self, container_id: str) -> bool | None:
        try:
            inspected = self.api.inspect_container(container_id)
        except (RuntimeFailure, docker.errors.DockerException, requests.RequestException):
            return None
        return bool((inspected.get("State") or {}).get("OOMKilled"))

    def last_lines(self, container_id: str) -> list[str]:
        try:
            data = self.api.logs(container_id, stdout=True, stderr=True, tail=FAILURE_LOG_LINES)
        except docker.errors.DockerException:
            return []
        return [line.decode("utf-8", errors="replace") for line in data.splitlines()]

    def image(self, spec: AgentSpec) -> tuple[str, str]:
        """The agent's image reference and the id the engine has for it."""
        reference = agent_image_ref(self.repository, spec.version)
        try:
            return reference, self.client().images.get(reference).id
        except docker.errors.ImageNotFound as error:
            raise failures.image_missing(spec, reference, self.base_url) from error

    def volume(self, slug: str) -> dict[str, Any] | None:
        try:
            return self.api.inspect_volume(volume_name(slug))
        except docker.errors.NotFound:
            return None

    def create_volume(self, spec: AgentSpec, ports: list[int]) -> None:
        self.api.create_volume(
            name=volume_name(spec.slug),
            labels={
                MANAGED_LABEL: "true",
                AGENT_LABEL: spec.slug,
                PORTS_LABEL: ",".join(str(port) for port in ports),
            },
        )

    def ports(self, spec: AgentSpec) -> list[int]:
        """The replicas' ports: the spec's, else those provision recorded on the volume."""
        return replica_ports(spec, self.reserved_ports(spec))

    def reserved_ports(self, spec: AgentSpec) -> list[int]:
        """Every port reserved for the agent, by replica: the spec's, else those provision
        recorded on the volume (replicas launched beyond them keep theirs on the container)."""
        ports = list(spec.ports)
        if not ports:
            volume = self.volume(spec.slug)
            if volume is None:
                raise failures.not_provisioned(spec)
            ports = label_ports(volume.get("Labels") or {})
        return ports

    def ports_reserved_by_others(self, slug: str) -> set[int]:
        reserved: set[int] = set()
        volumes = self.api.volumes(filters={"label": MANAGED_FILTER}).get("Volumes") or []
        for volume in volumes:
            labels = volume.get("Labels") or {}
            if labels.get(AGENT_LABEL) != slug:
                reserved.update(label_ports(labels))
        for summary in self.api.containers(all=True, filters=agent_filters()):
            labels = summary.get("Labels") or {}
            if labels.get(AGENT_LABEL) != slug and str(labels.get(PORT_LABEL, "")).isdecimal():
                reserved.add(int(labels[PORT_LABEL]))
        return reserved
