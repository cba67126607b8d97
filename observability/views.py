"""The Logs, Events and Alerts pages, the alert buttons, and the header's agent context switcher.

Every page honours the agent context (``observability.context``): ``?agent=<slug>`` in the URL
shows one agent and remembers the choice; without it the page redirects to the remembered one,
so the URL always says what the page shows. Filters live in the URL too. Views read the
request, call one service (``logs``, ``events``, ``alerts``) and render the page, or for htmx
the partial it swaps; the markup lives once, in the partials of ``templates/observability/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import chain
from urllib.parse import urlencode, urlsplit

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    QueryDict,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import Resolver404, resolve, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from agents.models import Agent, State
from agents.services import require_viewer
from observability import alerts, events, live, logs
from observability import context as agent_context
from observability.models import Alert, Event, Level, Severity
from portal import roles
from portal.actors import Actor
from portal.htmx import htmx_partial

LOG_PAGE_SIZE = 100
# Lines fetched when a paused tail resumes: pages of logs.TAIL_LIMIT until none is left.
RESUME_MAX_PAGES = 10
EVENT_PAGE_SIZE = 50
ALERT_PAGE_SIZE = 50
SILENCE_CHOICES = [(15, "15 min"), (60, "1 h"), (240, "4 h"), (1440, "24 h")]
ALERT_TABS = [
    ("open", "Open"),
    ("acknowledged", "Acknowledged"),
    ("resolved", "Resolved"),
    ("all", "All"),
]
RANGES = {
    "15m": ("Last 15 min", timedelta(minutes=15)),
    "1h": ("Last hour", timedelta(hours=1)),
    "24h": ("Last 24 h", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
}
RANGE_CHOICES = [
    ("", "Any time"),
    *((key, label) for key, (label, _) in RANGES.items()),
    ("custom", "Custom…"),
]
# Parameters that say where in a list a page starts: they do not survive a change of filter.
CURSORS = ("before", "after", "page", "day")
# Pages whose lists follow the agent context: the switcher sends the chosen agent there in
# the URL; other pages keep their own parameters.
CONTEXT_AWARE_NAMESPACES = {"observability", "metrics"}
CONTEXT_AWARE_PAGES = {"dashboard"}
KIND_ICONS = {
    Event.Kind.TRANSITION: "refresh",
    Event.Kind.HEALTH: "activity",
    Event.Kind.DRIFT: "shuffle",
    Event.Kind.CONFIG: "sliders",
    Event.Kind.ERROR: "alert",
    Event.Kind.ALERT: "bell",
}


class FilterError(ValueError):
    """A filter value the page cannot use; the message says what to write instead."""


def _viewer(request: HttpRequest) -> Actor:
    actor = Actor.from_request(request)
    require_viewer(actor)
    return actor


def _context_of(
    request: HttpRequest, actor: Actor, *, remember: bool = True
) -> agent_context.Resolved:
    """The agent the page shows; a slug that names no agent becomes a message. Only a page
    someone opens remembers the choice: its htmx refreshes (polls, live updates, filters) and
    downloads read it, so a tab left open cannot undo a choice made in another tab."""
    if not remember or htmx_partial(request):
        return agent_context.Resolved(agent_context.peek(request))
    resolved = agent_context.resolve(request, actor)
    if resolved.problem:
        messages.warning(request, resolved.problem)
    return resolved


def _shown(request: HttpRequest, agent: Agent | None) -> dict:
    """The "Showing: WowCache ✕" chip, and the URLs that keep the page's filters."""
    return {
        "shown_agent": agent,
        "clear_context_url": agent_context.with_agent(request, None),
        "agent_param": agent.slug if agent else agent_context.ALL,
    }


def _query(request: HttpRequest, **changes: object) -> str:
    """The request's query string without its cursors, with ``changes`` applied."""
    params = request.GET.copy()
    for cursor in CURSORS:
        params.pop(cursor, None)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value)
    return params.urlencode()


# --- filters shared by the pages -----------------------------------------------------------


@dataclass(frozen=True)
class TimeRange:
    key: str
    since: datetime | None
    until: datetime | None
    since_text: str
    until_text: str


