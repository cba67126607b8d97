"""The dependency graph: on the fleet dashboard and on an agent's page (a detail panel, added
through ``portal.extensions``), drawn in the browser by portal's graph renderer
(``portal.graphs``), each node taking its agent's new state live (topic ``graph``).
"""

from __future__ import annotations

import logging

from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse

from agents.events import AgentEvent
from agents.models import Agent, State, Tier
from observability.context import query_string
from portal import graphs, realtime
from portal.actors import Actor

logger = logging.getLogger(__name__)

# The topic of pages showing the dependency graph (the dashboard, an agent's page).
GRAPH_TOPIC = "graph"
# The figure's element id prefix, the same on every page so that one push serves them all.
GRAPH_PREFIX = "dependencies"


# Up to this many agents every one is drawn; beyond, only those with dependencies (and the
# Platform CoE agents).
GRAPH_ALL_UP_TO = 60


def graph_link(slug: str) -> str:
    """Where a node leads: the dashboard focused on that agent, which also sets the context."""
    return reverse("dashboard") + query_string(agent=slug)


def agent_node(agent: Agent, dependency_names: list[str]) -> graphs.GraphNode:
    """An agent as a node: coloured by its state, which it also says in words with its health."""
    status = agent.state.upper()
    if agent.health and agent.health != "unknown":
        status += f" · {agent.health}"
    return graphs.GraphNode(
        id=agent.slug,
        label=agent.name,
        sublabel=status,
        kind="agent",
        status=agent.state,
        href=graph_link(agent.slug),
        title=f"{agent.name} ({status}). Depends on: {', '.join(dependency_names) or 'nothing'}.",
    )


def dependency_graph_data() -> graphs.Graph:
    """Every agent not revoked (in a large fleet, those with dependencies) and who depends on
    whom, arrows from an agent to what it depends on: two queries."""
    return _dependency_graph()[0]


def _dependency_graph() -> tuple[graphs.Graph, int]:
    """The graph, and how many agents (not revoked) there are in all."""
    links = list(Agent.dependencies.through.objects.values_list("from_agent_id", "to_agent_id"))
    agents_ = Agent.objects.exclude(state=State.REVOKED)
    total = agents_.count()
    if total > GRAPH_ALL_UP_TO:
        # A large fleet: the agents in the web of dependencies and the Platform CoE agents are
        # drawn; thousands of customer agents that depend on nothing would only be dots.
        linked = {pk for pair in links for pk in pair}
        agents_ = agents_.filter(Q(pk__in=linked) | Q(tier=Tier.PLATFORM))
    agents = list(agents_.only("id", "slug", "name", "state", "tier", "health").order_by("name"))
    by_pk = {agent.pk: agent for agent in agents}
    pairs = sorted(
        (
            (by_pk[dependent], by_pk[dependency])
            for dependent, dependency in links
            if dependent in by_pk and dependency in by_pk
        ),
        key=lambda pair: (pair[0].name, pair[1].name),
    )
    names: dict[str, list[str]] = {agent.slug: [] for agent in agents}
    for dependent, dependency in pairs:
        names[dependent.slug].append(dependency.name)
    graph = graphs.Graph(
        nodes=[agent_node(agent, names[agent.slug]) for agent in agents],
        edges=[graphs.GraphEdge(a.slug, b.slug) for a, b in pairs],
        direction="RIGHT",
        label="Agent dependencies",
        relation="depends on",
    )
    return graph, total


def dependency_graph(focus: Agent | None = None) -> dict:
    """The graph panel's context; with ``focus``, that agent, what it depends on and what
    depends on it stand out."""
    graph, total = _dependency_graph()
    context = {
        "graph": graph,
        "graph_prefix": GRAPH_PREFIX,
        "node_count": len(graph.nodes),
        "not_drawn": total - len(graph.nodes),
        "focus": focus,
    }
    if focus is not None:
        context["focus_dependencies"] = sorted(
            {e.target for e in graph.edges if e.source == focus.slug}
        )
        context["focus_dependents"] = sorted(
            {e.source for e in graph.edges if e.target == focus.slug}
        )
    return context


def graph_detail_panel(agent: Agent, actor: Actor) -> str:
    """The detail panel: the graph on an agent's own page."""
    return render_to_string("observability/graph_panel.html", dependency_graph(agent))


def on_agent_event(event: AgentEvent) -> None:
    """Listener for ``agents.events``: every open graph takes the agent's new state. Never
    raises into the caller."""
    try:
        publish_graph(event)
    except Exception:
        logger.exception("could not push the graph after %s of %s", event.kind, event.slug)


def publish_graph(event: AgentEvent) -> None:
    """The graph's data again, for the pages showing it: the renderer redraws only what
    changed (a node's state in place; a new or revoked agent lays the graph out again)."""
    if event.kind not in ("transition", "health", "registry"):
        return  # what the graph shows: agents, their dependencies, name, state, health
    group = realtime.topic_group(GRAPH_TOPIC)
    if not realtime.watched([group]):
        return
    realtime.publish(group, graphs.graph_fragments(dependency_graph_data(), GRAPH_PREFIX))
