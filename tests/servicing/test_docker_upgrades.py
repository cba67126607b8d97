"""Upgrades end to end on the Docker runtime: WowCache as real containers of waooaw/agentd (the
1.0.0 image tagged 1.1.0 and 1.2.0 for the module), a load of tasks running throughout. A rolling
upgrade of two replicas, a faulty canary that trips the error gate and rolls back, and a
blue-green upgrade rolled back afterwards with its data volume's snapshot restored.

Like tests/agents/test_docker_agents.py: skipped without an engine, except with CI=true, where
they must run. WowCache gets a slug of its own per test, so its containers never meet another
test's; teardown revokes it (its containers and volume go) and removes whatever is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from agents import services as agent_services
from agents.models import Agent, Operation
from portal.actors import Actor
from servicing.models import Release, UpgradeStatus
from servicing.upgrades import requests, traffic
from tests.servicing.upgrade_kit import drive, versions_running

pytestmark = pytest.mark.docker

DOCKER_HOST = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
BASE_IMAGE = os.environ.get("AGENT_BASE_IMAGE") or "waooaw/agentd-base:bookworm"
REPOSITORY = "waooaw/agentd"
EXTRA_VERSIONS = ("1.1.0", "1.2.0")
QUICK = {"min_tasks": 60, "min_step_seconds": 1, "verify_seconds": 2}
FAULTY = {"faults": {"fail_rate": 0.2}, "task_max_failures": 5}
STATE_FILE = "/data/state.txt"


def _no_engine(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}; .ci/run starts dockerd and builds the images")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def engine() -> Iterator:
    """The real engine, with waooaw/agentd:1.0.0 built from the current sources and tagged
    1.1.0 and 1.2.0 for this module (the tags this made are removed afterwards)."""
    import docker
    import docker.errors

    from agents.runtimes.images import build_agent_image, image_exists

    try:
        client = docker.DockerClient(base_url=DOCKER_HOST, version="auto", timeout=120)
        client.ping()
    except docker.errors.DockerException:
        _no_engine("no Docker engine answers at DOCKER_HOST; CI installs one")
    if not image_exists(client, BASE_IMAGE):
        _no_engine(f"the agent base image {BASE_IMAGE} is missing; run "
                   "scripts/build-agent-base-image.sh")  # fmt: skip
    build_agent_image(client, "1.0.0", BASE_IMAGE, repository=REPOSITORY)
    base = client.images.get(f"{REPOSITORY}:1.0.0")
    tagged = []
    for version in EXTRA_VERSIONS:
        name = f"{REPOSITORY}:{version}"
        with contextlib.suppress(docker.errors.ImageNotFound):
            if client.images.get(name).id == base.id:
                continue  # there already, as this image (another run's): left as it is
        base.tag(REPOSITORY, version)
        tagged.append(name)
    yield client
    for name in tagged:
        with contextlib.suppress(docker.errors.NotFound):
            client.images.remove(name, noprune=True)
    client.close()


@pytest.fixture
def on_docker(engine, fleet, settings, redis_client, roots) -> Iterator:
    """``up(replicas)``: WowCache on the Docker runtime under a slug of this test, running."""
    import docker.errors

    settings.AGENT_RUNTIME = "docker"
    settings.DOCKER_HOST = DOCKER_HOST
    settings.AGENT_IMAGE = REPOSITORY
    settings.AGENT_DOCKER_NETWORK = "host"
    slug = f"wow-cache-{uuid.uuid4().hex[:6]}"
    Agent.objects.filter(pk=fleet["wow-cache"].pk).update(slug=slug, runtime="docker")
    actor = Actor.command("test")

    def up(replicas: int = 1) -> Agent:
        Agent.objects.filter(slug=slug).update(replicas=replicas)
        agent = Agent.objects.get(slug=slug)
        for action in ("provision", "deploy", "start"):
            operation = agent_services.request_action(agent, action, actor, enqueue=False)
            operation = agent_services.run_operation(str(operation.pk))
            assert operation.status == Operation.Status.SUCCEEDED, operation.error
        agent.refresh_from_db()
        return agent

    yield up
    agent = Agent.objects.get(slug=slug)
    Agent.objects.filter(pk=agent.pk).update(pending_action="", pending_since=None)
    with contextlib.suppress(Exception):
        operation = agent_services.request_action(agent, "revoke", actor, enqueue=False)
        agent_services.run_operation(str(operation.pk))
    for container in engine.containers.list(all=True, filters={"label": f"waooaw.agent={slug}"}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    with contextlib.suppress(docker.errors.NotFound):
        engine.volumes.get(f"waooaw-{slug}-data").remove(force=True)


# --- helpers ---------------------------------------------------------------------------------


def healthz(port: int) -> tuple[int | None, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}
    except OSError:
        return None, {}


def containers_of(engine, agent: Agent, *, live: bool = False) -> list:
    found = engine.containers.list(all=True, filters={"label": f"waooaw.agent={agent.slug}"})
    return [c for c in found if c.status in ("running", "paused")] if live else found


def runtime_versions(agent: Agent) -> dict[int, tuple[str, str]]:
    """The runtime's status: each replica's (state, version)."""
    status = agent_services.runtime_for(agent).status(traffic.spec(agent))
    return {replica.replica: (replica.state, replica.version) for replica in status.replicas}


def recorded_ports_answer(agent: Agent, version: str) -> None:
    agent.refresh_from_db()
    ports = agent.runtime_details["ports"][: agent.replicas]
    assert len(ports) == agent.replicas
    for port in ports:
        code, body = healthz(port)
        assert code == 200 and body.get("version") == version, (port, code, body)


def run_in(container, *command: str) -> str:
    code, output = container.exec_run(list(command))
    assert code == 0, output
    return output.decode()


def write_state(container, text: str) -> None:
    run_in(container, "python3", "-c", f"open({STATE_FILE!r}, 'w').write({text!r})")


def read_state(container) -> str:
    return run_in(container, "python3", "-c", f"print(open({STATE_FILE!r}).read(), end='')")


# --- the tests -------------------------------------------------------------------------------


def test_a_rolling_upgrade_replaces_both_containers_one_at_a_time(
    on_docker, engine, publish, load, operator_actor
):
    cache = on_docker(replicas=2)
    assert {c.labels["waooaw.version"] for c in containers_of(engine, cache, live=True)} == {
        "1.0.0"
    }
    publish("1.1.0")
    tasks = load(cache, "docker-rolling")

    upgrade = requests.request_upgrade(
        operator_actor, cache, "1.1.0", "rolling", gate_settings=QUICK
    )
    upgrade = drive(upgrade, timeout=120)
    answers = tasks.settle()

    assert upgrade.status == UpgradeStatus.SUCCEEDED, upgrade.outcome
    cache.refresh_from_db()
    assert cache.version == "1.1.0" and not cache.pending_action
    assert versions_running(cache) == {0: "1.1.0", 1: "1.1.0"}
    assert runtime_versions(cache) == {0: ("running", "1.1.0"), 1: ("running", "1.1.0")}
    live = containers_of(engine, cache, live=True)
    assert sorted(c.labels["waooaw.replica"] for c in live) == ["0", "1"]
    assert {c.labels["waooaw.version"] for c in live} == {"1.1.0"}
    assert {tag for c in live for tag in c.image.tags} >= {f"{REPOSITORY}:1.1.0"}
    assert len(containers_of(engine, cache)) == 2  # the surge replica is gone
    assert traffic.current_route(cache) is None
    recorded_ports_answer(cache, "1.1.0")
    by_version = tasks.check_exactly_once(answers)
    assert by_version["1.0.0"] > 0 and by_version["1.1.0"] > 0
    assert all(a["status"] == "succeeded" for a in answers)


def test_a_faulty_canary_trips_the_error_gate_and_its_container_goes(
    on_docker, engine, publish, load, operator_actor
):
    cache = on_docker()
    publish("1.2.0", FAULTY)
    tasks = load(cache, "docker-canary")

    upgrade = requests.request_upgrade(
        operator_actor, cache, "1.2.0", "canary", gate_settings=QUICK
    )
    upgrade = drive(upgrade, timeout=120)
    answers = tasks.settle()

    assert upgrade.status == UpgradeStatus.ROLLED_BACK, upgrade.outcome
    assert "error_rate" in upgrade.outcome
    tripped = next(row for row in upgrade.measurements if row.get("verdict") == "tripped")
    assert tripped["new"]["error_rate"] > 5
    cache.refresh_from_db()
    assert cache.version == "1.0.0" and not cache.pending_action
    # The canary's container (replica 1, beside the home) is deleted; the old one serves.
    (container,) = containers_of(engine, cache)
    assert container.labels["waooaw.replica"] == "0"
    assert container.labels["waooaw.version"] == "1.0.0" and container.status == "running"
    assert versions_running(cache) == {0: "1.0.0"}
    assert runtime_versions(cache) == {0: ("running", "1.0.0")}
    assert traffic.current_route(cache) is None
    recorded_ports_answer(cache, "1.0.0")
    bad = Release.objects.get(pk=upgrade.release_id)
    assert bad.pinned and "rolled back" in bad.pinned_reason
    tasks.check_exactly_once(answers)  # failed ones were dead-lettered, and answered


def test_a_finished_blue_green_rolls_back_with_the_volume_snapshot_restored(
    on_docker, engine, publish, load, operator_actor
):
    cache = on_docker()
    publish("1.1.0")
    tasks = load(cache, "docker-restore", rate=50)
    (old,) = containers_of(engine, cache, live=True)
    write_state(old, "before")

    upgrade = requests.request_upgrade(
        operator_actor, cache, "1.1.0", "blue-green", gate_settings={**QUICK, "min_tasks": 1}
    )
    upgrade = drive(upgrade, timeout=120)
    assert upgrade.status == UpgradeStatus.SUCCEEDED, upgrade.outcome
    assert upgrade.backup["data"]["files"] >= 1, upgrade.backup["data"]
    assert versions_running(cache) == {0: "1.1.0"}
    (new,) = containers_of(engine, cache, live=True)
    assert new.labels["waooaw.version"] == "1.1.0"
    assert read_state(new) == "before"  # the same volume
    write_state(new, "after")
    cache.refresh_from_db()

    back = requests.rollback_agent(
        operator_actor, cache, "bad data", restore_data=True, gate_settings=QUICK
    )
    assert back.downgrade and back.to_version == "1.0.0"
    back.refresh_from_db()
    assert "data restored" in back.outcome
    back = drive(back, timeout=120)
    answers = tasks.settle()

    assert back.status == UpgradeStatus.SUCCEEDED, back.outcome
    cache.refresh_from_db()
    assert cache.version == "1.0.0"
    assert versions_running(cache) == {0: "1.0.0"}
    assert runtime_versions(cache) == {0: ("running", "1.0.0")}
    (restored,) = containers_of(engine, cache, live=True)
    assert restored.labels["waooaw.version"] == "1.0.0"
    assert read_state(restored) == "before"
    assert traffic.current_route(cache) is None
    recorded_ports_answer(cache, "1.0.0")
    upgrade.release.refresh_from_db()
    assert upgrade.release.pinned  # the version rolled back from
    tasks.check_exactly_once(answers)
