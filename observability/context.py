"""The agent context: the one agent a user is looking at, chosen in the header's switcher.

It filters the Logs, Events, Alerts and Metrics pages and the dashboard. The choice is stored
per user (so it survives sign-out) and carried in the URL as ``?agent=<slug>`` (so a link shows
the same thing to whoever opens it); ``?agent=all`` goes back to the whole fleet.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.db import transaction
from django.http import HttpRequest

from agents.models import Agent, State
from observability.models import AgentContext
from portal import roles
from portal.actors import Actor
from portal.services import record_audit

PARAM = "agent"
ALL = "all"


@dataclass(frozen=True)
class Resolved:
    """What a request asked for: the agent (None: all agents), where to redirect so the URL
    shows a remembered choice, and a message for a slug that names no agent."""

    agent: Agent | None
    redirect_to: str | None = None
    problem: str = ""


def stored(user) -> Agent | None:
    if not getattr(user, "is_authenticated", False):
        return None
    row = AgentContext.objects.filter(user=user).select_related("agent").first()
    return row.agent if row and row.agent and row.agent.state != "REVOKED" else None


def choose(actor: Actor, agent: Agent | None) -> bool:
    """Remember ``agent`` (None: all agents) as the actor's context; answers whether it changed.
    Audited when it changes."""
    actor.require(roles.VIEW, "choose an agent context")
    user = actor.user
    if user is None or not user.pk:
        return False  # tokens and commands have no context to keep
    with transaction.atomic():
        row, _ = AgentContext.objects.select_for_update().get_or_create(user=user)
        if row.agent_id == (agent.pk if agent else None):
            return False
        row.agent = agent
        row.save(update_fields=["agent", "updated_at"])
        record_audit(actor, "context.choose", target=agent.slug if agent else ALL)
    return True


def resolve(request, actor: Actor) -> Resolved:
    """Read ``?agent=`` (remembering a new choice) or fall back to the remembered one, in which
    case the caller should redirect to ``redirect_to`` so the URL says what the page shows."""
    asked = request.GET.get(PARAM)
    if asked is None:
        agent = stored(request.user)
        if agent is None:
            return Resolved(None)
        return Resolved(agent, redirect_to=with_agent(request, agent.slug))
    asked = asked.strip()
    if asked in ("", ALL):
        choose(actor, None)
        return Resolved(None)
    agent = Agent.objects.filter(slug=asked).exclude(state="REVOKED").first()
    if agent is None:
        return Resolved(
            stored(request.user),
            problem=f"There is no agent called “{asked}”; showing "
            "your previous choice. Pick an agent from the switcher at the top.",
        )
    choose(actor, agent)
    return Resolved(agent)


def peek(request) -> Agent | None:
    """The agent ``?agent=`` names (else the remembered one) without remembering anything: for
    polls and live refreshes, so a tab left open cannot undo a choice made in another tab."""
    asked = request.GET.get(PARAM)
    if asked is None:
        return stored(request.user)
    asked = asked.strip()
    if asked in ("", ALL):
        return None
    return Agent.objects.filter(slug=asked).exclude(state="REVOKED").first()


def with_agent(request, slug: str | None) -> str:
    """The request's URL with ``?agent=`` set to ``slug`` (None: all agents), other query
    parameters kept; a page cursor is dropped because it belongs to the old filter."""
    params = request.GET.copy()
    params[PARAM] = slug or ALL
    for cursor in ("before", "after", "page"):
        params.pop(cursor, None)
    return f"{request.path}?{urlencode(sorted(params.lists()), doseq=True)}"


def focus_for(request: HttpRequest, actor: Actor, *, remember: bool = True) -> Resolved:
    """The agent context of a page request (remembered, redirected as ``context.resolve``
    decides), or, for a poll (``remember=False``), only what its URL says: a tab polling an old
    choice must not take back the choice just made in another tab."""
    if remember:
        return resolve(request, actor)
    slug = (request.GET.get(PARAM) or "").strip()
    if slug in ("", ALL):
        return Resolved(None)
    return Resolved(Agent.objects.filter(slug=slug).exclude(state=State.REVOKED).first())


def query_string(**params: str | None) -> str:
    """``?agent=wow-cache&range=1h`` from the parameters that have a value."""
    return "?" + urlencode({key: value for key, value in params.items() if value})
