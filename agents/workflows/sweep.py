"""The sweep for workflow steps whose worker died (registered with ``portal.work``): a busy
step past its wake-up that no worker holds is handed out again, and an active run with nothing
busy (its worker died between two steps) is settled."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Exists, OuterRef
from django.utils import timezone

from portal import work

from .engine import RUN_STEP_TASK, STEP_LOCK, advance_now
from .models import STEP_BUSY, RunStatus, StepRun, WorkflowRun


def resume_stalled_steps(older_than: timedelta) -> list[int]:
    """Hand out again every busy step whose wake-up is long past and that no worker holds, and
    settle every active run with nothing busy (a worker died between two of its steps)."""
    cutoff = timezone.now() - older_than
    handed: list[int] = []
    stalled = StepRun.objects.filter(
        current=True,
        status__in=STEP_BUSY,
        wake_at__lte=cutoff,
        run__status__in=[RunStatus.RUNNING, RunStatus.ROLLING_BACK],
    ).values_list("pk", flat=True)[:500]
    for pk in stalled:
        if not work.has_runner(STEP_LOCK, pk):
            work.send(RUN_STEP_TASK, pk)
            handed.append(pk)
    busy = StepRun.objects.filter(run=OuterRef("pk"), current=True, status__in=STEP_BUSY)
    idle = (
        WorkflowRun.objects.filter(
            status__in=[RunStatus.PENDING, RunStatus.RUNNING, RunStatus.ROLLING_BACK],
            created_at__lte=cutoff,
        )
        .exclude(Exists(busy))
        .values_list("pk", flat=True)[:100]
    )
    for run_id in idle:
        advance_now(run_id)
        handed.append(-run_id)
    return handed
