"""Errors over time: recurring patterns, the error rate, counts by agent and class."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models import Count, Max, Min, Q, Sum
from django.utils import timezone

from agents.models import (
    Agent,
    AgentError,
)

logger = logging.getLogger(__name__)


# --- patterns ------------------------------------------------------------------------------------


def patterns(since=None, agent: Agent | None = None) -> list[dict]:
    """The same failure grouped: how often, on how many agents, first and last seen."""
    since = since or timezone.now() - timedelta(days=7)
    errors = AgentError.objects.filter(last_seen_at__gte=since)
    if agent is not None:
        errors = errors.filter(agent=agent)
    rows = (
        errors.values("signature", "pattern", "classification")
        .annotate(
            times=Sum("occurrences"),
            agents=Count("agent", distinct=True),
            first=Min("occurred_at"),
            last=Max("last_seen_at"),
            open=Count("id", filter=Q(status__in=AgentError.OPEN_STATUSES)),
        )
        .order_by("-times", "-last")
    )
    return [dict(row) for row in rows]


def error_rate(window: timedelta = timedelta(hours=1)) -> dict:
    """Errors seen in the last ``window`` and per hour over the last 24 h (dashboard)."""
    now = timezone.now()
    last_window = AgentError.objects.filter(last_seen_at__gte=now - window).aggregate(
        n=Sum("occurrences")
    )["n"]
    day = AgentError.objects.filter(last_seen_at__gte=now - timedelta(hours=24)).aggregate(
        n=Sum("occurrences")
    )["n"]
    return {
        "last_hour": last_window or 0,
        "per_hour_24h": round((day or 0) / 24, 2),
        "open": AgentError.objects.open().count(),
    }


def counts_by_agent_and_class(since=None) -> list[dict]:
    since = since or timezone.now() - timedelta(days=7)
    rows = (
        AgentError.objects.filter(last_seen_at__gte=since)
        .values("agent__slug", "agent__name", "classification")
        .annotate(times=Sum("occurrences"))
        .order_by("agent__name", "classification")
    )
    return [dict(row) for row in rows]
