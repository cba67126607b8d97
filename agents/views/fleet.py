"""The fleet: the agents page (cards or table, filtered) and one card refreshed alone."""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from agents import bulk, services
from agents.models import (
    Agent,
    Health,
    State,
    Tier,
)
from agents.views.shared import (
    agents_with_relations,
    card_context,
    finished_toast,
    get_agent_or_404,
    shows_counts,
)
from portal import extensions
from portal.actors import Actor
from portal.htmx import htmx_partial
from portal.refusals import BadFilter

logger = logging.getLogger(__name__)


# --- the fleet ------------------------------------------------------------------------------


@require_GET
@vary_on_headers("HX-Request")
def agent_list(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    services.require_viewer(actor)
    view = "table" if request.GET.get("view") == "table" else "grid"
    filters = {name: request.GET.get(name, "").strip() for name in ("state", "tier", "health", "q")}
    agents = agents_with_relations()
    problems = []
    # A bad value is named with what to use instead, and filters nothing (the page still shows).
    for name in ("state", "tier", "health"):
        try:
            agents.filtered(**{name: filters[name]})
        except BadFilter as bad:
            problems.append(bad.spelled(f"{name}="))
            filters[name] = ""
    agents = agents.filtered(**filters)
    # A page of the fleet at a time: thousands of cards would take seconds to draw and read.
    page, page_problem = _page_number(request.GET.get("page", ""))
    if page_problem:
        problems.append(page_problem)
    total = agents.count()
    pages = max(1, -(-total // AGENT_PAGE_SIZE))
    page = min(page, pages)
    offset = (page - 1) * AGENT_PAGE_SIZE
    agents = list(agents[offset : offset + AGENT_PAGE_SIZE])
    graph = services.DependencyGraph.load_linked()
    # Also in the table: its page extras keep cards current once the view switches to cards.
    extras, page_extras = extensions.card_extras(agents)
    cards = [card_context(agent, actor, graph, extras) for agent in agents]
    context = {
        "cards": cards,
        "card_page_extras": page_extras,
        "view": view,
        "bulk_toolbar_actions": [
            (action, bulk.BULK_ACTION_LABELS[action]) for action in bulk.BULK_ACTIONS
        ],
        "bulk_shortcuts": list(bulk.SHORTCUT_LABELS.items()),
        "filters": {**filters, "state": filters["state"].upper()},
        "filter_problems": problems,
        "states": State.choices,
        "tiers": Tier.choices,
        "healths": Health.choices,
        "counts": Agent.objects.fleet_counts(),
        "paging": _paging(request, page, pages, total, offset, len(agents)),
    }
    template = (
        "agents/agent_list.html#results" if htmx_partial(request) else "agents/agent_list.html"
    )
    return render(request, template, context)


AGENT_PAGE_SIZE = 50


def _page_number(text: str) -> tuple[int, str]:
    """The page asked for, and a sentence when it is not a page number (then the first)."""
    text = text.strip()
    if not text:
        return 1, ""
    if not text.isdecimal() or len(text) > 9 or int(text) < 1:
        return 1, f"page={text[:20]!r} is not a page number; the first page is shown."
    return int(text), ""


def _paging(request: HttpRequest, page: int, pages: int, total: int, offset: int, shown: int):
    def link(number: int) -> str:
        query = request.GET.copy()
        query["page"] = str(number)
        return "?" + query.urlencode()

    return {
        "page": page,
        "pages": pages,
        "total": total,
        "first": offset + 1 if shown else 0,
        "last": offset + shown,
        "previous": link(page - 1) if page > 1 else "",
        "next": link(page + 1) if page < pages else "",
    }


@require_GET
def agent_card(request: HttpRequest, slug: str) -> HttpResponse:
    """One card, for the polling a pending card does until its action finishes."""
    actor = Actor.from_request(request)
    services.require_viewer(actor)
    agent = get_agent_or_404(slug)
    toast = finished_toast(request)
    table = request.GET.get("view") == "table"
    template = f"agents/agent_list.html#{'row' if table else 'card'}{'-result' if toast else ''}"
    # The poll that sees the action finish updates the fleet counts too (out of band), on a
    # page that shows them.
    counts = {"counts": Agent.objects.fleet_counts()} if toast and shows_counts(request) else {}
    return render(request, template, {**card_context(agent, actor), **toast, **counts})
