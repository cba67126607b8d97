"""Workflow runs and definitions under /api/platform/orchestration.

Reading needs a role (Viewers read, and may read a retry's or a roll-back's preview); every
control calls one function of ``agents.workflows.services``, which checks the role (Operator;
marking a step: Admin), writes the audit entry and refuses with a sentence. A refusal answers its
status with ``{"detail", "code", ...details}`` through ``portal.api``'s one handler: 400 bad
input (parameters that do not validate add ``problems``), 403 role, 404 no such run or
definition (with the list of definitions), 409 not in the run's status. A body field of the
wrong type is ninja's 422 naming the field. Schemas: ``agents.workflows.schemas``.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router
from ninja.responses import Status

from agents.workflows import registry, services
from agents.workflows.schemas import (
    WorkflowAccepted,
    WorkflowApproveIn,
    WorkflowBulkIn,
    WorkflowBulkOutcome,
    WorkflowDefinitionOut,
    WorkflowMarkIn,
    WorkflowRetryIn,
    WorkflowRollbackIn,
    WorkflowRunDetailOut,
    WorkflowRunOut,
    WorkflowStartIn,
    WorkflowTaskDetailOut,
    accepted_out,
    definition_out,
    list_runs,
    run_detail_out,
    run_out,
)
from portal.actors import Actor
from portal.schemas import Problem

router = Router(tags=["workflows"])

ROOT = "/orchestration"
READ = {400: Problem, 404: Problem}
ACT = {400: Problem, 403: Problem, 404: Problem, 409: Problem}


@router.get(
    f"{ROOT}/workflows",
    response={200: list[WorkflowRunOut], **READ},
    summary="Workflow runs, newest first; filter by status, definition, subject; page with before",
)
def list_workflows(
    request: HttpRequest,
    status: str | None = None,
    definition: str | None = None,
    subject: str | None = None,
    before: str | None = None,
    limit: str | None = None,
):
    runs = list_runs(
        status=status, definition=definition, subject=subject, before=before, limit=limit
    )
    return [run_out(run) for run in runs]


@router.post(
    f"{ROOT}/workflows/bulk",
    response={200: list[WorkflowBulkOutcome], **ACT},
    summary="Retry (failed steps) or cancel each of the runs named",
)
def bulk_workflows(request: HttpRequest, payload: WorkflowBulkIn):
    # Declared before /workflows/{run_id}: Django matches the first pattern that fits.
    return services.bulk(Actor.from_request(request), payload.action, payload.ids)


@router.get(
    f"{ROOT}/workflows/{{run_id}}",
    response={200: WorkflowRunDetailOut, **READ},
    summary="A run: parameters, predicted finish, every step with its attempts",
)
def get_workflow(request: HttpRequest, run_id: str):
    return run_detail_out(services.get_run(run_id))


@router.post(
    f"{ROOT}/workflows",
    response={202: WorkflowAccepted, **ACT},
    summary="Start a run of a definition with parameters",
)
def start_workflow(request: HttpRequest, payload: WorkflowStartIn):
    run = services.start(
        Actor.from_request(request), payload.definition, payload.parameters,
        version=payload.version,
    )  # fmt: skip
    return Status(202, accepted_out(run))


@router.post(
    f"{ROOT}/workflows/{{run_id}}/pause",
    response={202: WorkflowAccepted, **ACT},
    summary="Pause: no new step starts; running ones finish",
)
def pause_workflow(request: HttpRequest, run_id: str):
    run = services.pause(services.get_run(run_id), Actor.from_request(request))
    return Status(202, accepted_out(run))


@router.post(
    f"{ROOT}/workflows/{{run_id}}/resume", response={202: WorkflowAccepted, **ACT}, summary="Resume"
)
def resume_workflow(request: HttpRequest, run_id: str):
    run = services.resume(services.get_run(run_id), Actor.from_request(request))
    return Status(202, accepted_out(run))


@router.post(
    f"{ROOT}/workflows/{{run_id}}/cancel",
    response={202: WorkflowAccepted, **ACT},
    summary="Cancel: running steps are asked to stop, pending ones are skipped",
)
def cancel_workflow(request: HttpRequest, run_id: str):
    run = services.cancel(services.get_run(run_id), Actor.from_request(request))
    return Status(202, accepted_out(run))


@router.post(
    f"{ROOT}/workflows/{{run_id}}/retry",
    response={200: dict, 202: WorkflowAccepted, **ACT},
    summary="Retry failed steps or from a step, maybe with new parameters (dry_run: the preview)",
)
def retry_workflow(request: HttpRequest, run_id: str, payload: WorkflowRetryIn | None = None):
    payload = payload or WorkflowRetryIn()
    run = services.get_run(run_id)
    if payload.dry_run:
        plan = services.plan_retry(run, payload.mode, payload.from_step, payload.parameters)
        return Status(200, plan.as_dict())
    run = services.retry(
        run, Actor.from_request(request), payload.mode, payload.from_step, payload.parameters
    )
    return Status(202, accepted_out(run))


@router.post(
    f"{ROOT}/workflows/{{run_id}}/rollback",
    response={200: dict, 202: WorkflowAccepted, **ACT},
    summary="Roll back: the compensations of the finished steps, newest first (dry_run: preview)",
)
def rollback_workflow(request: HttpRequest, run_id: str, payload: WorkflowRollbackIn | None = None):
    payload = payload or WorkflowRollbackIn()
    run = services.get_run(run_id)
    if payload.dry_run:
        return Status(200, services.plan_rollback(run))
    run = services.rollback(run, Actor.from_request(request), payload.reason)
    return Status(202, accepted_out(run))


@router.post(
    f"{ROOT}/workflows/{{run_id}}/steps/{{step_id}}/mark",
    response={202: WorkflowAccepted, **ACT},
    summary="Mark a step succeeded or skipped, with a reason (Admin)",
)
def mark_step(request: HttpRequest, run_id: str, step_id: str, payload: WorkflowMarkIn):
    run = services.mark(
        services.get_run(run_id), step_id, payload.status, Actor.from_request(request),
        payload.reason,
    )  # fmt: skip
    return Status(202, accepted_out(run))


@router.post(
    f"{ROOT}/workflows/{{run_id}}/steps/{{step_id}}/approve",
    response={202: WorkflowAccepted, **ACT},
    summary="Approve (or with approved=false, reject) a step waiting for an approval",
)
def approve_step(request: HttpRequest, run_id: str, step_id: str, payload: WorkflowApproveIn):
    run = services.get_run(run_id)
    services.approve(
        run, step_id, Actor.from_request(request), approved=payload.approved, note=payload.note
    )
    run.refresh_from_db()
    return Status(202, accepted_out(run))


@router.get(
    f"{ROOT}/workflows/{{run_id}}/steps/{{step_id}}",
    response={200: WorkflowTaskDetailOut, **READ},
    summary="One step of a run with its attempts",
)
def get_step(request: HttpRequest, run_id: str, step_id: str):
    detail = run_detail_out(services.get_run(run_id))
    for task in detail.tasks:
        if task.task_id == step_id and task.role == "forward":
            return task
    raise services.WorkflowRefused(
        f"{step_id[:63]!r} is not a step of run #{detail.workflow_id}.", "not_found"
    )


@router.get(
    f"{ROOT}/definitions",
    response=list[WorkflowDefinitionOut],
    summary="The definitions that can be started: parameters, steps, median durations",
)
def list_definitions(request: HttpRequest):
    return [definition_out(d) for d in registry.definitions()]
