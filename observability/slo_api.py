"""``GET /api/platform/slo`` (every agent with an objective), ``GET`` and ``PUT
/api/platform/agents/{slug}/slo`` (one agent's; ``{"objective": 99.9}`` or ``null`` to clear)."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Schema
from ninja.errors import HttpError

from agents.models import Agent
from agents.services import require_viewer
from observability import slo
from portal.actors import Actor
from portal.schemas import Problem

router = Router(tags=["slo"])


class ObjectiveIn(Schema):
    objective: float | str | None


def _agent(slug: str) -> Agent:
    agent = Agent.objects.filter(slug=slug).first()
    if agent is None:
        raise HttpError(404, f"There is no agent {slug[:60]!r}.")
    return agent


@router.get("/slo", response=dict, summary="Every agent's availability objective, error budget "
            "left and burn rates over 5 min, 30 min, 1 h and 6 h (30-day period)")  # fmt: skip
def fleet_slos(request: HttpRequest):
    require_viewer(Actor.from_request(request))
    return {"slos": [status.as_dict() for status in slo.fleet_statuses()]}


@router.get("/agents/{slug}/slo", response={200: dict, 404: Problem},
            summary="One agent's objective and error budget (slo null without an objective)")  # fmt: skip
def agent_slo(request: HttpRequest, slug: str):
    require_viewer(Actor.from_request(request))
    found = slo.statuses([_agent(slug)])
    return {"slo": found[0].as_dict() if found else None}


@router.put("/agents/{slug}/slo", response={200: dict, 400: Problem, 403: Problem, 404: Problem},
            summary="Set an agent's objective (percent, 50 to 99.999) or clear it (null); Admins")  # fmt: skip
def put_agent_slo(request: HttpRequest, slug: str, payload: ObjectiveIn):
    agent = _agent(slug)
    slo.set_objective(agent, payload.objective, Actor.from_request(request))
    found = slo.statuses([agent])
    return {"slo": found[0].as_dict() if found else None}
