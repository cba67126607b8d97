"""Bulk operations: preview or start one action on many agents, follow, cancel, retry, roll back.

A refusal answers its status with ``{"detail", "code"}`` and what helps: the plan when nothing
would change, the phrase a dangerous run is confirmed with (``BulkProblem``)."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router
from ninja.errors import HttpError
from ninja.responses import Status

from agents import bulk
from agents.models import BulkOperation
from agents.schemas import (
    BulkAccepted,
    BulkIn,
    BulkOut,
    BulkPlanOut,
    BulkProblem,
    BulkRetryIn,
    BulkRollbackIn,
    BulkRowOut,
    bulk_accepted_out,
    bulk_out,
    bulk_row_out,
    plan_out,
)
from portal.actors import Actor
from portal.schemas import Problem

router = Router()

BULK_LIMIT_MAX = 100
BULK_ERRORS = {400: BulkProblem, 403: Problem, 404: Problem, 409: BulkProblem, 503: BulkProblem}


def _bulk_or_404(bulk_id: int) -> BulkOperation:
    try:
        return BulkOperation.objects.get(pk=bulk_id)
    except BulkOperation.DoesNotExist:
        raise HttpError(
            404, f"There is no bulk operation #{bulk_id}; GET /api/platform/bulk lists them."
        ) from None


@router.post(
    "/bulk",
    response={200: BulkPlanOut, 202: BulkAccepted, **BULK_ERRORS},
    summary="Preview (dry_run) or start a bulk operation on agents named or chosen by a filter",
)
def create_bulk(request: HttpRequest, payload: BulkIn):
    actor = Actor.from_request(request)
    if payload.dry_run:
        plan = bulk.preview_bulk(
            payload.action, actor, parallelism=payload.parallelism,
            targets=payload.targets, filter=payload.filter,
        )  # fmt: skip
        return Status(200, plan_out(plan))
    operation = bulk.create_bulk_operation(
        payload.action, actor, parallelism=payload.parallelism, confirm=payload.confirm,
        reason=payload.reason, targets=payload.targets, filter=payload.filter,
    )  # fmt: skip
    return Status(202, bulk_accepted_out(operation))


@router.get("/bulk", response=list[BulkRowOut], summary="Recent bulk operations, newest first")
def list_bulk(
    request: HttpRequest, status: str | None = None, action: str | None = None, limit: int = 20
):
    operations = BulkOperation.objects.all()
    if status:
        if status not in BulkOperation.Status.values:
            raise HttpError(
                400,
                f"status={status!r} is not a bulk status; use one of "
                f"{', '.join(BulkOperation.Status.values)}.",
            )
        operations = operations.filter(status=status)
    if action:
        operations = operations.filter(action=action)
    return [bulk_row_out(row) for row in operations[: max(1, min(limit, BULK_LIMIT_MAX))]]


@router.get(
    "/bulk/{bulk_id}",
    response={200: BulkOut, 404: Problem},
    summary="A bulk operation's progress: status, counts, and every agent's item",
)
def get_bulk(request: HttpRequest, bulk_id: int):
    return bulk_out(_bulk_or_404(bulk_id))


@router.post(
    "/bulk/{bulk_id}/cancel",
    response={202: BulkAccepted, **BULK_ERRORS},
    summary="Cancel a bulk operation: running items finish, pending ones are skipped",
)
def cancel_bulk(request: HttpRequest, bulk_id: int):
    operation = bulk.cancel_bulk_operation(_bulk_or_404(bulk_id), Actor.from_request(request))
    return Status(202, bulk_accepted_out(operation))


@router.post(
    "/bulk/{bulk_id}/retry",
    response={202: BulkAccepted, **BULK_ERRORS},
    summary="Retry the agents that failed, as a new bulk operation",
)
def retry_bulk(request: HttpRequest, bulk_id: int, payload: BulkRetryIn | None = None):
    payload = payload or BulkRetryIn()
    retry = bulk.retry_failed(
        _bulk_or_404(bulk_id), Actor.from_request(request), parallelism=payload.parallelism
    )
    return Status(202, bulk_accepted_out(retry))


@router.post(
    "/bulk/{bulk_id}/rollback",
    response={200: BulkPlanOut, 202: BulkAccepted, **BULK_ERRORS},
    summary="Return the agents a bulk operation changed to their earlier states (dry_run: preview)",
)
def rollback_bulk(request: HttpRequest, bulk_id: int, payload: BulkRollbackIn | None = None):
    payload = payload or BulkRollbackIn()
    operation = _bulk_or_404(bulk_id)
    actor = Actor.from_request(request)
    if payload.dry_run:
        plan = bulk.preview_rollback(operation, actor, parallelism=payload.parallelism)
        return Status(200, plan_out(plan))
    rollback = bulk.roll_back(operation, actor, parallelism=payload.parallelism)
    return Status(202, bulk_accepted_out(rollback))
