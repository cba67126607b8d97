"""What the agent pages and their live updates both render: an agent with its relations, a card's context, the detail page's extras, the fleet overview."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from django.core.exceptions import ValidationError
from django.db.models import Case, Prefetch, Q, Value, When
from django.http import Http404, HttpRequest
from django.utils import timezone

from agents import bulk, services
from agents.models import (
    ACTION_LABELS,
    Agent,
    Health,
    Operation,
    State,
    Tier,
)
from portal import extensions, roles
from portal.actors import Actor

logger = logging.getLogger(__name__)


LOG_LINES_ON_DETAIL = 20


def agents_with_relations():
    return Agent.objects.prefetch_related(
        Prefetch("dependencies", queryset=Agent.objects.only("id", "slug", "name", "state")),
        Prefetch("dependents", queryset=Agent.objects.only("id", "slug", "name", "state")),
        # One query for the whole list, not one per pending card.
        Prefetch(
            "operations",
            queryset=Operation.objects.filter(status__in=Operation.IN_FLIGHT),
            to_attr="in_flight_operations",
        ),
    )


def card_context(
    agent: Agent,
    actor: Actor,
    graph: services.DependencyGraph | None = None,
    extras: Mapping[int, list[str]] | None = None,
) -> dict:
    """What a card (or table row) needs. ``extras`` are the page's card extras, collected once
    for all its cards; without them this one card's are collected (one card, one call)."""
    if extras is None:
        extras = extensions.card_extras([agent])[0]
    context = {
        "agent": agent,
        "actions": services.available_actions(agent, actor, graph),
        "card_extras": extras.get(agent.pk, []),
    }
    if actor.has(roles.OPERATE):
        # The selection checkbox, with the bulk actions that would change this agent now: the
        # page's bulk toolbar offers those legal for at least one ticked agent.
        context["selectable"] = True
        context["agent_bulk_actions"] = " ".join(
            action for action in bulk.BULK_ACTIONS if bulk.steps_for(agent, action)[0]
        )
    if agent.pending_action and agent.in_flight_operations:
        # Polled with ?op=, so the poll that sees the operation finish can say how it went.
        context["pending_operation"] = agent.in_flight_operations[0]
    return context


def finished_toast(request: HttpRequest) -> dict:
    """A toast for the operation named by ``?op=`` once it has finished, else nothing."""
    operation_id = request.GET.get("op", "")
    if not operation_id:
        return {}
    try:
        operation = Operation.objects.select_related("agent").get(pk=operation_id)
    except (Operation.DoesNotExist, ValueError, ValidationError):
        return {}
    if not operation.is_finished:
        return {}
    toast, level = outcome_toast(operation)
    return {"toast": toast, "toast_level": level}


def outcome_toast(operation: Operation) -> tuple[str, str]:
    """What a finished operation's toast says, and its level (the poll's and the push's)."""
    label = ACTION_LABELS[operation.action][0]
    if operation.status == Operation.Status.SUCCEEDED:
        took = (
            f" in {operation.duration_seconds:.1f} s"
            if operation.duration_seconds is not None
            else ""
        )
        return f"{label} {operation.agent.name}: done{took}.", "success"
    return f"{label} {operation.agent.name} failed: {operation.error}", "error"


DASHBOARD_CARDS = 24


def dashboard_agents() -> list[Agent]:
    """The agents the dashboard shows a card for: the Platform CoE agents, then those that need
    a person (errored, unhealthy or degraded, an action in flight), at most ``DASHBOARD_CARDS``.
    A fleet of thousands is summed up by its counts; the Agents page pages through it all."""
    attention = (
        Q(tier=Tier.PLATFORM)
        | Q(state=State.ERRORED)
        | Q(health__in=[Health.UNHEALTHY, Health.DEGRADED])
        | ~Q(pending_action="")
    )
    first = Case(When(tier=Tier.PLATFORM, then=Value(0)), default=Value(1))
    return list(agents_with_relations().filter(attention).order_by(first, "name")[:DASHBOARD_CARDS])


def fleet_overview(request: HttpRequest, only: Agent | None = None) -> dict:
    """The dashboard's fleet part: counts and the cards of ``dashboard_agents`` (or ``only``
    that agent's)."""
    actor = Actor.from_request(request)
    if only is not None:
        agents = list(agents_with_relations().filter(pk=only.pk))
    else:
        agents = dashboard_agents()
    graph = services.DependencyGraph.load_linked()
    extras, page_extras = extensions.card_extras(agents)
    counts = Agent.objects.fleet_counts()
    return {
        "counts": counts,
        "cards": [card_context(agent, actor, graph, extras) for agent in agents],
        "card_page_extras": page_extras,
        "cards_not_shown": max(0, counts["total"] - len(agents)) if only is None else 0,
    }


def detail_extras(agent: Agent) -> dict:
    return {
        "transitions": agent.transitions.all()[:10],
        "last_operation": agent.operations.first(),
        "now": timezone.now(),
        # The status block points at the error panel while something there needs a person.
        "open_error_count": agent.errors.open().count(),
    }


def shows_counts(request: HttpRequest) -> bool:
    """Whether the page that asked shows the fleet counts (static/js/portal.js says so in a
    header), so that an answer never carries an out-of-band element its page lacks."""
    return request.headers.get("X-Shows-Fleet-Counts") == "1"


def get_agent_or_404(slug: str) -> Agent:
    try:
        return agents_with_relations().get(slug=slug)
    except Agent.DoesNotExist:
        raise Http404(f"There is no agent {slug!r}.") from None
