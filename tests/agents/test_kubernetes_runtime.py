"""The Kubernetes runtime: its objects against the Kubernetes schemas, its client code against kmock.

No Kubernetes cluster can run here. The objects the runtime builds and the manifests in
deploy/kubernetes/ are validated with kubernetes-validate in strict mode (unknown fields fail),
and every runtime action runs end to end over HTTP against kmock, an in-memory Kubernetes API
(the ``kmock`` fixture). kmock stores, patches, lists and watches objects but runs no
controllers, so the tests play them (the :class:`Cluster` helper): they create the pods a
ReplicaSet would, mark them ready as a kubelet would, and write the Deployment's status.

The runtime is synchronous (the kubernetes client uses urllib3) and kmock serves from the test's
event loop, so runtime calls run in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import pytest_asyncio
import yaml
from kubernetes import client
from kubernetes_validate.utils import latest_version

from agents.runtimes import AgentSpec, RuntimeEvent, RuntimeFailure, get_runtime
from agents.runtimes.kubernetes import KubernetesRuntime
from agents.runtimes.kubernetes.objects import (
    build_configmap,
    build_deployment,
    build_service,
)

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
NS = "waooaw-agents"
IMAGE = "registry.test/waooaw/agentd"
POD_REDIS = "redis://redis.waooaw.svc:6379/0"
KUBERNETES_VERSION = latest_version()

DEPLOYMENTS = "apps/v1/deployments"
PODS = "v1/pods"
SERVICES = "v1/services"
CONFIGMAPS = "v1/configmaps"
EVENTS = "v1/events"


def make_spec(**fields: Any) -> AgentSpec:
    values: dict[str, Any] = {
        "slug": "wow-cache",
        "name": "WowCache",
        "version": "1.4.2",
        "redis_url": "redis://127.0.0.1:6379/0",
        "replicas": 2,
        "config": {"dependencies": ["wow-memory"], "faults": {"latency_ms": 5}},
        "cpu_millicores": 300,
        "memory_mb": 192,
        "env": {"WOW_CACHE_TTL": "60"},
        "grace_seconds": 1,
        "ready_timeout": 5,
        **fields,
    }
    return AgentSpec(**values)


def validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def manifest(name: str) -> list[dict[str, Any]]:
    with open(DEPLOY_DIR / name) as handle:
        return [document for document in yaml.safe_load_all(handle) if document]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return {
        item["name"]: item.get("value", item.get("valueFrom"))
        for item in container(deployment)["env"]
    }


# --- generated objects ---------------------------------------------------------------------


@pytest.mark.parametrize("redis_secret", [None, "waooaw-agent-redis"])
def test_generated_objects_are_valid_kubernetes_objects(redis_secret):
    spec = make_spec()
    objects = [
        build_configmap(spec, NS),
        build_deployment(spec, NS, IMAGE, POD_REDIS, redis_secret),
        build_deployment(spec, NS, IMAGE, POD_REDIS, redis_secret, replicas=3),
        build_service(spec, NS),
    ]
    for obj in objects:
        validate(obj)


def test_strict_validation_catches_an_unknown_field():
    # The test above is only worth something if strict mode refuses what the API would drop.
    deployment = build_deployment(make_spec(), NS, IMAGE, POD_REDIS)
    container(deployment)["livenessProbes"] = container(deployment)["livenessProbe"]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def test_the_deployment_starts_at_zero_with_labels_resources_probes_and_a_non_root_user():
    deployment = build_deployment(make_spec(), NS, IMAGE, POD_REDIS)
    labels = deployment["metadata"]["labels"]
    assert deployment["metadata"]["name"] == "waooaw-wow-cache"
    assert deployment["metadata"]["namespace"] == NS
    assert {
        "app.kubernetes.io/name": "waooaw-agent",
        "app.kubernetes.io/instance": "wow-cache",
        "waooaw.agent": "wow-cache",
        "waooaw.managed": "true",
        "waooaw.version": "1.4.2",
    }.items() <= labels.items()
    assert deployment["spec"]["replicas"] == 0
    assert deployment["metadata"]["annotations"]["waooaw.replicas"] == "2"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert "waooaw.version" not in selector  # a new version must not orphan the old pods
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    agentd = container(deployment)
    assert agentd["image"] == f"{IMAGE}:1.4.2"
    assert agentd["resources"] == {
        "requests": {"cpu": "300m", "memory": "192Mi"},
        "limits": {"cpu": "300m", "memory": "192Mi"},
    }
    assert agentd["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert agentd["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert agentd["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert agentd["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["automountServiceAccountToken"] is False
    mounts = {mount["mountPath"]: mount["name"] for mount in agentd["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes[mounts["/etc/waooaw"]]["configMap"]["name"] == "waooaw-wow-cache-config"


def test_agentd_gets_its_identity_config_file_and_redis_from_the_environment():
    spec = make_spec(env={"WOW_CACHE_TTL": "60", "REDIS_URL": "redis://sneaky", "AGENT_PORT": "1"})
    env = env_of(build_deployment(spec, NS, IMAGE, POD_REDIS))
    assert env["AGENT_SLUG"] == "wow-cache"
    assert env["AGENT_HOST"] == "0.0.0.0"
    assert env["AGENT_PORT"] == "8080"
    assert env["AGENT_CONFIG_FILE"] == "/etc/waooaw/config.json"
    assert env["REDIS_URL"] == POD_REDIS  # the pods' Redis, not the spec's 127.0.0.1
    assert env["WOW_CACHE_TTL"] == "60"
    # Pods have no ordinal: agentd keeps replica 0 and learns its pod name instead.
    assert "AGENT_REPLICA" not in env
    assert env["AGENT_INSTANCE"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    secret_env = env_of(build_deployment(spec, NS, IMAGE, POD_REDIS, "waooaw-agent-redis"))
    assert secret_env["REDIS_URL"] == {
        "secretKeyRef": {"name": "waooaw-agent-redis", "key": "redis-url"}
    }
    configmap = build_configmap(spec, NS)
    assert json.loads(configmap["data"]["config.json"]) == spec.config


@pytest.mark.parametrize(
    "fields",
    [{"slug": "Wow_Cache"}, {"slug": "w" * 57}, {"version": "1.0.0+build.5"}, {"replicas": 0}],
)
def test_what_cannot_name_kubernetes_objects_is_refused_before_any_request(fields):
    nowhere = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
    runtime = KubernetesRuntime(NS, IMAGE, POD_REDIS, api_client=nowhere)
    with pytest.raises(RuntimeFailure) as failure:
        runtime.deploy(make_spec(**fields))
    assert failure.value.reason == "bad_config"


def test_revoking_an_agent_kubernetes_could_never_hold_deletes_nothing():
    nowhere = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
    runtime = KubernetesRuntime(NS, IMAGE, POD_REDIS, api_client=nowhere)
    details = runtime.remove(make_spec(slug="Wow_Cache"), purge=True)
    assert details["removed"] == []


def test_an_image_that_pins_a_tag_or_digest_is_used_as_it_is():
    spec = make_spec()
    for pinned in ("registry.test:5000/agentd:canary", "registry.test/agentd@sha256:" + "a" * 64):
        assert container(build_deployment(spec, NS, pinned, POD_REDIS))["image"] == pinned


# --- the manifests in deploy/kubernetes/ -------------------------------------------------------


@pytest.mark.parametrize("name", ["namespace.yaml", "rbac.yaml", "portal.yaml"])
def test_deploy_manifests_are_valid_kubernetes_objects(name):
    documents = manifest(name)
    assert documents
    for document in documents:
        validate(document)


def test_rbac_grants_only_what_the_runtime_uses_in_the_agents_namespace():
    documents = manifest("rbac.yaml")
    kinds = {document["kind"] for document in documents}
    assert kinds == {"ServiceAccount", "Role", "RoleBinding"}  # nothing cluster-wide
    role = next(d for d in documents if d["kind"] == "Role")
    assert role["metadata"]["namespace"] == NS
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    manage = {"get", "list", "watch", "create", "patch", "delete"}
    assert granted == {
        ("apps", "deployments"): manage,
        ("", "services"): manage,
        ("", "configmaps"): manage,
        ("", "pods"): {"get", "list", "watch"},
        ("", "pods/log"): {"get"},
        ("", "events"): {"get", "list", "watch"},
        ("metrics.k8s.io", "pods"): {"get", "list"},
    }
    binding = next(d for d in documents if d["kind"] == "RoleBinding")
    account = next(d for d in documents if d["kind"] == "ServiceAccount")
    assert binding["metadata"]["namespace"] == NS
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]


def test_the_portal_manifest_runs_every_process_of_the_image_as_the_portal_account():
    documents = manifest("portal.yaml")
    account = next(d for d in manifest("rbac.yaml") if d["kind"] == "ServiceAccount")
    workloads = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in documents
        if d["kind"] in ("Deployment", "Job")
    }
    assert set(workloads) == {"setup", "web", "worker", "beat", "monitor"}
    assert workloads["setup"]["kind"] == "Job"
    commands = {
        component: container(workload).get("command") for component, workload in workloads.items()
    }
    assert commands["setup"] == ["python", "manage.py", "setup"]
    assert commands["web"] is None  # the image's default: daphne
    assert commands["worker"][:4] == ["celery", "-A", "portal", "worker"]
    assert commands["beat"][:4] == ["celery", "-A", "portal", "beat"]
    assert commands["monitor"] == ["python", "manage.py", "monitor"]
    assert workloads["beat"]["spec"]["replicas"] == 1
    assert workloads["beat"]["spec"]["strategy"] == {"type": "Recreate"}
    settings = next(d for d in documents if d["kind"] == "ConfigMap")
    assert settings["data"]["AGENT_RUNTIME"] == "kubernetes"
    assert settings["data"]["KUBERNETES_NAMESPACE"] == NS
    for workload in workloads.values():
        pod = workload["spec"]["template"]["spec"]
        assert workload["metadata"]["namespace"] == account["metadata"]["namespace"]
        assert pod["serviceAccountName"] == account["metadata"]["name"]
        assert {"secretRef": {"name": "waooaw-portal"}} in container(workload)["envFrom"]
        assert pod["securityContext"]["runAsNonRoot"] is True


# --- against kmock: helpers ----------------------------------------------------------------------


def pod_object(
    slug: str,
    name: str,
    *,
    ready: bool = True,
    created: str = "2025-01-01T00:00:00Z",
    state: dict[str, Any] | None = None,
    last_state: dict[str, Any] | None = None,
    restarts: int = 0,
    annotations: dict[str, str] | None = None,
    resource_version: str | None = None,
) -> dict[str, Any]:
    """A pod as the API shows it once a ReplicaSet created it and the kubelet reported on it."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": NS,
        "uid": f"uid-{name}",
        "creationTimestamp": created,
        "labels": {
            "app.kubernetes.io/name": "waooaw-agent",
            "waooaw.agent": slug,
            "waooaw.managed": "true",
            "waooaw.version": "1.4.2",
        },
        "annotations": annotations or {},
    }
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "agentd", "image": f"{IMAGE}:1.4.2"}]},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {
                    "name": "agentd",
                    "ready": ready,
                    "restartCount": restarts,
                    "image": f"{IMAGE}:1.4.2",
                    "imageID": "",
                    "state": state or {"running": {"startedAt": created}},
                    "lastState": last_state or {},
                }
            ],
        },
    }


