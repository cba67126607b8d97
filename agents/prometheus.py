"""What the agents app tells ``/-/metrics`` at scrape time: agents by state and health,
operations and bulk jobs by status (those in flight, and those finished in the last hour), open
errors, and how long ago the monitor last probed a running agent. Five aggregate queries,
whatever the fleet's size."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from django.db.models import Count, Max, Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from agents.models import Agent, AgentError, BulkOperation, Health, Operation, State

RECENT = timedelta(hours=1)


def _by_status(model, name: str, help_text: str) -> GaugeMetricFamily:
    since = timezone.now() - RECENT
    rows = (
        model.objects.filter(Q(finished_at__isnull=True) | Q(finished_at__gte=since))
        .values_list("status")
        .annotate(n=Count("id"))
    )
    found = dict(rows)
    family = GaugeMetricFamily(name, help_text, labels=["status"])
    for status in model.Status.values:
        family.add_metric([status], found.get(status, 0))
    return family


def collect() -> Iterable[Metric]:
    counts = Agent.objects.fleet_counts()
    agents = GaugeMetricFamily("portal_agents", "Registered agents by state", labels=["state"])
    for state in State.values:
        agents.add_metric([state], counts["by_state"][state])
    yield agents
    health = GaugeMetricFamily("portal_agents_health", "Agents by health", labels=["health"])
    for value in Health.values:
        health.add_metric([value], counts["by_health"][value])
    yield health
    yield _by_status(Operation, "portal_operations",
                     "Lifecycle operations in flight, and finished in the last hour, by status")  # fmt: skip
    yield _by_status(BulkOperation, "portal_bulk_operations",
                     "Bulk operations in flight, and finished in the last hour, by status")  # fmt: skip
    errors = GaugeMetricFamily("portal_open_errors", "Agent errors waiting for a person")
    errors.add_metric([], AgentError.objects.open().count())
    yield errors
    newest = Agent.objects.filter(state=State.RUNNING, pending_action="").aggregate(
        at=Max("health_checked_at")
    )["at"]
    lag = GaugeMetricFamily(
        "portal_monitor_probe_age_seconds",
        "Seconds since the monitor last probed a running agent (absent with none running)",
    )
    if newest is not None:
        lag.add_metric([], (timezone.now() - newest).total_seconds())
    yield lag
