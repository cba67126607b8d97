"""Fixtures for servicing tests: the 14 Platform agents, the factory's templates, and an actor
of each role."""

from __future__ import annotations

import contextlib
import os
import signal

import psutil
import pytest

from agents import services as agent_services
from agents.models import Agent, Operation
from factory.services import templates
from portal.actors import Actor
from servicing import services
from servicing.models import Release
from tests.servicing.upgrade_kit import Load


@pytest.fixture
def fleet(db) -> dict[str, Agent]:
    """The 14 Platform agents (in DRAFT, version 1.0.0) and the six templates, by slug."""
    actor = Actor.command("test")
    agent_services.seed_platform_agents(actor)
    templates.seed_templates(actor)
    return {agent.slug: agent for agent in Agent.objects.all()}


# --- upgrades: agents running on a private local runtime, releases, loads of tasks ----------


@pytest.fixture
def roots(tmp_path_factory, settings):
    agents_root = tmp_path_factory.mktemp("agents")
    settings.AGENT_ROOT = agents_root
    settings.SERVICING_BACKUP_ROOT = tmp_path_factory.mktemp("backups")
    settings.AGENT_READY_TIMEOUT_SECONDS = 15
    settings.AGENT_STOP_GRACE_SECONDS = 5
    yield agents_root
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if any(str(agents_root) in part for part in process.info["cmdline"] or []):
                os.kill(process.pid, signal.SIGKILL)


@pytest.fixture
def running(fleet, redis_client, roots):
    """Bring an agent up on the local runtime (its queue empty)."""

    def up(slug: str, replicas: int = 1) -> Agent:
        agent = fleet[slug]
        for key in redis_client.scan_iter(f"agents:{slug}:*"):
            redis_client.delete(key)
        Agent.objects.filter(pk=agent.pk).update(replicas=replicas)
        agent.refresh_from_db()
        actor = Actor.command("test")
        for action in ("provision", "deploy", "start"):
            operation = agent_services.request_action(agent, action, actor, enqueue=False)
            operation = agent_services.run_operation(str(operation.pk))
            assert operation.status == Operation.Status.SUCCEEDED, operation.error
        agent.refresh_from_db()
        return agent

    return up


@pytest.fixture
def publish(fleet):
    services.register_first_release(Actor.command("test"))  # 1.0.0, as `manage.py up` does

    def make(version: str, config_changes: dict | None = None) -> Release:
        return services.publish(
            Actor.command("test"), version, "local", f"Release {version}.", config_changes
        )

    return make


@pytest.fixture
def load():
    loads: list[Load] = []

    def start(agent: Agent, tag: str, rate: float = 150.0) -> Load:
        running_load = Load(agent.slug, tag, rate).start()
        loads.append(running_load)
        return running_load

    yield start
    for running_load in loads:
        running_load.stop()
