"""The Events page: the event log, newest first, by day, with its live head."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from observability import events
from observability.models import Event, Severity
from observability.views.shared import (
    RANGE_CHOICES,
    FilterError,
    TimeRange,
    answer,
    choice,
    context_of,
    cursor_id,
    query,
    shown,
    time_range,
    viewer,
)
from portal.htmx import htmx_partial

EVENT_PAGE_SIZE = 50
KIND_ICONS = {
    Event.Kind.TRANSITION: "refresh",
    Event.Kind.HEALTH: "activity",
    Event.Kind.DRIFT: "shuffle",
    Event.Kind.CONFIG: "sliders",
    Event.Kind.ERROR: "alert",
    Event.Kind.ALERT: "bell",
}


def _event_filters(request: HttpRequest) -> tuple[dict, TimeRange]:
    return {
        "kind": choice(request, "kind", Event.Kind.values, "event kind"),
        "severity": choice(request, "severity", Severity.values, "severity"),
        "q": request.GET.get("q", "").strip()[:200],
    }, time_range(request)


def _describe_events(rows: list[Event]) -> list[Event]:
    for event in rows:
        event.icon = KIND_ICONS.get(event.kind, "activity")
        event.day = timezone.localtime(event.ts).date()
    return rows


@require_GET
@vary_on_headers("HX-Request")
def event_list(request: HttpRequest) -> HttpResponse:
    actor = viewer(request)
    resolved = context_of(request, actor)
    if resolved.redirect_to:
        return redirect(resolved.redirect_to)
    agent = resolved.agent
    partial = htmx_partial(request)
    context = {
        **shown(request, agent),
        "kinds": Event.Kind.choices,
        "severities": Severity.choices,
        "ranges": RANGE_CHOICES,
        "filters": {"kind": "", "severity": "", "q": "", "range": "", "from": "", "until": ""},
        "events": [],
    }
    try:
        filters, window = _event_filters(request)
        context["filters"] = {
            **filters,
            "range": window.key,
            "from": window.since_text,
            "until": window.until_text,
        }
        wanted = {
            "agent": agent,
            "kind": filters["kind"] or None,
            "severity": filters["severity"] or None,
            "since": window.since,
            "until": window.until,
            "text": filters["q"] or None,
        }
        after_id = cursor_id(request, "after")
        if after_id is not None:
            rows = _events_after(after_id, wanted)
            context.update(events=_describe_events(rows), top_id=rows[0].id if rows else after_id)
            context["live_url"] = "?" + query(request, after=context["top_id"])
            return render(request, "observability/events.html#newer", context)
        page = events.search(**wanted, before=cursor_id(request, "before"), limit=EVENT_PAGE_SIZE)
    except (FilterError, events.EventQueryError) as problem:
        template = "observability/events.html#results" if partial else "observability/events.html"
        return answer(request, template, context, str(problem))
    rows = _describe_events(page.events)
    top_id = rows[0].id if rows else cursor_id(request, "before") or 0
    context.update(events=rows, top_id=top_id)
    context["live_url"] = "?" + query(request, after=top_id)
    context["follows_live"] = window.until is None
    if page.older:
        last_day = rows[-1].day.isoformat() if rows else ""
        context["older_url"] = "?" + query(request, before=page.older)
        context["older_fragment_url"] = "?" + query(request, before=page.older, day=last_day)
    if partial and request.GET.get("before"):
        context["previous_day"] = request.GET.get("day", "")
        return render(request, "observability/events.html#older-page", context)
    if partial:
        return render(request, "observability/events.html#results", context)
    return render(request, "observability/events.html", context)


def _events_after(after_id: int, wanted: dict) -> list[Event]:
    """Events newer than ``after_id`` under the same filters, newest first (the live head)."""
    found = events.filtered(**wanted).filter(id__gt=after_id).select_related("agent")
    return list(found.order_by("-id")[:EVENT_PAGE_SIZE])
