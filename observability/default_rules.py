"""The alert rules every fleet starts with (created by ``manage.py setup``; an Admin's edits
to them are kept)."""

from __future__ import annotations

from agents.models import State
from observability.models import AlertRule, Severity

DEFAULT_RULES = [
    {
        "name": "Agent errored",
        "description": "The agent crashed or failed and is ERRORED.",
        "kind": AlertRule.Kind.STATE,
        "state": State.ERRORED,
        "for_seconds": 0,
        "severity": Severity.CRITICAL,
    },
    {
        "name": "High error rate",
        "description": "More than 5 % of task attempts failed, for five minutes.",
        "kind": AlertRule.Kind.METRIC,
        "metric": AlertRule.Metric.ERROR_RATE,
        "operator": AlertRule.Operator.ABOVE,
        "threshold": 5.0,
        "for_seconds": 300,
        "severity": Severity.WARNING,
    },
    {
        "name": "Memory near limit",
        "description": "The agent uses more than 90 % of its memory limit, for two minutes.",
        "kind": AlertRule.Kind.METRIC,
        "metric": AlertRule.Metric.MEMORY_PERCENT,
        "operator": AlertRule.Operator.ABOVE,
        "threshold": 90.0,
        "for_seconds": 120,
        "severity": Severity.WARNING,
    },
    {
        "name": "Dead letters arriving",
        "description": "Tasks of the agent failed every retry and went to its dead-letter queue.",
        "kind": AlertRule.Kind.METRIC,
        "metric": AlertRule.Metric.DLQ_INFLOW,
        "operator": AlertRule.Operator.ABOVE,
        "threshold": 0.0,
        "for_seconds": 0,
        "severity": Severity.WARNING,
    },
    {
        "name": "Queue backlog",
        "description": "More than 1,000 tasks wait for the agent, for five minutes.",
        "kind": AlertRule.Kind.METRIC,
        "metric": AlertRule.Metric.QUEUE_BACKLOG,
        "operator": AlertRule.Operator.ABOVE,
        "threshold": 1000.0,
        "for_seconds": 300,
        "severity": Severity.WARNING,
    },
    {
        "name": "Queue lagging",
        "description": "The oldest task waiting for the agent is more than 5 minutes old.",
        "kind": AlertRule.Kind.METRIC,
        "metric": AlertRule.Metric.QUEUE_LAG,
        "operator": AlertRule.Operator.ABOVE,
        "threshold": 300.0,
        "for_seconds": 0,
        "severity": Severity.WARNING,
    },
    {
        "name": "Workflow deadline",
        "description": "A workflow run is predicted to miss its deadline, or has missed it: "
        "one alert per run, on the agent it waits for.",
        "kind": AlertRule.Kind.WORKFLOW,
        "for_seconds": 0,
        "severity": Severity.WARNING,
    },
    {
        "name": "No heartbeat",
        "description": "A RUNNING agent has not answered /metrics for a minute.",
        "kind": AlertRule.Kind.HEARTBEAT,
        "for_seconds": 60,
        "severity": Severity.CRITICAL,
    },
    {
        "name": "SLO burn rate",
        "description": "An agent with an availability objective spends its 30-day error budget "
        "too fast: 14.4 times the sustainable rate over both 1 h and 5 min (critical), or 6 "
        "times over both 6 h and 30 min.",
        "kind": AlertRule.Kind.SLO,
        "for_seconds": 0,
        "severity": Severity.CRITICAL,
    },
]
