"""The Logs page (its live tail, a paused tail resuming, older pages) and the download."""

from __future__ import annotations

from itertools import chain
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from agents.models import Agent
from observability import context as agent_context
from observability import live, logs
from observability.models import Level
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

LOG_PAGE_SIZE = 100
# Lines fetched when a paused tail resumes: pages of logs.TAIL_LIMIT until none is left.
RESUME_MAX_PAGES = 10


def _log_filters(request: HttpRequest) -> tuple[dict, TimeRange]:
    level = choice(request, "level", [level.label for level in Level], "level")
    text = request.GET.get("q", "").strip()
    if len(text) > logs.TEXT_MAX_CHARS:
        raise FilterError(f"Search for at most {logs.TEXT_MAX_CHARS} characters.")
    window = time_range(request)
    return {"level": level, "q": text}, window


def _log_page_context(request: HttpRequest, agent: Agent | None) -> dict:
    return {
        **shown(request, agent),
        "levels": [level.label for level in Level],
        "ranges": RANGE_CHOICES,
        "filters": {"level": "", "q": "", "range": "", "from": "", "until": ""},
        "entries": [],
        "older_url": "",
        "live_topic": f"logs:{agent.slug if agent else live.ALL_AGENTS_TOPIC}",
        "tail_element": live.rows_element_id(agent.slug if agent else None),
    }


@require_GET
@vary_on_headers("HX-Request")
def log_list(request: HttpRequest) -> HttpResponse:
    actor = viewer(request)
    resolved = context_of(request, actor)
    if resolved.redirect_to:
        return redirect(resolved.redirect_to)
    agent = resolved.agent
    context = _log_page_context(request, agent)
    partial = htmx_partial(request)
    try:
        filters, window = _log_filters(request)
        context["filters"] = {
            **filters,
            "range": window.key,
            "from": window.since_text,
            "until": window.until_text,
        }
        after_id = cursor_id(request, "after")
        if after_id is not None:
            # A paused tail resuming: every line it missed, newest first.
            context["entries"] = _log_lines_after(after_id, agent, filters)
            return render(request, "observability/logs.html#missed", context)
        page = logs.search(
            agent=agent,
            level=filters["level"] or None,
            text=filters["q"] or None,
            since=window.since,
            until=window.until,
            before=request.GET.get("before") or None,
            limit=LOG_PAGE_SIZE,
        )
    except (FilterError, logs.LogQueryError) as problem:
        template = "observability/logs.html#results" if partial else "observability/logs.html"
        return answer(request, template, context, str(problem))
    context["entries"] = page.entries
    context["resume_query"] = context["newest_query"] = query(request)
    context["level_min"] = int(logs.parse_level(filters["level"]) or 0)
    context["download_url"] = reverse("observability:logs-download") + "?" + query(request)
    if page.next_cursor:
        context["older_url"] = "?" + query(request, before=page.next_cursor)
    context["follows_live"] = not request.GET.get("before") and window.until is None
    if partial:
        older = bool(request.GET.get("before"))
        return render(
            request, f"observability/logs.html#{'older-page' if older else 'results'}", context
        )
    return render(request, "observability/logs.html", context)


def _log_lines_after(after_id: int, agent: Agent | None, filters: dict) -> list:
    found = []
    for _ in range(RESUME_MAX_PAGES):
        batch = logs.after(
            after_id, agent=agent, level=filters["level"] or None, text=filters["q"] or None
        )
        found.extend(batch)
        if len(batch) < logs.TAIL_LIMIT:
            break
        after_id = batch[-1].id
    return list(reversed(found))


@require_GET
def log_download(request: HttpRequest) -> HttpResponse:
    """The lines the page's filters find, oldest first, as a text file streamed as it is read."""
    actor = viewer(request)
    resolved = context_of(request, actor, remember=False)
    try:
        asked = request.GET.get(agent_context.PARAM, "").strip()
        if resolved.agent is None and asked not in ("", agent_context.ALL):
            raise FilterError(f"There is no agent called “{asked}”: use a slug such as wow-cache.")
        filters, window = _log_filters(request)
        lines = logs.export(
            agent=resolved.agent,
            level=filters["level"] or None,
            text=filters["q"] or None,
            since=window.since,
            until=window.until,
        )
        # The first page is read here, so a bad filter is a 400 and not a broken download.
        first = next(lines, None)
    except (FilterError, logs.LogQueryError) as problem:
        return HttpResponse(f"{problem}\n", status=400, content_type="text/plain; charset=utf-8")
    body = chain([first], lines) if first is not None else iter(())
    response = StreamingHttpResponse(body, content_type="text/plain; charset=utf-8")
    who = resolved.agent.slug if resolved.agent else "all-agents"
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="logs-{who}-{stamp}.txt"'
    return response


def logs_link(agent: str, text: str = "") -> str:
    """The Logs page narrowed to an agent's lines containing ``text`` (other apps link here)."""
    query = {agent_context.PARAM: agent, **({"q": text} if text else {})}
    return f"{reverse('observability:logs')}?{urlencode(query)}"
