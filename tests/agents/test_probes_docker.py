"""Probes on Docker, against a real engine and real agent containers: the container's
HEALTHCHECK is the agent's liveness probe (its command, interval, timeout and failure
threshold), the engine reports a failing one unhealthy, and the portal's monitor runs exec
probes inside the container (``docker exec``)."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator

import docker
import docker.errors
import pytest

from agents import services
from agents.models import Agent, Health, Operation
from agents.monitor import Monitor
from agents.probes.schema import validate_probes
from agents.probes.services import set_probes
from agents.runtimes import AgentSpec
from agents.runtimes.docker import DockerRuntime, HealthCheck
from portal.actors import Actor

pytestmark = pytest.mark.docker

DOCKER_HOST = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
REPOSITORY = "waooaw/agentd"
VERSION = "1.0.0"
NANOSECONDS = 1_000_000_000
START_PERIOD = HealthCheck(interval=1, timeout=2, retries=2, start_period=1)


def remove_everything_of(engine: docker.DockerClient, slug: str) -> None:
    for container in engine.containers.list(all=True, filters={"label": f"waooaw.agent={slug}"}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    with contextlib.suppress(docker.errors.NotFound):
        engine.volumes.get(f"waooaw-{slug}-data").remove(force=True)


@pytest.fixture
def runtime(engine, redis_url: str) -> DockerRuntime:
    return DockerRuntime(DOCKER_HOST, REPOSITORY, redis_url, health=START_PERIOD)


@pytest.fixture
def deployed(runtime, engine, redis_url) -> Iterator[Callable[..., AgentSpec]]:
    """Provision and deploy an agent with these probes (``agents.probes.schema`` document);
    everything of it is removed at teardown."""
    slugs: list[str] = []

    def deploy(probes: dict) -> AgentSpec:
        slug = f"dp-{uuid.uuid4().hex[:10]}"
        slugs.append(slug)
        spec = AgentSpec(
            slug=slug, name=f"Agent {slug}", version=VERSION, redis_url=redis_url,
            memory_mb=128, grace_seconds=3, ready_timeout=15,
            probes=validate_probes(probes, 5),
        )  # fmt: skip
        ports = runtime.provision(spec)["ports"]
        spec = AgentSpec.from_dict({**spec.to_dict(), "ports": ports})
        runtime.deploy(spec)
        return spec

    yield deploy
    for slug in slugs:
        remove_everything_of(engine, slug)


def healthcheck(engine: docker.DockerClient, spec: AgentSpec) -> dict:
    return engine.api.inspect_container(f"waooaw-{spec.slug}-0")["Config"]["Healthcheck"]


def health_status(engine: docker.DockerClient, spec: AgentSpec) -> str | None:
    state = engine.api.inspect_container(f"waooaw-{spec.slug}-0")["State"]
    return (state.get("Health") or {}).get("Status")


def wait_for_health(engine, spec, wanted: str, timeout: float = 25) -> None:
    deadline = time.monotonic() + timeout
    while (status := health_status(engine, spec)) != wanted:
        assert time.monotonic() < deadline, f"health stayed {status!r}, never {wanted!r}"
        time.sleep(0.2)


def test_the_healthcheck_is_the_liveness_probe_of_each_kind(deployed, engine):
    timing = {"interval_seconds": 7, "timeout_seconds": 2.5, "failure_threshold": 4}
    exec_spec = deployed({"liveness": {"kind": "exec", "command": ["cat", "/tmp/ok"], **timing}})
    check = healthcheck(engine, exec_spec)
    assert check["Test"] == ["CMD", "cat", "/tmp/ok"]
    assert check["Interval"] == 7 * NANOSECONDS and check["Timeout"] == 2.5 * NANOSECONDS
    assert check["Retries"] == 4 and check["StartPeriod"] == 1 * NANOSECONDS

    tcp_check = healthcheck(engine, deployed({"liveness": {"kind": "tcp", "port": 9999, **timing}}))
    assert tcp_check["Test"][:3] == ["CMD", "python3", "-c"]
    assert "create_connection(('127.0.0.1', 9999)" in tcp_check["Test"][3]

    http_check = healthcheck(
        engine, deployed({"liveness": {"kind": "http", "path": "/live", "status": 204, **timing}})
    )
    assert "'/live'" in http_check["Test"][3] and "== 204" in http_check["Test"][3]

    # Without probe settings: the runtime's own check of /healthz, as before.
    default = healthcheck(engine, deployed({}))
    assert "/healthz" in " ".join(default["Test"]) and default["Retries"] == 2


def test_a_failing_exec_probe_makes_docker_report_the_container_unhealthy(
    runtime, deployed, engine
):
    timing = {"interval_seconds": 2, "timeout_seconds": 1, "failure_threshold": 2}
    spec = deployed({"liveness": {"kind": "exec", "command": ["false"], **timing}})
    runtime.start(spec)  # ready before the first check counts
    wait_for_health(engine, spec, "unhealthy")
    log = engine.api.inspect_container(f"waooaw-{spec.slug}-0")["State"]["Health"]
    assert log["FailingStreak"] >= 2 and log["Log"][-1]["ExitCode"] == 1


def test_the_http_and_tcp_checks_run_in_the_agent_image(runtime, deployed, engine):
    timing = {"interval_seconds": 2, "timeout_seconds": 1, "failure_threshold": 1}
    passing = [
        deployed({"liveness": {"kind": "tcp", **timing}}),  # the replica's own port
        deployed({"liveness": {"kind": "http", "path": "/healthz", "status": 200, **timing}}),
    ]
    for spec in passing:
        runtime.start(spec)
    for spec in passing:
        wait_for_health(engine, spec, "healthy")
    wrong_status = deployed({"liveness": {"kind": "http", "path": "/healthz", "status": 204,
                                           "interval_seconds": 2, "timeout_seconds": 1,
                                           "failure_threshold": 3}})  # fmt: skip
    runtime.start(wrong_status)
    wait_for_health(engine, wrong_status, "unhealthy")


def test_exec_probes_of_the_monitor_run_inside_the_container(runtime, deployed):
    spec = deployed({})
    runtime.start(spec)
    assert runtime.exec_probe(spec.slug, 0, ["true"], 5) == (True, "")
    assert runtime.exec_probe(spec.slug, 0, ["false"], 5) == (False, "exited with status 1")
    # The container's environment: the runtime gives agentd its slug there.
    sees_it = ["sh", "-c", f'test "$AGENT_SLUG" = {spec.slug}']
    assert runtime.exec_probe(spec.slug, 0, sees_it, 5) == (True, "")
    began = time.monotonic()
    assert runtime.exec_probe(spec.slug, 0, ["sleep", "5"], 1) == (
        False,
        "did not finish within 1 s",
    )
    assert time.monotonic() - began < 3
    ok, why = runtime.exec_probe(spec.slug, 4, ["true"], 5)
    assert not ok and why == f"container waooaw-{spec.slug}-4 not found"


# --- through the portal: the agent's settings reach the container and the monitor --------------


@pytest.fixture
def docker_cache(engine, transactional_db, settings, redis_client) -> Iterator[Agent]:
    settings.DOCKER_HOST = DOCKER_HOST
    settings.AGENT_IMAGE = REPOSITORY
    settings.AGENT_DOCKER_NETWORK = "host"
    services.seed_platform_agents(Actor.command("test"))
    slug = f"wow-cache-{uuid.uuid4().hex[:6]}"
    Agent.objects.filter(slug="wow-cache").update(slug=slug, runtime="docker")
    yield Agent.objects.get(slug=slug)
    remove_everything_of(engine, slug)


def test_an_agents_exec_probe_becomes_its_healthcheck_and_the_monitor_runs_it_in_the_container(
    docker_cache, act, engine
):
    # A long interval: the engine's own check does not run before the monitor's.
    liveness = {"kind": "exec", "command": ["false"], "interval_seconds": 60,
                "timeout_seconds": 5, "failure_threshold": 2}  # fmt: skip
    cache = set_probes(docker_cache, {"liveness": liveness}, Actor.command("test"))
    for action in ("provision", "deploy", "start"):
        assert act(cache, action).status == Operation.Status.SUCCEEDED
    container = engine.api.inspect_container(f"waooaw-{cache.slug}-0")
    assert container["Config"]["Healthcheck"]["Test"] == ["CMD", "false"]
    assert container["Config"]["Healthcheck"]["Retries"] == 2

    monitor = Monitor(runtimes=["docker"])
    monitor.probe_all()
    cache.refresh_from_db()
    assert cache.health != Health.UNHEALTHY  # one failure of the two it takes
    monitor.probe_all()
    cache.refresh_from_db()
    assert (cache.health, cache.health_detail) == (
        Health.UNHEALTHY,
        "replica 0 failing its liveness probe (exec false): exited with status 1",
    )
