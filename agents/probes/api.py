"""``GET`` and ``PUT /api/platform/agents/{slug}/probes``: an agent's liveness and readiness
probes (mounted first, before the agents router's ``POST /agents/{slug}/{action}``).

The body of a PUT is read here, not by a schema, so that every wrong value is a 400 naming the
field (the same sentence as the page and the command), never a 422.
"""

from __future__ import annotations

import json

from django.http import HttpRequest
from ninja import Router
from ninja.errors import HttpError

from agents.models import Agent
from agents.probes import services
from agents.services import require_viewer
from portal.actors import Actor
from portal.schemas import Problem

router = Router(tags=["probes"])

EXAMPLE = {
    "liveness": {
        "kind": "tcp",
        "port": None,
        "interval_seconds": 10,
        "timeout_seconds": 2,
        "failure_threshold": 3,
        "success_threshold": 1,
    },
    "readiness": {"kind": "http", "path": "/readyz", "status": 200, "interval_seconds": 5},
}
BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "additionalProperties": True},
                "example": EXAMPLE,
            }
        },
    }
}


def _agent(slug: str) -> Agent:
    agent = Agent.objects.filter(slug=slug).first()
    if agent is None:
        raise HttpError(
            404, f"There is no agent {slug[:60]!r}; GET /api/platform/agents lists them."
        )
    return agent


def _answer(agent: Agent) -> dict:
    return {**services.probes_of(agent), "replicas": services.replica_status(agent)}


@router.get(
    "/agents/{slug}/probes",
    response={200: dict, 404: Problem},
    summary="An agent's liveness and readiness probes (custom false: the defaults), when a "
    "change takes effect, and the monitor's latest view of each replica",
)
def get_probes(request: HttpRequest, slug: str):
    require_viewer(Actor.from_request(request))
    return _answer(_agent(slug))


@router.put(
    "/agents/{slug}/probes",
    response={200: dict, 400: Problem, 403: Problem, 404: Problem, 409: Problem},
    summary="Set an agent's probes: {liveness, readiness}, each http (path, status), tcp (port; "
    "null: the replica's) or exec (command: an argv list), with interval_seconds, "
    "timeout_seconds, failure_threshold, success_threshold; {} for the defaults. Operators",
    openapi_extra=BODY,
)
def put_probes(request: HttpRequest, slug: str):
    agent = _agent(slug)
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError) as error:
        raise HttpError(400, f"The body is not JSON: {error}.") from None
    if body is None:
        raise HttpError(
            400, 'Send the probes as a JSON object: {"liveness": {...}, "readiness": {...}}, or {}.'
        )
    return _answer(services.set_probes(agent, body, Actor.from_request(request)))
