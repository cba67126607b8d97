"""The dependency graph: on the fleet dashboard and on an agent's page (a detail panel, added
through ``portal.extensions``), each node taking its agent's new state live (topic ``graph``).
"""

from __future__ import annotations

import logging

from django.template.loader import render_to_string
from django.urls import reverse

from agents.events import AgentEvent
from agents.models import Agent, State
from observability import charts
from observability.context import query_string
from portal import realtime
from portal.actors import Actor

logger = logging.getLogger(__name__)

# The topic of pages showing the dependency graph (the dashboard, an agent's page).
GRAPH_TOPIC = "graph"


def graph_link(slug: str) -> str:
    """Where a node leads: the dashboard focused on that agent, which also sets the context."""
    return reverse("dashboard") + query_string(agent=slug)


def graph_data() -> tuple[list[charts.Node], list[tuple[str, str]]]:
    """Every agent not revoked, and who depends on whom: two queries."""
    agents = list(
        Agent.objects.exclude(state=State.REVOKED)
        .only("id", "slug", "name", "state", "tier", "health")
        .order_by("name")
    )
    slugs = {agent.pk: agent.slug for agent in agents}
    links = Agent.dependencies.through.objects.values_list("from_agent_id", "to_agent_id")
    edges = [
        (slugs[dependent], slugs[dependency])
        for dependent, dependency in links
        if dependent in slugs and dependency in slugs
    ]
    nodes = [
        charts.Node(agent.slug, agent.name, agent.state, agent.tier, agent.health)
        for agent in agents
    ]
    return nodes, sorted(edges)


def dependency_graph(focus: Agent | None = None) -> dict:
    """The graph panel's context; with ``focus``, that agent, what it depends on and what
    depends on it stand out."""
    nodes, edges = graph_data()
    context = {
        "graph": charts.dependency_graph(nodes, edges, link=graph_link),
        "node_count": len(nodes),
        "focus": focus,
    }
    if focus is not None:
        context["focus_dependencies"] = sorted({b for a, b in edges if a == focus.slug})
        context["focus_dependents"] = sorted({a for a, b in edges if b == focus.slug})
    return context


def graph_detail_panel(agent: Agent, actor: Actor) -> str:
    """The detail panel: the graph on an agent's own page."""
    return render_to_string("observability/graph_panel.html", dependency_graph(agent))


def on_agent_event(event: AgentEvent) -> None:
    """Listener for ``agents.events``: a node of every open graph takes the agent's new state.
    Never raises into the caller."""
    try:
        publish_graph_node(event)
    except Exception:
        logger.exception("could not push the graph node of %s", event.slug)


def publish_graph_node(event: AgentEvent) -> None:
    if event.kind not in ("transition", "health", "registry"):
        return  # what a node shows: name, state, health
    group = realtime.topic_group(GRAPH_TOPIC)
    if not realtime.watched([group]):
        return
    agent = (
        Agent.objects.only("id", "slug", "name", "state", "tier", "health")
        .filter(pk=event.agent_id)
        .first()
    )
    if agent is None or agent.state == State.REVOKED:
        return
    names = list(agent.dependencies.order_by("name").values_list("name", flat=True))
    node = charts.Node(agent.slug, agent.name, agent.state, agent.tier, agent.health)
    html = charts.dependency_graph_node(node, names, link=graph_link)
    realtime.publish(group, {f"graph-node-{agent.slug}": html})
