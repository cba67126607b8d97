"""The Metrics page (one agent or the fleet, over a chosen time range; htmx polls get the live
part) and the refresh of the agent cards' sparklines.

Charts refresh by htmx polling every scrape interval (the dashboard's too): new numbers only
exist that often, so a poll is exactly as fresh as a push would be.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from observability import context as agent_context
from observability import sparklines
from observability.context import focus_for, query_string
from observability.figures import DEFAULT_RANGE, RANGES, agent_metrics, fleet_metrics
from portal import roles
from portal.actors import Actor
from portal.htmx import htmx_partial


@require_GET
@vary_on_headers("HX-Request")
def metrics_page(request: HttpRequest) -> HttpResponse:
    """One agent's metrics, or the fleet's, over 1 h to 7 d; htmx polls get the live part."""
    actor = Actor.from_request(request)
    actor.require(roles.VIEW, "see metrics")
    partial = htmx_partial(request)
    focus = focus_for(request, actor, remember=not partial)
    if focus.redirect_to:
        return redirect(focus.redirect_to)
    agent = focus.agent
    range_key = request.GET.get("range") or DEFAULT_RANGE
    time_range = RANGES.get(range_key)
    slug = agent.slug if agent else None
    context = {
        "agent": agent,
        "problem": focus.problem,
        "range_key": range_key,
        "ranges": [
            {"key": r.key, "label": r.label, "href": query_string(agent=slug, range=r.key)}
            for r in RANGES.values()
        ],
        "clear_href": query_string(
            agent=agent_context.ALL, range=range_key if time_range else None
        ),
        "refresh_seconds": settings.METRICS_SCRAPE_INTERVAL_SECONDS,
        "time_zone": timezone.get_current_timezone_name(),
        "poll_href": request.path + query_string(agent=slug, range=range_key),
    }
    if time_range is None:
        context["range_error"] = (
            f"There is no time range “{range_key}”. Choose one of "
            + ", ".join(r.label for r in RANGES.values())
            + "."
        )
        template = "observability/metrics.html#live" if partial else "observability/metrics.html"
        return render(request, template, context, status=400)
    context["time_range"] = time_range
    context.update(agent_metrics(agent, time_range) if agent else fleet_metrics(time_range))
    template = "observability/metrics.html#live" if partial else "observability/metrics.html"
    return render(request, template, context)


@require_GET
def card_sparklines_refresh(request: HttpRequest) -> HttpResponse:
    """The sparklines of the cards a page shows (``?agents=a,b``), swapped out of band."""
    actor = Actor.from_request(request)
    actor.require(roles.VIEW, "see metrics")
    slugs = [slug for slug in request.GET.get("agents", "").split(",") if slug]
    if not slugs:
        return HttpResponse(status=204)
    return HttpResponse(sparklines.refreshed(slugs))
