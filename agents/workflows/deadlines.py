"""Deadlines checked while a run goes, not after it: a run's predicted finish from the median
durations of the same steps in past runs of its definition, along the critical path; "at risk"
when the prediction passes the deadline, "late" once the deadline has passed.

A run's and each step's deadline is fixed when it starts (``engine``). Beat calls
``check_deadlines`` every few seconds: it updates each active run's prediction and state,
flags late steps, and rolls back a run whose definition asks for it once it is late. The alert
(one per run) is the rule engine's, which reads ``late_or_at_risk``.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from . import engine, live
from .models import (
    FINISHED,
    DeadlineState,
    Role,
    RunStatus,
    StepRun,
    StepStatus,
    WorkflowRun,
)

logger = logging.getLogger(__name__)

# How many of the newest successful attempts of a step the median is taken over.
HISTORY = 50
MEDIANS_TTL_SECONDS = 30.0
_medians_cache: dict[str, tuple[float, dict[str, float]]] = {}


@dataclass(frozen=True)
class Prediction:
    finish_at: datetime | None
    critical_path: list[str] = field(default_factory=list)
    medians: dict[str, float] = field(default_factory=dict)
    state: str = DeadlineState.NONE
    # Steps with no past run to learn from (the prediction leaves them out).
    unknown: list[str] = field(default_factory=list)


def medians(definition: str, *, fresh: bool = False) -> dict[str, float]:
    """Median seconds of each step of ``definition`` over its newest successful attempts."""
    cached = _medians_cache.get(definition)
    if cached and not fresh and time.monotonic() - cached[0] < MEDIANS_TTL_SECONDS:
        return cached[1]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT step_id, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds)
            FROM (
                SELECT step_id, EXTRACT(EPOCH FROM finished_at - started_at) AS seconds,
                       row_number() OVER (PARTITION BY step_id ORDER BY finished_at DESC) AS n
                FROM agents_steprun
                WHERE definition = %s AND status = 'succeeded' AND role = 'forward'
                  AND started_at IS NOT NULL AND finished_at IS NOT NULL
                  AND reason NOT LIKE 'Marked %%'
            ) recent
            WHERE n <= %s
            GROUP BY step_id
            """,
            [definition, HISTORY],
        )
        found = {step_id: float(seconds) for step_id, seconds in cursor.fetchall()}
    _medians_cache[definition] = (time.monotonic(), found)
    return found


def predict(
    run: WorkflowRun, rows: Iterable[StepRun] | None = None, now: datetime | None = None
) -> Prediction:
    """When the run will finish, if its remaining steps take their median time, and the chain
    of steps that decides it (the critical path)."""
    now = now or timezone.now()
    definition = engine.definition_of(run)
    if definition is None:
        return Prediction(None)
    if rows is None:
        rows = run.steps.filter(current=True, role=Role.FORWARD)
    current = {r.step_id: r for r in rows if r.current and r.role == Role.FORWARD}
    typical = medians(run.definition)
    finish: dict[str, datetime] = {}
    unknown: list[str] = []
    for step in definition.steps:  # declared order is topological
        row = current.get(step.id)
        ready = max((finish[d] for d in step.after), default=run.started_at or now)
        if row is not None and row.status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED):
            finish[step.id] = row.finished_at or ready
            continue
        median = typical.get(step.id)
        if median is None:
            unknown.append(step.id)
            median = 0.0
        if row is not None and row.status == StepStatus.RUNNING and row.started_at:
            left = max(median - (now - row.started_at).total_seconds(), 0.0)
            finish[step.id] = now + timedelta(seconds=left)
        else:
            finish[step.id] = max(ready, now) + timedelta(seconds=median)
    if run.status in FINISHED and run.finished_at:
        finish_at: datetime | None = run.finished_at
    else:
        finish_at = max(finish.values()) if finish and not unknown else None
    return Prediction(
        finish_at=finish_at,
        critical_path=_critical_path(definition, finish),
        medians=typical,
        state=_state(run, finish_at, now),
        unknown=unknown,
    )


def _critical_path(definition, finish: dict[str, datetime]) -> list[str]:
    if not finish:
        return []
    last = max(finish, key=lambda step_id: finish[step_id])
    path = [last]
    while True:
        after = definition.step(path[-1]).after
        if not after:
            break
        path.append(max(after, key=lambda step_id: finish[step_id]))
    return path[::-1]


