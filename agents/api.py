"""JSON API for agents under /api/platform/: the registry, history, the eight actions, operations,
bulk operations.

Same service functions as the pages, the admin and the ``agents`` command. Errors answer with
``{"detail": "<what went wrong and what to do>", "code": "..."}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpRequest
from ninja import Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status

from agents import bulk, services
from agents.models import ACTIONS, Agent, AgentTransition, BulkOperation, Health, Operation, State
from portal.actors import Actor

router = Router(tags=["agents"])


class AgentOut(Schema):
    slug: str
    name: str
    description: str
    tier: str
    capabilities: list[str]
    owner_team: str
    dependencies: list[str]
    version: str
    runtime: str
    replicas: int
    cpu_millicores: int
    memory_mb: int
    state: str
    health: str
    health_detail: str
    pending_action: str
    restart_attempts: int
    next_restart_at: datetime | None
    state_changed_at: datetime
    created_at: datetime
    updated_at: datetime


class TransitionOut(Schema):
    at: datetime
    action: str
    from_state: str
    to_state: str
    actor_kind: str
    actor: str
    reason: str
    details: dict
    operation: UUID | None


class OperationOut(Schema):
    id: UUID
    agent: str
    action: str
    status: str
    actor: str
    reason: str
    from_state: str
    error: str
    error_reason: str
    result: dict
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ActionIn(Schema):
    reason: str = ""
    with_dependencies: bool = False
    confirm: bool = False


class Accepted(Schema):
    id: UUID
    agent: str
    action: str
    status: str
    url: str


class Problem(Schema):
    detail: str
    code: str = ""


class FleetMetrics(Schema):
    total: int
    by_state: dict[str, int]
    by_health: dict[str, int]
    pending: int


def _agent_out(agent: Agent) -> dict:
    return {
        **{
            field: getattr(agent, field) for field in AgentOut.model_fields if hasattr(agent, field)
        },
        "dependencies": sorted(dep.slug for dep in agent.dependencies.all()),
    }


def _operation_out(operation: Operation) -> dict:
    return {
        "id": operation.pk,
        "agent": operation.agent.slug,
        **{
            field: getattr(operation, field)
            for field in OperationOut.model_fields
            if field not in ("id", "agent")
        },
    }


def _agent_or_404(slug: str) -> Agent:
    try:
        return Agent.objects.prefetch_related("dependencies").get(slug=slug)
    except Agent.DoesNotExist:
        raise HttpError(
            404, f"There is no agent {slug!r}; GET /api/platform/agents lists them."
        ) from None


@router.get("/agents", response=list[AgentOut], summary="List agents")
def list_agents(
    request: HttpRequest,
    state: str | None = None,
    tier: str | None = None,
    health: str | None = None,
    q: str = "",
):
    agents = Agent.objects.prefetch_related("dependencies").search(q)
    if state:
        if state.upper() not in State.values:
            raise HttpError(
                400, f"state={state!r} is not a state; use one of {', '.join(State.values)}."
            )
        agents = agents.filter(state=state.upper())
    if tier:
        agents = agents.filter(tier=tier)
    if health:
        if health not in Health.values:
            raise HttpError(
                400, f"health={health!r} is not a health; use one of {', '.join(Health.values)}."
            )
        agents = agents.filter(health=health)
    return [_agent_out(agent) for agent in agents]


@router.get("/agents/{slug}", response=AgentOut, summary="One agent")
def get_agent(request: HttpRequest, slug: str):
    return _agent_out(_agent_or_404(slug))


@router.get(
    "/agents/{slug}/history", response=list[TransitionOut], summary="An agent's transition history"
)
def agent_history(request: HttpRequest, slug: str, action: str | None = None, limit: int = 100):
    agent = _agent_or_404(slug)
    rows = AgentTransition.objects.filter(agent=agent)
    if action:
        rows = rows.filter(action=action)
    return [
        {
            **{f: getattr(row, f) for f in TransitionOut.model_fields if f != "operation"},
            "operation": row.operation_id,
        }
        for row in rows[: max(1, min(limit, 1000))]
    ]


@router.post(
    "/agents/{slug}/{action}",
    response={202: Accepted, 403: Problem, 404: Problem, 409: Problem},
    summary="Take a lifecycle action (provision, deploy, start, stop, suspend, resume, restart, revoke)",
)
def take_action(request: HttpRequest, slug: str, action: str, payload: ActionIn | None = None):
    payload = payload or ActionIn()
    if action not in ACTIONS:
        raise HttpError(404, f"{action!r} is not an action; use one of {', '.join(ACTIONS)}.")
    agent = _agent_or_404(slug)
    try:
        operation = services.request_action(
            agent,
            action,
            Actor.from_request(request),
            reason=payload.reason,
            with_dependencies=payload.with_dependencies,
            confirm=payload.confirm,
        )
    except PermissionDenied as denied:
        return Status(403, {"detail": str(denied), "code": "forbidden"})
    except services.ActionRefused as refused:
        return Status(409, {"detail": refused.message, "code": refused.code})
    return Status(
        202,
        {
            "id": operation.pk,
            "agent": agent.slug,
            "action": action,
            "status": operation.status,
            "url": f"/api/platform/operations/{operation.pk}",
        },
    )


@router.get(
    "/operations/{operation_id}",
    response=OperationOut,
    summary="An operation's progress and outcome",
)
def get_operation(request: HttpRequest, operation_id: UUID):
    try:
        operation = Operation.objects.select_related("agent").get(pk=operation_id)
    except Operation.DoesNotExist:
        raise HttpError(404, f"There is no operation {operation_id}.") from None
    return _operation_out(operation)


@router.get("/metrics", response=FleetMetrics, summary="Counts of agents by state and health")
def fleet_metrics(request: HttpRequest):
    by_state = {state: 0 for state in State.values}
    by_state.update(
        dict(Agent.objects.values_list("state").annotate(n=Count("id")).values_list("state", "n"))
    )
    by_health = {health: 0 for health in Health.values}
    by_health.update(
        dict(Agent.objects.values_list("health").annotate(n=Count("id")).values_list("health", "n"))
    )
    return {
        "total": sum(by_state.values()),
        "by_state": by_state,
        "by_health": by_health,
        "pending": Agent.objects.exclude(pending_action="").count(),
    }


# --- bulk operations -----------------------------------------------------------------------

# Refusals that mean the request itself is wrong (400); the others are about the fleet's state
# (nothing to do, a confirmation missing, agents busy, already finished: 409).
BULK_BAD_INPUT = {"invalid", "unknown"}


class BulkIn(Schema):
    action: str = ""  # a missing action is answered like a wrong one: 400 with the choices
    targets: list[str] | None = None
    filter: dict[str, Any] | None = None
    # Checked by the service (a whole number from 1 to BULK_MAX_PARALLELISM), so a bad value is
    # answered with the same sentence from every door.
    parallelism: Any = None
    dry_run: bool = False
    confirm: str = ""
    reason: str = ""


class BulkRetryIn(Schema):
    parallelism: Any = None


class BulkRollbackIn(Schema):
    parallelism: Any = None
    dry_run: bool = False


class PlannedItemOut(Schema):
    agent: str
    name: str
    state: str
    will_change: bool
    steps: list[str]
    to_state: str | None
    skip_code: str | None
    skip_reason: str | None
    affected_dependents: list[str]


class BulkPlanOut(Schema):
    action: str
    parallelism: int
    will_change: int
    skipped: int
    confirmation_required: bool
    confirmation_phrase: str | None
    affected_dependents: list[str]
    items: list[PlannedItemOut]


class BulkAccepted(Schema):
    id: int
    action: str
    kind: str
    status: str
    url: str


class BulkCounts(Schema):
    total: int
    succeeded: int
    failed: int
    skipped: int
    pending: int


class BulkItemOut(Schema):
    agent: str
    name: str
    status: str
    steps: list[str]
    steps_done: int
    from_state: str
    to_state: str | None
    code: str | None
    message: str | None
    operations: list[str]
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None


class BulkRowOut(Schema):
    id: int
    action: str
    kind: str
    follows: int | None
    status: str
    actor: str
    parallelism: int
    counts: BulkCounts
    cancel_requested: bool
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    url: str


class BulkOut(Schema):
    id: int
    action: str
    kind: str
    follows: int | None
    status: str
    actor: str
    parallelism: int
    targets: list[str]
    filter: dict[str, Any]
    counts: BulkCounts
    cancel_requested: bool
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    estimate_seconds_left: float | None
    items: list[BulkItemOut]


class BulkProblem(Schema):
    detail: str
    code: str = ""
    confirmation_phrase: str | None = None
    plan: BulkPlanOut | None = None


def _bulk_url(operation: BulkOperation) -> str:
    return f"/api/platform/bulk/{operation.pk}"


def _bulk_accepted(operation: BulkOperation) -> Status:
    return Status(
        202,
        {
            "id": operation.pk,
            "action": operation.action,
            "kind": operation.kind,
            "status": operation.status,
            "url": _bulk_url(operation),
        },
    )


def _bulk_refused(refused: services.ActionRefused) -> Status:
    status = 400 if refused.code in BULK_BAD_INPUT else 409
    return Status(status, {"detail": refused.message, "code": refused.code, **refused.details})


def _forbidden(denied: PermissionDenied) -> Status:
    return Status(403, {"detail": str(denied), "code": "forbidden"})


def _bulk_or_404(bulk_id: int) -> BulkOperation:
    try:
        return BulkOperation.objects.get(pk=bulk_id)
    except BulkOperation.DoesNotExist:
        raise HttpError(
            404, f"There is no bulk operation #{bulk_id}; GET /api/platform/bulk lists them."
        ) from None


def _bulk_row(operation: BulkOperation) -> dict:
    """A bulk operation without its items, for lists (no query per row)."""
    return {
        "id": operation.pk,
        "action": operation.action,
        "kind": operation.kind,
        "follows": operation.follows_id,
        "status": operation.status,
        "actor": operation.actor,
        "parallelism": operation.parallelism,
        "counts": {
            "total": operation.total,
            "succeeded": operation.succeeded,
            "failed": operation.failed,
            "skipped": operation.skipped,
            "pending": operation.pending,
        },
        "cancel_requested": operation.cancel_requested_at is not None,
        "requested_at": operation.requested_at,
        "started_at": operation.started_at,
        "finished_at": operation.finished_at,
        "duration_seconds": operation.duration_seconds,
        "url": _bulk_url(operation),
    }


BULK_ERRORS = {400: BulkProblem, 403: Problem, 404: Problem, 409: BulkProblem}


@router.post(
    "/bulk",
    response={200: BulkPlanOut, 202: BulkAccepted, **BULK_ERRORS},
    summary="Preview (dry_run) or start a bulk operation on agents named or chosen by a filter",
)
def create_bulk(request: HttpRequest, payload: BulkIn):
    actor = Actor.from_request(request)
    choice = {"targets": payload.targets, "filter": payload.filter}
    try:
        if payload.dry_run:
            plan = bulk.preview_bulk(
                payload.action, actor, parallelism=payload.parallelism, **choice
            )
            return Status(200, plan.as_dict())
        operation = bulk.create_bulk_operation(
            payload.action, actor, parallelism=payload.parallelism, confirm=payload.confirm,
            reason=payload.reason, **choice,
        )  # fmt: skip
    except PermissionDenied as denied:
        return _forbidden(denied)
    except services.ActionRefused as refused:
        return _bulk_refused(refused)
    return _bulk_accepted(operation)


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
    return [_bulk_row(operation) for operation in operations[: max(1, min(limit, 100))]]


@router.get(
    "/bulk/{bulk_id}",
    response={200: BulkOut, 404: Problem},
    summary="A bulk operation's progress: status, counts, and every agent's item",
)
def get_bulk(request: HttpRequest, bulk_id: int):
    operation = _bulk_or_404(bulk_id)
    return {
        **bulk.bulk_summary(operation),
        "estimate_seconds_left": bulk.estimate_seconds_left(operation),
    }


@router.post(
    "/bulk/{bulk_id}/cancel",
    response={202: BulkAccepted, **BULK_ERRORS},
    summary="Cancel a bulk operation: running items finish, pending ones are skipped",
)
def cancel_bulk(request: HttpRequest, bulk_id: int):
    operation = _bulk_or_404(bulk_id)
    try:
        operation = bulk.cancel_bulk_operation(operation, Actor.from_request(request))
    except PermissionDenied as denied:
        return _forbidden(denied)
    except services.ActionRefused as refused:
        return _bulk_refused(refused)
    return _bulk_accepted(operation)


@router.post(
    "/bulk/{bulk_id}/retry",
    response={202: BulkAccepted, **BULK_ERRORS},
    summary="Retry the agents that failed, as a new bulk operation",
)
def retry_bulk(request: HttpRequest, bulk_id: int, payload: BulkRetryIn | None = None):
    payload = payload or BulkRetryIn()
    operation = _bulk_or_404(bulk_id)
    try:
        retry = bulk.retry_failed(
            operation, Actor.from_request(request), parallelism=payload.parallelism
        )
    except PermissionDenied as denied:
        return _forbidden(denied)
    except services.ActionRefused as refused:
        return _bulk_refused(refused)
    return _bulk_accepted(retry)


@router.post(
    "/bulk/{bulk_id}/rollback",
    response={200: BulkPlanOut, 202: BulkAccepted, **BULK_ERRORS},
    summary="Return the agents a bulk operation changed to their earlier states (dry_run: preview)",
)
def rollback_bulk(request: HttpRequest, bulk_id: int, payload: BulkRollbackIn | None = None):
    payload = payload or BulkRollbackIn()
    operation = _bulk_or_404(bulk_id)
    actor = Actor.from_request(request)
    try:
        if payload.dry_run:
            plan = bulk.preview_rollback(operation, actor, parallelism=payload.parallelism)
            return Status(200, plan.as_dict())
        rollback = bulk.roll_back(operation, actor, parallelism=payload.parallelism)
    except PermissionDenied as denied:
        return _forbidden(denied)
    except services.ActionRefused as refused:
        return _bulk_refused(refused)
    return _bulk_accepted(rollback)
