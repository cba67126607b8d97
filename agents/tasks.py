"""Celery tasks of the agents app: thin wrappers that load ids and call services."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from celery.signals import worker_ready

from agents import services


@shared_task(name="agents.run_operation", ignore_result=True, acks_late=True)
def run_operation_task(operation_id: str) -> str:
    """Carry out a requested lifecycle action. A redelivered task finds it finished and stops."""
    return services.run_operation(operation_id).status


# A bulk job can outlast the default job time limit; should Redis redeliver it meanwhile, the
# copy finds the job's lock taken and returns.
@shared_task(
    name="agents.run_bulk_operation",
    ignore_result=True,
    acks_late=True,
    soft_time_limit=3600,
    time_limit=3660,
)
def run_bulk_operation_task(bulk_id: int) -> str | None:
    """Work through a bulk operation; a redelivered or duplicate task resumes it or stops."""
    from agents import bulk

    operation = bulk.run_bulk_operation(bulk_id)
    return operation.status if operation is not None else None


@shared_task(name="agents.resume_stalled_bulk_operations", ignore_result=True)
def resume_stalled_bulk_operations_task(older_than_seconds: float | None = None) -> list[int]:
    """Beat (and a worker starting): hand bulk operations whose worker died back to a worker."""
    from agents import bulk

    if older_than_seconds is None:
        return bulk.resume_stalled_bulk_operations()
    return bulk.resume_stalled_bulk_operations(older_than=timedelta(seconds=older_than_seconds))


@worker_ready.connect
def _resume_bulk_operations_on_start(sender=None, **kwargs) -> None:
    """A worker starting (perhaps after one was killed) picks up bulk jobs left without a runner."""
    resume_stalled_bulk_operations_task.apply_async(kwargs={"older_than_seconds": 0})


@shared_task(name="agents.run_recovery", ignore_result=True, acks_late=True)
def run_recovery_task(attempt_id: int) -> str:
    """Carry out a chosen recovery and verify it; a redelivered task finds it finished."""
    from agents import errors

    return errors.run_recovery(attempt_id).outcome
