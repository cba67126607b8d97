"""What the header's agent context switcher and the sidebar's alert badge need on every page.

Both are lazy: a fragment rendered for htmx or the WebSocket that does not show the header
costs no query. The switcher is one query (the agents, each marked if it is the user's chosen
context); the badge is ``alerts.open_counts()``.
"""

from __future__ import annotations

from functools import cached_property

from django.db.models import Exists, OuterRef
from django.http import HttpRequest

from agents.models import Agent, State
from observability import alerts
from observability.models import AgentContext
from portal import roles

# The switcher's restart quick action: only when the state machine allows it now.
RESTARTABLE = (State.RUNNING, State.ERRORED)


class Switcher:
    """The agents to choose from and the one chosen (None: all agents)."""

    def __init__(self, request: HttpRequest) -> None:
        self.user = request.user
        self.can_operate = roles.role_allows(roles.role_of(self.user), roles.OPERATE)

    @cached_property
    def agents(self) -> list[Agent]:
        chosen = AgentContext.objects.filter(user_id=self.user.pk, agent_id=OuterRef("pk"))
        return list(
            Agent.objects.exclude(state=State.REVOKED)
            .only("id", "slug", "name", "state", "pending_action")
            .annotate(chosen=Exists(chosen))
            .order_by("name")
        )

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