class Cluster:
    """Plays the controllers kmock does not have, on kmock's stored objects."""

    def __init__(self, kmock: Any) -> None:
        self.kmock = kmock
        self._created = 0

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            stored = self.kmock.objects[kind, NS, name]
        except KeyError:
            return None
        return None if stored.deleted else stored.raw

    def deployment(self, slug: str = "wow-cache") -> dict[str, Any] | None:
        return self.get(DEPLOYMENTS, f"waooaw-{slug}")

    def replicas(self, slug: str = "wow-cache") -> int | None:
        deployment = self.deployment(slug)
        return None if deployment is None else deployment["spec"]["replicas"]

    def pods(self, slug: str = "wow-cache") -> list[str]:
        return sorted(
            name
            for (resource, _, name), stored in self.kmock.objects.items()
            if resource.plural == "pods"
            and not stored.deleted
            and stored.raw["metadata"]["labels"].get("waooaw.agent") == slug
        )

    def add_pod(self, slug: str = "wow-cache", name: str | None = None, **fields: Any) -> str:
        """A new pod, younger than the ones before it."""
        self._created += 1
        name = name or f"waooaw-{slug}-7d9c5b8f4-p{self._created}"
        created = f"2025-01-01T00:00:{self._created:02d}Z"
        self.kmock.objects[PODS, NS, name] = pod_object(slug, name, created=created, **fields)
        return name

    def delete_pods(self, slug: str = "wow-cache") -> None:
        for name in self.pods(slug):
            self.kmock.objects[PODS, NS, name].delete()

    def report(self, slug: str = "wow-cache", ready: int | None = None) -> None:
        """The Deployment controller's status: the pods counted, ``ready`` of them ready."""
        pods = len(self.pods(slug))
        ready = pods if ready is None else ready
        self.kmock.objects[DEPLOYMENTS, NS, f"waooaw-{slug}"].patch(
            {
                "status": {
                    "replicas": pods,
                    "updatedReplicas": pods,
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                }
            }
        )

    async def scale_up(self, slug: str = "wow-cache", **pod_fields: Any) -> None:
        """Once the runtime has asked for N replicas: N ready pods, and the status saying so."""
        await wait_for(lambda: (self.replicas(slug) or 0) > 0, f"{slug} to be scaled up")
        for _ in range(self.replicas(slug) or 0):
            self.add_pod(slug, **pod_fields)
        self.report(slug)

    async def scale_down(self, slug: str = "wow-cache") -> None:
        await wait_for(lambda: self.replicas(slug) == 0, f"{slug} to be scaled to 0")
        self.delete_pods(slug)
        self.report(slug)


