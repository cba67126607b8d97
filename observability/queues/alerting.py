"""Alert rules on queue figures (backlog, lag, oldest message, dead-letter inflow): the rule
engine in ``observability.alerts`` asks here for the agents whose task queue broke a rule, from
the queue samples, the same way it reads agent metrics."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Max, Min

from agents.agentd import contract
from agents.models import Agent
from observability.models import AlertRule
from observability.queues.models import QueueSample

# Queue rules read the agent's task queue's samples: rule metric -> QueueSample column.
QUEUE_COLUMNS: dict[str, str] = {
    AlertRule.Metric.QUEUE_BACKLOG: "pending",
    AlertRule.Metric.QUEUE_LAG: "lag_seconds",
    AlertRule.Metric.QUEUE_OLDEST: "oldest_age_seconds",
    AlertRule.Metric.DLQ_INFLOW: "dlq_inflow",
}


def findings(
    rule: AlertRule, agents: dict[int, Agent], now: datetime
) -> list[tuple[Agent, float | None, str]]:
    """As for agent metrics, from the samples of each agent's task queue."""
    interval = settings.QUEUE_SAMPLE_INTERVAL_SECONDS
    span = max(rule.for_seconds, interval)
    by_queue = {contract.task_stream(agent.slug): agent for agent in agents.values()}
    samples = QueueSample.objects.filter(
        step=QueueSample.RAW,
        queue_name__in=list(by_queue),
        ts__gt=now - timedelta(seconds=span + interval),
        ts__lte=now,
    ).annotate(value=F(QUEUE_COLUMNS[rule.metric]))
    rows = (
        samples.filter(value__isnull=False)
        .values("queue_name")
        .annotate(low=Min("value"), high=Max("value"), first=Min("ts"))
    )
    label = AlertRule.Metric(rule.metric).label
    name, _, unit = label.partition(" (")
    unit = " " + unit.rstrip(")") if unit else ""
    found = []
    for row in rows:
        covered = row["first"] <= now - timedelta(seconds=rule.for_seconds - interval)
        if rule.for_seconds and not covered:
            continue
        if rule.operator == AlertRule.Operator.ABOVE:
            holds = row["low"] > rule.threshold
        else:
            holds = row["high"] < rule.threshold
        if not holds:
            continue
        agent = by_queue[row["queue_name"]]
        latest = (
            samples.filter(queue_name=row["queue_name"], value__isnull=False)
            .order_by("-ts")
            .values_list("value", flat=True)
            .first()
        )
        summary = (
            f"{agent.name}: {name.lower()} {latest:,.1f}{unit} "
            f"{rule.get_operator_display()} {rule.threshold:g}{unit}"
            + (f" for {rule.for_seconds // 60} min" if rule.for_seconds >= 60 else "")
        )
        found.append((agent, latest, summary))
    return found
