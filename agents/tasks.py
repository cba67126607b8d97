"""Celery tasks of the agents app: thin wrappers that load ids and call services.

The senders name these tasks (``actions.RUN_TASK``...) rather than import this module, so the
service layer never imports its own tasks.
"""

from __future__ import annotations

from celery import shared_task

from agents import bulk, errors
from agents.services import actions
from agents.workflows import deadlines, engine


@shared_task(name=actions.RUN_TASK, ignore_result=True, acks_late=True)
def run_operation_task(operation_id: str) -> str:
    """Carry out a requested lifecycle action. A redelivered task finds it finished and stops."""
    return actions.run_operation(operation_id).status


# A bulk job can outlast the default job time limit; should Redis redeliver it meanwhile, the
# copy finds the job's lock taken and returns.
@shared_task(
    name=bulk.RUN_TASK,
    ignore_result=True,
    acks_late=True,
    soft_time_limit=3600,
    time_limit=3660,
)
def run_bulk_operation_task(bulk_id: int) -> str | None:
    """Work through a bulk operation; a redelivered or duplicate task resumes it or stops."""
    operation = bulk.run_bulk_operation(bulk_id)
    return operation.status if operation is not None else None


@shared_task(name=errors.recovery.RUN_TASK, ignore_result=True, acks_late=True)
def run_recovery_task(attempt_id: int) -> str:
    """Carry out a chosen recovery and verify it; a redelivered task finds it finished."""
    return errors.run_recovery(attempt_id).outcome


# A step may wait on a lifecycle action or a bulk wave for minutes; a redelivered copy finds the
# step's lease taken (or the step finished) and returns.
@shared_task(
    name=engine.RUN_STEP_TASK,
    ignore_result=True,
    acks_late=True,
    soft_time_limit=3600,
    time_limit=3660,
)
def run_workflow_step_task(step_run_id: int) -> None:
    """Carry out (or poll) one step attempt of a workflow run."""
    engine.run_step(step_run_id)


@shared_task(name="agents.check_workflow_deadlines", ignore_result=True)
def check_workflow_deadlines_task() -> dict[str, int]:
    """Beat: update the active runs' predicted finish and deadline state."""
    return deadlines.check_deadlines()
