"""Fixtures for agent tests: a private agent root per test, the seeded registry, and helpers
that drive agents through the real services (real processes on the local runtime)."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from agents import services
from agents.models import Agent, Operation
from portal.actors import Actor


def _kill_processes_under(root) -> None:
    marker = str(root)
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in process.info["cmdline"] or []):
                os.kill(process.pid, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass


@pytest.fixture(autouse=True)
def agent_root(tmp_path_factory, settings):
    """Every test gets its own agent directory; whatever it started is killed afterwards."""
    root = tmp_path_factory.mktemp("agents")
    settings.AGENT_ROOT = root
    settings.AGENT_READY_TIMEOUT_SECONDS = 15
    settings.AGENT_STOP_GRACE_SECONDS = 5
    yield root
    _kill_processes_under(root)


@pytest.fixture
def seeded(db):
    services.seed_platform_agents(Actor.command("test"))
    return {agent.slug: agent for agent in Agent.objects.all()}


@pytest.fixture
def act():
    """Request an action and carry it out here (as the worker would); returns the operation."""

    def run(agent: Agent, action: str, actor: Actor | None = None, **options) -> Operation:
        actor = actor or Actor.command("test")
        operation = services.request_action(agent, action, actor, enqueue=False, **options)
        operation = services.run_operation(str(operation.pk))
        agent.refresh_from_db()
        return operation

    return run


@pytest.fixture
def bring_up(act):
    """Take an agent from DRAFT to RUNNING with real processes."""

    def run(agent: Agent, actor: Actor | None = None) -> Agent:
        for action in ("provision", "deploy", "start"):
            operation = act(agent, action, actor)
            assert operation.status == Operation.Status.SUCCEEDED, operation.error
        return agent

    return run


# --- a real Docker engine (tests/agents/test_docker_*.py) -----------------------------------

DOCKER_HOST = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
# No registry here: the base image is the one built from Debian packages by .ci/run
# (scripts/build-agent-base-image.sh), as `manage.py agents build-image` would use it.
DOCKER_BASE_IMAGE = os.environ.get("AGENT_BASE_IMAGE") or "waooaw/agentd-base:bookworm"


def _no_engine(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}; .ci/run starts dockerd and builds the images")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def engine():
    """The real engine, with the agent image built from the current sources."""
    import docker

    from agents.runtimes.images import build_agent_image, image_exists

    try:
        client = docker.DockerClient(base_url=DOCKER_HOST, version="auto", timeout=120)
        client.ping()
    except docker.errors.DockerException:
        _no_engine("no Docker engine answers at DOCKER_HOST; CI installs one")
    if not image_exists(client, DOCKER_BASE_IMAGE):
        _no_engine(
            f"the agent base image {DOCKER_BASE_IMAGE} is missing; run scripts/build-agent-base-image.sh"
        )
    build_agent_image(client, "1.0.0", DOCKER_BASE_IMAGE, repository="waooaw/agentd")
    yield client
    client.close()
