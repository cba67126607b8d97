"""The Workflows pages: the list of runs, starting a run, the definitions. A run's own page and
its controls are in ``run_views``. Views read the request, call ``services``/``registry`` and
render; the live updates are beats (``live``) on which an open page fetches its regions again.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect

from agents.services import require_viewer
from portal import roles
from portal.actors import Actor
from portal.htmx import answers_refusals, htmx_partial, toast
from portal.refusals import BadFilter, BadRequest, Refused

from . import deadlines, live, registry, services, stepgraph
from .definitions import Definition, ParameterError
from .models import RunStatus, WorkflowRun

PAGE_SIZE = 50
TEXT_CHARS = 100
LIST_FIELDS = (
    "id", "definition", "version", "title", "subject_kind", "subject", "status", "error",
    "created_at", "started_at", "finished_at", "deadline_at", "deadline_state", "total_steps",
    "completed_steps", "failed_steps", "current_step", "actor", "predicted_finish_at",
)  # fmt: skip


def _actor(request: HttpRequest) -> Actor:
    actor = Actor.from_request(request)
    require_viewer(actor)
    return actor


def _filters(request: HttpRequest) -> dict:
    """The list's filters from the query string; a value that names nothing is a BadFilter."""
    status = request.GET.get("status", "").strip()
    if status and status not in RunStatus.values:
        raise BadFilter("status", status[:40], "run status", list(RunStatus.values))
    definition = request.GET.get("definition", "").strip()
    names = sorted(d.name for d in registry.definitions())
    if definition and definition not in names:
        raise BadFilter("definition", definition[:63], "workflow definition", names)
    text = request.GET.get("q", "").strip()
    if "\x00" in text or len(text) > TEXT_CHARS:
        raise BadRequest(f"Search for a subject of at most {TEXT_CHARS} characters.", "invalid")
    before = request.GET.get("before", "").strip()
    if before and (not before.isdecimal() or len(before) > 18):
        raise BadRequest("before= is the number of a run the list showed.", "invalid")
    return {"status": status, "definition": definition, "q": text, "before": before}


@require_GET
@vary_on_headers("HX-Request")
def run_list(request: HttpRequest) -> HttpResponse:
    actor = _actor(request)
    partial = htmx_partial(request)
    template = "agents/workflows/list.html#region" if partial else "agents/workflows/list.html"
    context: dict = {
        "active_section": "workflows",
        "definitions": registry.definitions(),
        "statuses": RunStatus.choices,
        "can_operate": actor.has(roles.OPERATE),
        "beat_id": live.LIST_BEAT,
    }
    try:
        filters = _filters(request)
    except BadFilter as bad:
        context.update(problem=bad.spelled(f"{bad.field}="), runs=[], filters={})
        return render(request, template, context, status=400)
    except BadRequest as bad:
        context.update(problem=bad.message, runs=[], filters={})
        return render(request, template, context, status=400)
    runs = WorkflowRun.objects.only(*LIST_FIELDS).order_by("-id")
    if filters["status"]:
        runs = runs.filter(status=filters["status"])
    if filters["definition"]:
        runs = runs.filter(definition=filters["definition"])
    if filters["q"]:
        runs = runs.filter(subject__icontains=filters["q"])
    if filters["before"]:
        runs = runs.filter(pk__lt=int(filters["before"]))
    page = list(runs[: PAGE_SIZE + 1])
    more = len(page) > PAGE_SIZE
    page = page[:PAGE_SIZE]
    query = {k: v for k, v in filters.items() if v and k != "before"}
    context.update(
        runs=page,
        filters=filters,
        next_before=page[-1].pk if more else None,
        query=query,
        first_page=not filters["before"],
    )
    return render(request, template, context)


