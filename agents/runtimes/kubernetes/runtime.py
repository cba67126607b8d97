"""KubernetesRuntime: the Runtime interface over a Deployment, a Service and a ConfigMap per agent."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

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
from . import api
from .api import Conflict, NotFound
from .cluster import Cluster
from .drift import find_drift
from .logs import PodLogs
from .objects import (
    AGENT_PORT,
    RESTARTED_AT_ANNOTATION,
    SLUG_PATTERN,
    agent_selector,
    build_configmap,
    build_deployment,
    build_service,
    check_slug,
    check_spec,
    configmap_name,
    deployment_name,
    restart_patch,
    scale_patch,
    service_name,
)
from .pods import (
    agent_slug,
    annotations_of,
    cpu_cores,
    describe_pod,
    desired_replicas,
    intended_replicas,
    is_ready,
    is_suspended,
    live_pods,
    memory_bytes,
    meta,
    pod_name,
    ready_replicas,
    replica_status,
    rollout_observed,
    start_problem,
    was_stopped,
)
from .streams import watch_events

logger = logging.getLogger(__name__)

# Seconds allowed, beyond the agent's grace period, for its pods to be gone after a stop.
STOP_MARGIN_SECONDS = 15


class KubernetesRuntime(Runtime):
    """Agents as Deployments in ``namespace``, pods running ``<image>:<version>``.

    Credentials come from KUBECONFIG (or ``~/.kube/config``), or from the pod's service account
    with ``in_cluster``; ``api_client`` overrides both (tests point one at an in-memory API).
    ``redis_url`` is the Redis as the pods reach it; with ``redis_secret`` the pods read it from
    that Secret's ``redis-url`` key instead, and the URL is never written into the Deployment.
    """

    name = "kubernetes"
    poll_interval = 0.25
    replica_ops_instead = (
        "it upgrades through its Deployment's rolling update and is not "
        "supported for blue-green or canary upgrades here."
    )
    backup_instead = (
        "back up the pods' volumes with the cluster's own tools (a volume snapshot, Velero)."
    )

    def __init__(
        self,
        namespace: str,
        image: str,
        redis_url: str,
        in_cluster: bool = False,
        api_client: client.ApiClient | None = None,
        *,
        redis_secret: str | None = None,
    ) -> None:
        self.namespace = namespace
        self.image = image
        self.redis_url = redis_url
        self.in_cluster = in_cluster
        self.redis_secret = redis_secret or None
        self.cluster = Cluster(namespace, in_cluster, api_client)

    # --- lifecycle -----------------------------------------------------------------------

    def provision(self, spec: AgentSpec) -> dict[str, Any]:
        """Check the namespace exists (creating it if allowed); nothing else is reserved."""
        check_spec(spec)
        created = self.cluster.ensure_namespace()
        return {
            "runtime": self.name,
            "namespace": self.namespace,
            "namespace_created": created,
            "ports": [],
            "queue": contract.task_stream(spec.slug),
        }

    def deploy(self, spec: AgentSpec) -> dict[str, Any]:
        """Create or update the ConfigMap, the Deployment (0 replicas: nothing starts) and the
        Service."""
        check_spec(spec)
        core, apps = self.cluster.core(), self.cluster.apps()
        deployment = build_deployment(
            spec, self.namespace, self.image, self.redis_url, self.redis_secret
        )
        objects = {
            "configmap": self.cluster.apply(
                build_configmap(spec, self.namespace),
                core.create_namespaced_config_map,
                core.patch_namespaced_config_map,
            ),
            "deployment": self.cluster.apply(
                deployment, apps.create_namespaced_deployment, apps.patch_namespaced_deployment
            ),
            "service": self.cluster.apply(
                build_service(spec, self.namespace),
                core.create_namespaced_service,
                core.patch_namespaced_service,
            ),
        }
        return {
            "runtime": self.name,
            "namespace": self.namespace,
            "deployment": deployment_name(spec.slug),
            "service": service_name(spec.slug),
            "configmap": configmap_name(spec.slug),
            "image": deployment["spec"]["template"]["spec"]["containers"][0]["image"],
            "version": spec.version,
            "replicas": spec.replicas,
            "objects": objects,
            "ports": [],
        }

    def start(self, spec: AgentSpec) -> dict[str, Any]:
        """Scale to ``spec.replicas`` and wait until that many pods are ready."""
        check_spec(spec)
        began = time.monotonic()
        self.cluster.read_deployment(spec)
        self.cluster.patch_deployment(spec, scale_patch(spec.replicas, intended=spec.replicas))
        return self._await_scaled_up(spec, spec.replicas, began)

    def stop(self, spec: AgentSpec) -> dict[str, Any]:
        """Scale to 0 and wait for the pods to be gone (the kubelet sends SIGTERM, waits the
        grace period, then kills). Stopping a stopped or missing agent is not an error."""
        check_slug(spec.slug)
        try:
            deployment = self.cluster.read_deployment(spec)
        except NotFound:
            return {"runtime": self.name, "stopped": 0, "deployment_missing": True}
        return {
            "runtime": self.name,
            "namespace": self.namespace,
            "replicas_before": desired_replicas(deployment),
            **self._scale_to_zero(spec, scale_patch(0, stopped_at=_now())),
        }

    def suspend(self, spec: AgentSpec) -> dict[str, Any]:
        """Scale to 0 like stop, but marked suspended: status shows ``paused`` replicas and
        resume brings back as many as there were."""
        check_slug(spec.slug)
        deployment = self.cluster.read_deployment(spec)
        running = desired_replicas(deployment)
        if running == 0:
            raise RuntimeFailure(
                f"{spec.name} has no running pods to suspend; start it first.",
                reason="not_found",
                details={"slug": spec.slug, "namespace": self.namespace},
            )
        return {
            "runtime": self.name,
            "namespace": self.namespace,
            "suspended": True,
            "replicas_before": running,
            **self._scale_to_zero(spec, scale_patch(0, intended=running, suspended=True)),
        }

    def resume(self, spec: AgentSpec) -> dict[str, Any]:
        """Scale back to the replica count suspend recorded and wait for readiness; a failed
        resume leaves the agent suspended."""
        check_spec(spec)
        began = time.monotonic()
        deployment = self.cluster.read_deployment(spec)
        if not is_suspended(deployment):
            raise RuntimeFailure(
                f"{spec.name} is not suspended on Kubernetes; start it instead.",
                reason="not_found",
                details={"slug": spec.slug, "replicas": desired_replicas(deployment)},
            )
        replicas = intended_replicas(deployment, spec.replicas)
        self.cluster.patch_deployment(spec, scale_patch(replicas, intended=replicas))
        return self._await_scaled_up(spec, replicas, began, suspend_on_failure=True)

    def rolling_restart(self, spec: AgentSpec) -> dict[str, Any]:
        """Kubernetes rolls by itself (maxSurge 1, maxUnavailable 0): the restart."""
        return self.restart(spec)

    def restart(self, spec: AgentSpec) -> dict[str, Any]:
        """A rolling restart (the pod template's restartedAt annotation, as `kubectl rollout
        restart` does), done once every pod is a new, ready one. A scaled-down agent is
        started instead."""
        check_spec(spec)
        began = time.monotonic()
        deployment = self.cluster.read_deployment(spec)
        if desired_replicas(deployment) == 0:
            self.cluster.patch_deployment(spec, scale_patch(spec.replicas, intended=spec.replicas))
            return {**self._await_scaled_up(spec, spec.replicas, began), "rolled": False}
        previous = [pod_name(pod) for pod in live_pods(self.cluster.list_pods(spec.slug))]
        restarted_at = _now()
        patch = scale_patch(spec.replicas, intended=spec.replicas)
        patch["spec"].update(restart_patch(restarted_at)["spec"])
        self.cluster.patch_deployment(spec, patch)
        details = self._await_scaled_up(spec, spec.replicas, began, restarted_at=restarted_at)
        return {**details, "rolled": True, "restarted_at": restarted_at, "previous_pods": previous}

    def remove(self, spec: AgentSpec, purge: bool = False) -> dict[str, Any]:
        """Stop the agent, then delete its Deployment, Service and ConfigMap. Agents keep no
        volume on Kubernetes, so ``purge`` has nothing more to delete."""
        if not SLUG_PATTERN.match(spec.slug):
            # Such an agent can never have been deployed here: nothing to delete.
            return {"runtime": self.name, "removed": [], "purged": purge, "stop": None}
        stopped = None
        try:
            if desired_replicas(self.cluster.read_deployment(spec)) > 0:
                stopped = self.stop(spec)
        except NotFound:
            pass
        core, apps = self.cluster.core(), self.cluster.apps()
        removed = []
        for kind, delete, name in (
            ("Deployment", apps.delete_namespaced_deployment, deployment_name(spec.slug)),
            ("Service", core.delete_namespaced_service, service_name(spec.slug)),
            ("ConfigMap", core.delete_namespaced_config_map, configmap_name(spec.slug)),
        ):
            if self.cluster.delete(kind, delete, name):
                removed.append(f"{kind}/{name}")
        return {
            "runtime": self.name,
            "namespace": self.namespace,
            "removed": removed,
            "purged": purge,
            "stop": stopped,
        }

    # --- observation ---------------------------------------------------------------------

    def status(self, spec: AgentSpec) -> RuntimeStatus:
        """Replicas from the Deployment and its pods: ``missing`` without a Deployment,
        ``paused`` when suspended, ``exited`` when stopped (or crash-looping), ``created``
        before the first start or while a pod is being scheduled."""
        check_slug(spec.slug)
        try:
            deployment = self.cluster.read_deployment(spec)
        except NotFound:
            return RuntimeStatus(
                spec.slug, [ReplicaStatus(i, "missing") for i in range(spec.replicas)]
            )
        desired = desired_replicas(deployment)
        if desired == 0:
            if is_suspended(deployment):
                state = "paused"
            else:
                state = "exited" if was_stopped(deployment) else "created"
            count = intended_replicas(deployment, spec.replicas)
            return RuntimeStatus(
                spec.slug, [ReplicaStatus(i, state, port=AGENT_PORT) for i in range(count)]
            )
        pods = live_pods(self.cluster.list_pods(spec.slug))
        replicas = [replica_status(i, pod) for i, pod in enumerate(pods)]
        replicas += [
            ReplicaStatus(i, "created", port=AGENT_PORT) for i in range(len(pods), desired)
        ]
        return RuntimeStatus(spec.slug, replicas)

    def probe(self, spec: AgentSpec, details: dict[str, Any]) -> tuple[str, str] | None:
        """Health from pod readiness (the portal cannot reach the pods): healthy when every
        wanted pod is ready, degraded when some are, unhealthy when none is."""
        check_slug(spec.slug)
        try:
            deployment = self.cluster.read_deployment(spec)
        except NotFound:
            return "unhealthy", (
                f"Deployment {deployment_name(spec.slug)} not found in namespace {self.namespace}"
            )
        desired, ready = desired_replicas(deployment), ready_replicas(deployment)
        if desired == 0:
            return "unhealthy", "scaled to 0 replicas"
        if ready >= desired:
            return "healthy", ""
        problems = [
            f"{pod_name(pod)}: {describe_pod(pod)['waiting'] or 'not ready'}"
            for pod in live_pods(self.cluster.list_pods(spec.slug))
            if not is_ready(pod)
        ]
        detail = f"{ready} of {desired} pods ready" + (
            f" ({'; '.join(problems)})" if problems else ""
        )
        return ("degraded" if ready > 0 else "unhealthy"), detail

    def logs(
        self,
        spec: AgentSpec,
        since: float | None = None,
        tail: int | None = 200,
        follow: bool = False,
        stop: threading.Event | None = None,
        replica: int | None = None,
    ) -> Iterator[LogLine]:
        """Pod logs with the API server's timestamps, oldest first across replicas (a replica
        is a pod, numbered oldest first); with ``follow``, new lines of every pod, including
        pods that replace them, until ``stop`` is set."""
        check_slug(spec.slug)
        logs = PodLogs(
            self.cluster.core(),
            self.namespace,
            spec.slug,
            lambda: self.cluster.list_pods(spec.slug),
        )
        return logs.lines(since, tail, follow, stop, replica)

    def stats(self, spec: AgentSpec) -> list[ReplicaStats]:
        """CPU (percent of one core) and memory per pod from the metrics API; an empty list
        when the cluster has no metrics-server or the portal may not read it."""
        check_slug(spec.slug)
        try:
            listing = api.call_json(
                "read pod metrics",
                self.cluster.custom().list_namespaced_custom_object,
                "metrics.k8s.io",
                "v1beta1",
                self.namespace,
                "pods",
                label_selector=agent_selector(spec.slug),
            )
        except RuntimeFailure as failure:
            if failure.details.get("status") in (401, 403, 404, 503):
                return []
            raise
        positions = {
            pod_name(pod): index
            for index, pod in enumerate(live_pods(self.cluster.list_pods(spec.slug)))
        }
        answer = []
        for item in listing.get("items") or []:
            index = positions.get(str(meta(item).get("name")))
            if index is None:
                continue
            usage = [c.get("usage") or {} for c in item.get("containers") or []]
            cpu = sum(cpu_cores(u.get("cpu", "0")) for u in usage)
            memory = sum(memory_bytes(u.get("memory", "0")) for u in usage)
            answer.append(ReplicaStats(index, round(cpu * 100, 2), memory))
        return sorted(answer, key=lambda stats: stats.replica)

    def events(self, since_id: str | None, stop: threading.Event) -> Iterator[RuntimeEvent]:
        """Crashes and removals, from watches on the namespace's managed pods and Deployments.

        An event's id is the resourceVersion of the object it came from; passing it back
        resumes both watches there. Without one (or when the server has forgotten it), the
        current pods are listed and their past terminations taken as known, not reported.
        Watches reconnect with backoff while the API server is away.
        """
        return watch_events(
            self.cluster.core(), self.cluster.apps(), self.namespace, since_id or None, stop
        )

    def adopt(self) -> list[str]:
        """Slugs of the managed Deployments that want pods (left running from before)."""
        try:
            deployments = self.cluster.list_managed(self.cluster.apps().list_namespaced_deployment)
        except RuntimeFailure as failure:
            if failure.reason != "engine_unreachable":
                raise
            logger.warning("cannot look for running agents: %s", failure.message)
            return []
        return sorted(slug for slug, d in deployments.items() if desired_replicas(d) > 0)

    # --- drift ---------------------------------------------------------------------------

    def drift(self, expected: list[tuple[AgentSpec, str]]) -> list[dict[str, Any]]:
        core, apps = self.cluster.core(), self.cluster.apps()
        found = {
            "Deployment": self.cluster.list_managed(apps.list_namespaced_deployment),
            "Service": self.cluster.list_managed(core.list_namespaced_service),
            "ConfigMap": self.cluster.list_managed(core.list_namespaced_config_map),
        }
        return find_drift(found, expected, self.namespace)

    def reconcile(self, spec: AgentSpec, expected_state: str) -> dict[str, Any]:
        """Recreate missing objects (with 0 replicas: nothing starts) and scale down what the
        portal says should not run. Never scales up: starting is an operator's decision."""
        check_spec(spec)
        actions = []
        try:
            deployment = self.cluster.read_deployment(spec)
        except NotFound:
            self.deploy(spec)
            return {
                "runtime": self.name,
                "actions": [
                    f"recreated Deployment {deployment_name(spec.slug)} (0 replicas), its "
                    "Service and ConfigMap"
                ],
            }
        core = self.cluster.core()
        for kind, built, create in (
            ("ConfigMap", build_configmap(spec, self.namespace), core.create_namespaced_config_map),
            ("Service", build_service(spec, self.namespace), core.create_namespaced_service),
        ):
            try:
                api.call_json(f"create {kind}", create, self.namespace, built)
                actions.append(f"recreated {kind} {meta(built)['name']}")
            except Conflict:
                pass
        running = desired_replicas(deployment)
        if running > 0 and expected_state in ("DEPLOYED", "STOPPED"):
            self.cluster.patch_deployment(spec, scale_patch(0, stopped_at=_now()))
            actions.append(f"scaled {running} replicas to 0 (the portal says {expected_state})")
        elif running > 0 and expected_state == "SUSPENDED":
            self.cluster.patch_deployment(spec, scale_patch(0, intended=running, suspended=True))
            actions.append(f"scaled {running} replicas to 0 (the portal says SUSPENDED)")
        return {"runtime": self.name, "actions": actions}

    def remove_orphan(self, slug: str) -> dict[str, Any]:
        """Delete every Deployment, Service and ConfigMap labelled as ours for ``slug``."""
        core, apps = self.cluster.core(), self.cluster.apps()
        removed = []
        for kind, list_method, delete in (
            ("Deployment", apps.list_namespaced_deployment, apps.delete_namespaced_deployment),
            ("Service", core.list_namespaced_service, core.delete_namespaced_service),
            ("ConfigMap", core.list_namespaced_config_map, core.delete_namespaced_config_map),
        ):
            listing = api.call_json(
                f"list {kind}s", list_method, self.namespace, label_selector=agent_selector(slug)
            )
            for item in listing.get("items") or []:
                name = str(meta(item).get("name"))
                if agent_slug(item) == slug and self.cluster.delete(kind, delete, name):
                    removed.append(f"{kind}/{name}")
        return {"runtime": self.name, "removed": removed}

    # --- waiting -------------------------------------------------------------------------

    def _await_scaled_up(
        self,
        spec: AgentSpec,
        replicas: int,
        began: float,
        *,
        restarted_at: str | None = None,
        suspend_on_failure: bool = False,
    ) -> dict[str, Any]:
        """Wait for ``replicas`` ready pods (new ones, after a restart); on failure, scale to 0
        so that nothing is left half-running, and raise what went wrong."""
        try:
            pods = self._await_ready(spec, replicas, began + spec.ready_timeout, restarted_at)
        except BaseException:
            self._scale_down_after_failure(spec, replicas, suspend_on_failure)
            raise
        return {
            "runtime": self.name,
            "namespace": self.namespace,
            "deployment": deployment_name(spec.slug),
            "replicas": replicas,
            "pods": [pod_name(pod) for pod in pods],
            "ports": [],
            "duration_seconds": round(time.monotonic() - began, 3),
        }

    def _await_ready(
        self, spec: AgentSpec, replicas: int, deadline: float, restarted_at: str | None
    ) -> list[dict[str, Any]]:
        while True:
            deployment = self.cluster.read_deployment(spec)
            pods = live_pods(self.cluster.list_pods(spec.slug))
            if restarted_at is not None:
                fresh = [
                    p
                    for p in pods
                    if annotations_of(p).get(RESTARTED_AT_ANNOTATION) == restarted_at
                ]
                rolled = len(fresh) == len(pods)
                pods = fresh
            else:
                rolled = True
            for pod in pods:
                problem = None if is_ready(pod) else start_problem(pod)
                if problem is not None:
                    reason, what = problem
                    raise RuntimeFailure(
                        f"{spec.name}'s pod {pod_name(pod)} will not become ready: {what}.",
                        reason=reason,
                        details=self._failure_details(spec, deployment, pods),
                    )
            ready = [pod for pod in pods if is_ready(pod)]
            if (
                rolled
                and rollout_observed(deployment)
                and ready_replicas(deployment) >= replicas
                and (restarted_at is None or len(ready) >= replicas)
            ):
                return ready or pods
            if time.monotonic() >= deadline:
                raise RuntimeFailure(
                    f"{spec.name} did not become ready within {spec.ready_timeout:g} s: "
                    f"{ready_replicas(deployment)} of {replicas} pods ready. The pod statuses "
                    "and the last events are in the details.",
                    reason="not_ready",
                    details=self._failure_details(spec, deployment, pods),
                )
            time.sleep(self.poll_interval)

    def _scale_to_zero(self, spec: AgentSpec, patch: dict[str, Any]) -> dict[str, Any]:
        """Apply a scale-to-0 patch and wait (grace period plus a margin) for the pods to go."""
        began = time.monotonic()
        stopping = sorted(pod_name(pod) for pod in self.cluster.list_pods(spec.slug))
        self.cluster.patch_deployment(spec, patch)
        deadline = began + spec.grace_seconds + STOP_MARGIN_SECONDS
        while True:
            remaining = sorted(pod_name(pod) for pod in self.cluster.list_pods(spec.slug))
            if not remaining or time.monotonic() >= deadline:
                return {
                    "stopped": len(stopping),
                    "pods": stopping,
                    "pods_still_terminating": remaining,
                    "duration_seconds": round(time.monotonic() - began, 3),
                }
            time.sleep(self.poll_interval)

    def _scale_down_after_failure(self, spec: AgentSpec, replicas: int, suspend: bool) -> None:
        patch = (
            scale_patch(0, intended=replicas, suspended=True)
            if suspend
            else scale_patch(0, stopped_at=_now())
        )
        try:
            self.cluster.patch_deployment(spec, patch)
        except RuntimeFailure as failure:
            logger.warning("cannot scale %s down after a failure: %s", spec.slug, failure.message)

    def _failure_details(
        self, spec: AgentSpec, deployment: dict[str, Any], pods: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "deployment": deployment_name(spec.slug),
            "ready_replicas": ready_replicas(deployment),
            "replicas": desired_replicas(deployment),
            "pods": [describe_pod(pod) for pod in pods],
            "events": self.cluster.recent_events(spec, pods),
        }


# --- helpers ----------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
