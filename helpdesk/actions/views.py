"""The quick-actions panel's posts (htmx, from the customer overview): one view takes any
action, reads the agent and the action's params from the form, calls ``run_action`` and
answers the re-rendered panel with the result as a toast; without htmx it redirects to the
customer's page with a message."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET, require_POST

from helpdesk import panels
from helpdesk.actions import panel, services
from helpdesk.customers import get_customer
from portal.htmx import answers_refusals

PANEL = "helpdesk/actions/_panel.html"


@require_GET
@answers_refusals(panels.back)
def actions_panel(request: HttpRequest, key: str) -> HttpResponse:
    """The panel alone (htmx refresh); the whole page is the customer's."""
    actor = panels.viewer(request)
    customer = get_customer(key)
    return panels.panel_alone(request, PANEL, panels.context(actor, customer, panel.panel_context))


@require_POST
@answers_refusals(panels.back)
def take_action(request: HttpRequest, key: str, action: str) -> HttpResponse:
    actor = panels.viewer(request)
    customer = get_customer(key)
    found = services.spec(action)
    params = {name: request.POST[name] for name in found.params if request.POST.get(name, "") != ""}
    result = services.run_action(
        actor, customer, found.name, agent=request.POST.get("agent") or None, params=params
    )
    values = panels.context(actor, customer, panel.panel_context)
    return panels.answer(request, PANEL, values, result.message, ok=result.ok)
