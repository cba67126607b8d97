"""The quick-actions panel's posts (htmx, from the customer overview): one view takes any
action, reads the agent and the action's params from the form, calls ``run_action`` and
answers the re-rendered panel with the result as a toast; without htmx it redirects to the
customer's page with a message."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from helpdesk.actions import panel, services
from helpdesk.customers import get_customer, require_viewer
from helpdesk.models import Customer
from portal import roles
from portal.actors import Actor
from portal.htmx import answers_refusals, htmx_partial

PANEL = "helpdesk/actions/_panel.html"


def _back(key: str = "", **kwargs) -> str:
    return reverse("helpdesk:customer", args=[key]) if key else "/helpdesk/"


def _actor(request: HttpRequest) -> Actor:
    actor = Actor.from_request(request)
    require_viewer(actor)
    return actor


def _context(actor: Actor, customer: Customer) -> dict:
    return {
        "customer": customer,
        "can_operate": actor.has(roles.OPERATE),
        **panel.panel_context(actor, customer),
    }


@require_GET
@answers_refusals(_back)
def actions_panel(request: HttpRequest, key: str) -> HttpResponse:
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
def take_action(request: HttpRequest, key: str, action: str) -> HttpResponse:
    actor = _actor(request)
    customer = get_customer(key)
    found = services.spec(action)
    params = {name: request.POST[name] for name in found.params if request.POST.get(name, "") != ""}
    result = services.run_action(
        actor, customer, found.name, agent=request.POST.get("agent") or None, params=params
    )
    level = "success" if result.ok else "error"
    if not htmx_partial(request):
        (messages.success if result.ok else messages.error)(request, result.message)
        return redirect(_back(customer.key))
    html = render_to_string(PANEL, _context(actor, customer), request)
    html += render_to_string(
        "portal/toast.html", {"toast": result.message, "toast_level": level}, request
    )
    return HttpResponse(html)