async def wait_for(condition: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def runtime_requests(kmock: Any, method: str, path_part: str = "") -> list[Any]:
    """The requests the runtime (not the test's own kmock client) made."""
    return [
        request
        for request in kmock
        if not request.headers.get("User-Agent", "").startswith("kmock")
        and str(request.method.value).upper() == method.upper()
        and path_part in request.url.path
    ]


@pytest.fixture
def runtime(kmock) -> KubernetesRuntime:
    # What a real API server serves even when empty (kmock answers 404 for undeclared ones).
    for resource in (DEPLOYMENTS, PODS, SERVICES, CONFIGMAPS, EVENTS):
        kmock.resources[resource] = {"namespaced": True}
    api_client = client.ApiClient(client.Configuration(host=str(kmock.url).rstrip("/")))
    runtime = KubernetesRuntime(NS, IMAGE, POD_REDIS, api_client=api_client)
    runtime.poll_interval = 0.02
    return runtime


@pytest.fixture
def cluster(kmock) -> Cluster:
    kmock[f"get /api/v1/namespaces/{NS}"] << {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NS},
    }
    return Cluster(kmock)


@pytest_asyncio.fixture
async def deployed(runtime, cluster) -> AgentSpec:
    spec = make_spec()
    await asyncio.to_thread(runtime.deploy, spec)
    return spec


@pytest_asyncio.fixture
async def running(runtime, cluster, deployed) -> AgentSpec:
    start = asyncio.create_task(asyncio.to_thread(runtime.start, deployed))
    await cluster.scale_up()
    await start
    return deployed


# --- provision and deploy ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_provision_checks_the_namespace_and_reserves_no_port(runtime, cluster):
    details = await asyncio.to_thread(runtime.provision, make_spec())
    assert details["namespace"] == NS
    assert details["ports"] == []
    assert details["namespace_created"] is False


@pytest.mark.asyncio
async def test_provision_without_read_access_to_namespaces_checks_its_role_instead(runtime, kmock):
    # A namespaced Role cannot read Namespace objects; listing Deployments in it is the proof.
    (
        kmock[f"get /api/v1/namespaces/{NS}"]
        << 403
        << {
            "kind": "Status",
            "code": 403,
            "reason": "Forbidden",
            "message": 'namespaces "waooaw-agents" is forbidden',
        }
    )
    details = await asyncio.to_thread(runtime.provision, make_spec())
    assert details["namespace"] == NS
    assert runtime_requests(kmock, "GET", f"/namespaces/{NS}/deployments")


@pytest.mark.asyncio
async def test_provision_refused_everywhere_says_to_apply_the_rbac_manifest(runtime, kmock):
    forbidden = {"kind": "Status", "code": 403, "reason": "Forbidden", "message": "forbidden"}
    kmock[f"get /api/v1/namespaces/{NS}"] << 403 << forbidden
    kmock[f"get /apis/apps/v1/namespaces/{NS}/deployments"] << 403 << forbidden
    with pytest.raises(RuntimeFailure) as failure:
        await asyncio.to_thread(runtime.provision, make_spec())
    assert failure.value.reason == "bad_config"
    assert "rbac.yaml" in failure.value.message


