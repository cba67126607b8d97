"""The tickets API under /api/platform/helpdesk: a customer's tickets (list, create, link), one
ticket (read, change, resolve a conflict), the webhooks Zendesk and Jira call, and the
deliveries they made.

Reading needs a role, changing Operator, the deliveries Admin; each route calls one service
function, which checks the role, audits and refuses with ``{"detail", "code"}``. The two
webhooks take no session or token (``auth=None``): their signature is what authenticates them.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router
from ninja.responses import Status

from helpdesk.customers import get_customer, require_viewer
from helpdesk.models import TicketSystem
from helpdesk.tickets import services, webhooks
from helpdesk.tickets.schemas import (
    Deliveries,
    ResolveIn,
    TicketDetail,
    TicketIn,
    TicketPatch,
    Tickets,
    WebhookAnswer,
    deliveries_out,
    ticket_detail,
    tickets_out,
)
from portal.actors import Actor
from portal.schemas import Problem

router = Router(tags=["helpdesk tickets"])
ROOT = "/helpdesk"
READ = {400: Problem, 403: Problem, 404: Problem, 503: Problem}
ACT = {**READ, 409: Problem, 429: Problem}
HOOK = {400: Problem, 401: Problem, 503: Problem}


@router.get(
    f"{ROOT}/customers/{{customer_id}}/tickets",
    response={200: Tickets, **READ},
    summary="A customer's tickets (Zendesk and Jira), newest first, and which systems are on",
)
def list_tickets(request: HttpRequest, customer_id: str):
    actor = Actor.from_request(request)
    require_viewer(actor)
    customer = get_customer(customer_id)
    return tickets_out(customer.key, services.list_tickets(actor, customer), services.systems())


@router.post(
    f"{ROOT}/customers/{{customer_id}}/tickets",
    response={201: TicketDetail, 200: TicketDetail, **ACT},
    summary="Create a ticket ({system, subject, body, diagnosis_id}) or link one ({system, number})",
)
def create_or_link(request: HttpRequest, customer_id: str, payload: TicketIn):
    actor = Actor.from_request(request)
    customer = get_customer(customer_id)
    if payload.number is not None:
        ticket = services.link_ticket(actor, customer, payload.system, payload.number)
        return Status(200, ticket_detail(ticket))
    diagnosis = None
    if payload.diagnosis_id is not None:
        diagnosis = services.get_diagnosis(customer, payload.diagnosis_id)
    ticket = services.create_ticket(
        actor, customer, payload.system, payload.subject, payload.body, diagnosis
    )
    return Status(201, ticket_detail(ticket))


@router.get(
    f"{ROOT}/tickets/{{ticket_id}}",
    response={200: TicketDetail, **READ},
    summary="One ticket with its comments and the changes sent (or waiting) for it",
)
def get_ticket(request: HttpRequest, ticket_id: str):
    require_viewer(Actor.from_request(request))
    return ticket_detail(services.get_ticket(ticket_id))


@router.patch(
    f"{ROOT}/tickets/{{ticket_id}}",
    response={200: TicketDetail, **ACT},
    summary="Change a ticket's status or assignee, or add a comment (sent to the remote)",
)
def update_ticket(request: HttpRequest, ticket_id: str, payload: TicketPatch):
    actor = Actor.from_request(request)
    ticket = services.get_ticket(ticket_id)
    ticket = services.update_ticket(
        actor, ticket, status=payload.status, assignee=payload.assignee, comment=payload.comment
    )
    return ticket_detail(ticket)


@router.post(
    f"{ROOT}/tickets/{{ticket_id}}/resolve",
    response={200: TicketDetail, **ACT},
    summary="Settle a conflict: keep theirs (the remote's values) or ours (sent again)",
)
def resolve(request: HttpRequest, ticket_id: str, payload: ResolveIn):
    actor = Actor.from_request(request)
    ticket = services.get_ticket(ticket_id)
    return ticket_detail(services.resolve_conflict(actor, ticket, payload.keep))


@router.get(
    f"{ROOT}/webhooks/deliveries",
    response={200: Deliveries, **READ},
    summary="The newest webhook deliveries from Zendesk and Jira, refused ones included (Admin)",
)
def deliveries(request: HttpRequest, limit: str = "100"):
    return deliveries_out(webhooks.recent_deliveries(Actor.from_request(request), limit))


def _hook(request: HttpRequest, system: str):
    source = request.META.get("REMOTE_ADDR", "")
    receipt = webhooks.receive(system, request.headers, request.body, source)
    if receipt.status != 200:
        code = "unauthorized" if receipt.status == 401 else "invalid"
        return Status(receipt.status, {"detail": receipt.detail, "code": code})
    return Status(200, {"result": receipt.result, "detail": receipt.detail})


@router.post(
    f"{ROOT}/webhooks/zendesk",
    auth=None,
    response={200: WebhookAnswer, **HOOK},
    summary="Zendesk's webhook (signed: X-Zendesk-Webhook-Signature)",
)
def zendesk_webhook(request: HttpRequest):
    return _hook(request, TicketSystem.ZENDESK)


@router.post(
    f"{ROOT}/webhooks/jira",
    auth=None,
    response={200: WebhookAnswer, **HOOK},
    summary="Jira's webhook (signed: X-Hub-Signature)",
)
def jira_webhook(request: HttpRequest):
    return _hook(request, TicketSystem.JIRA)
