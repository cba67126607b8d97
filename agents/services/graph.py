"""The dependency graph of the fleet: the order many agents are acted on, what an agent needs
and who needs it."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.core.exceptions import ValidationError

from agents import lifecycle
from agents.models import (
    Agent,
)

logger = logging.getLogger(__name__)


# --- reading ----------------------------------------------------------------------------


def get_agent(slug: str) -> Agent:
    """The agent with this slug; ``Agent.DoesNotExist`` with a helpful message otherwise."""
    try:
        return Agent.objects.get(slug=slug)
    except Agent.DoesNotExist:
        raise Agent.DoesNotExist(
            f"There is no agent {slug!r}. `manage.py agents list` or the Agents page lists them."
        ) from None


def dependency_order(agents: Iterable[Agent]) -> list[Agent]:
    """The agents sorted so that each comes after everything it depends on (Kahn's algorithm)."""
    agents = list(agents)
    by_id = {agent.pk: agent for agent in agents}
    edges = {
        agent.pk: {dep.pk for dep in agent.dependencies.all() if dep.pk in by_id}
        for agent in agents
    }
    ordered: list[Agent] = []
    ready = sorted((pk for pk, deps in edges.items() if not deps), key=lambda pk: by_id[pk].name)
    while ready:
        pk = ready.pop(0)
        ordered.append(by_id[pk])
        for other, deps in edges.items():
            if pk in deps:
                deps.discard(pk)
                if not deps and by_id[other] not in ordered and other not in ready:
                    ready.append(other)
                    ready.sort(key=lambda key: by_id[key].name)
    if len(ordered) != len(agents):
        cyclic = sorted(by_id[pk].name for pk, deps in edges.items() if deps)
        raise ValueError(f"The dependencies of {', '.join(cyclic)} form a cycle.")
    return ordered


def in_action_order(action: str, agents: Iterable[Agent]) -> list[Agent]:
    """The order in which every door acts on many agents: dependencies first for an action that
    brings agents up, dependents first for one that takes them down (agents.lifecycle)."""
    return lifecycle.in_order(action, dependency_order(agents))


class DependencyGraph:
    """Who depends on whom, for the whole registry, loaded in two queries.

    Menus check every card's dependencies; loading the graph once per page keeps that from
    costing a query per dependency per card.
    """

    def __init__(self, agents: dict[int, Agent], edges: dict[int, set[int]]) -> None:
        self.agents = agents
        self.edges = edges
        # What else a page asks once for all its agents (the pinned versions, say).
        self.memo: dict[str, object] = {}

    @classmethod
    def load(cls) -> DependencyGraph:
        agents = {agent.pk: agent for agent in Agent.objects.only("id", "slug", "name", "state")}
        edges: dict[int, set[int]] = {pk: set() for pk in agents}
        through = Agent.dependencies.through.objects.values_list("from_agent_id", "to_agent_id")
        for dependent_id, dependency_id in through:
            edges.setdefault(dependent_id, set()).add(dependency_id)
        return cls(agents, edges)

    @classmethod
    def load_linked(cls) -> DependencyGraph:
        """The graph with only the agents that depend on another or are depended on: enough to
        check a page of cards, without loading every agent of a fleet of thousands."""
        through = list(
            Agent.dependencies.through.objects.values_list("from_agent_id", "to_agent_id")
        )
        linked = {pk for pair in through for pk in pair}
        agents = {
            agent.pk: agent
            for agent in Agent.objects.filter(pk__in=linked).only("id", "slug", "name", "state")
        }
        edges: dict[int, set[int]] = {pk: set() for pk in agents}
        for dependent_id, dependency_id in through:
            edges.setdefault(dependent_id, set()).add(dependency_id)
        return cls(agents, edges)

    def transitive(self, agent_id: int) -> list[Agent]:
        """Everything ``agent_id`` needs, directly or not, dependencies first."""
        needed: set[int] = set()
        stack = list(self.edges.get(agent_id, ()))
        while stack:
            pk = stack.pop()
            if pk not in needed:
                needed.add(pk)
                stack.extend(self.edges.get(pk, ()))
        ordered: list[Agent] = []
        placed: set[int] = set()
        pending = sorted(needed, key=lambda pk: self.agents[pk].name)
        while pending:
            ready = [pk for pk in pending if self.edges.get(pk, set()) & needed <= placed]
            if not ready:
                raise ValueError(
                    "The dependencies of "
                    + ", ".join(sorted(self.agents[pk].name for pk in pending))
                    + " form a cycle."
                )
            for pk in ready:
                ordered.append(self.agents[pk])
                placed.add(pk)
            pending = [pk for pk in pending if pk not in placed]
        return ordered

    def would_cycle(self, agent_id: int, dependency_ids: Iterable[int]) -> Agent | None:
        """The first proposed dependency that already (transitively) needs ``agent_id``."""
        for pk in dependency_ids:
            if pk == agent_id or any(a.pk == agent_id for a in self.transitive(pk)):
                return self.agents.get(pk)
        return None


def transitive_dependencies(agent: Agent, graph: DependencyGraph | None = None) -> list[Agent]:
    """Everything ``agent`` needs, directly or not, dependencies first."""
    return (graph or DependencyGraph.load()).transitive(agent.pk)


def check_dependencies_acyclic(agent: Agent, dependencies: Iterable[Agent]) -> None:
    """Refuse dependencies that would make a cycle (start order, menus and seeding need none)."""
    dependencies = list(dependencies)
    if agent._state.adding:  # not saved yet: nothing can depend on it
        return
    if any(dependency.pk == agent.pk for dependency in dependencies):
        raise ValidationError(f"{agent.name} cannot depend on itself.")
    culprit = DependencyGraph.load().would_cycle(agent.pk, [d.pk for d in dependencies])
    if culprit is not None:
        raise ValidationError(
            f"{culprit.name} already depends on {agent.name}; depending on it back would make a cycle."
        )


def names_of(agents: Iterable[Agent], with_state: bool = True) -> str:
    parts = [f"{a.name} ({a.state})" if with_state else a.name for a in agents]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]
