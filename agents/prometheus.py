"""What the agents app tells ``/-/metrics`` when Prometheus scrapes: agents by state and
health, operations, bulk jobs and workflow runs by status (those in flight, and those finished
in the last hour), open errors by classification, and how long ago the monitor last probed a running agent.

Aggregate queries only (seven, whatever the fleet's size): the scrape must stay cheap at 5,000
agents. Every state, health and status is always present, at 0 when none, so a dashboard's
series do not vanish and reappear."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from django.db.models import Count, Max, Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from agents.choices import ErrorClass
from agents.models import Agent, AgentError, BulkOperation, Health, Operation, State
from agents.workflows.models import RunStatus, WorkflowRun

RECENT = timedelta(hours=1)


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
    pending = GaugeMetricFamily(
        "portal_agents_pending", "Agents with a lifecycle action under way (starting...)"
    )
    pending.add_metric([], counts["pending"])
    yield pending
    for model, statuses, name, what in (
        (Operation, Operation.Status.values, "portal_operations", "Lifecycle operations"),
        (BulkOperation, BulkOperation.Status.values, "portal_bulk_operations", "Bulk operations"),
        (WorkflowRun, RunStatus.values, "portal_workflow_runs", "Workflow runs"),
    ):
        yield _by_status(
            model, statuses, name, f"{what} in flight, and finished in the last hour, by status"
        )
    yield _open_errors()
    yield _probe_age()


def _by_status(model, statuses: list[str], name: str, help_text: str) -> GaugeMetricFamily:
    since = timezone.now() - RECENT
    found = dict(
        model.objects.filter(Q(finished_at__isnull=True) | Q(finished_at__gte=since))
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
    )
    family = GaugeMetricFamily(name, help_text, labels=["status"])
    for status in statuses:
        family.add_metric([status], found.get(status, 0))
    return family


def _open_errors() -> GaugeMetricFamily:
    found = dict(
        AgentError.objects.open().order_by().values_list("classification").annotate(n=Count("id"))
    )
    family = GaugeMetricFamily(
        "portal_open_errors", "Agent errors waiting for a person, by classification",
        labels=["classification"],
    )  # fmt: skip
    for classification in ErrorClass.values:
        family.add_metric([classification], found.get(classification, 0))
    return family


def _probe_age() -> GaugeMetricFamily:
    """The monitor's lag: it probes running agents on their intervals, so the newest check
    among them ages past those intervals only when the monitor is stopped or stuck."""
    newest = Agent.objects.filter(state=State.RUNNING, pending_action="").aggregate(
        at=Max("health_checked_at")
    )["at"]
    family = GaugeMetricFamily(
        "portal_monitor_probe_age_seconds",
        "Seconds since the monitor last probed a running agent (absent with none running)",
    )
    if newest is not None:
        family.add_metric([], max(0.0, (timezone.now() - newest).total_seconds()))
    return family
