"""The Help Desk pages: search (as you type) and one customer's overview, where each part of
the help desk (detective, actions, playbooks, tickets) adds its panel.

Views read the request, call ``helpdesk.customers`` / ``helpdesk.overview`` and render; the
parts' panels come from ``helpdesk.<part>.panel.panel_context``.
"""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec
from typing import Any

from django.db.models import Count, Max
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from helpdesk import customers, overview
from helpdesk.apps import PARTS
from helpdesk.models import Customer
from helpdesk.refusals import HelpdeskRefused
from portal import roles
from portal.actors import Actor
from portal.htmx import answers_refusals, htmx_partial

PANEL_ORDER = ("detective", "actions", "playbooks", "tickets")


def _actor(request: HttpRequest) -> Actor:
    actor = Actor.from_request(request)
    customers.require_viewer(actor)
    return actor


@require_GET
@vary_on_headers("HX-Request")
@answers_refusals("/helpdesk/")
def index(request: HttpRequest) -> HttpResponse:
    actor = _actor(request)
    q = request.GET.get("q", "")
    status, problem, hits = 200, "", []
    try:
        hits = customers.search_customers(actor, q)
        q = customers.clean_query(q)
    except HelpdeskRefused as refused:
        # Bad search text (NUL, too long): the page says why, answered 400.
        status, problem, q = 400, refused.message, q.replace("\x00", "")[:100]
    context: dict[str, Any] = {"q": q, "hits": hits, "problem": problem}
    if htmx_partial(request):
        return render(request, "helpdesk/index.html#results", context, status=status)
    context["total"] = Customer.objects.count()
    context["recent"] = (
        Customer.objects.annotate(
            last=Max("interactions__at"), agents_count=Count("links", distinct=True)
        )
        .filter(last__isnull=False)
        .order_by("-last")[:12]
        if context["total"] and not q
        else []
    )
    return render(request, "helpdesk/index.html", context, status=status)


def customer_or_404(key: str) -> Customer:
    """The customer of a page's URL; a 404 page saying so for an unknown one."""
    try:
        return customers.get_customer(key)
    except HelpdeskRefused as missing:
        raise Http404(missing.message) from None


@require_GET
@vary_on_headers("HX-Request")
def customer(request: HttpRequest, key: str) -> HttpResponse:
    actor = _actor(request)
    found = customer_or_404(key)
    failures_only = request.GET.get("failures") in ("1", "on", "true")
    view = overview.customer_overview(actor, found, failures_only=failures_only)
    every_agent = request.GET.get("agents") == "all"
    shown = overview.attention_first(view.agents)
    shown = shown if every_agent else shown[: overview.AGENTS_SHOWN]
    context = {
        "o": view,
        "shown_agents": shown,
        "agents_hidden": len(view.agents) - len(shown),
        "customer": found,
        "timeline": overview.timeline(view),
        "bars": overview.activity_bars(view.activity),
        "can_operate": actor.has(roles.OPERATE),
        "can_manage": actor.has(roles.MANAGE),
    }
    if htmx_partial(request) and request.GET.get("part") == "timeline":
        return render(request, "helpdesk/customer.html#timeline", context)
    context["panels"] = _panels(request, actor, found, context)
    return render(request, "helpdesk/customer.html", context)


def _panels(request: HttpRequest, actor: Actor, found: Customer, base: dict) -> list[str]:
    """Each part's panel, rendered: its template with its own context over the page's."""
    panels: list[str] = []
    for part in PANEL_ORDER:
        if part not in PARTS or find_spec(f"helpdesk.{part}.panel") is None:
            continue
        module = import_module(f"helpdesk.{part}.panel")
        context = {**base, **module.panel_context(actor, found)}
        if "action_agents" in context:  # the same agents as the table above, in its order
            order = {row.agent.pk: n for n, row in enumerate(base["shown_agents"])}
            context["action_agents"] = sorted(
                (row for row in context["action_agents"] if row["agent"].pk in order),
                key=lambda row: order[row["agent"].pk],
            )
        panels.append(render_to_string(f"helpdesk/{part}/_panel.html", context, request))
    return panels