@pytest.mark.asyncio
async def test_deploy_creates_the_configmap_deployment_and_service(runtime, cluster):
    spec = make_spec()
    details = await asyncio.to_thread(runtime.deploy, spec)
    assert details["objects"] == {
        "configmap": "created",
        "deployment": "created",
        "service": "created",
    }
    assert details["image"] == f"{IMAGE}:1.4.2"
    deployment = cluster.get(DEPLOYMENTS, "waooaw-wow-cache")
    assert deployment == build_deployment(spec, NS, IMAGE, POD_REDIS)
    assert deployment["spec"]["replicas"] == 0  # deployed, not started
    service = cluster.get(SERVICES, "waooaw-wow-cache")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == 8080
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    configmap = cluster.get(CONFIGMAPS, "waooaw-wow-cache-config")
    assert json.loads(configmap["data"]["config.json"]) == spec.config
    assert configmap["metadata"]["labels"]["waooaw.managed"] == "true"
    assert cluster.pods() == []


@pytest.mark.asyncio
async def test_deploying_again_updates_the_objects_in_place(runtime, kmock, cluster, deployed):
    upgraded = make_spec(version="1.5.0", env={}, config={"task_max_failures": 5})
    details = await asyncio.to_thread(runtime.deploy, upgraded)
    assert set(details["objects"].values()) == {"updated"}
    patches = runtime_requests(kmock, "PATCH")
    assert len(patches) == 3
    assert {p.headers["Content-Type"] for p in patches} == {"application/merge-patch+json"}
    deployment = cluster.deployment()
    assert container(deployment)["image"] == f"{IMAGE}:1.5.0"
    assert "WOW_CACHE_TTL" not in env_of(deployment)  # lists are replaced whole
    assert deployment["metadata"]["labels"]["waooaw.version"] == "1.5.0"
    configmap = cluster.get(CONFIGMAPS, "waooaw-wow-cache-config")
    assert json.loads(configmap["data"]["config.json"]) == {"task_max_failures": 5}


# --- start, stop, suspend, resume, restart, remove -------------------------------------------


@pytest.mark.asyncio
async def test_start_scales_up_and_returns_once_the_pods_are_ready(
    runtime, kmock, cluster, deployed
):
    start = asyncio.create_task(asyncio.to_thread(runtime.start, deployed))
    await cluster.scale_up()
    details = await start
    assert cluster.replicas() == 2
    assert details["replicas"] == 2
    assert details["pods"] == cluster.pods()
    assert details["ports"] == []
    [scale] = runtime_requests(kmock, "PATCH", "/deployments/waooaw-wow-cache")
    assert scale.data["spec"] == {"replicas": 2}
    assert scale.data["metadata"]["annotations"]["waooaw.suspended"] == "false"


@pytest.mark.asyncio
async def test_start_is_readiness_gated(runtime, cluster, deployed):
    start = asyncio.create_task(asyncio.to_thread(runtime.start, deployed))
    await wait_for(lambda: cluster.replicas() == 2, "the scale-up")
    cluster.add_pod(ready=False)
    cluster.add_pod(ready=True)
    cluster.report(ready=1)
    await asyncio.sleep(0.2)
    assert not start.done()
    cluster.report(ready=2)
    await start


@pytest.mark.asyncio
async def test_start_reports_an_image_that_cannot_be_pulled_and_scales_back_down(
    runtime, cluster, deployed
):
    start = asyncio.create_task(asyncio.to_thread(runtime.start, deployed))
    await wait_for(lambda: cluster.replicas() == 2, "the scale-up")
    waiting = {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{IMAGE}:1.4.2"'}
    cluster.add_pod(ready=False, state={"waiting": waiting})
    with pytest.raises(RuntimeFailure) as failure:
        await start
    assert failure.value.reason == "image_missing"
    assert "ImagePullBackOff" in failure.value.message
    assert failure.value.details["pods"][0]["waiting"] == "ImagePullBackOff"
    assert cluster.replicas() == 0  # a failed start leaves nothing half-running


@pytest.mark.asyncio
async def test_start_reports_a_crash_loop_as_crashed_on_start(runtime, cluster, deployed):
    start = asyncio.create_task(asyncio.to_thread(runtime.start, deployed))
    await wait_for(lambda: cluster.replicas() == 2, "the scale-up")
    cluster.add_pod(
        ready=False,
        restarts=3,
        state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
        last_state={"terminated": {"exitCode": 2, "reason": "Error"}},
    )
    with pytest.raises(RuntimeFailure) as failure:
        await start
    assert failure.value.reason == "crashed_on_start"
    assert "exited with code 2" in failure.value.message
    assert failure.value.details["pods"][0]["restarts"] == 3


@pytest.mark.asyncio
async def test_a_start_that_never_gets_ready_is_not_ready_with_pod_statuses_and_events(
    runtime, kmock, cluster
):
    spec = make_spec(replicas=1, ready_timeout=0.5)
    await asyncio.to_thread(runtime.deploy, spec)
    pod = cluster.add_pod(ready=False)
    kmock.objects[EVENTS, NS, "e1"] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "e1", "namespace": NS},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": NS},
        "type": "Warning",
        "reason": "Unhealthy",
        "message": "Readiness probe failed: HTTP probe failed with statuscode: 503",
        "lastTimestamp": "2025-01-01T00:01:00Z",
    }
    kmock.objects[EVENTS, NS, "e2"] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "e2", "namespace": NS},
        "involvedObject": {"kind": "Pod", "name": "someone-else", "namespace": NS},
        "type": "Warning",
        "reason": "BackOff",
        "message": "not about this agent",
    }
    with pytest.raises(RuntimeFailure) as failure:
        await asyncio.to_thread(runtime.start, spec)
    assert failure.value.reason == "not_ready"
    details = failure.value.details
    assert details["pods"] == [
        {
            "pod": pod,
            "phase": "Running",
            "ready": False,
            "restarts": 0,
            "waiting": None,
            "message": None,
            "last_exit_code": None,
            "last_exit_reason": None,
        }
    ]
    assert [event["reason"] for event in details["events"]] == ["Unhealthy"]
    assert cluster.replicas() == 0


