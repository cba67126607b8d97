"""The registry, an agent's history, the eight lifecycle actions, operations and their undo."""

from __future__ import annotations

from uuid import UUID

from django.http import HttpRequest, HttpResponse
from ninja import Router
from ninja.errors import HttpError
from ninja.responses import Status

from agents import services
from agents.models import ACTIONS, Agent, Operation
from agents.schemas import (
    Accepted,
    ActionIn,
    AgentOut,
    ConfigOut,
    ConfigPatchIn,
    OperationOut,
    TransitionOut,
    UndoOut,
    accepted_out,
    agent_out,
    config_out,
    operation_out,
    transition_out,
    undo_out,
)
from portal.actors import Actor
from portal.refusals import BadFilter
from portal.schemas import Problem

router = Router()

HISTORY_LIMIT_MAX = 1000


def _agent_or_404(slug: str) -> Agent:
    try:
        return Agent.objects.prefetch_related("dependencies").get(slug=slug)
    except Agent.DoesNotExist:
        raise HttpError(
            404, f"There is no agent {slug!r}; GET /api/platform/agents lists them."
        ) from None


def _operation_or_404(operation_id: UUID) -> Operation:
    try:
        return Operation.objects.select_related("agent").get(pk=operation_id)
    except Operation.DoesNotExist:
        raise HttpError(404, f"There is no operation {operation_id}.") from None


AGENT_LIMIT_DEFAULT = 500
AGENT_LIMIT_MAX = 1000


def _whole(request: HttpRequest, name: str, default: int, low: int, high: int) -> int:
    text = request.GET.get(name, "").strip()
    if not text:
        return default
    if not text.isdecimal() or len(text) > 9 or not low <= int(text) <= high:
        raise HttpError(400, f"{name}={text[:20]!r} must be a whole number from {low} to {high}.")
    return int(text)


@router.get(
    "/agents",
    response=list[AgentOut],
    summary="List agents, by name, a page at a time (limit, default 500, at most 1000; offset); "
    "X-Total-Count says how many match and a Link header points at the next page",
)
def list_agents(
    request: HttpRequest,
    response: HttpResponse,
    state: str | None = None,
    tier: str | None = None,
    health: str | None = None,
    q: str = "",
):
    limit = _whole(request, "limit", AGENT_LIMIT_DEFAULT, 1, AGENT_LIMIT_MAX)
    offset = _whole(request, "offset", 0, 0, 10**8)
    try:
        agents = Agent.objects.prefetch_related("dependencies").filtered(
            state=state, tier=tier, health=health, q=q
        )
    except BadFilter as bad:
        raise HttpError(400, bad.spelled(f"{bad.field}=")) from None
    total = agents.count()
    response["X-Total-Count"] = str(total)
    if offset + limit < total:
        query = request.GET.copy()
        query["offset"], query["limit"] = str(offset + limit), str(limit)
        response["Link"] = f'<{request.path}?{query.urlencode()}>; rel="next"'
    return [agent_out(agent) for agent in agents[offset : offset + limit]]


@router.get("/agents/{slug}", response=AgentOut, summary="One agent")
def get_agent(request: HttpRequest, slug: str):
    return agent_out(_agent_or_404(slug))


@router.get(
    "/agents/{slug}/history", response=list[TransitionOut], summary="An agent's transition history"
)
def agent_history(request: HttpRequest, slug: str, action: str | None = None, limit: int = 100):
    try:
        rows = _agent_or_404(slug).transitions.filtered(action=action)
    except BadFilter as bad:
        raise HttpError(400, bad.spelled(f"{bad.field}=")) from None
    return [transition_out(row) for row in rows[: max(1, min(limit, HISTORY_LIMIT_MAX))]]


# Before the lifecycle actions' route: ninja takes the first path that matches.
@router.patch(
    "/agents/{slug}/config",
    response={200: ConfigOut, 400: Problem, 403: Problem, 404: Problem},
    summary="Change an agent's config while it runs (hot patch, no restart)",
)
def patch_config(request: HttpRequest, slug: str, payload: ConfigPatchIn):
    """``{"config": {...}}``: checked by agentd's own rules (a wrong type or bound is a 400
    naming the key), saved with the config it replaces, and sent to every running replica."""
    applied = services.patch_config(
        _agent_or_404(slug), payload.config, Actor.from_request(request)
    )
    return config_out(applied)


@router.post(
    "/agents/{slug}/config/rollback",
    response={200: ConfigOut, 403: Problem, 404: Problem, 409: Problem},
    summary="Put back the config before the last change, on the running replicas too",
)
def roll_back_config(request: HttpRequest, slug: str):
    applied = services.roll_back_config(_agent_or_404(slug), Actor.from_request(request))
    return config_out(applied)


@router.post(
    "/agents/{slug}/{action}",
    response={202: Accepted, 403: Problem, 404: Problem, 409: Problem, 503: Problem},
    summary="Take a lifecycle action (provision, deploy, start, stop, suspend, resume, restart, revoke)",
)
def take_action(request: HttpRequest, slug: str, action: str, payload: ActionIn | None = None):
    payload = payload or ActionIn()
    if action not in ACTIONS:
        raise HttpError(404, f"{action!r} is not an action; use one of {', '.join(ACTIONS)}.")
    operation = services.request_action(
        _agent_or_404(slug),
        action,
        Actor.from_request(request),
        reason=payload.reason,
        with_dependencies=payload.with_dependencies,
        confirm=payload.confirm,
    )
    return Status(202, accepted_out(operation))


@router.get(
    "/operations/{operation_id}",
    response=OperationOut,
    summary="An operation's progress and outcome",
)
def get_operation(request: HttpRequest, operation_id: UUID):
    return operation_out(_operation_or_404(operation_id))


@router.post(
    "/operations/{operation_id}/undo",
    response={200: UndoOut, 202: UndoOut, 403: Problem, 404: Problem, 409: Problem, 503: Problem},
    summary="Undo a recent stop, start, suspend or resume (within ACTION_UNDO_SECONDS)",
)
def undo_operation(request: HttpRequest, operation_id: UUID):
    operation = _operation_or_404(operation_id)
    undone = services.undo_operation(operation, Actor.from_request(request))
    return Status(
        200 if undone.operation is None else 202,
        undo_out(operation, undone.message, undone.operation),
    )
