"""Agent pages: the fleet (cards or table), an agent's detail and history, and the actions.

Views read the request, call one service, and render a page or, for htmx, the fragment it
swaps. The markup lives once, in the partials of ``agents/agent_list.html`` and
``agents/agent_detail.html``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Prefetch
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from agents import bulk, services
from agents.models import (
    ACTION_LABELS,
    ACTIONS,
    Agent,
    AgentError,
    AgentTransition,
    Health,
    Operation,
    State,
    Tier,
)
from agents.runtimes import RuntimeFailure
from portal import roles
from portal.actors import Actor
from portal.refusals import BadFilter

HISTORY_PAGE_SIZE = 50
LOG_LINES_ON_DETAIL = 20

logger = logging.getLogger(__name__)


# --- what other apps add to agent pages -------------------------------------------------------
# Observability draws a CPU sparkline on each card and the dependency graph on the detail page,
# but agents must not import it: it registers providers here from its AppConfig.ready().


@dataclass(frozen=True)
class CardExtras:
    """What one provider adds to the agent cards of a page: HTML per agent id for the card's
    extras slot, and HTML once per page (what keeps those slots current)."""

    cards: Mapping[int, str] = field(default_factory=dict)
    page: str = ""


# provider(every agent the page shows) -> CardExtras: called once per page, never once per card.
CARD_EXTRAS: list[Callable[[Sequence[Agent]], CardExtras]] = []
# provider(agent, actor) -> the HTML of a panel on the agent's detail page.
DETAIL_PANELS: list[Callable[[Agent, Actor], str]] = []
# hook(request, actor, agent): someone opened the agent's page (the whole page, not a refresh);
# observability makes it their agent context.
AGENT_VIEWED: list[Callable[[HttpRequest, Actor, Agent], None]] = []


def collect_card_extras(agents: Sequence[Agent]) -> tuple[dict[int, list[str]], list[str]]:
    """Every provider's additions for ``agents``: HTML pieces per agent id, and for the page.
    A failing provider costs only its own additions: a card renders without a sparkline."""
    cards: dict[int, list[str]] = {}
    page: list[str] = []
    for provider in CARD_EXTRAS:
        try:
            extras = provider(agents)
        except Exception:
            logger.exception("card extras provider %r failed", provider)
            continue
        for agent_id, html in extras.cards.items():
            cards.setdefault(agent_id, []).append(html)
        if extras.page:
            page.append(extras.page)
    return cards, page


def detail_panels(agent: Agent, actor: Actor) -> list[str]:
    panels = []
    for provider in DETAIL_PANELS:
        try:
            panels.append(provider(agent, actor))
        except Exception:
            logger.exception("detail panel provider %r failed", provider)
    return panels


def htmx_partial(request: HttpRequest) -> bool:
    """Whether to answer with a fragment (htmx swap) rather than a whole page."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted


def _agents_with_relations():
    return Agent.objects.prefetch_related(
        Prefetch("dependencies", queryset=Agent.objects.only("id", "slug", "name", "state")),
        Prefetch("dependents", queryset=Agent.objects.only("id", "slug", "name", "state")),
        # One query for the whole list, not one per pending card.
        Prefetch(
            "operations",
            queryset=Operation.objects.filter(
                status__in=[Operation.Status.PENDING, Operation.Status.RUNNING]
            ),
            to_attr="in_flight_operations",
        ),
    )


def _card_context(
    agent: Agent,
    actor: Actor,
    graph: services.DependencyGraph | None = None,
    extras: Mapping[int, list[str]] | None = None,
) -> dict:
    """What a card (or table row) needs. ``extras`` are the page's card extras, collected once
    for all its cards; without them this one card's are collected (one card, one call)."""
    if extras is None:
        extras = collect_card_extras([agent])[0]
    context = {
        "agent": agent,
        "actions": services.available_actions(agent, actor, graph),
        "card_extras": extras.get(agent.pk, []),
    }
    if actor.has(roles.OPERATE):
        # The selection checkbox, with the bulk actions that would change this agent now: the
        # page's bulk toolbar offers those legal for at least one ticked agent.
        context["selectable"] = True
        context["agent_bulk_actions"] = " ".join(
            action for action in bulk.BULK_ACTIONS if bulk.steps_for(agent, action)[0]
        )
    if agent.pending_action and agent.in_flight_operations:
        # Polled with ?op=, so the poll that sees the operation finish can say how it went.
        context["pending_operation"] = agent.in_flight_operations[0]
    return context