@pytest.mark.asyncio
async def test_starting_what_was_never_deployed_is_not_found(runtime, cluster):
    with pytest.raises(RuntimeFailure) as failure:
        await asyncio.to_thread(runtime.start, make_spec())
    assert failure.value.reason == "not_found"
    assert "deploy it first" in failure.value.message


@pytest.mark.asyncio
async def test_stop_scales_to_zero_and_waits_for_the_pods_to_go(runtime, kmock, cluster, running):
    pods = cluster.pods()
    stop = asyncio.create_task(asyncio.to_thread(runtime.stop, running))
    await cluster.scale_down()
    details = await stop
    assert details["replicas_before"] == 2
    assert details["pods"] == pods
    assert details["pods_still_terminating"] == []
    patch = runtime_requests(kmock, "PATCH", "/deployments/waooaw-wow-cache")[-1]
    assert patch.data["spec"] == {"replicas": 0}
    annotations = cluster.deployment()["metadata"]["annotations"]
    assert annotations["waooaw.suspended"] == "false"
    assert annotations["waooaw.stopped-at"]
    assert annotations["waooaw.replicas"] == "2"  # what the next start brings back
    status = await asyncio.to_thread(runtime.status, running)
    assert [replica.state for replica in status.replicas] == ["exited", "exited"]


@pytest.mark.asyncio
async def test_stopping_an_agent_that_has_no_deployment_is_not_an_error(runtime, cluster):
    details = await asyncio.to_thread(runtime.stop, make_spec())
    assert details["deployment_missing"] is True


@pytest.mark.asyncio
async def test_suspend_and_resume_keep_the_replica_count_and_show_as_paused(
    runtime, cluster, running
):
    suspend = asyncio.create_task(asyncio.to_thread(runtime.suspend, running))
    await cluster.scale_down()
    details = await suspend
    assert details["suspended"] is True
    annotations = cluster.deployment()["metadata"]["annotations"]
    assert annotations["waooaw.suspended"] == "true"
    assert annotations["waooaw.replicas"] == "2"
    status = await asyncio.to_thread(runtime.status, running)
    assert [replica.state for replica in status.replicas] == ["paused", "paused"]

    # Resume brings back what ran, even if the portal's spec now says otherwise.
    resume = asyncio.create_task(asyncio.to_thread(runtime.resume, make_spec(replicas=1)))
    await cluster.scale_up()
    details = await resume
    assert cluster.replicas() == 2
    assert details["replicas"] == 2
    assert cluster.deployment()["metadata"]["annotations"]["waooaw.suspended"] == "false"
    status = await asyncio.to_thread(runtime.status, running)
    assert [replica.state for replica in status.replicas] == ["running", "running"]


@pytest.mark.asyncio
async def test_suspend_needs_running_pods_and_resume_a_suspended_agent(runtime, cluster, deployed):
    with pytest.raises(RuntimeFailure) as failure:
        await asyncio.to_thread(runtime.suspend, deployed)
    assert failure.value.reason == "not_found"
    with pytest.raises(RuntimeFailure) as failure:
        await asyncio.to_thread(runtime.resume, deployed)
    assert failure.value.reason == "not_found"


@pytest.mark.asyncio
async def test_restart_rolls_the_pods_through_the_restarted_at_annotation(
    runtime, kmock, cluster, running
):
    old = cluster.pods()
    restart = asyncio.create_task(asyncio.to_thread(runtime.restart, running))

    def rolled_out() -> str | None:
        template = cluster.deployment()["spec"]["template"]["metadata"]
        return template.get("annotations", {}).get("kubectl.kubernetes.io/restartedAt")

    await wait_for(rolled_out, "the restart annotation")
    await asyncio.sleep(0.1)
    assert not restart.done()  # the old pods being ready is not a finished rollout
    # The new ReplicaSet's pods carry the template's annotations; the old ones go.
    restarted_at = rolled_out()
    for _ in old:
        cluster.add_pod(annotations={"kubectl.kubernetes.io/restartedAt": restarted_at})
    for name in old:
        kmock.objects[PODS, NS, name].delete()
    cluster.report()
    details = await restart
    assert details["rolled"] is True
    assert details["previous_pods"] == old
    assert sorted(details["pods"]) == cluster.pods()
    assert not set(details["pods"]) & set(old)
    patch = runtime_requests(kmock, "PATCH", "/deployments/waooaw-wow-cache")[-1]
    assert patch.data["spec"]["template"] == {
        "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": restarted_at}}
    }
    assert patch.headers["Content-Type"] == "application/merge-patch+json"


@pytest.mark.asyncio
async def test_restarting_a_scaled_down_agent_starts_it(runtime, cluster, deployed):
    restart = asyncio.create_task(asyncio.to_thread(runtime.restart, deployed))
    await cluster.scale_up()
    details = await restart
    assert details["rolled"] is False
    assert cluster.replicas() == 2


@pytest.mark.asyncio
async def test_remove_stops_and_deletes_the_deployment_service_and_configmap(
    runtime, kmock, cluster, running
):
    remove = asyncio.create_task(asyncio.to_thread(runtime.remove, running))
    await cluster.scale_down()
    details = await remove
    assert details["removed"] == [
        "Deployment/waooaw-wow-cache",
        "Service/waooaw-wow-cache",
        "ConfigMap/waooaw-wow-cache-config",
    ]
    assert details["stop"]["replicas_before"] == 2
    assert cluster.deployment() is None
    assert cluster.get(SERVICES, "waooaw-wow-cache") is None
    assert cluster.get(CONFIGMAPS, "waooaw-wow-cache-config") is None
    deletes = runtime_requests(kmock, "DELETE")
    assert {d.params["propagationPolicy"] for d in deletes} == {"Background"}
    # Removing again finds nothing to delete and is not an error.
    again = await asyncio.to_thread(runtime.remove, running)
    assert again["removed"] == []


