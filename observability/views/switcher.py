"""The header's agent context switcher: the choice is remembered, and the page it was made on
follows it."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import Resolver404, resolve, reverse
from django.views.decorators.http import require_GET, require_POST

from agents.models import Agent, State
from agents.services import require_viewer
from observability import context as agent_context
from observability import context_processors
from observability.views.shared import CURSORS
from portal.actors import Actor
from portal.htmx import safe_next

# Pages whose lists follow the agent context: the switcher sends the chosen agent there in
# the URL; other pages keep their own parameters.
CONTEXT_AWARE_NAMESPACES = {"observability", "metrics"}
CONTEXT_AWARE_PAGES = {"dashboard"}


@require_GET
def switcher_options(request: HttpRequest) -> HttpResponse:
    """The switcher's options for what was typed, searched on the server: a large fleet's
    switcher lists a few of its agents and finds the others here."""
    require_viewer(Actor.from_request(request))
    text = request.GET.get("q", "").strip()[:100]
    agents = context_processors.switcher_options(
        request.user, limit=context_processors.SWITCHER_OPTIONS, text=text
    )
    return render(request, "observability/switcher.html#options", {"agents": agents})


@require_POST
def choose_context(request: HttpRequest) -> HttpResponse:
    """The switcher's choice: remember it, then back to the page it was made on (with
    ``?agent=`` where the page follows the context; an agent's page becomes the chosen
    agent's page)."""
    actor = Actor.from_request(request)
    slug = request.POST.get("agent", "").strip()
    back = safe_next(request, reverse("dashboard"))
    agent = None
    if slug not in ("", agent_context.ALL):
        agent = Agent.objects.filter(slug=slug).exclude(state=State.REVOKED).first()
        if agent is None:
            messages.error(request, f"There is no agent called “{slug}”; pick one from the list.")
            return redirect(back)
    agent_context.choose(actor, agent)
    return redirect(_after_choice(back, agent))


def _after_choice(url: str, agent: Agent | None) -> str:
    parts = urlsplit(url)
    try:
        match = resolve(parts.path)
    except Resolver404:
        return url
    if match.namespace == "agents" and "slug" in match.kwargs:
        if agent is None:
            return reverse("agents:list")
        kwargs = {**match.kwargs, "slug": agent.slug}
        try:
            return reverse(f"agents:{match.url_name}", kwargs=kwargs)
        except Exception:
            return reverse("agents:detail", args=[agent.slug])
    aware = match.namespace in CONTEXT_AWARE_NAMESPACES or (
        not match.namespace and match.url_name in CONTEXT_AWARE_PAGES
    )
    if not aware:
        return url
    params = QueryDict(parts.query, mutable=True)
    params[agent_context.PARAM] = agent.slug if agent else agent_context.ALL
    for cursor in CURSORS:
        params.pop(cursor, None)
    return f"{parts.path}?{urlencode(sorted(params.lists()), doseq=True)}"
