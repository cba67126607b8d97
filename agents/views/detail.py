"""One agent: its page, its history (and CSV), and the actions taken from it (confirm, run, undo, reconcile)."""

from __future__ import annotations

import csv
import logging
from datetime import datetime

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.dateparse import parse_date
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from agents import services
from agents.models import (
    ACTION_LABELS,
    ACTIONS,
    Agent,
    AgentTransition,
    Operation,
    State,
)
from agents.runtimes import RuntimeFailure
from agents.views.config import panel_context as config_panel_context
from agents.views.errors import error_panel
from agents.views.shared import (
    LOG_LINES_ON_DETAIL,
    card_context,
    detail_extras,
    finished_toast,
    get_agent_or_404,
    shows_counts,
)
from portal import extensions, roles
from portal.actors import Actor
from portal.htmx import htmx_partial, refusal, safe_next
from portal.refusals import BadFilter

logger = logging.getLogger(__name__)


HISTORY_PAGE_SIZE = 50


# --- one agent ------------------------------------------------------------------------------


@require_GET
@vary_on_headers("HX-Request")
def agent_detail(request: HttpRequest, slug: str) -> HttpResponse:
    actor = Actor.from_request(request)
    services.require_viewer(actor)
    agent = get_agent_or_404(slug)
    context = {
        **card_context(agent, actor, extras={}),  # the detail page shows no card
        **detail_extras(agent),
        "log_lines": _recent_log_lines(agent),
    }
    toast = finished_toast(request)
    context.update(toast)
    if htmx_partial(request):
        template = (
            "agents/agent_detail.html#action-result"
            if toast
            else "agents/agent_detail.html#status-update"
        )
    else:
        context.update(error_panel(agent, actor))
        context.update(config_panel_context(agent, actor))
        context["detail_panels"] = extensions.detail_panels(agent, actor)
        template = "agents/agent_detail.html"
        extensions.agent_viewed(request, actor, agent)
    return render(request, template, context)


def _recent_log_lines(agent: Agent) -> list[dict]:
    if agent.state in (State.DRAFT, State.REVOKED):
        return []
    try:
        lines = list(
            services.runtime_for(agent).logs(services.spec_for(agent), tail=LOG_LINES_ON_DETAIL)
        )
    except Exception:  # logs are a convenience here; the page must render without them
        return []
    return [
        {"ts": line.ts, "replica": line.replica, "text": line.text}
        for line in lines[-LOG_LINES_ON_DETAIL:]
    ]


@require_GET
def agent_history(request: HttpRequest, slug: str) -> HttpResponse:
    """The full transition history, filterable, and as CSV with ``?format=csv``."""
    actor = Actor.from_request(request)
    services.require_viewer(actor)
    agent = get_agent_or_404(slug)
    filters = {
        name: request.GET.get(name, "").strip()
        for name in ("action", "actor_kind", "since", "until")
    }
    try:
        since, until = parse_date(filters["since"] or ""), parse_date(filters["until"] or "")
    except ValueError:
        # Well formed but impossible (2024-13-45): say which field, rather than a 500.
        return HttpResponse(
            "since/until: give a real date as YYYY-MM-DD.\n",
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    # A value that names no action or actor kind filters nothing (the page still shows).
    problems = []
    for name in ("action", "actor_kind"):
        try:
            agent.transitions.filtered(**{name: filters[name]})
        except BadFilter as bad:
            problems.append(bad.spelled(f"{name}="))
            filters[name] = ""
    rows = agent.transitions.filtered(
        action=filters["action"], actor_kind=filters["actor_kind"], since=since, until=until
    )
    if request.GET.get("format") == "csv":
        return _history_csv(agent, rows)
    page = Paginator(rows, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "agents/agent_history.html",
        {
            "agent": agent,
            "page": page,
            "filters": filters,
            "filter_problems": problems,
            "query": query.urlencode(),
            "actions": [*ACTIONS, "fail"],
            "actor_kinds": AgentTransition.ActorKind.choices,
        },
    )


class _Echo:
    def write(self, value: str) -> str:
        return value


def _history_csv(agent: Agent, rows) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())
    header = [
        "at",
        "agent",
        "action",
        "from_state",
        "to_state",
        "actor_kind",
        "actor",
        "reason",
        "operation",
        "details",
    ]

    def lines():
        yield writer.writerow(header)
        for row in rows.iterator():
            yield writer.writerow([
                row.at.isoformat(), agent.slug, row.action, row.from_state, row.to_state, row.actor_kind,
                row.actor, row.reason, row.operation_id or "", row.details,
            ])  # fmt: skip

    response = StreamingHttpResponse(lines(), content_type="text/csv")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="{agent.slug}-history-{stamp}.csv"'
    return response


# --- actions ------------------------------------------------------------------------------


