"""Agents on Docker through the portal: the services every door calls, and the monitor, against a
real Docker engine (see test_docker_runtime.py for how the engine and the image are found).

The seeded registry's agents get slugs of their own per test (``wow-cache-1a2b3c``), so their
containers (``waooaw-wow-cache-1a2b3c-0``) never meet another test's; teardown deletes every
container and volume labelled with them.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import docker
import docker.errors
import pytest

from agents import services
from agents.models import Agent, Health, Operation, RestartPolicy, State
from agents.monitor import Monitor
from portal.actors import Actor

pytestmark = pytest.mark.docker

DOCKER_HOST = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
# The base image agents are built on (as `manage.py agents build-image` reads it); no registry
# here, so the default is the one built from Debian packages.
BASE_IMAGE = os.environ.get("AGENT_BASE_IMAGE") or "waooaw/agentd-base:bookworm"
REPOSITORY = "waooaw/agentd"
VERSION = "1.0.0"  # the registry's default version
MEBIBYTE = 1024 * 1024


@pytest.fixture
def fleet(engine, transactional_db, settings, redis_client) -> Iterator[dict[str, Agent]]:
    """The 14 Platform CoE agents registered on the Docker runtime, under slugs of this test;
    keyed by their catalogue slugs."""
    settings.AGENT_RUNTIME = "docker"
    settings.DOCKER_HOST = DOCKER_HOST
    settings.AGENT_IMAGE = REPOSITORY
    settings.AGENT_DOCKER_NETWORK = "host"
    services.seed_platform_agents(Actor.command("test"))
    suffix = uuid.uuid4().hex[:6]
    for agent in Agent.objects.all():
        Agent.objects.filter(pk=agent.pk).update(slug=f"{agent.slug}-{suffix}", runtime="docker")
    agents = {agent.slug.removesuffix(f"-{suffix}"): agent for agent in Agent.objects.all()}
    yield agents
    for agent in agents.values():
        for container in engine.containers.list(
            all=True, filters={"label": f"waooaw.agent={agent.slug}"}
        ):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            engine.volumes.get(f"waooaw-{agent.slug}-data").remove(force=True)


@pytest.fixture
def monitor(fleet) -> Iterator[Monitor]:
    """The monitor on the Docker runtime, running in a thread as ``manage.py monitor`` runs it."""
    instance = Monitor(probe_interval=1, runtimes=["docker"])
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    time.sleep(0.5)  # its event reader is listening
    yield instance
    instance.stop()
    thread.join(timeout=10)


def wait_for(predicate, timeout: float = 20, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def healthz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def containers_of(engine: docker.DockerClient, agent: Agent) -> list:
    return engine.containers.list(all=True, filters={"label": f"waooaw.agent={agent.slug}"})


def state_of(agent: Agent) -> str:
    return Agent.objects.values_list("state", flat=True).get(pk=agent.pk)


def succeeded(operation: Operation) -> bool:
    assert operation.status == Operation.Status.SUCCEEDED, operation.error
    return True


# --- deploy and start ---------------------------------------------------------------------


def test_wow_memory_deployed_and_started_runs_as_labelled_containers_with_limits_and_health(
    fleet, act, engine
):
    memory = fleet["wow-memory"]
    assert succeeded(act(memory, "provision"))
    assert succeeded(act(memory, "deploy"))
    (container,) = containers_of(engine, memory)
    assert container.status == "created"  # deployed, not started
    assert succeeded(act(memory, "start", with_dependencies=True))
    assert memory.state == State.RUNNING
    for slug in ("wow-cache", "wow-event", "wow-memory"):  # dependencies first, all running
        agent = Agent.objects.get(pk=fleet[slug].pk)
        assert agent.state == State.RUNNING
        (container,) = containers_of(engine, agent)
        assert container.name == f"waooaw-{agent.slug}-0"
        assert container.labels["waooaw.agent"] == agent.slug
        assert container.labels["waooaw.replica"] == "0"
        assert container.labels["waooaw.managed"] == "true"
        assert container.labels["waooaw.version"] == VERSION
        host = container.attrs["HostConfig"]
        assert host["Memory"] == agent.memory_mb * MEBIBYTE
        assert host["NanoCpus"] == agent.cpu_millicores * 1_000_000
        assert host["RestartPolicy"]["Name"] == "no"
        assert agent.runtime_details["container_ids"] == [container.id]
        assert healthz(agent.runtime_details["ports"][0]) == 200
    memory.refresh_from_db()
    assert memory.memory_mb == 1024 and memory.cpu_millicores == 500
    start = memory.transitions.get(action="start")
    assert start.details["container_ids"] == memory.runtime_details["container_ids"]
    # The engine's own health check (every 5 s, after a 5 s start period) reports it healthy.
    wait_for(
        lambda: (
            engine.api.inspect_container(memory.runtime_details["container_ids"][0])["State"][
                "Health"
            ]["Status"]
            == "healthy"
        ),
        timeout=25,
    )


def test_every_lifecycle_action_works_on_docker(fleet, act, bring_up, engine):
    cache = bring_up(fleet["wow-cache"])
    port = cache.runtime_details["ports"][0]
    assert succeeded(act(cache, "suspend"))
    assert containers_of(engine, cache)[0].status == "paused"
    assert succeeded(act(cache, "resume"))
    assert healthz(port) == 200
    assert succeeded(act(cache, "restart"))
    assert healthz(port) == 200
    assert succeeded(act(cache, "stop"))
    assert containers_of(engine, cache)[0].status == "exited"
    assert succeeded(act(cache, "start"))
    assert cache.state == State.RUNNING and healthz(port) == 200


def test_revoke_removes_the_containers_and_the_volume(fleet, act, bring_up, engine):
    cache = bring_up(fleet["wow-cache"])
    assert engine.volumes.get(f"waooaw-{cache.slug}-data")
    assert succeeded(act(cache, "revoke"))
    assert containers_of(engine, cache) == []
    with pytest.raises(docker.errors.NotFound):
        engine.volumes.get(f"waooaw-{cache.slug}-data")


# --- errors, recorded on the operation -------------------------------------------------------


def test_an_unreachable_engine_fails_the_action_with_a_clear_reason(fleet, act, settings, tmp_path):
    settings.DOCKER_HOST = f"unix://{tmp_path}/no-engine.sock"
    operation = act(fleet["wow-cache"], "provision")
    assert operation.status == Operation.Status.FAILED
    assert operation.error_reason == "engine_unreachable"
    assert "DOCKER_HOST" in operation.error
    assert state_of(fleet["wow-cache"]) == State.DRAFT


def test_a_missing_image_fails_deploy_with_the_command_that_builds_it(fleet, act):
    cache = fleet["wow-cache"]
    Agent.objects.filter(pk=cache.pk).update(version="9.9.9-never-built")
    cache.refresh_from_db()
    assert succeeded(act(cache, "provision"))
    operation = act(cache, "deploy")
    assert operation.status == Operation.Status.FAILED
    assert operation.error_reason == "image_missing"
    assert "agents build-image --version 9.9.9-never-built" in operation.error
    assert cache.state == State.PROVISIONED


def test_a_health_check_that_never_passes_fails_start_as_not_ready(fleet, act, settings):
    settings.AGENT_READY_TIMEOUT_SECONDS = 3
    cache = fleet["wow-cache"]
    Agent.objects.filter(pk=cache.pk).update(config={"faults": {"refuse_readiness": True}})
    cache.refresh_from_db()
    assert succeeded(act(cache, "provision"))
    assert succeeded(act(cache, "deploy"))
    operation = act(cache, "start")
    assert operation.status == Operation.Status.FAILED
    assert operation.error_reason == "not_ready"
    assert cache.state == State.DEPLOYED


# --- the monitor ----------------------------------------------------------------------------


def test_docker_kill_makes_the_agent_errored_and_the_monitor_restarts_it(
    fleet, bring_up, monitor, engine
):
    cache = bring_up(fleet["wow-cache"])
    container_id = cache.runtime_details["container_ids"][0]
    engine.containers.get(container_id).kill()

    failed = wait_for(lambda: cache.transitions.filter(action="fail").first())
    assert (failed.from_state, failed.to_state) == (State.RUNNING, State.ERRORED)
    assert failed.details["exit_code"] == 137 and failed.details["signal"] == 9
    # The monitor finds an exit by the engine's event or, when that event is late (a loaded
    # machine), by its next reconciliation: both read the same exit code from the engine.
    assert failed.actor in ("system:monitor", "system:reconciliation")
    assert failed.reason == "process killed by SIGKILL (exit code 137)"

    wait_for(
        lambda: (
            state_of(cache) == State.RUNNING and cache.transitions.filter(action="restart").exists()
        )
    )
    cache.refresh_from_db()
    restart = cache.transitions.get(action="restart")
    assert restart.actor == "system:monitor"
    assert restart.reason == "automatic restart #1 (policy on-failure)"
    assert cache.runtime_details["container_ids"] == [container_id]  # the same container, again
    assert engine.api.inspect_container(container_id)["State"]["Running"]
    assert healthz(cache.runtime_details["ports"][0]) == 200


def test_a_stop_the_portal_asked_for_is_not_a_crash(fleet, bring_up, monitor, act):
    cache = bring_up(fleet["wow-cache"])
    assert succeeded(act(cache, "stop"))
    time.sleep(1.5)  # the exit event has been read by now
    assert state_of(cache) == State.STOPPED
    assert not cache.transitions.filter(action="fail").exists()


def test_memory_over_the_limit_is_recorded_as_out_of_memory(fleet, bring_up, monitor):
    cache = fleet["wow-cache"]
    Agent.objects.filter(pk=cache.pk).update(memory_mb=64, restart_policy=RestartPolicy.NEVER)
    cache.refresh_from_db()
    bring_up(cache)
    port = cache.runtime_details["ports"][0]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/config",
        data=json.dumps({"faults": {"allocate_mb": 200}}).encode(),
        method="PATCH",
    )
    with contextlib.suppress(OSError):
        urllib.request.urlopen(request, timeout=3).close()
    failed = wait_for(lambda: cache.transitions.filter(action="fail").first())
    assert failed.details["oom"] is True
    assert failed.reason == "killed: out of memory"
    cache.refresh_from_db()
    assert cache.state == State.ERRORED and cache.health == Health.UNHEALTHY


def test_docker_rm_behind_the_portals_back_is_reported_as_drift_within_10_seconds(
    fleet, bring_up, monitor, engine
):
    cache = fleet["wow-cache"]
    Agent.objects.filter(pk=cache.pk).update(restart_policy=RestartPolicy.NEVER)
    cache.refresh_from_db()
    bring_up(cache)
    engine.containers.get(cache.runtime_details["container_ids"][0]).remove(force=True)
    removed_at = time.monotonic()
    wait_for(
        lambda: [d["kind"] for d in Agent.objects.get(pk=cache.pk).drift] == ["missing"],
        timeout=10,
    )
    assert time.monotonic() - removed_at < 10
    assert state_of(cache) == State.ERRORED  # its container died: a crash, not restarted


# --- drift and reconciliation ----------------------------------------------------------------


def test_check_drift_records_a_missing_container_and_reconcile_brings_it_back(
    fleet, bring_up, engine, operator_actor
):
    cache = bring_up(fleet["wow-cache"])
    engine.containers.get(cache.runtime_details["container_ids"][0]).remove(force=True)
    found = services.check_drift("docker")
    assert [d["kind"] for d in found[cache.slug]] == ["missing"]
    cache.refresh_from_db()
    assert [d["kind"] for d in cache.drift] == ["missing"]
    assert f"waooaw-{cache.slug}-0" in cache.drift[0]["message"]

    result = services.reconcile_agent(cache, operator_actor)
    name = f"waooaw-{cache.slug}-0"
    assert result["actions"] == [f"recreated {name}", f"started {name}"]
    cache.refresh_from_db()
    assert cache.drift == []
    assert healthz(cache.runtime_details["ports"][0]) == 200


def test_an_orphan_container_is_reported_and_reconcile_removes_it(fleet, engine, operator_actor):
    search = fleet["wow-search"]  # DRAFT: the portal has nothing of it on Docker
    engine.containers.create(
        f"{REPOSITORY}:{VERSION}",
        name=f"waooaw-{search.slug}-0",
        labels={"waooaw.managed": "true", "waooaw.agent": search.slug, "waooaw.replica": "0"},
    )
    found = services.check_drift("docker")
    assert [d["kind"] for d in found[search.slug]] == ["orphan"]
    search.refresh_from_db()
    assert [d["kind"] for d in search.drift] == ["orphan"]

    result = services.reconcile_agent(search, operator_actor)
    assert result["removed"] == [f"waooaw-{search.slug}-0"]
    assert containers_of(engine, search) == []
    search.refresh_from_db()
    assert search.drift == []
