"""Error pages: an agent's error panel with its one-click recoveries, the Errors page (the list,
patterns, counts and the automatic-recovery switch) and the dashboard's open errors.

Views read the request, call one function of ``agents.errors`` and render. The markup lives
once, in the partials of ``agents/agent_detail.html`` (the panel), ``agents/error_list.html``
and ``portal/dashboard.html``; ``agents.live`` pushes the same partials over the WebSocket.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Case, Count, IntegerField, Value, When
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from agents import errors
from agents.errors.rules import RECOVERIES
from agents.models import Agent, AgentError, ErrorClass, RecoveryAttempt, RecoverySwitch
from agents.services import require_viewer
from agents.views.shared import get_agent_or_404
from portal import roles
from portal.actors import Actor
from portal.htmx import answers_refusals, htmx_partial, safe_next

ERRORS_PAGE_SIZE = 50
# Closed errors the agent panel lists (the Errors page has them all).
CLOSED_ON_PANEL = 20
# A recovery's result stays in view this long after it closed the error.
RECENTLY_CLOSED = timedelta(minutes=15)
OPEN_ON_DASHBOARD = 8
# The raw signals worth a glance on the panel, by the words shown for them.
_FACTS = {"exit_code": "exit code", "signal": "signal", "oom": "out of memory", "port": "port"}


# --- what the pages show ------------------------------------------------------------------------


def describe_error(error: AgentError) -> AgentError:
    """Give an error (attempts prefetched) the words its panel shows."""
    attempts = list(error.attempts.all())
    for attempt in attempts:
        attempt.label = RECOVERIES.get(attempt.action, attempt.action)
    error.attempt_list = attempts
    error.running_attempt = next(
        (a for a in attempts if a.outcome == RecoveryAttempt.Outcome.RUNNING), None
    )
    error.last_result = next(
        (a for a in attempts if a.outcome != RecoveryAttempt.Outcome.RUNNING), None
    )
    error.running_seconds = (
        (timezone.now() - error.running_attempt.started_at).total_seconds()
        if error.running_attempt
        else None
    )
    details = error.details or {}
    error.facts = [
        (name, details[key])
        for key, name in _FACTS.items()
        if details.get(key) not in (None, "", False)
    ]
    return error


def error_panel(agent: Agent, actor: Actor) -> dict:
    """The agent page's error panel: open errors first, then the ones closed in the last
    minutes (a recovery's result stays in view), then older ones (collapsed)."""
    base = AgentError.objects.filter(agent=agent).prefetch_related("attempts")
    open_errors = [
        describe_error(error)
        for error in base.filter(status__in=AgentError.OPEN_STATUSES).order_by(
            "-last_seen_at", "-id"
        )
    ]
    closed = [
        describe_error(error)
        for error in base.exclude(status__in=AgentError.OPEN_STATUSES).order_by(
            "-resolved_at", "-id"
        )[:CLOSED_ON_PANEL]
    ]
    since = timezone.now() - RECENTLY_CLOSED
    recent = [error for error in closed if error.resolved_at and error.resolved_at >= since]
    return {
        "agent": agent,
        "open_errors": open_errors,
        "recent_errors": recent,
        "older_errors": [error for error in closed if error not in recent],
        "can_recover": actor.has(roles.OPERATE),
    }


def dashboard_errors() -> dict:
    """The dashboard's part: the open errors, newest first, and the error rate."""
    open_errors = list(
        AgentError.objects.filter(status__in=AgentError.OPEN_STATUSES)
        .select_related("agent")
        .order_by("-last_seen_at", "-id")[:OPEN_ON_DASHBOARD]
    )
    return {"dashboard_open_errors": open_errors, "error_rate": errors.error_rate()}


def automatic_switch() -> dict:
    """The kill switch of automatic recovery: on or off, and who changed it last."""
    return {
        "automatic_on": errors.automatic_recovery_on(),
        "automatic_switch": RecoverySwitch.objects.filter(pk=1).first(),
    }


# --- the agent panel --------------------------------------------------------------------------


@require_GET
@vary_on_headers("HX-Request")
def agent_errors(request: HttpRequest, slug: str) -> HttpResponse:
    """The panel alone, for polling while the live socket is down; the page otherwise."""
    actor = Actor.from_request(request)
    require_viewer(actor)
    agent = get_agent_or_404(slug)
    if not htmx_partial(request):
        return redirect(reverse("agents:detail", args=[agent.slug]) + "#agent-errors")
    return render(request, "agents/agent_detail.html#errors", error_panel(agent, actor))


def _get_error(pk: int) -> AgentError:
    try:
        return AgentError.objects.select_related("agent").get(pk=pk)
    except AgentError.DoesNotExist:
        raise Http404(f"There is no error #{pk}.") from None


@require_GET
def error_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """An error's address (for links from the API, the CLI, the Errors page): its agent's panel."""
    require_viewer(Actor.from_request(request))
    error = _get_error(pk)
    return redirect(reverse("agents:detail", args=[error.agent.slug]) + f"#error-{error.pk}")


def _panel_answer(
    request: HttpRequest, error: AgentError, actor: Actor, toast: str, level: str
) -> HttpResponse:
    """The panel as it is now, with a toast (htmx); the agent page with a message otherwise."""
    agent = get_agent_or_404(error.agent.slug)
    if htmx_partial(request):
        context = {**error_panel(agent, actor), "toast": toast, "toast_level": level}
        return render(request, "agents/agent_detail.html#errors-result", context)
    getattr(messages, level)(request, toast)
    return redirect(
        safe_next(request) or reverse("agents:detail", args=[agent.slug]) + f"#error-{error.pk}"
    )


@require_POST
@answers_refusals()
def recover(request: HttpRequest, pk: int) -> HttpResponse:
    """One click on a suggested fix: record the attempt and hand it to a worker."""
    actor = Actor.from_request(request)
    error = _get_error(pk)
    action = request.POST.get("action", "")
    try:
        attempt = errors.request_recovery(error, action, actor)
    except errors.RecoveryRefused as refused:
        return _panel_answer(request, error, actor, refused.message, "error")
    label = RECOVERIES[attempt.action]
    return _panel_answer(
        request, error, actor, f"{label} ({error.agent.name}): recovering…", "info"
    )


@require_POST
@answers_refusals()
def ignore(request: HttpRequest, pk: int) -> HttpResponse:
    """Close an error without fixing it (a known, harmless failure), with the reason given."""
    actor = Actor.from_request(request)
    error = _get_error(pk)
    why = request.POST.get("why", "").strip()[:300]
    try:
        errors.ignore_error(error, actor, why)
    except errors.RecoveryRefused as refused:
        return _panel_answer(request, error, actor, refused.message, "error")
    return _panel_answer(
        request, error, actor, f"Error #{error.pk} on {error.agent.name} ignored.", "info"
    )


# --- the Errors page ---------------------------------------------------------------------------


def _filters(request: HttpRequest) -> dict:
    status = request.GET.get("status", "")
    classification = request.GET.get("class", "")
    return {
        "status": status if status in ("active", *AgentError.Status.values) else "",
        "class": classification if classification in ErrorClass.values else "",
        "agent": request.GET.get("agent", "").strip(),
        "signature": request.GET.get("signature", "").strip(),
    }


def _filtered_errors(filters: dict):
    rows = (
        AgentError.objects.select_related("agent")
        .annotate(
            attempt_count=Count("attempts"),
            # Open ones first, then by when they were last seen.
            closed=Case(
                When(status__in=AgentError.OPEN_STATUSES, then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            ),
        )
        .order_by("closed", "-last_seen_at", "-id")
    )
    rows = rows.filtered(
        status=filters["status"], classification=filters["class"], signature=filters["signature"]
    )
    # An agent that does not exist has no errors: the page says so rather than refusing.
    return rows.filter(agent__slug=filters["agent"]) if filters["agent"] else rows


def _counts_table(rows: list[dict]) -> dict:
    """Times per agent and class, as a table: one row per agent, one column per class."""
    classes = [
        value for value in ErrorClass.values if any(r["classification"] == value for r in rows)
    ]
    agents: dict[str, dict] = {}
    for row in rows:
        entry = agents.setdefault(
            row["agent__slug"],
            {"slug": row["agent__slug"], "name": row["agent__name"], "by_class": {}, "total": 0},
        )
        entry["by_class"][row["classification"]] = row["times"]
        entry["total"] += row["times"]
    table = sorted(agents.values(), key=lambda entry: (-entry["total"], entry["name"]))
    for entry in table:
        entry["cells"] = [entry["by_class"].get(value, 0) for value in classes]
    return {
        "classes": [(value, ErrorClass(value).label) for value in classes],
        "rows": table,
        "totals": [sum(r["times"] for r in rows if r["classification"] == v) for v in classes],
        "total": sum(row["times"] for row in rows),
    }


def errors_page_context(request: HttpRequest, actor: Actor) -> dict:
    filters = _filters(request)
    page = Paginator(_filtered_errors(filters), ERRORS_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return {
        "page": page,
        "filters": filters,
        "query": query.urlencode(),
        "statuses": [("active", "Open or recovering"), *AgentError.Status.choices],
        "classes": ErrorClass.choices,
        "agents": Agent.objects.only("slug", "name").order_by("name"),
        "can_switch": actor.has(roles.MANAGE),
    }


@require_GET
@vary_on_headers("HX-Request")
def error_list(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    require_viewer(actor)
    context = {
        **errors_page_context(request, actor),
        "patterns": errors.patterns(),
        "counts": _counts_table(errors.counts_by_agent_and_class()),
        "error_rate": errors.error_rate(),
    }
    if htmx_partial(request):
        # The list (filtered), with the rate, patterns and counts out of band: the list is
        # fetched again when an error opens or closes anywhere.
        return render(request, "agents/error_list.html#live-parts", context)
    return render(request, "agents/error_list.html", {**context, **automatic_switch()})


@require_POST
@answers_refusals()
def set_automatic(request: HttpRequest) -> HttpResponse:
    """The kill switch: Admins turn automatic recovery on or off for the whole fleet."""
    actor = Actor.from_request(request)
    on = request.POST.get("automatic") in ("on", "1", "true")
    errors.set_automatic_recovery(on, actor)
    message = (
        "Automatic recovery is on: transient failures are restarted with backoff."
        if on
        else "Automatic recovery is off: errors are recorded and classified, nothing is fixed "
        "by itself."
    )
    if htmx_partial(request):
        context = {
            **automatic_switch(),
            "can_switch": True,
            "toast": message,
            "toast_level": "success" if on else "warning",
        }
        return render(request, "agents/error_list.html#switch-result", context)
    messages.success(request, message)
    return redirect(reverse("agents:errors"))