def _state(run: WorkflowRun, finish_at: datetime | None, now: datetime) -> str:
    if run.deadline_at is None:
        return DeadlineState.NONE
    if run.status in FINISHED:
        late = run.finished_at is not None and run.finished_at > run.deadline_at
        return DeadlineState.LATE if late else DeadlineState.ON_TIME
    if now > run.deadline_at:
        return DeadlineState.LATE
    if finish_at is not None and finish_at > run.deadline_at:
        return DeadlineState.AT_RISK
    return DeadlineState.ON_TIME


def typical_duration(definition: str) -> float | None:
    """The median of the whole runs of ``definition`` that succeeded lately (seconds)."""
    durations = [
        (finished - started).total_seconds()
        for started, finished in WorkflowRun.objects.filter(
            definition=definition, status=RunStatus.SUCCEEDED, started_at__isnull=False
        )
        .order_by("-id")
        .values_list("started_at", "finished_at")[:HISTORY]
        if started is not None and finished is not None
    ]
    return statistics.median(durations) if durations else None


# --- the beat --------------------------------------------------------------------------------


def check_deadlines(now: datetime | None = None) -> dict[str, int]:
    """Update every active run's prediction and deadline state; flag steps past their own
    deadline; roll back a late run whose definition asks for it."""
    now = now or timezone.now()
    counts = {"checked": 0, "at_risk": 0, "late": 0, "rolled_back": 0}
    StepRun.objects.filter(
        current=True, status__in=[StepStatus.QUEUED, StepStatus.RUNNING], late=False,
        deadline_at__lt=now,
    ).update(late=True)  # fmt: skip
    active = WorkflowRun.objects.filter(
        status__in=[RunStatus.RUNNING, RunStatus.PAUSED], deadline_at__isnull=False
    )
    for run in active.iterator():
        counts["checked"] += 1
        prediction = predict(run, now=now)
        changed = prediction.state != run.deadline_state
        WorkflowRun.objects.filter(pk=run.pk).update(
            predicted_finish_at=prediction.finish_at, deadline_state=prediction.state
        )
        if prediction.state == DeadlineState.AT_RISK:
            counts["at_risk"] += 1
        if prediction.state == DeadlineState.LATE:
            counts["late"] += 1
            definition = engine.definition_of(run)
            if definition is not None and definition.roll_back_on_deadline:
                counts["rolled_back"] += _roll_back_late(run.pk, now)
        if changed:
            with transaction.atomic():
                live.run_changed(run.pk)
    return counts


def _roll_back_late(run_id: int, now: datetime) -> int:
    with transaction.atomic():
        run = WorkflowRun.objects.select_for_update().get(pk=run_id)
        if run.status not in (RunStatus.RUNNING, RunStatus.PAUSED) or run.phase != Role.FORWARD:
            return 0
        rows = list(run.steps.filter(current=True))
        reason = f"Missed its deadline ({timezone.localtime(run.deadline_at):%H:%M:%S}); rolling back by itself."
        engine.dispatch(engine.begin_rollback(run, rows, reason, now))
        engine._recount(run, rows)
        run.save()
        logger.warning("workflow run %s missed its deadline and rolls back", run_id)
    return 1


def late_or_at_risk() -> list[WorkflowRun]:
    """Active runs past or predicted past their deadline (the alert rule reads these)."""
    return list(
        WorkflowRun.objects.filter(
            status__in=[RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.ROLLING_BACK],
            deadline_state__in=[DeadlineState.AT_RISK, DeadlineState.LATE],
        ).order_by("id")[:500]
    )


def responsible_agent(run: WorkflowRun):
    """The agent a late run is waiting for (its alert is on that agent): the run's own agent,
    else the agent of a step it is busy with, else the last agent it worked with."""
    from agents.models import Agent

    from .steps import find_agent  # the kinds module reads models this one is imported by

    if run.subject_kind == "agent" and run.subject:
        found = Agent.objects.filter(slug=run.subject).first()
        if found is not None:
            return found
    rows = list(run.steps.filter(current=True).order_by("-started_at"))
    busy = [r for r in rows if r.status in (StepStatus.QUEUED, StepStatus.RUNNING)]
    for row in busy + rows:
        slug = row.state.get("agent") or row.inputs.get("agent")
        if slug:
            found = Agent.objects.filter(slug=slug).first()
            if found is not None:
                return found
        if row.inputs.get("capability"):
            try:
                return find_agent(row.inputs)
            except LookupError:
                continue
    return None
