"""JSON API for agents under /api/platform/: the registry, history, the eight actions, operations.

Same service functions as the pages, the admin and the ``agents`` command. Errors answer with
``{"detail": "<what went wrong and what to do>", "code": "..."}``.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpRequest
from ninja import Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status

from agents import services
from agents.models import ACTIONS, Agent, AgentTransition, Health, Operation, State
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