# --- status and probe -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_status_reads_the_deployment_and_its_pods(runtime, cluster, deployed):
    spec = deployed
    status = await asyncio.to_thread(runtime.status, spec)
    assert [replica.state for replica in status.replicas] == ["created", "created"]

    cluster.kmock.objects[DEPLOYMENTS, NS, "waooaw-wow-cache"].patch({"spec": {"replicas": 3}})
    cluster.add_pod()
    cluster.add_pod(
        ready=False,
        restarts=4,
        state={"waiting": {"reason": "CrashLoopBackOff"}},
        last_state={
            "terminated": {"exitCode": 137, "reason": "Error", "startedAt": "2025-01-01T00:00:05Z"}
        },
    )
    status = await asyncio.to_thread(runtime.status, spec)
    first, second, third = status.replicas
    assert (first.state, first.port, first.started_at) == ("running", 8080, 1735689601.0)
    assert (second.state, second.exit_code, second.signal) == ("exited", 137, 9)
    assert third.state == "created"  # wanted, not yet scheduled

    cluster.kmock.objects[DEPLOYMENTS, NS, "waooaw-wow-cache"].delete()
    status = await asyncio.to_thread(runtime.status, spec)
    assert [replica.state for replica in status.replicas] == ["missing", "missing"]


@pytest.mark.asyncio
async def test_probe_answers_from_pod_readiness(runtime, cluster, running):
    assert await asyncio.to_thread(runtime.probe, running, {}) == ("healthy", "")

    first = cluster.pods()[0]
    cluster.kmock.objects[PODS, NS, first].patch(
        {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    )
    cluster.report(ready=1)
    health, detail = await asyncio.to_thread(runtime.probe, running, {})
    assert health == "degraded"
    assert detail.startswith("1 of 2 pods ready")
    assert first in detail

    cluster.report(ready=0)
    health, detail = await asyncio.to_thread(runtime.probe, running, {})
    assert (health, detail[:16]) == ("unhealthy", "0 of 2 pods read")

    cluster.kmock.objects[DEPLOYMENTS, NS, "waooaw-wow-cache"].delete()
    health, detail = await asyncio.to_thread(runtime.probe, running, {})
    assert health == "unhealthy"
    assert "not found" in detail


# --- events -------------------------------------------------------------------------------------


class EventReader:
    """Runs ``runtime.events()`` in a thread, as the monitor does, collecting what it yields."""

    def __init__(self, runtime: KubernetesRuntime, since_id: str | None = None) -> None:
        self.stop = threading.Event()
        self.events: queue.Queue[RuntimeEvent | BaseException] = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(runtime, since_id), daemon=True)

    def _read(self, runtime: KubernetesRuntime, since_id: str | None) -> None:
        try:
            for event in runtime.events(since_id, self.stop):
                self.events.put(event)
        except BaseException as exc:
            self.events.put(exc)

    async def next(self, timeout: float = 5.0) -> RuntimeEvent:
        item = await asyncio.to_thread(self.events.get, timeout=timeout)
        assert isinstance(item, RuntimeEvent), item
        return item

    async def close(self) -> None:
        self.stop.set()
        await asyncio.to_thread(self.thread.join, 5)
        assert not self.thread.is_alive()


async def started_reader(kmock: Any, runtime: KubernetesRuntime, since_id: str | None = None):
    reader = EventReader(runtime, since_id)
    reader.thread.start()
    await wait_for(
        lambda: len([r for r in runtime_requests(kmock, "GET") if r.params.get("watch")]) == 2,
        "the pod and Deployment watches",
    )
    return reader


@pytest.mark.asyncio
async def test_events_report_a_killed_container_as_exited(runtime, kmock, cluster, deployed):
    # A pod that crashed before the monitor started is history, not news.
    cluster.add_pod(
        name="waooaw-wow-cache-7d9c5b8f4-old",
        restarts=1,
        last_state={"terminated": {"exitCode": 1, "reason": "Error", "containerID": "c-0"}},
    )
    reader = await started_reader(kmock, runtime)
    try:
        pod = pod_object(
            "wow-cache", "waooaw-wow-cache-7d9c5b8f4-abcde", created="2025-01-01T00:01:00Z"
        )
        await kmock.post(f"/api/v1/namespaces/{NS}/pods", json=pod)
        killed = {
            "terminated": {
                "exitCode": 137,
                "reason": "Error",
                "containerID": "containerd://c-1",
                "startedAt": "2025-01-01T00:01:00Z",
                "finishedAt": "2025-01-01T00:02:00Z",
            }
        }
        status = pod["status"]["containerStatuses"][0]
        await kmock.patch(
            f"/api/v1/namespaces/{NS}/pods/waooaw-wow-cache-7d9c5b8f4-abcde",
            json={
                "metadata": {"resourceVersion": "4242"},
                "status": {
                    "containerStatuses": [{**status, "restartCount": 1, "lastState": killed}]
                },
            },
        )
        event = await reader.next()
        assert event.kind == "exited"
        assert (event.slug, event.exit_code, event.signal) == ("wow-cache", 137, 9)
        assert event.id == "4242"  # the resourceVersion: where a resumed watch starts
        assert event.at == 1735689720.0  # finishedAt
        assert event.replica == 1  # the second-oldest live pod of the agent
        assert event.details["pod"] == "waooaw-wow-cache-7d9c5b8f4-abcde"
        # The same termination, reported again with the next status change, is not news.
        await kmock.patch(
            f"/api/v1/namespaces/{NS}/pods/waooaw-wow-cache-7d9c5b8f4-abcde",
            json={"metadata": {"resourceVersion": "4243"}, "status": {"phase": "Running"}},
        )
        with pytest.raises(queue.Empty):
            await asyncio.to_thread(reader.events.get, timeout=0.3)
    finally:
        await reader.close()