def _time_range(request: HttpRequest) -> TimeRange:
    key = request.GET.get("range", "").strip()
    since_text = request.GET.get("from", "").strip()
    until_text = request.GET.get("until", "").strip()
    if key in RANGES:
        return TimeRange(key, timezone.now() - RANGES[key][1], None, "", "")
    if key not in ("", "custom"):
        choices = ", ".join(RANGES)
        raise FilterError(f"Unknown time range “{key}”: choose {choices} or custom.")
    since = _moment(since_text, "start")
    until = _moment(until_text, "end")
    if since and until and since >= until:
        raise FilterError("The start of the time range is not before its end: swap them.")
    custom = "custom" if (since or until or key == "custom") else ""
    return TimeRange(custom, since, until, since_text, until_text)


def _moment(text: str, name: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(
            f"The {name} of the time range, “{text}”, is not a date and time: "
            "write it as 2026-11-21 14:30."
        ) from None
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


def _choice(request: HttpRequest, name: str, choices: list[str], label: str) -> str:
    value = request.GET.get(name, "").strip()
    if value and value not in choices:
        raise FilterError(f"Unknown {label} “{value}”: choose one of {', '.join(choices)}.")
    return value


def _cursor_id(request: HttpRequest, name: str) -> int | None:
    value = request.GET.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        raise FilterError(f"{name}=“{value}” is not a position in the list: use the page links.")
    return int(value)


def _answer(request: HttpRequest, template: str, context: dict, problem: str = "") -> HttpResponse:
    """The page (or partial) with a bad filter's message: 400, so scripts notice."""
    context["problem"] = problem
    return render(request, template, context, status=400 if problem else 200)


# --- the agent context switcher ------------------------------------------------------------


@require_POST
def choose_context(request: HttpRequest) -> HttpResponse:
    """The switcher's choice: remember it, then back to the page it was made on (with
    ``?agent=`` where the page follows the context; an agent's page becomes the chosen
    agent's page)."""
    actor = Actor.from_request(request)
    slug = request.POST.get("agent", "").strip()
    back = _safe_next(request.POST.get("next", "")) or reverse("dashboard")
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


def _safe_next(candidate: str) -> str:
    return candidate if candidate.startswith("/") and not candidate.startswith("//") else ""


# --- Logs ------------------------------------------------------------------------------------


def _log_filters(request: HttpRequest) -> tuple[dict, TimeRange]:
    level = _choice(request, "level", [level.label for level in Level], "level")
    text = request.GET.get("q", "").strip()
    if len(text) > logs.TEXT_MAX_CHARS:
        raise FilterError(f"Search for at most {logs.TEXT_MAX_CHARS} characters.")
    window = _time_range(request)
    return {"level": level, "q": text}, window


def _log_page_context(request: HttpRequest, agent: Agent | None) -> dict:
    return {
        **_shown(request, agent),
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
    actor = _viewer(request)
    resolved = _context_of(request, actor)
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
        after_id = _cursor_id(request, "after")
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
        return _answer(request, template, context, str(problem))
    context["entries"] = page.entries
    context["resume_query"] = context["newest_query"] = _query(request)
    context["level_min"] = int(logs.parse_level(filters["level"]) or 0)
    context["download_url"] = reverse("observability:logs-download") + "?" + _query(request)
    if page.next_cursor:
        context["older_url"] = "?" + _query(request, before=page.next_cursor)
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
    actor = _viewer(request)
    resolved = _context_of(request, actor, remember=False)
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


# --- Events ----------------------------------------------------------------------------------


def _event_filters(request: HttpRequest) -> tuple[dict, TimeRange]:
    return {
        "kind": _choice(request, "kind", Event.Kind.values, "event kind"),
        "severity": _choice(request, "severity", Severity.values, "severity"),
        "q": request.GET.get("q", "").strip()[:200],
    }, _time_range(request)


def _describe_events(rows: list[Event]) -> list[Event]:
    for event in rows:
        event.icon = KIND_ICONS.get(event.kind, "activity")
        event.day = timezone.localtime(event.ts).date()
    return rows


@require_GET
@vary_on_headers("HX-Request")
def event_list(request: HttpRequest) -> HttpResponse:
    actor = _viewer(request)
    resolved = _context_of(request, actor)
    if resolved.redirect_to:
        return redirect(resolved.redirect_to)
    agent = resolved.agent
    partial = htmx_partial(request)
    context = {
        **_shown(request, agent),
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
        after_id = _cursor_id(request, "after")
        if after_id is not None:
            rows = _events_after(after_id, wanted)
            context.update(events=_describe_events(rows), top_id=rows[0].id if rows else after_id)
            context["live_url"] = "?" + _query(request, after=context["top_id"])
            return render(request, "observability/events.html#newer", context)
        page = events.search(**wanted, before=_cursor_id(request, "before"), limit=EVENT_PAGE_SIZE)
    except (FilterError, events.EventQueryError) as problem:
        template = "observability/events.html#results" if partial else "observability/events.html"
        return _answer(request, template, context, str(problem))
    rows = _describe_events(page.events)
    top_id = rows[0].id if rows else _cursor_id(request, "before") or 0
    context.update(events=rows, top_id=top_id)
    context["live_url"] = "?" + _query(request, after=top_id)
    context["follows_live"] = window.until is None
    if page.older:
        last_day = rows[-1].day.isoformat() if rows else ""
        context["older_url"] = "?" + _query(request, before=page.older)
        context["older_fragment_url"] = "?" + _query(request, before=page.older, day=last_day)
    if partial and request.GET.get("before"):
        context["previous_day"] = request.GET.get("day", "")
        return render(request, "observability/events.html#older-page", context)
    if partial:
        return render(request, "observability/events.html#results", context)
    return render(request, "observability/events.html", context)


def _events_after(after_id: int, wanted: dict) -> list[Event]:
    """Events newer than ``after_id`` under the same filters, newest first (the live head)."""
    query = events.filtered(**wanted).filter(id__gt=after_id).select_related("agent")
    return list(query.order_by("-id")[:EVENT_PAGE_SIZE])


# --- Alerts ----------------------------------------------------------------------------------


def _describe_alert(alert: Alert, now: datetime) -> Alert:
    alert.unit = alerts.rule_metric_unit(alert.rule.metric) if alert.rule.metric else ""
    alert.silenced = alert.is_silenced(now)
    alert.fired_ago = ago(alert.fired_at, now)
    alert.seen_ago = ago(alert.last_seen_at, now)
    alert.acknowledged_ago = ago(alert.acknowledged_at, now)
    alert.resolved_ago = ago(alert.resolved_at, now)
    return alert


def ago(moment: datetime | None, now: datetime) -> str:
    """ "just now", "40 s ago", "3 min ago", "2 h 5 min ago", "3 days ago"."""
    if moment is None:
        return ""
    seconds = int((now - moment).total_seconds())
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min ago"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min ago" if minutes else f"{hours} h ago"
    days = hours // 24
    return f"{days} day{'s' if days != 1 else ''} ago"


def _alert_filters(request: HttpRequest) -> dict:
    return {
        "status": _choice(request, "status", [key for key, _ in ALERT_TABS], "status") or "open",
        "severity": _choice(request, "severity", Severity.values, "severity"),
    }


@require_GET
@vary_on_headers("HX-Request")
def alert_list(request: HttpRequest) -> HttpResponse:
    actor = _viewer(request)
    resolved = _context_of(request, actor)
    if resolved.redirect_to:
        return redirect(resolved.redirect_to)
    agent = resolved.agent
    partial = htmx_partial(request)
    context = {
        **_shown(request, agent),
        "tabs": [(key, label, "?" + _query(request, status=key)) for key, label in ALERT_TABS],
        "severities": Severity.choices,
        "silence_choices": SILENCE_CHOICES,
        "can_act": actor.has(roles.OPERATE),
        "filters": {"status": "open", "severity": ""},
        "page": None,
        "open_counts": alerts.open_counts(agent),
        "next_url": request.get_full_path(),
    }
    context["open_total"] = sum(context["open_counts"].values())
    try:
        filters = _alert_filters(request)
        context["filters"] = filters
        found = alerts.search(
            agent=agent,
            status=None if filters["status"] == "all" else filters["status"],
            severity=filters["severity"] or None,
        )
    except (FilterError, alerts.AlertActionError) as problem:
        template = "observability/alerts.html#results" if partial else "observability/alerts.html"
        return _answer(request, template, context, str(problem))
    page = Paginator(found, ALERT_PAGE_SIZE).get_page(request.GET.get("page"))
    now = timezone.now()
    for alert in page:
        _describe_alert(alert, now)
    context["page"] = page
    context["page_query"] = _query(request)
    if partial:
        return render(request, "observability/alerts.html#results", context)
    return render(request, "observability/alerts.html", context)


@require_GET
def alert_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """An alert's address (toasts, webhooks, the API): its agent's alerts, scrolled to it."""
    _viewer(request)
    alert = _get_alert(pk)
    status = "open" if alert.is_open else "resolved"
    query = urlencode({"agent": alert.agent.slug, "status": status})
    return redirect(f"{reverse('observability:alerts')}?{query}#alert-{alert.pk}")


def _get_alert(pk: int) -> Alert:
    alert = Alert.objects.select_related("agent", "rule").filter(pk=pk).first()
    if alert is None:
        raise Http404(f"There is no alert #{pk}.")
    return alert


@require_POST
def alert_action(request: HttpRequest, pk: int, verb: str) -> HttpResponse:
    """Acknowledge, silence or resolve one alert (Operators; the service refuses others)."""
    actor = Actor.from_request(request)
    alert = _get_alert(pk)
    note = request.POST.get("note", "").strip()[:300]
    try:
        if verb == "acknowledge":
            alert = alerts.acknowledge(alert, actor, note)
            done = f"Alert #{alert.pk} acknowledged: {alert.summary}"
        elif verb == "resolve":
            alert = alerts.resolve(alert, actor, note)
            done = f"Alert #{alert.pk} resolved: {alert.summary}"
        elif verb == "silence":
            minutes = _silence_minutes(request.POST.get("minutes", ""))
            alert = alerts.silence(alert, actor, timedelta(minutes=minutes))
            until = timezone.localtime(alert.silenced_until)
            done = f"Alert #{alert.pk} silenced until {until:%H:%M}: {alert.summary}"
        else:
            raise Http404(f"{verb!r} is not something to do to an alert.")
    except PermissionDenied as denied:
        return _refused(request, str(denied), 403)
    except alerts.AlertActionError as refused:
        return _refused(request, refused.message, 409, alert)
    if htmx_partial(request):
        context = {
            "alert": _describe_alert(alert, timezone.now()),
            "can_act": actor.has(roles.OPERATE),
            "silence_choices": SILENCE_CHOICES,
            "next_url": _safe_next(request.POST.get("next", "")),
            "toast": done,
            "toast_level": "success",
        }
        return render(request, "observability/alerts.html#alert-result", context)
    messages.success(request, done)
    return redirect(_safe_next(request.POST.get("next", "")) or reverse("observability:alerts"))


def _silence_minutes(value: str) -> int:
    allowed = {minutes for minutes, _ in SILENCE_CHOICES}
    if not value.isdigit() or int(value) not in allowed:
        raise alerts.AlertActionError("Silence for 15 min, 1 h, 4 h or 24 h.", "invalid_duration")
    return int(value)


def _refused(request: HttpRequest, message: str, status: int, alert: Alert | None = None):
    """A refusal that says why: a toast for htmx (portal.js lets a 4xx toast in for forms
    marked data-refusal-toast), the page with a message otherwise (403 for a role)."""
    if htmx_partial(request):
        response = render(
            request,
            "portal/toast.html",
            {"toast": message, "toast_level": "error"},
            status=status,
        )
        response["HX-Reswap"] = "none"
        return response
    if status == 403:
        raise PermissionDenied(message)
    messages.error(request, message)
    return redirect(_safe_next(request.POST.get("next", "")) or reverse("observability:alerts"))
