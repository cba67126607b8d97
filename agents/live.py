"""Agent events → HTML fragments pushed to the pages that show them.

One event is rendered once per group and access level: the card and table row for the fleet
pages (dashboard, agents list), the counters, the detail page's status block, and a toast for
the person whose action finished. The templates are the pages' own partials, so the markup
exists once.
"""

from __future__ import annotations

import logging

from django.template.loader import render_to_string

from agents.events import AgentEvent
from agents.models import ACTION_LABELS, Agent, Operation
from portal import realtime, roles
from portal.actors import Actor

logger = logging.getLogger(__name__)

# An actor standing for everyone at an access level, to decide which actions a menu offers.
_ACCESS_ACTORS = {
    realtime.ACCESS_VIEW: Actor(kind="system", source="live", assumed_role=roles.VIEWER),
    realtime.ACCESS_OPERATE: Actor(kind="system", source="live", assumed_role=roles.OPERATOR),
}


def on_agent_event(event: AgentEvent) -> None:
    """Listener for ``agents.events``: render and publish. Never raises into the caller."""
    try:
        publish_agent(event)
    except Exception:
        logger.exception("could not push the %s event of %s", event.kind, event.slug)


def publish_agent(event: AgentEvent) -> None:
    from agents.views import _agents_with_relations, _card_context, _detail_extras, fleet_counts

    try:
        agent = _agents_with_relations().get(pk=event.agent_id)
    except Agent.DoesNotExist:
        return
    groups = {
        access: {
            "fleet": realtime.fleet_group(access),
            "table": realtime.fleet_table_group(access),
            "agent": realtime.agent_group(agent.slug, access),
        }
        for access in _ACCESS_ACTORS
    }
    # Detail pages of its dependencies and dependents list this agent's state too.
    neighbours = {a.pk: a for a in [*agent.dependencies.all(), *agent.dependents.all()]}
    neighbour_groups = {
        pk: [realtime.agent_group(n.slug, access) for access in _ACCESS_ACTORS]
        for pk, n in neighbours.items()
    }
    watched = realtime.watched(
        [name for by_kind in groups.values() for name in by_kind.values()]
        + [name for names in neighbour_groups.values() for name in names]
    )
    watched_neighbours = [
        pk for pk, names in neighbour_groups.items() if watched.intersection(names)
    ]
    if watched_neighbours:
        for neighbour in _agents_with_relations().filter(pk__in=watched_neighbours):
            html = render_to_string("agents/agent_detail.html#deps", {"agent": neighbour})
            for name in neighbour_groups[neighbour.pk]:
                if name in watched:
                    realtime.publish(name, {"agent-deps": html})
    counts = None
    for access, actor in _ACCESS_ACTORS.items():
        names = groups[access]
        if not watched.intersection(names.values()):
            continue
        context = _card_context(agent, actor)
        if names["fleet"] in watched:
            if counts is None:
                counts = render_to_string(
                    "agents/agent_list.html#counts", {"counts": fleet_counts()}
                )
            card = render_to_string("agents/agent_list.html#card", context)
            realtime.publish(names["fleet"], {f"agent-{agent.slug}": card, "fleet-counts": counts})
        if names["table"] in watched:
            row = render_to_string("agents/agent_list.html#row", context)
            realtime.publish(names["table"], {f"agent-row-{agent.slug}": row})
        if names["agent"] in watched:
            status = render_to_string(
                "agents/agent_detail.html#status",
                {**context, **_detail_extras(agent), "from": "detail"},
            )
            realtime.publish(names["agent"], {"agent-status": status})
    operation_id = event.data.get("operation")
    if operation_id and event.kind in ("transition", "operation"):
        _publish_outcome(operation_id)


def _publish_outcome(operation_id: str) -> None:
    """Tell the person who asked for an operation how it ended (a toast), and its own group."""
    operation = Operation.objects.select_related("agent").filter(pk=operation_id).first()
    if operation is None or not operation.is_finished:
        return
    label = ACTION_LABELS[operation.action][0]
    if operation.status == Operation.Status.SUCCEEDED:
        took = (
            f" in {operation.duration_seconds:.1f} s"
            if operation.duration_seconds is not None
            else ""
        )
        toast, level = f"{label} {operation.agent.name}: done{took}.", "success"
    else:
        toast, level = f"{label} {operation.agent.name} failed: {operation.error}", "error"
    html = render_to_string("agents/agent_list.html#toast", {"toast": toast, "toast_level": level})
    if operation.user_id:
        realtime.publish(realtime.user_group(operation.user_id), {f"toast-{operation.pk}": html})
    realtime.publish(realtime.operation_group(operation.pk), {f"toast-{operation.pk}": html})