@pytest.mark.asyncio
async def test_events_report_oom_and_removal_but_not_pods_being_deleted(
    runtime, kmock, cluster, deployed
):
    reader = await started_reader(kmock, runtime)
    try:
        name = "waooaw-wow-cache-7d9c5b8f4-oomed"
        await kmock.post(f"/api/v1/namespaces/{NS}/pods", json=pod_object("wow-cache", name))
        # A pod being deleted (stop, rollout) ends its container: asked for, not a crash.
        going = "waooaw-wow-cache-7d9c5b8f4-going"
        await kmock.post(f"/api/v1/namespaces/{NS}/pods", json=pod_object("wow-cache", going))
        await kmock.patch(
            f"/api/v1/namespaces/{NS}/pods/{going}",
            json={
                "metadata": {"deletionTimestamp": "2025-01-01T00:03:00Z"},
                "status": {
                    "containerStatuses": [
                        {
                            "name": "agentd",
                            "restartCount": 0,
                            "state": {"terminated": {"exitCode": 143, "reason": "Error"}},
                        }
                    ]
                },
            },
        )
        await kmock.patch(
            f"/api/v1/namespaces/{NS}/pods/{name}",
            json={
                "status": {
                    "containerStatuses": [
                        {
                            "name": "agentd",
                            "restartCount": 1,
                            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                        }
                    ]
                }
            },
        )
        event = await reader.next()
        assert (event.kind, event.exit_code) == ("oom", 137)
        assert event.details["oom"] is True

        await kmock.delete(f"/apis/apps/v1/namespaces/{NS}/deployments/waooaw-wow-cache")
        event = await reader.next()
        assert (event.kind, event.slug) == ("removed", "wow-cache")
    finally:
        await reader.close()


@pytest.mark.asyncio
async def test_events_resume_both_watches_from_the_given_resource_version(runtime, kmock, cluster):
    reader = await started_reader(kmock, runtime, since_id="1234")
    await reader.close()
    watches = [r for r in runtime_requests(kmock, "GET") if r.params.get("watch")]
    assert {r.url.path for r in watches} == {
        f"/api/v1/namespaces/{NS}/pods",
        f"/apis/apps/v1/namespaces/{NS}/deployments",
    }
    for watch in watches:
        assert watch.params["resourceVersion"] == "1234"
        assert watch.params["labelSelector"] == "waooaw.managed=true"
    # Resuming lists nothing: what happened after 1234 comes from the watch itself.
    assert not [r for r in runtime_requests(kmock, "GET") if not r.params.get("watch")]


# --- drift, reconcile, orphans ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_drift_finds_missing_objects_orphans_and_a_wrong_scale(runtime, cluster):
    cache, memory, search = make_spec(), make_spec(slug="wow-memory"), make_spec(slug="wow-search")
    for spec in (cache, memory, search):
        await asyncio.to_thread(runtime.deploy, spec)
    cluster.kmock.objects[DEPLOYMENTS, NS, "waooaw-wow-memory"].delete()  # behind our back
    cluster.kmock.objects[DEPLOYMENTS, NS, "waooaw-wow-cache"].patch({"spec": {"replicas": 2}})
    findings = await asyncio.to_thread(
        runtime.drift,
        [(cache, "STOPPED"), (memory, "RUNNING")],  # wow-search: not expected
    )
    by_kind = {(item["slug"], item["kind"]): item["message"] for item in findings}
    assert set(by_kind) == {
        ("wow-memory", "missing"),
        ("wow-cache", "unexpected_state"),
        ("wow-search", "orphan"),
    }
    assert by_kind["wow-memory", "missing"] == (
        f"Deployment waooaw-wow-memory is missing from namespace {NS}"
    )
    assert "STOPPED" in by_kind["wow-cache", "unexpected_state"]
    assert by_kind["wow-search", "orphan"].startswith("Deployment, Service, ConfigMap labelled")


@pytest.mark.asyncio
async def test_reconcile_scales_down_what_should_not_run_and_recreates_what_is_missing(
    runtime, cluster, running
):
    cluster.kmock.objects[SERVICES, NS, "waooaw-wow-cache"].delete()
    result = await asyncio.to_thread(runtime.reconcile, running, "SUSPENDED")
    assert result["actions"] == [
        "recreated Service waooaw-wow-cache",
        "scaled 2 replicas to 0 (the portal says SUSPENDED)",
    ]
    assert cluster.replicas() == 0
    assert cluster.deployment()["metadata"]["annotations"]["waooaw.suspended"] == "true"
    assert cluster.get(SERVICES, "waooaw-wow-cache") is not None

    cluster.kmock.objects[DEPLOYMENTS, NS, "waooaw-wow-cache"].delete()
    result = await asyncio.to_thread(runtime.reconcile, running, "RUNNING")
    assert result["actions"][0].startswith("recreated Deployment waooaw-wow-cache (0 replicas)")
    assert cluster.replicas() == 0  # never started by reconcile


@pytest.mark.asyncio
async def test_remove_orphan_deletes_only_what_is_labelled_for_that_slug(runtime, cluster):
    await asyncio.to_thread(runtime.deploy, make_spec(slug="wow-ghost"))
    await asyncio.to_thread(runtime.deploy, make_spec())
    result = await asyncio.to_thread(runtime.remove_orphan, "wow-ghost")
    assert sorted(result["removed"]) == [
        "ConfigMap/waooaw-wow-ghost-config",
        "Deployment/waooaw-wow-ghost",
        "Service/waooaw-wow-ghost",
    ]
    assert cluster.deployment("wow-ghost") is None
    assert cluster.deployment("wow-cache") is not None