def _finished_toast(request: HttpRequest) -> dict:
    """A toast for the operation named by ``?op=`` once it has finished, else nothing."""
    operation_id = request.GET.get("op", "")
    if not operation_id:
        return {}
    try:
        operation = Operation.objects.select_related("agent").get(pk=operation_id)
    except (Operation.DoesNotExist, ValueError, ValidationError):
        return {}
    if not operation.is_finished:
        return {}
    label = ACTION_LABELS[operation.action][0]
    if operation.status == Operation.Status.SUCCEEDED:
        took = (
            f" in {operation.duration_seconds:.1f} s"
            if operation.duration_seconds is not None
            else ""
        )
        return {"toast": f"{label} {operation.agent.name}: done{took}.", "toast_level": "success"}
    return {
        "toast": f"{label} {operation.agent.name} failed: {operation.error}",
        "toast_level": "error",
    }


def fleet_counts() -> dict:
    counts = dict(
        Agent.objects.values_list("state").annotate(n=Count("id")).values_list("state", "n")
    )
    return {
        "total": sum(counts.values()),
        "running": counts.get(State.RUNNING, 0),
        "errored": counts.get(State.ERRORED, 0),
        "idle": counts.get(State.SUSPENDED, 0) + counts.get(State.STOPPED, 0),
        "operations": Operation.objects.filter(
            status__in=[Operation.Status.PENDING, Operation.Status.RUNNING]
        ).count(),
    }


def fleet_overview(request: HttpRequest, only: Agent | None = None) -> dict:
    """The dashboard's fleet part: counts and every agent's card (or ``only`` that agent's)."""
    actor = Actor.from_request(request)
    agents = _agents_with_relations()
    agents = list(agents.filter(pk=only.pk) if only is not None else agents)
    graph = services.DependencyGraph.load()
    extras, page_extras = collect_card_extras(agents)
    return {
        "counts": fleet_counts(),
        "cards": [_card_context(agent, actor, graph, extras) for agent in agents],
        "card_page_extras": page_extras,
    }


# --- the fleet ------------------------------------------------------------------------------


@require_GET
@vary_on_headers("HX-Request")
def agent_list(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    services.require_viewer(actor)
    view = "table" if request.GET.get("view") == "table" else "grid"
    filters = {name: request.GET.get(name, "").strip() for name in ("state", "tier", "health", "q")}
    agents = _agents_with_relations()
    problems = []
    # A bad value is named with what to use instead, and filters nothing (the page still shows).
    for name in ("state", "tier", "health"):
        try:
            agents.filtered(**{name: filters[name]})
        except BadFilter as bad:
            problems.append(bad.spelled(f"{name}="))
            filters[name] = ""
    agents = agents.filtered(**filters)
    agents = list(agents)
    graph = services.DependencyGraph.load()
    # Also in the table: its page extras keep cards current once the view switches to cards.
    extras, page_extras = collect_card_extras(agents)
    cards = [_card_context(agent, actor, graph, extras) for agent in agents]
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
        "counts": fleet_counts(),
    }
    template = (
        "agents/agent_list.html#results" if htmx_partial(request) else "agents/agent_list.html"
    )
    return render(request, template, context)


@require_GET
def agent_card(request: HttpRequest, slug: str) -> HttpResponse:
    """One card, for the polling a pending card does until its action finishes."""
    actor = Actor.from_request(request)
    services.require_viewer(actor)
    agent = _get(slug)
    toast = _finished_toast(request)
    table = request.GET.get("view") == "table"
    template = f"agents/agent_list.html#{'row' if table else 'card'}{'-result' if toast else ''}"
    # The poll that sees the action finish updates the fleet counts too (out of band), on a
    # page that shows them.
    counts = {"counts": fleet_counts()} if toast and _shows_counts(request) else {}
    return render(request, template, {**_card_context(agent, actor), **toast, **counts})


# --- one agent ------------------------------------------------------------------------------


@require_GET
@vary_on_headers("HX-Request")
def agent_detail(request: HttpRequest, slug: str) -> HttpResponse:
    actor = Actor.from_request(request)
    services.require_viewer(actor)
    agent = _get(slug)
    context = {
        **_card_context(agent, actor, extras={}),  # the detail page shows no card
        **_detail_extras(agent),
        "log_lines": _recent_log_lines(agent),
    }
    toast = _finished_toast(request)
    context.update(toast)
    if htmx_partial(request):
        template = (
            "agents/agent_detail.html#action-result"
            if toast
            else "agents/agent_detail.html#status-update"
        )
    else:
        from agents.error_views import error_panel

        context.update(error_panel(agent, actor))
        context["detail_panels"] = detail_panels(agent, actor)
        template = "agents/agent_detail.html"
        for hook in AGENT_VIEWED:
            hook(request, actor, agent)
    return render(request, template, context)


