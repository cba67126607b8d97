"""What observability adds to the dashboard (``portal.extensions``): for the fleet, the
dependency graph and the fleet's figures; focused on one agent, its open errors and alerts,
uptime, the last hour's charts and links to its other pages. Which agent is in focus is the
agent context (``observability.context.focus_for``). ``PANEL`` is what ``apps.py`` registers.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from agents.models import Agent, AgentError
from observability import context as agent_context
from observability import metrics, slo
from observability.context import query_string
from observability.figures import (
    CURRENT_WITHIN,
    DASHBOARD_CHARTS,
    RANGES,
    build_charts,
    fleet_current,
    uptime_text,
)
from observability.graph import dependency_graph
from observability.models import Alert
from portal import extensions
from portal.navigation import SECTIONS_BY_SLUG

# The sections an agent's dashboard links to, each filtered to the agent.
FOCUS_LINK_SECTIONS = ("errors", "logs", "events", "alerts", "metrics")


def fleet_metrics_now() -> dict:
    """The dashboard's fleet figures: uptime over 24 h, throughput and error rate now."""
    now = timezone.now()
    current = {
        item["label"]: item
        for item in fleet_current(metrics.latest_many(within=CURRENT_WITHIN, now=now).values())
    }
    return {
        "fleet_uptime_24h": uptime_text(metrics.uptime(None, timedelta(hours=24), now)),
        "fleet_throughput": current["Throughput"]["value"],
        "fleet_error_rate": current["Error rate"]["value"],
        "metrics_href": reverse("metrics:index") + query_string(agent=agent_context.ALL),
        "refresh_seconds": settings.METRICS_SCRAPE_INTERVAL_SECONDS,
    }


def fleet_dashboard() -> dict:
    """The fleet dashboard's additions: the dependency graph, the fleet's figures and the
    availability objectives."""
    return {**dependency_graph(), **fleet_metrics_now(), **slo.panel_context()}


def agent_dashboard(agent: Agent) -> dict:
    """A dashboard focused on one agent: its open errors and alerts, uptime, the last hour's
    CPU, throughput and error rate, and links to its logs, events, alerts and metrics."""
    now = timezone.now()
    open_errors = AgentError.objects.open().filter(agent=agent)
    links = []
    for slug in FOCUS_LINK_SECTIONS:
        section = SECTIONS_BY_SLUG.get(slug)
        if section is None:
            continue
        links.append(
            {
                "slug": slug,
                "title": section.title,
                "icon": section.icon,
                "href": section.href + query_string(agent=agent.slug),
            }
        )
    return {
        "focus_open_errors": list(open_errors.order_by("-last_seen_at", "-id")[:3]),
        "focus_open_error_count": open_errors.count(),
        "focus_open_alert_count": Alert.objects.filter(agent=agent, status__in=Alert.OPEN).count(),
        "focus_uptime_24h": uptime_text(metrics.uptime(agent, timedelta(hours=24), now)),
        "focus_charts": build_charts(
            agent, RANGES["1h"], now=now, keys=DASHBOARD_CHARTS, height=140
        ),
        "focus_links": links,
        "focus_alerts_href": next(
            (link["href"] for link in links if link["slug"] == "alerts"),
            reverse("metrics:index") + query_string(agent=agent.slug),
        ),
        "refresh_seconds": settings.METRICS_SCRAPE_INTERVAL_SECONDS,
        "clear_href": reverse("dashboard") + query_string(agent=agent_context.ALL),
    }


def panel_context(request, agent: Agent | None) -> dict:
    """The dashboard's context for the fleet (``agent`` None) or the agent in focus."""
    return agent_dashboard(agent) if agent is not None else fleet_dashboard()


PANEL = extensions.DashboardPanel(
    "metrics",
    panel_context,
    in_focus_refresh=True,
    regions={"fleet-health": ("portal/dashboard.html#fleet-health", fleet_metrics_now)},
)