@require_GET
@vary_on_headers("HX-Request")
def action_confirm(request: HttpRequest, slug: str, action: str) -> HttpResponse:
    """The confirmation dialog: what the action does, who else it affects."""
    actor = Actor.from_request(request)
    agent = get_agent_or_404(slug)
    if action not in ACTIONS:
        raise Http404(f"{action!r} is not an action.")
    check = services.check_action(agent, action, actor)
    if check.code == "forbidden":
        raise PermissionDenied(check.message)
    context = {
        "agent": agent,
        "check": check,
        "action": action,
        "label": ACTION_LABELS[action][0],
        "next": safe_next(request),
    }
    template = (
        "agents/action_confirm.html#dialog"
        if htmx_partial(request)
        else "agents/action_confirm.html"
    )
    return render(request, template, context)


@require_POST
def take_action(request: HttpRequest, slug: str, action: str) -> HttpResponse:
    actor = Actor.from_request(request)
    agent = get_agent_or_404(slug)
    if action not in ACTIONS:
        raise Http404(f"{action!r} is not an action.")
    typed_name = request.POST.get("confirm_name", "").strip()
    # Only for those who may revoke: anyone else gets the service's refusal (403, audited).
    if action == "revoke" and actor.has(roles.OPERATE) and typed_name != agent.name:
        return _refused(request, agent, f"To revoke, type the agent's name exactly: {agent.name}.")
    try:
        operation = services.request_action(
            agent,
            action,
            actor,
            reason=request.POST.get("reason", ""),
            with_dependencies=request.POST.get("with_dependencies") == "on",
            confirm=request.POST.get("confirm") == "on" or action == "revoke",
        )
    except services.ActionRefused as refused:
        return _refused(request, agent, refused.message)
    agent = get_agent_or_404(slug)
    message = f"{ACTION_LABELS[action][0]} {agent.name}: {agent.pending_label}…"
    if htmx_partial(request):
        undo = (
            {"undo_url": reverse("agents:undo", args=[agent.slug, operation.pk]),
             "undo_seconds": settings.ACTION_UNDO_SECONDS}
            if services.can_undo(operation) else {}
        )  # fmt: skip
        where = request.POST.get("from", "card")
        template = {
            "detail": "agents/agent_detail.html#action-result",
            "row": "agents/agent_list.html#row-result",
        }.get(where, "agents/agent_list.html#card-result")
        context = {**card_context(agent, actor), "toast": message, "toast_level": "info", **undo}
        if where == "detail":
            context.update(detail_extras(agent))
        else:
            if shows_counts(request):  # swapped out of band on the list and the dashboard
                context["counts"] = Agent.objects.fleet_counts()
        return render(request, template, context)
    messages.info(request, message)
    return redirect(safe_next(request) or reverse("agents:detail", args=[agent.slug]))


@require_POST
def undo_action(request: HttpRequest, slug: str, operation_id) -> HttpResponse:
    """The Undo of an action's result toast: its inverse, through the services."""
    actor = Actor.from_request(request)
    agent = get_agent_or_404(slug)
    operation = (
        Operation.objects.filter(pk=operation_id, agent=agent).select_related("agent").first()
    )
    if operation is None:
        raise Http404(f"{agent.name} has no operation {operation_id}.")
    try:
        undone = services.undo_operation(operation, actor)
    except services.ActionRefused as refused:
        return _refused(request, agent, refused.message)
    if htmx_partial(request):
        return render(
            request,
            "portal/toast.html",
            {"toast": undone.message, "toast_level": "info"},
        )
    messages.info(request, undone.message)
    return redirect(safe_next(request) or reverse("agents:detail", args=[agent.slug]))


@require_POST
def reconcile(request: HttpRequest, slug: str) -> HttpResponse:
    """The one-click fix for drift: make the runtime match the portal where that is safe."""
    actor = Actor.from_request(request)
    agent = get_agent_or_404(slug)
    try:
        result = services.reconcile_agent(agent, actor)
    except RuntimeFailure as failure:
        return _refused(request, agent, f"Could not reconcile {agent.name}: {failure.message}")
    done = ", ".join(str(action) for action in result.get("actions") or result.get("removed") or [])
    message = f"Reconciled {agent.name}: {done or 'nothing needed changing'}."
    agent = get_agent_or_404(slug)
    if htmx_partial(request):
        context = {
            **card_context(agent, actor, extras={}),
            **detail_extras(agent),
            "toast": message,
            "toast_level": "success",
        }
        return render(request, "agents/agent_detail.html#action-result", context)
    messages.success(request, message)
    return redirect(reverse("agents:detail", args=[agent.slug]))


def _refused(request: HttpRequest, agent: Agent, message: str) -> HttpResponse:
    # htmx swaps the toast out of band from a 200 (nothing else is swapped).
    return refusal(
        request, message, status=200, fallback=reverse("agents:detail", args=[agent.slug])
    )
