"""The SLO panel's form on an agent's page: an Admin sets or clears the objective."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_POST

from agents.models import Agent
from observability import slo
from portal import roles
from portal.actors import Actor
from portal.htmx import htmx_partial, refusal
from portal.refusals import BadRequest


def slo_panel(agent: Agent, actor: Actor) -> str:
    """The agent page's panel (a detail panel through ``portal.extensions``)."""
    context = {**slo.panel_context(agent), "may_set_slo": actor.has(roles.MANAGE)}
    return render_to_string("observability/slo_panel.html", context)


@require_POST
def set_slo(request: HttpRequest, slug: str) -> HttpResponse:
    actor = Actor.from_request(request)
    agent = get_object_or_404(Agent, slug=slug)
    back = reverse("agents:detail", args=[agent.slug]) + f"#slo-panel-{agent.slug}"
    try:
        slo.set_objective(agent, request.POST.get("objective", "").strip() or None, actor)
    except PermissionDenied as denied:
        return refusal(request, str(denied), status=403, fallback=back)
    except BadRequest as refused:
        return refusal(request, refused.message, status=400, fallback=back)
    if htmx_partial(request):
        return HttpResponse(slo_panel(agent, actor))
    return redirect(back)