@require_POST
@answers_refusals("/workflows/")
def bulk_action(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    action = request.POST.get("action", "")
    ids = request.POST.getlist("run")
    outcomes = services.bulk(actor, action, ids)
    done = [o for o in outcomes if o["ok"]]
    refused = [o for o in outcomes if not o["ok"]]
    verb = "Retried" if action == "retry" else "Cancelled"
    message = f"{verb} {len(done)} run{'s' if len(done) != 1 else ''}."
    if refused:
        first = refused[0]
        message += f" {len(refused)} refused: #{first['workflow_id']}: {first['detail']}"
    level = "success" if not refused else ("warning" if done else "error")
    if htmx_partial(request):
        return toast(request, message, level)
    return redirect("workflows:index")


# --- starting a run ----------------------------------------------------------------------------


def _parameter_values(definition: Definition, data) -> dict:
    values: dict = {}
    for parameter in definition.parameters:
        if parameter.type == "bool":
            values[parameter.name] = "true" if data.get(parameter.name) else "false"
        elif data.get(parameter.name, "") != "":
            values[parameter.name] = data.get(parameter.name)
    return values


@require_http_methods(["GET", "POST"])
def start(request: HttpRequest) -> HttpResponse:
    actor = _actor(request)
    name = (request.POST.get("definition") or request.GET.get("definition") or "").strip()
    context: dict = {"active_section": "workflows", "definitions": registry.definitions()}
    definition = None
    if name:
        try:
            definition = registry.get(name[:63])
        except Refused as unknown:
            context["problem"] = unknown.message
    context.update(definition=definition, values={}, problems=[], error="")
    context["can_operate"] = actor.has(roles.OPERATE)
    if request.method == "POST" and definition is not None:
        values = _parameter_values(definition, request.POST)
        context["values"] = values
        try:
            run = services.start(actor, definition.name, values)
        except ParameterError as bad:
            context.update(problems=bad.details.get("problems", []), error=bad.message)
            return _render_start(request, context, 400)
        except Refused as refused:
            context["error"] = refused.message
            return _render_start(request, context, refused.status)
        url = reverse("workflows:run", args=[run.pk])
        return HttpResponseClientRedirect(url) if htmx_partial(request) else redirect(url)
    if definition is not None:
        context["values"] = {p.name: p.default for p in definition.parameters if p.default}
    status = 404 if name and definition is None else 200
    return _render_start(request, context, status)


def _render_start(request: HttpRequest, context: dict, status: int = 200) -> HttpResponse:
    definition = context.get("definition")
    values = context.get("values") or {}
    context["fields"] = (
        [(p, values.get(p.name)) for p in definition.parameters] if definition else []
    )
    return render(request, "agents/workflows/start.html", context, status=status)


# --- definitions -------------------------------------------------------------------------------


@require_GET
def definition_list(request: HttpRequest) -> HttpResponse:
    _actor(request)
    rows = []
    for definition in registry.definitions():
        recent = WorkflowRun.objects.filter(definition=definition.name).only(*LIST_FIELDS)[:1]
        rows.append(
            {
                "definition": definition,
                "last": recent[0] if recent else None,
                "typical": deadlines.typical_duration(definition.name),
            }
        )
    return render(
        request,
        "agents/workflows/definitions.html",
        {"active_section": "workflows", "rows": rows},
    )


@require_GET
def definition_detail(request: HttpRequest, name: str) -> HttpResponse:
    actor = _actor(request)
    try:
        definition = registry.get(name)
    except Refused as unknown:
        return render(
            request,
            "agents/workflows/definitions.html",
            {"active_section": "workflows", "rows": [], "problem": unknown.message},
            status=404,
        )
    medians = deadlines.medians(definition.name)
    steps = [
        {"step": step, "median": medians.get(step.id), "kind": step.kind}
        for step in definition.steps
    ]
    return render(
        request,
        "agents/workflows/definition.html",
        {
            "active_section": "workflows",
            "definition": definition,
            "versions": registry.versions(definition.name),
            "steps": steps,
            "graph": stepgraph.definition_graph(definition, medians),
            "recent": WorkflowRun.objects.filter(definition=definition.name).only(*LIST_FIELDS)[
                :10
            ],
            "typical": deadlines.typical_duration(definition.name),
            "can_operate": actor.has(roles.OPERATE),
        },
    )