def _detail_extras(agent: Agent) -> dict:
    return {
        "transitions": agent.transitions.all()[:10],
        "last_operation": agent.operations.first(),
        "now": timezone.now(),
        # The status block points at the error panel while something there needs a person.
        "open_error_count": agent.errors.filter(
            status__in=[AgentError.Status.OPEN, AgentError.Status.RECOVERING]
        ).count(),
    }


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
    agent = _get(slug)
    rows = agent.transitions.all()
    filters = {
        "action": request.GET.get("action", ""),
        "actor_kind": request.GET.get("actor_kind", ""),
        "since": request.GET.get("since", ""),
        "until": request.GET.get("until", ""),
    }
    if filters["action"] in (*ACTIONS, "fail"):
        rows = rows.filter(action=filters["action"])
    if filters["actor_kind"] in AgentTransition.ActorKind.values:
        rows = rows.filter(actor_kind=filters["actor_kind"])
    try:
        since, until = parse_date(filters["since"] or ""), parse_date(filters["until"] or "")
    except ValueError:
        # Well formed but impossible (2024-13-45): say which field, rather than a 500.
        return HttpResponse(
            "since/until: give a real date as YYYY-MM-DD.\n",
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    if since:
        rows = rows.filter(at__date__gte=since)
    if until:
        rows = rows.filter(at__date__lte=until)
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
    agent = _get(slug)
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
        "next": _next(request),
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
    agent = _get(slug)
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
    agent = _get(slug)
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
        context = {**_card_context(agent, actor), "toast": message, "toast_level": "info", **undo}
        if where == "detail":
            context.update(_detail_extras(agent))
        else:
            if _shows_counts(request):  # swapped out of band on the list and the dashboard
                context["counts"] = fleet_counts()
        return render(request, template, context)
    messages.info(request, message)
    return redirect(_next(request) or reverse("agents:detail", args=[agent.slug]))


@require_POST
def undo_action(request: HttpRequest, slug: str, operation_id) -> HttpResponse:
    """The Undo of an action's result toast: its inverse, through the services."""
    actor = Actor.from_request(request)
    agent = _get(slug)
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
    return redirect(_next(request) or reverse("agents:detail", args=[agent.slug]))


@require_POST
def reconcile(request: HttpRequest, slug: str) -> HttpResponse:
    """The one-click fix for drift: make the runtime match the portal where that is safe."""
    actor = Actor.from_request(request)
    agent = _get(slug)
    try:
        result = services.reconcile_agent(agent, actor)
    except RuntimeFailure as failure:
        return _refused(request, agent, f"Could not reconcile {agent.name}: {failure.message}")
    done = ", ".join(str(action) for action in result.get("actions") or result.get("removed") or [])
    message = f"Reconciled {agent.name}: {done or 'nothing needed changing'}."
    agent = _get(slug)
    if htmx_partial(request):
        context = {
            **_card_context(agent, actor, extras={}),
            **_detail_extras(agent),
            "toast": message,
            "toast_level": "success",
        }
        return render(request, "agents/agent_detail.html#action-result", context)
    messages.success(request, message)
    return redirect(reverse("agents:detail", args=[agent.slug]))


def _refused(request: HttpRequest, agent: Agent, message: str) -> HttpResponse:
    if htmx_partial(request):
        # Nothing to swap; the toast goes out of band (htmx swaps no content of a 4xx answer).
        response = render(
            request, "portal/toast.html", {"toast": message, "toast_level": "error"}
        )
        response["HX-Reswap"] = "none"
        return response
    messages.error(request, message)
    return redirect(_next(request) or reverse("agents:detail", args=[agent.slug]))


def _shows_counts(request: HttpRequest) -> bool:
    """Whether the page that asked shows the fleet counts (static/js/portal.js says so in a
    header), so that an answer never carries an out-of-band element its page lacks."""
    return request.headers.get("X-Shows-Fleet-Counts") == "1"


def _next(request: HttpRequest) -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    return candidate if candidate.startswith("/") and not candidate.startswith("//") else ""


def _get(slug: str) -> Agent:
    try:
        return _agents_with_relations().get(slug=slug)
    except Agent.DoesNotExist:
        raise Http404(f"There is no agent {slug!r}.") from None
