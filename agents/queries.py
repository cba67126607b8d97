"""The read layer: the queries every door shares (pages, the JSON API, the commands, bulk).

A filter value that names nothing raises ``BadFilter`` with one sentence; each door prefixes
it with the parameter as it spells it (``state=`` on a page or the API, ``--state `` in a
command), so the same mistake gets the same answer everywhere. The models attach these as their
managers; this module names the other models only through the app registry (the models import
it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.db import models
from django.db.models import Count, Q

from agents.choices import ErrorClass, Health, Tier
from agents.lifecycle import ACTIONS, State
from portal.models import ActorKind
from portal.refusals import BadFilter

if TYPE_CHECKING:
    from agents.models import Agent, AgentError, AgentTransition  # noqa: F401 (for the types)


def _model(name: str) -> Any:
    return apps.get_model("agents", name)


class AgentQuerySet(models.QuerySet["Agent"]):
    """The agent reads every door shares: the list page, the API, the commands and bulk."""

    def search(self, text: str) -> AgentQuerySet:
        text = text.strip()
        if not text:
            return self
        return self.filter(
            Q(name__icontains=text) | Q(slug__icontains=text) | Q(description__icontains=text)
        )

    def filtered(
        self,
        *,
        state: str | None = None,
        tier: str | None = None,
        health: str | None = None,
        q: str = "",
    ) -> AgentQuerySet:
        """Agents matching every filter given (case-insensitive); a value that names no state,
        tier or health raises ``BadFilter`` with the one sentence every door shows."""
        agents = self.search(q or "")
        if state:
            agents = agents.filter(state=checked_choice("state", state, State, upper=True))
        if tier:
            agents = agents.filter(tier=checked_choice("tier", tier, Tier))
        if health:
            agents = agents.filter(health=checked_choice("health", health, Health))
        return agents

    def fleet_counts(self) -> dict:
        """Counts of agents by state and health, and what the fleet summary shows: the API's
        ``GET /metrics`` base and the dashboard's and list's counters."""
        # One query for the agents (a count per state and per health, and the pending), as the
        # live pushes ask for it on every change; one for the operations in flight.
        counts = self.aggregate(
            **{f"state_{state}": Count("id", filter=Q(state=state)) for state in State.values},
            **{
                f"health_{health}": Count("id", filter=Q(health=health)) for health in Health.values
            },
            pending=Count("id", filter=~Q(pending_action="")),
        )
        by_state = {state: counts[f"state_{state}"] for state in State.values}
        by_health = {health: counts[f"health_{health}"] for health in Health.values}
        return {
            "total": sum(by_state.values()),
            "by_state": by_state,
            "by_health": by_health,
            "pending": counts["pending"],
            "running": by_state[State.RUNNING],
            "errored": by_state[State.ERRORED],
            "idle": by_state[State.SUSPENDED] + by_state[State.STOPPED],
            "operations": _model("Operation")
            .objects.filter(status__in=_model("Operation").IN_FLIGHT)
            .count(),
        }


def checked_choice(
    field: str, value: object, choices, *, upper: bool = False, noun: str = ""
) -> str:
    """``value`` as one of ``choices`` (a TextChoices), or ``BadFilter`` naming them."""
    text = str(value).strip()
    text = text.upper() if upper else text.lower()
    if text not in choices.values:
        raise BadFilter(field, value, noun or field, list(choices.values))
    return text


class TransitionQuerySet(models.QuerySet["AgentTransition"]):
    def filtered(
        self,
        *,
        action: str | None = None,
        actor_kind: str | None = None,
        since=None,
        until=None,
    ) -> TransitionQuerySet:
        """Transitions matching every filter given (``since``/``until`` are dates, inclusive);
        an action or actor kind that names nothing raises ``BadFilter``."""
        rows = self
        if action:
            if action not in (*ACTIONS, "fail"):
                raise BadFilter("action", action, "lifecycle action", [*ACTIONS, "fail"])
            rows = rows.filter(action=action)
        if actor_kind:
            rows = rows.filter(actor_kind=checked_choice("actor_kind", actor_kind, ActorKind))
        if since:
            rows = rows.filter(at__date__gte=since)
        if until:
            rows = rows.filter(at__date__lte=until)
        return rows


class AgentErrorQuerySet(models.QuerySet["AgentError"]):
    """The error reads the Errors page, the API and the ``agents errors`` command share."""

    def open(self) -> AgentErrorQuerySet:
        """Errors still needing attention: open, or with a recovery under way."""
        return self.filter(status__in=self.model.OPEN_STATUSES)

    def closed(self) -> AgentErrorQuerySet:
        return self.exclude(status__in=self.model.OPEN_STATUSES)

    def filtered(
        self,
        *,
        status: str | None = None,
        classification: str | None = None,
        agent: str | None = None,
        signature: str | None = None,
    ) -> AgentErrorQuerySet:
        """Errors matching every filter given; ``status="active"`` means open or recovering.
        A value that names nothing raises ``BadFilter`` with the one sentence every door shows."""
        rows: AgentErrorQuerySet = self
        if status == "active":
            rows = rows.open()
        elif status:
            rows = rows.filter(
                status=checked_choice("status", status, self.model.Status, noun="error status")
            )
        if classification:
            rows = rows.filter(
                classification=checked_choice("classification", classification, ErrorClass)
            )
        if agent:
            if not _model("Agent").objects.filter(slug=agent).exists():
                raise BadFilter(
                    "agent", agent, "agent", [],
                    message=f"{agent!r} is not an agent; GET /api/platform/agents, the Agents page "
                    "and `manage.py agents list` list them.",
                )  # fmt: skip
            rows = rows.filter(agent__slug=agent)
        if signature:
            rows = rows.filter(signature=signature)
        return rows
