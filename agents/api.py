"""JSON API for agents under /api/platform/: the registry, history, the eight actions, operations,
bulk operations, and errors with their one-click recoveries.

Same service functions as the pages, the admin and the ``agents`` command. Errors answer with
``{"detail": "<what went wrong and what to do>", "code": "..."}``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status

from agents import bulk, errors, services
from agents.errors.rules import RECOVERIES
from agents.models import (
    ACTIONS,
    Agent,
    AgentError,
    AgentTransition,
    BulkOperation,
    ErrorClass,
    Health,
    Operation,
    RecoveryAttempt,
    RecoverySwitch,
    State,
)
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


class UndoOut(Schema):
    detail: str
    undone: UUID
    # The inverse action asked for (poll it like any operation); null when the action was
    # withdrawn before a worker began it.
    operation: Accepted | None = None


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
    response={202: Accepted, 403: Problem, 404: Problem, 409: Problem, 503: Problem},
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
        return Status(refused.status, {"detail": refused.message, "code": refused.code})
    return Status(202, _accepted(operation))


@router.get(
    "/operations/{operation_id}",
    response=OperationOut,
    summary="An operation's progress and outcome",
)
def get_operation(request: HttpRequest, operation_id: UUID):
    return _operation_out(_operation_or_404(operation_id))


def _operation_or_404(operation_id: UUID) -> Operation:
    try:
        return Operation.objects.select_related("agent").get(pk=operation_id)
    except Operation.DoesNotExist:
        raise HttpError(404, f"There is no operation {operation_id}.") from None


def _accepted(operation: Operation) -> dict:
    return {
        "id": operation.pk,
        "agent": operation.agent.slug,
        "action": operation.action,
        "status": operation.status,
        "url": f"/api/platform/operations/{operation.pk}",
    }


@router.post(
    "/operations/{operation_id}/undo",
    response={200: UndoOut, 202: UndoOut, 403: Problem, 404: Problem, 409: Problem, 503: Problem},
    summary="Undo a recent stop, start, suspend or resume (within ACTION_UNDO_SECONDS)",
)
def undo_operation(request: HttpRequest, operation_id: UUID):
    operation = _operation_or_404(operation_id)
    try:
        undone = services.undo_operation(operation, Actor.from_request(request))
    except PermissionDenied as denied:
        return Status(403, {"detail": str(denied), "code": "forbidden"})
    except services.ActionRefused as refused:
        return Status(refused.status, {"detail": refused.message, "code": refused.code})
    inverse = undone.operation
    body = {
        "detail": undone.message,
        "undone": operation.pk,
        "operation": _accepted(inverse) if inverse is not None else None,
    }
    return Status(200 if inverse is None else 202, body)


def fleet_counts() -> dict:
    """Counts of agents by state and health: the base of ``GET /metrics``, which the
    observability API serves (with series and uptime when asked)."""
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
    # A missing action is answered like a wrong one: 400 with the choices. The schema lists them,
    # so the OpenAPI document says what the server accepts.
    action: str = Field("", json_schema_extra={"enum": list(bulk.BULK_ACTIONS)})
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
    status = 400 if refused.code in BULK_BAD_INPUT else refused.status
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


BULK_ERRORS = {400: BulkProblem, 403: Problem, 404: Problem, 409: BulkProblem, 503: BulkProblem}


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


# --- errors and their recoveries -------------------------------------------------------------

# A refusal that means the request itself is wrong (no such recovery: 400); the others are about
# the error (already recovering, closed, not a fix for it: 409).
RECOVERY_BAD_INPUT = {"unknown"}
ERROR_LIMIT_MAX = 500


class SuggestionOut(Schema):
    label: str
    text: str
    action: str  # a recovery for POST .../recover, or "" for a step a person takes


class AttemptOut(Schema):
    id: int
    action: str
    label: str
    automatic: bool
    actor: str
    outcome: str  # running, fixed, did_not_help, failed
    detail: str
    started_at: datetime
    finished_at: datetime | None


class ErrorOut(Schema):
    id: int
    agent: str
    agent_name: str
    occurred_at: datetime
    last_seen_at: datetime
    occurrences: int
    source: str
    summary: str
    details: dict[str, Any]
    evidence: list[str]
    classification: str
    rule: str
    root_cause: str
    suggestions: list[SuggestionOut]
    signature: str
    pattern: str
    retry_count: int
    status: str
    operation: UUID | None
    resolved_at: datetime | None
    resolved_by: str
    resolution: str
    attempts: list[AttemptOut]
    url: str


class RecoverIn(Schema):
    action: str = ""  # a missing action is answered like a wrong one: 400 with the choices


class IgnoreIn(Schema):
    reason: str = ""


class RecoveryAccepted(Schema):
    id: int
    error: int
    agent: str
    action: str
    label: str
    outcome: str
    url: str


class RecoveryProblem(Schema):
    detail: str
    code: str = ""
    offered: list[str] | None = None


class PatternOut(Schema):
    signature: str
    pattern: str
    classification: str
    times: int
    agents: int
    open: int
    first: datetime
    last: datetime


class AgentClassCount(Schema):
    agent: str
    name: str
    classification: str
    times: int


class ErrorStatsOut(Schema):
    last_hour: int
    per_hour_24h: float
    open: int
    by_agent_and_class: list[AgentClassCount]


class AutomaticRecoveryIn(Schema):
    on: bool | None = None


class AutomaticRecoveryOut(Schema):
    on: bool
    changed_by: str
    changed_at: datetime | None


def _error_url(error_id: int) -> str:
    return f"/api/platform/errors/{error_id}"


def _attempt_out(attempt: RecoveryAttempt) -> dict:
    return {
        **{field: getattr(attempt, field) for field in AttemptOut.model_fields if field != "label"},
        "label": RECOVERIES.get(attempt.action, attempt.action),
    }


def error_out(error: AgentError) -> dict:
    """An error with its attempts, as ``ErrorOut`` (also ``manage.py agents errors --json``); load
    it with ``errors_with_attempts()`` so a list costs two queries."""
    special = {"agent", "agent_name", "operation", "attempts", "url"}
    return {
        **{field: getattr(error, field) for field in ErrorOut.model_fields if field not in special},
        "agent": error.agent.slug,
        "agent_name": error.agent.name,
        "operation": error.operation_id,
        "attempts": [_attempt_out(attempt) for attempt in error.attempts.all()],
        "url": _error_url(error.pk),
    }


def errors_with_attempts():
    return AgentError.objects.select_related("agent").prefetch_related("attempts")


def _error_or_404(error_id: int) -> AgentError:
    try:
        return errors_with_attempts().get(pk=error_id)
    except AgentError.DoesNotExist:
        raise HttpError(
            404, f"There is no error #{error_id}; GET /api/platform/errors lists them."
        ) from None


def _agent_filter(slug: str) -> Agent:
    try:
        return Agent.objects.get(slug=slug)
    except Agent.DoesNotExist:
        raise HttpError(
            400, f"agent={slug!r} is not an agent; GET /api/platform/agents lists them."
        ) from None


def _since(days: int) -> datetime:
    if not 1 <= days <= 366:
        raise HttpError(400, f"days={days} is out of range; give a whole number from 1 to 366.")
    return timezone.now() - timedelta(days=days)


def _recovery_refused(refused: errors.RecoveryRefused, error: AgentError) -> Status:
    status = {"unavailable": 503}.get(
        refused.code, 400 if refused.code in RECOVERY_BAD_INPUT else 409
    )
    body: dict[str, Any] = {"detail": refused.message, "code": refused.code}
    if refused.code in ("unknown", "not_offered"):
        body["offered"] = [suggestion["action"] for suggestion in error.one_click]
    return Status(status, body)


def _switch_out() -> dict:
    switch = RecoverySwitch.objects.filter(pk=1).first()
    return {
        "on": errors.automatic_recovery_on(),
        "changed_by": switch.changed_by if switch is not None else "",
        "changed_at": switch.changed_at if switch is not None else None,
    }


@router.get(
    "/errors",
    response=list[ErrorOut],
    summary="Errors the portal saw, newest first, with root cause, suggestions and attempts",
)
def list_errors(
    request: HttpRequest,
    status: str | None = None,
    open: bool | None = None,
    agent: str | None = None,
    classification: str | None = None,
    limit: int = 50,
):
    rows = errors_with_attempts()
    if status:
        if status not in AgentError.Status.values:
            raise HttpError(
                400,
                f"status={status!r} is not an error status; use one of "
                f"{', '.join(AgentError.Status.values)}.",
            )
        rows = rows.filter(status=status)
    if open is not None:
        still_open = [AgentError.Status.OPEN, AgentError.Status.RECOVERING]
        rows = rows.filter(status__in=still_open) if open else rows.exclude(status__in=still_open)
    if agent:
        rows = rows.filter(agent=_agent_filter(agent))
    if classification:
        if classification not in ErrorClass.values:
            raise HttpError(
                400,
                f"classification={classification!r} is not a classification; use one of "
                f"{', '.join(ErrorClass.values)}.",
            )
        rows = rows.filter(classification=classification)
    return [error_out(error) for error in rows[: max(1, min(limit, ERROR_LIMIT_MAX))]]


@router.get(
    "/errors/patterns",
    response=list[PatternOut],
    summary="The same failure grouped: how often, on how many agents, first and last seen",
)
def error_patterns(request: HttpRequest, days: int = 7, agent: str | None = None):
    return errors.patterns(since=_since(days), agent=_agent_filter(agent) if agent else None)


@router.get(
    "/errors/stats",
    response=ErrorStatsOut,
    summary="The error rate, open errors, and counts per agent and classification",
)
def error_stats(request: HttpRequest, days: int = 7):
    return {
        **errors.error_rate(),
        "by_agent_and_class": [
            {
                "agent": row["agent__slug"],
                "name": row["agent__name"],
                "classification": row["classification"],
                "times": row["times"],
            }
            for row in errors.counts_by_agent_and_class(since=_since(days))
        ],
    }


@router.get(
    "/errors/automatic-recovery",
    response=AutomaticRecoveryOut,
    summary="Whether the portal restarts failed agents by itself (the global kill switch)",
)
def get_automatic_recovery(request: HttpRequest):
    return _switch_out()


@router.put(
    "/errors/automatic-recovery",
    response={200: AutomaticRecoveryOut, 400: Problem, 403: Problem},
    summary="Switch automatic recovery on or off for the whole fleet (Admin)",
)
def put_automatic_recovery(request: HttpRequest, payload: AutomaticRecoveryIn):
    if payload.on is None:
        return Status(400, {"detail": 'Send {"on": true} or {"on": false}.', "code": "invalid"})
    try:
        errors.set_automatic_recovery(payload.on, Actor.from_request(request))
    except PermissionDenied as denied:
        return _forbidden(denied)
    return _switch_out()


@router.get(
    "/errors/{error_id}",
    response={200: ErrorOut, 404: Problem},
    summary="One error: root cause, evidence, suggestions, and every recovery attempt's outcome",
)
def get_error(request: HttpRequest, error_id: int):
    return error_out(_error_or_404(error_id))


@router.post(
    "/errors/{error_id}/recover",
    response={202: RecoveryAccepted, 400: RecoveryProblem, 403: Problem, 404: Problem,
              409: RecoveryProblem, 503: RecoveryProblem},
    summary="Run one of the error's one-click recoveries; GET the error for the outcome",
)  # fmt: skip
def recover_error(request: HttpRequest, error_id: int, payload: RecoverIn | None = None):
    payload = payload or RecoverIn()
    error = _error_or_404(error_id)
    try:
        attempt = errors.request_recovery(error, payload.action, Actor.from_request(request))
    except PermissionDenied as denied:
        return _forbidden(denied)
    except errors.RecoveryRefused as refused:
        return _recovery_refused(refused, error)
    return Status(
        202,
        {
            "id": attempt.pk,
            "error": error.pk,
            "agent": error.agent.slug,
            "action": attempt.action,
            "label": RECOVERIES[attempt.action],
            "outcome": attempt.outcome,
            "url": _error_url(error.pk),
        },
    )


@router.post(
    "/errors/{error_id}/ignore",
    response={200: ErrorOut, 403: Problem, 404: Problem, 409: RecoveryProblem},
    summary="Close an error without fixing it (not worth acting on), with the reason",
)
def ignore_error(request: HttpRequest, error_id: int, payload: IgnoreIn | None = None):
    payload = payload or IgnoreIn()
    error = _error_or_404(error_id)
    try:
        errors.ignore_error(error, Actor.from_request(request), payload.reason)
    except PermissionDenied as denied:
        return _forbidden(denied)
    except errors.RecoveryRefused as refused:
        return _recovery_refused(refused, error)
    return error_out(_error_or_404(error_id))
