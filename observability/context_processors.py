"""What the header's agent context switcher and the sidebar's alert badge need on every page.

Both are lazy: a fragment rendered for htmx or the WebSocket that does not show the header
costs no query. The switcher is one query (the agents, each marked if it is the user's chosen
context); the badge is ``alerts.open_counts()``.
"""

from __future__ import annotations

from functools import cached_property

from django.db.models import Case, Exists, OuterRef, Q, Value, When
from django.http import HttpRequest

from agents.models import Agent, State, Tier
from observability import alerts
from observability.models import AgentContext
from portal import roles

# The switcher's restart quick action: only when the state machine allows it now.
RESTARTABLE = (State.RUNNING, State.ERRORED)


SWITCHER_OPTIONS = 60


def switcher_options(user, *, limit: int, text: str = "") -> list[Agent]:
    """Agents to offer in the switcher, each marked ``chosen`` if it is ``user``'s context:
    the chosen one first, then the Platform CoE agents, then by name; those whose name or slug
    holds every word of ``text`` when given."""
    chosen = AgentContext.objects.filter(user_id=user.pk, agent_id=OuterRef("pk"))
    agents = (
        Agent.objects.exclude(state=State.REVOKED)
        .only("id", "slug", "name", "state", "pending_action", "tier")
        .annotate(chosen=Exists(chosen))
    )
    for word in text.lower().split()[:5]:
        agents = agents.filter(Q(name__icontains=word) | Q(slug__icontains=word))
    platform_first = Case(When(tier=Tier.PLATFORM, then=Value(0)), default=Value(1))
    listed = list(agents.order_by("-chosen", platform_first, "name")[:limit])
    return sorted(listed, key=lambda agent: agent.name.lower())


class Switcher:
    """The agents to choose from and the one chosen (None: all agents)."""

    def __init__(self, request: HttpRequest) -> None:
        self.user = request.user
        self.can_operate = roles.role_allows(roles.role_of(self.user), roles.OPERATE)

    @cached_property
    def agents(self) -> list[Agent]:
        """The chosen agent, then the Platform CoE agents, then the rest by name: at most
        ``SWITCHER_OPTIONS`` (a large fleet is searched on the server as one types)."""
        return switcher_options(self.user, limit=SWITCHER_OPTIONS)

    @cached_property
    def more(self) -> int:
        """Agents not listed; 0 when every one is (then the search filters the page's list)."""
        if len(self.agents) < SWITCHER_OPTIONS:
            return 0
        return max(0, Agent.objects.exclude(state=State.REVOKED).count() - len(self.agents))

    @cached_property
    def current(self) -> Agent | None:
        return next((agent for agent in self.agents if agent.chosen), None)

    @property
    def can_restart(self) -> bool:
        agent = self.current
        return (
            self.can_operate
            and agent is not None
            and agent.state in RESTARTABLE
            and not agent.pending_action
        )


class AlertBadge:
    """Open alerts in the whole fleet, and the worst severity among them (the badge colour)."""

    @cached_property
    def counts(self) -> dict[str, int]:
        return alerts.open_counts()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def severity(self) -> str:
        for severity in ("critical", "warning", "info"):
            if self.counts.get(severity):
                return severity
        return ""


def agent_context(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or roles.role_of(user) is None:
        return {}
    return {"switcher": Switcher(request), "alert_badge": AlertBadge()}
