"""Probe settings in the Kubernetes Deployment: each kind maps to the kubelet's probe of that
kind with the agent's timings, the objects stay valid Kubernetes objects, and the runtime sends
them to the API server (kmock, an in-memory Kubernetes API) on deploy."""

from __future__ import annotations

import asyncio
from typing import Any

import kubernetes_validate
import pytest
from kubernetes import client
from kubernetes_validate.utils import latest_version

from agents.probes.schema import validate_probes
from agents.runtimes import AgentSpec
from agents.runtimes.kubernetes import KubernetesRuntime
from agents.runtimes.kubernetes.objects import build_deployment

NS = "waooaw-agents"
IMAGE = "registry.test/waooaw/agentd"
POD_REDIS = "redis://redis.waooaw.svc:6379/0"
DEPLOYMENTS = "apps/v1/deployments"
TIMING = {"interval_seconds": 7, "timeout_seconds": 2.5, "failure_threshold": 4}


def spec_with(probes: dict[str, Any]) -> AgentSpec:
    return AgentSpec(
        slug="wow-cache",
        name="WowCache",
        version="1.4.2",
        redis_url="redis://127.0.0.1:6379/0",
        probes=validate_probes(probes, 5),
    )


def probes_of(deployment: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return container["livenessProbe"], container["readinessProbe"]


def validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, latest_version(), strict=True)


def test_http_tcp_and_exec_probes_map_to_the_kubelets_probes_with_their_timings():
    spec = spec_with(
        {
            "liveness": {"kind": "tcp", **TIMING, "success_threshold": 3},
            "readiness": {"kind": "exec", "command": ["cat", "/tmp/ready"], **TIMING,
                          "success_threshold": 2},
        }
    )  # fmt: skip
    deployment = build_deployment(spec, NS, IMAGE, POD_REDIS)
    validate(deployment)
    liveness, readiness = probes_of(deployment)
    assert liveness == {
        "tcpSocket": {"port": "http"},  # the agent's own port, by name
        "periodSeconds": 7,
        "timeoutSeconds": 3,  # whole seconds, rounded up
        "failureThreshold": 4,
        "successThreshold": 1,  # Kubernetes allows only 1 for liveness
        "initialDelaySeconds": 5,
    }
    assert readiness == {
        "exec": {"command": ["cat", "/tmp/ready"]},
        "periodSeconds": 7,
        "timeoutSeconds": 3,
        "failureThreshold": 4,
        "successThreshold": 2,
    }

    spec = spec_with(
        {
            "liveness": {"kind": "http", "path": "/healthz", "status": 200, **TIMING},
            "readiness": {"kind": "tcp", "port": 9090, **TIMING},
        }
    )
    deployment = build_deployment(spec, NS, IMAGE, POD_REDIS)
    validate(deployment)
    liveness, readiness = probes_of(deployment)
    assert liveness["httpGet"] == {"path": "/healthz", "port": "http"}
    assert readiness["tcpSocket"] == {"port": 9090}


def test_an_expected_status_outside_200_399_is_checked_exactly_by_a_command_in_the_pod():
    spec = spec_with({"readiness": {"kind": "http", "path": "/readyz", "status": 503, **TIMING}})
    deployment = build_deployment(spec, NS, IMAGE, POD_REDIS)
    validate(deployment)
    _, readiness = probes_of(deployment)
    command = readiness["exec"]["command"]
    assert command[:2] == ["python3", "-c"]
    assert "'/readyz'" in command[2] and "== 503" in command[2] and "8080" in command[2]
    assert "httpGet" not in readiness


def test_without_settings_the_deployment_keeps_its_default_probes():
    liveness, readiness = probes_of(build_deployment(spec_with({}), NS, IMAGE, POD_REDIS))
    assert liveness == {
        "httpGet": {"path": "/healthz", "port": "http"},
        "initialDelaySeconds": 5,
        "periodSeconds": 10,
        "timeoutSeconds": 2,
        "failureThreshold": 3,
    }
    assert readiness["httpGet"] == {"path": "/readyz", "port": "http"}


# --- through the API server (kmock) ------------------------------------------------------------


@pytest.fixture
def runtime(kmock) -> KubernetesRuntime:
    for resource in (DEPLOYMENTS, "v1/pods", "v1/services", "v1/configmaps", "v1/events"):
        kmock.resources[resource] = {"namespaced": True}
    kmock[f"get /api/v1/namespaces/{NS}"] << {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NS},
    }
    api_client = client.ApiClient(client.Configuration(host=str(kmock.url).rstrip("/")))
    runtime = KubernetesRuntime(NS, IMAGE, POD_REDIS, api_client=api_client)
    runtime.poll_interval = 0.02
    return runtime


def stored_deployment(kmock) -> dict[str, Any]:
    return kmock.objects[DEPLOYMENTS, NS, "waooaw-wow-cache"].raw


@pytest.mark.asyncio
async def test_deploy_sends_the_probes_and_a_new_deploy_replaces_them(runtime, kmock):
    first = spec_with({"liveness": {"kind": "exec", "command": ["sh", "-c", "true"], **TIMING}})
    await asyncio.to_thread(runtime.deploy, first)
    liveness, readiness = probes_of(stored_deployment(kmock))
    assert liveness["exec"] == {"command": ["sh", "-c", "true"]}
    assert liveness["periodSeconds"] == 7 and liveness["failureThreshold"] == 4
    assert readiness["httpGet"] == {"path": "/readyz", "port": "http"}

    second = spec_with({"liveness": {"kind": "tcp", **TIMING}})
    await asyncio.to_thread(runtime.deploy, second)
    liveness, _ = probes_of(stored_deployment(kmock))
    assert liveness["tcpSocket"] == {"port": "http"}
    assert "exec" not in liveness  # the container list is replaced whole by the merge patch
