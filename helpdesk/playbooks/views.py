"""The playbooks panel's posts (htmx, from the customer overview): a dry run answers the panel
with the plan shown inline; a run starts the workflow and answers the panel with a toast that
links to the run (where an Operator approves the destructive steps). Without htmx they redirect
to the customer's page with a message."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from helpdesk.customers import get_customer, require_viewer
from helpdesk.models import Customer, PlaybookRun
from helpdesk.playbooks import panel, services
from portal import roles
from portal.actors import Actor
from portal.htmx import answers_refusals, htmx_partial

PANEL = "helpdesk/playbooks/_panel.html"


def _back(key: str = "", **kwargs) -> str:
    return reverse("helpdesk:customer", args=[key]) if key else "/helpdesk/"


def _actor(request: HttpRequest) -> Actor:
    actor = Actor.from_request(request)
    require_viewer(actor)
    return actor


def _context(actor: Actor, customer: Customer, dry_run: PlaybookRun | None = None) -> dict:
    return {
        "customer": customer,
        "can_operate": actor.has(roles.OPERATE),
        **panel.panel_context(actor, customer, dry_run),
    }


def _answer(request, actor, customer, said: str, dry_run: PlaybookRun | None = None):
    if not htmx_partial(request):
        messages.success(request, said)
        return redirect(_back(customer.key))
    html = render_to_string(PANEL, _context(actor, customer, dry_run), request)
    html += render_to_string(
        "portal/toast.html", {"toast": said, "toast_level": "success"}, request
    )
    return HttpResponse(html)


@require_GET
@answers_refusals(_back)
def playbooks_panel(request: HttpRequest, key: str) -> HttpResponse:
    """The panel alone (htmx refresh); the whole page is the customer's."""
    actor = _actor(request)
    customer = get_customer(key)
    if not htmx_partial(request):
        return redirect(_back(customer.key))
    response = render(request, PANEL, _context(actor, customer))
    response["Vary"] = "HX-Request"
    return response


@require_POST
@answers_refusals(_back)
def dry_run(request: HttpRequest, key: str, slug: str) -> HttpResponse:
    actor = _actor(request)
    customer = get_customer(key)
    playbook = services.get_playbook(slug)
    record = services.dry_run(actor, customer, playbook, request.POST.getlist("steps") or None)
    return _answer(request, actor, customer, f"Dry run of {playbook.title}: nothing changed.",
                   record)  # fmt: skip


@require_POST
@answers_refusals(_back)
def run(request: HttpRequest, key: str, slug: str) -> HttpResponse:
    actor = _actor(request)
    customer = get_customer(key)
    playbook = services.get_playbook(slug)
    record = services.run_playbook(actor, customer, playbook, request.POST.getlist("steps") or None)
    approvals = sum(1 for step in record.plan if step.get("approval"))
    said = f"Started {playbook.title} as workflow run #{record.workflow_run_id}" + (
        f"; {approvals} step(s) wait for an Operator's approval on the run's page."
        if approvals
        else "."
    )
    return _answer(request, actor, customer, said)
