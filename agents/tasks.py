"""Celery tasks of the agents app: thin wrappers that load ids and call services."""

from __future__ import annotations

from celery import shared_task

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


@shared_task(name="agents.run_recovery", ignore_result=True, acks_late=True)
def run_recovery_task(attempt_id: int) -> str:
    """Carry out a chosen recovery and verify it; a redelivered task finds it finished."""
    from agents import errors

    return errors.run_recovery(attempt_id).outcome
