"""The "Workflow deadline" rule: the workflow runs at risk of missing their deadline or past it
(``agents.workflows.deadlines`` keeps that state), one finding per run, on the agent the run
waits for. The rule engine in ``observability.alerts`` fires and resolves the alerts."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from agents.models import Agent
from agents.workflows import deadlines
from observability.models import AlertRule


def findings(rule: AlertRule, now: datetime) -> dict[str, tuple[Agent, float, str]]:
    """``workflow:<id>`` -> (the agent, seconds over the deadline (predicted or real), summary)."""
    found: dict[str, tuple[Agent, float, str]] = {}
    for run in deadlines.late_or_at_risk():
        agent = deadlines.responsible_agent(run)
        if agent is None or (rule.agent_id and agent.pk != rule.agent_id) or not run.deadline_at:
            continue
        deadline = timezone.localtime(run.deadline_at)
        if run.deadline_state == "late":
            over = (now - run.deadline_at).total_seconds()
            summary = f"{run.title} #{run.pk} is late: its deadline was {deadline:%H:%M:%S}"
        else:
            predicted = run.predicted_finish_at or now
            over = (predicted - run.deadline_at).total_seconds()
            summary = (
                f"{run.title} #{run.pk} is at risk: predicted to finish "
                f"{timezone.localtime(predicted):%H:%M:%S}, deadline {deadline:%H:%M:%S}"
            )
        if run.subject:
            summary += f" ({run.subject})"
        found[f"workflow:{run.pk}"] = (agent, round(over, 1), summary)
    return found