@pytest.mark.asyncio
async def test_adopt_finds_the_agents_that_want_pods(runtime, cluster, running):
    await asyncio.to_thread(runtime.deploy, make_spec(slug="wow-memory"))
    assert await asyncio.to_thread(runtime.adopt) == ["wow-cache"]


# --- logs and stats -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_logs_come_from_the_pods_oldest_first_with_timestamps(
    runtime, kmock, cluster, running
):
    first, second = cluster.pods()
    kmock[f"get /api/v1/namespaces/{NS}/pods/{first}/log"] << (
        b'2025-01-01T00:00:01.000000001Z {"event": "started"}\n'
        b'2025-01-01T00:00:03.5Z {"event": "task_done"}\n'
    )
    kmock[f"get /api/v1/namespaces/{NS}/pods/{second}/log"] << (
        b'2025-01-01T00:00:02.250Z {"event": "started"}\n'
    )
    lines = await asyncio.to_thread(lambda: list(runtime.logs(running, tail=10)))
    assert [(line.replica, line.ts, line.text) for line in lines] == [
        (0, "2025-01-01T00:00:01.000Z", '{"event": "started"}'),
        (1, "2025-01-01T00:00:02.250Z", '{"event": "started"}'),
        (0, "2025-01-01T00:00:03.500Z", '{"event": "task_done"}'),
    ]
    reads = runtime_requests(kmock, "GET", "/log")
    assert {r.params["timestamps"] for r in reads} == {"true"}
    assert {r.params["tailLines"] for r in reads} == {"10"}
    assert {r.params["container"] for r in reads} == {"agentd"}

    only_second = await asyncio.to_thread(lambda: list(runtime.logs(running, replica=1, tail=None)))
    assert [line.replica for line in only_second] == [1]
    since = await asyncio.to_thread(
        lambda: list(runtime.logs(running, since=time.time() - 30, tail=None, replica=1))
    )
    assert since == []  # those lines are from 2025-01-01, long before
    # Whole seconds, rounded up so that no line after ``since`` is left out.
    assert runtime_requests(kmock, "GET", "/log")[-1].params["sinceSeconds"] in ("30", "31")


@pytest.mark.asyncio
async def test_following_logs_yields_new_lines_until_stopped(runtime, kmock, cluster, running):
    first = cluster.pods()[0]
    path = f"/api/v1/namespaces/{NS}/pods/{first}/log"
    kmock[f"get {path}?follow=true"] << (
        b"2025-01-01T00:00:01Z already read\n2025-01-01T00:00:04Z new line\n"
    )
    kmock[f"get {path}"] << b"2025-01-01T00:00:01Z already read\n"
    stop = threading.Event()
    threading.Timer(5, stop.set).start()  # however the test goes, the follower ends

    def follow() -> list[str]:
        seen = []
        for line in runtime.logs(running, tail=5, follow=True, stop=stop, replica=0):
            seen.append(line.text)
            if line.text == "new line":
                stop.set()
        return seen

    assert await asyncio.to_thread(follow) == ["already read", "new line"]
    followed = [r for r in runtime_requests(kmock, "GET", "/log") if r.params.get("follow")]
    assert followed and followed[0].params["timestamps"] == "true"


@pytest.mark.asyncio
async def test_stats_are_empty_without_a_metrics_api(runtime, cluster, running):
    assert await asyncio.to_thread(runtime.stats, running) == []


@pytest.mark.asyncio
async def test_stats_come_from_the_metrics_api(runtime, kmock, cluster, running):
    first, second = cluster.pods()

    def usage(name: str, cpu: str, memory: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "namespace": NS},
            "containers": [{"name": "agentd", "usage": {"cpu": cpu, "memory": memory}}],
        }

    kmock[f"get /apis/metrics.k8s.io/v1beta1/namespaces/{NS}/pods"] << {
        "kind": "PodMetricsList",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "items": [usage(second, "125000000n", "64Mi"), usage(first, "5m", "48828Ki")],
    }
    stats = await asyncio.to_thread(runtime.stats, running)
    assert [(s.replica, s.cpu_percent, s.memory_bytes) for s in stats] == [
        (0, 0.5, 48828 * 1024),
        (1, 12.5, 64 * 1024 * 1024),
    ]


# --- credentials and connection errors --------------------------------------------------------


def test_an_unreachable_api_server_is_engine_unreachable_and_says_to_check_kubeconfig():
    nowhere = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
    runtime = KubernetesRuntime(NS, IMAGE, POD_REDIS, api_client=nowhere)
    with pytest.raises(RuntimeFailure) as failure:
        runtime.deploy(make_spec())
    assert failure.value.reason == "engine_unreachable"
    assert "KUBECONFIG" in failure.value.message
    # The monitor starts even so: nothing to adopt, and the event stream waits for the API.
    assert runtime.adopt() == []
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    assert list(runtime.events(None, stop)) == []


def test_without_a_kubeconfig_the_failure_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    runtime = get_runtime("kubernetes", namespace=NS, image=IMAGE, redis_url=POD_REDIS)
    with pytest.raises(RuntimeFailure) as failure:
        runtime.status(make_spec())
    assert failure.value.reason == "engine_unreachable"
    assert str(tmp_path / "missing-kubeconfig") in failure.value.message


@pytest.mark.asyncio
async def test_credentials_come_from_kubeconfig_when_no_client_is_given(
    kmock, cluster, tmp_path, monkeypatch
):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
                "users": [{"name": "portal", "user": {"token": "portal-token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "portal"}}],
                "current-context": "kmock",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    runtime = get_runtime("kubernetes", namespace=NS, image=IMAGE, redis_url=POD_REDIS)
    details = await asyncio.to_thread(runtime.provision, make_spec())
    assert details["namespace"] == NS
    [read] = runtime_requests(kmock, "GET", f"/namespaces/{NS}")
    assert read.headers["Authorization"] == "Bearer portal-token"
