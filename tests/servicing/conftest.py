"""Fixtures for servicing tests: the 14 Platform agents, the factory's templates, and an actor
of each role."""

from __future__ import annotations

import pytest

from agents import services as agent_services
from agents.models import Agent
from factory.services import templates
from portal.actors import Actor


@pytest.fixture
def fleet(db) -> dict[str, Agent]:
    """The 14 Platform agents (in DRAFT, version 1.0.0) and the six templates, by slug."""
    actor = Actor.command("test")
    agent_services.seed_platform_agents(actor)
    templates.seed_templates(actor)
    return {agent.slug: agent for agent in Agent.objects.all()}


@pytest.fixture
def admin_actor(admin) -> Actor:
    return Actor(kind="user", user=admin, source="127.0.0.1")


@pytest.fixture
def operator_actor(operator) -> Actor:
    return Actor(kind="user", user=operator, source="127.0.0.1")


@pytest.fixture
def viewer_actor(viewer) -> Actor:
    return Actor(kind="user", user=viewer, source="127.0.0.1")
