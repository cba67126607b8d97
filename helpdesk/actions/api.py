"""Quick actions in the API: ``POST /helpdesk/customers/{id}/actions/{action}`` with
``{"agent": slug, "params": {...}}``, or ``POST /helpdesk/actions/{action}`` with the customer in
the body (``customer_id``; the seed's ``.../actions/restart-agent``), and the
customer's temporary access grants. Each calls ``helpdesk.actions.services``; refusals answer
``{"detail", "code"}``: 400 bad params, 403 role or another customer's agent, 404 unknown
customer or action, 409 not possible now, 503 a service away."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router

from helpdesk.actions import grants, services
from helpdesk.actions.schemas import (
    ActionIn,
    ActionOut,
    CustomerActionIn,
    Grants,
    action_out,
    grants_out,
)
from helpdesk.customers import get_customer, require_viewer
from helpdesk.refusals import HelpdeskRefused
from portal.actors import Actor
from portal.schemas import Problem

router = Router(tags=["helpdesk"])
ROOT = "/helpdesk/customers/{customer_id}"
ACT = {400: Problem, 403: Problem, 404: Problem, 409: Problem, 503: Problem}


@router.post(
    f"{ROOT}/actions/{{action}}",
    response={200: ActionOut, **ACT},
    summary="Take a quick action for the customer (Operator): restart-agent, scale-agent, "
    "clear-cache, reset-trial, resend-email, grant-access, revoke-access, "
    "redrive-dead-letters, rollback-version, rollback-config",
)
def take_action(request: HttpRequest, customer_id: str, action: str, payload: ActionIn):
    return _act(request, customer_id, action, payload)


@router.post(
    "/helpdesk/actions/{action}",
    response={200: ActionOut, **ACT},
    summary="The same quick action with the customer in the body (the seed's "
    '`POST /helpdesk/actions/restart-agent` with `{"customer_id", "agent", "params"}`)',
)
def take_action_for(request: HttpRequest, action: str, payload: CustomerActionIn):
    if not isinstance(payload.customer_id, str) or not payload.customer_id:
        require_viewer(Actor.from_request(request))
        raise HelpdeskRefused(
            'Name the customer: {"customer_id": "acme-corp", "agent": "...", "params": {...}}.',
            "invalid",
        )
    return _act(request, payload.customer_id, action, payload)


def _act(request: HttpRequest, customer_id: str, action: str, payload: ActionIn):
    actor = Actor.from_request(request)
    require_viewer(actor)
    customer = get_customer(customer_id)
    result = services.run_action(
        actor, customer, action, agent=payload.agent, params=payload.params
    )
    agent = payload.agent if isinstance(payload.agent, str) else None
    return action_out(result, customer.key, agent)


@router.get(
    f"{ROOT}/grants",
    response={200: Grants, 403: Problem, 404: Problem},
    summary="The customer's active temporary access grants (?all=true: the ended ones too)",
)
def list_grants(request: HttpRequest, customer_id: str, all: str = ""):
    require_viewer(Actor.from_request(request))
    customer = get_customer(customer_id)
    if all not in ("", "true", "false", "1", "0"):
        raise HelpdeskRefused(f"all={all[:20]!r}: use all=true or all=false.", "invalid")
    found = (
        list(customer.grants.select_related("grantee").order_by("-created_at", "-id")[:200])
        if all in ("true", "1")
        else grants.active_grants(customer)
    )
    return grants_out(customer.key, found)
