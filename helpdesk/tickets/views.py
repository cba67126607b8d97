"""The tickets panel's actions (htmx posts from the customer overview): create, create from a
diagnosis, link, update, resolve. Each reads the form, calls one service and answers the
re-rendered panel with a toast; without htmx it redirects to the customer's page."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET, require_POST

from helpdesk import panels
from helpdesk.customers import get_customer
from helpdesk.models import Customer
from helpdesk.tickets import panel, services
from portal.actors import Actor
from portal.htmx import answers_refusals

PANEL = "helpdesk/tickets/_panel.html"


def _answer(request: HttpRequest, actor: Actor, customer: Customer, said: str) -> HttpResponse:
    return panels.answer(request, PANEL, panels.context(actor, customer, panel.panel_context), said)


@require_GET
@answers_refusals(panels.back)
def tickets_panel(request: HttpRequest, key: str) -> HttpResponse:
    """The panel alone (htmx refresh) or on a page of its own."""
    actor = panels.viewer(request)
    customer = get_customer(key)
    values = panels.context(actor, customer, panel.panel_context)
    return panels.panel_alone(request, PANEL, values, page="helpdesk/tickets/page.html")


@require_POST
@answers_refusals(panels.back)
def create(request: HttpRequest, key: str) -> HttpResponse:
    actor = panels.viewer(request)
    customer = get_customer(key)
    diagnosis = None
    if request.POST.get("diagnosis_id"):
        diagnosis = services.get_diagnosis(customer, request.POST["diagnosis_id"])
    ticket = services.create_ticket(
        actor, customer, request.POST.get("system", ""), request.POST.get("subject", ""),
        request.POST.get("body", ""), diagnosis,
    )  # fmt: skip
    return _answer(
        request, actor, customer, f"Creating “{ticket.subject}” in {ticket.get_system_display()}…"
    )


@require_POST
@answers_refusals(panels.back)
def create_from_diagnosis(request: HttpRequest, key: str, diagnosis_id: int) -> HttpResponse:
    actor = panels.viewer(request)
    customer = get_customer(key)
    diagnosis = services.get_diagnosis(customer, diagnosis_id)
    ticket = services.create_ticket(
        actor, customer, request.POST.get("system", ""), request.POST.get("subject", ""),
        request.POST.get("body", ""), diagnosis,
    )  # fmt: skip
    return _answer(
        request, actor, customer,
        f"Creating a {ticket.get_system_display()} ticket from diagnosis #{diagnosis.pk}…",
    )  # fmt: skip


@require_POST
@answers_refusals(panels.back)
def link(request: HttpRequest, key: str) -> HttpResponse:
    actor = panels.viewer(request)
    customer = get_customer(key)
    ticket = services.link_ticket(
        actor, customer, request.POST.get("system", ""), request.POST.get("number", "")
    )
    return _answer(request, actor, customer, f"Linked {ticket.number}.")


@require_POST
@answers_refusals(panels.back)
def update(request: HttpRequest, key: str, ticket_id: int) -> HttpResponse:
    actor = panels.viewer(request)
    customer = get_customer(key)
    ticket = services.get_ticket(ticket_id, customer=customer)
    status = request.POST.get("status") or None
    assignee = request.POST.get("assignee")
    if assignee is not None and assignee.strip() == ticket.assignee:
        assignee = None  # the form shows the current assignee: unchanged means no change
    ticket = services.update_ticket(
        actor, ticket, status=None if status == ticket.status else status,
        assignee=assignee, comment=request.POST.get("comment") or None,
    )  # fmt: skip
    return _answer(request, actor, customer, f"{ticket.number or 'Ticket'} updated; sending…")


@require_POST
@answers_refusals(panels.back)
def resolve(request: HttpRequest, key: str, ticket_id: int) -> HttpResponse:
    actor = panels.viewer(request)
    customer = get_customer(key)
    ticket = services.get_ticket(ticket_id, customer=customer)
    keep = request.POST.get("keep", "")
    ticket = services.resolve_conflict(actor, ticket, keep)
    return _answer(request, actor, customer, f"{ticket.number}: kept {keep}.")
