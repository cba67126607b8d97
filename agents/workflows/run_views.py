"""A run's page (header, timeline, Gantt chart, step graph) and its controls with their previews.

The page is one region fetched again on the run's beat; the step graph is sent out of band so
the browser updates its nodes without laying it out again. Each control calls one service
function; a refusal comes back as a toast saying why (``answers_refusals``).
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from portal import extensions, roles
from portal.actors import Actor
from portal.htmx import answers_refusals, htmx_partial, toast
from portal.refusals import Refused

from . import deadlines, engine, gantt, live, services, stepgraph
from .definitions import ParameterError
from .models import STEP_BUSY, Role, RunStatus, StepRun, StepStatus, WorkflowRun
from .views import _actor

CONTROLS = ("pause", "resume", "cancel", "retry", "rollback", "mark", "approve", "reject")
LOG_LINES = 12


def _run_or_404(pk: int) -> WorkflowRun:
    try:
        return services.get_run(pk)
    except Refused as missing:
        raise Http404(missing.message) from None


def _pretty(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str) if value else ""


def _step_view(row: StepRun, earlier: list[StepRun], now) -> dict:
    view = {
        "row": row,
        "anchor": f"{'compensation' if row.role == Role.COMPENSATION else 'step'}-{row.step_id}",
        "inputs": _pretty(row.inputs),
        "output": _pretty(row.output),
        "reply": _pretty(row.reply),
        "earlier": earlier,
        "duration": gantt.duration(row.duration_seconds or 0) if row.started_at else "",
        "waiting": row.status in STEP_BUSY,
        "lines": [],
        "logs_link": "",
    }
    agent, message_id = row.state.get("agent"), row.state.get("message_id")
    if agent and message_id:
        view["logs_link"] = extensions.link("agent_logs", agent=agent, text=message_id)
        if row.status == StepStatus.FAILED:  # the lines only where they explain something
            view["lines"] = extensions.lookup(
                "agent_log_lines", [], agent=agent, text=message_id, limit=LOG_LINES
            )
    return view


def run_context(request: HttpRequest, run: WorkflowRun, actor: Actor) -> dict:
    now = timezone.now()
    rows = list(run.steps.all().order_by("role", "position", "attempt"))
    current = [r for r in rows if r.current]
    earlier: dict[tuple[str, str], list[StepRun]] = {}
    for row in rows:
        if not row.current:
            earlier.setdefault((row.role, row.step_id), []).append(row)
    forward = [r for r in current if r.role == Role.FORWARD]
    compensations = sorted(
        (r for r in current if r.role == Role.COMPENSATION), key=lambda r: r.position
    )
    prediction = deadlines.predict(run, forward, now)
    definition = engine.definition_of(run)
    graph = stepgraph.step_graph(run, rows, definition) if definition else None
    operate = actor.has(roles.OPERATE)
    busy = [r for r in forward if r.status in STEP_BUSY]
    position = next((i + 1 for i, r in enumerate(forward) if r.status in STEP_BUSY), None)
    return {
        "active_section": "workflows",
        "run": run,
        "steps": [_step_view(r, earlier.get((r.role, r.step_id), []), now) for r in forward],
        "compensations": [
            _step_view(r, earlier.get((r.role, r.step_id), []), now) for r in compensations
        ],
        "prediction": prediction,
        "elapsed": gantt.duration(run.duration_seconds or 0) if run.started_at else "",
        "gantt": gantt.render_gantt(run, rows, now, critical_path=prediction.critical_path),
        "graph": graph,
        "oob_graph": htmx_partial(request) and graph is not None,
        "step_number": position,
        "busy_titles": ", ".join(r.title for r in busy),
        "parameters": sorted(run.parameters.items()),
        "beat_id": live.run_beat_id(run.pk),
        "topic": f"{live.RUN_KIND}:{run.pk}",
        "can": {
            "pause": operate and run.status == RunStatus.RUNNING,
            "resume": operate and run.status == RunStatus.PAUSED,
            "cancel": operate and run.status in services.CANCELLABLE,
            "retry": operate and run.status in services.RETRYABLE,
            "rollback": operate
            and run.status in services.ROLLBACKABLE
            and definition is not None
            and any(step.compensation for step in definition.steps),
            "mark": actor.has(roles.MANAGE),
            "approve": operate,
        },
        "parent": run.parent_step.run if run.parent_step is not None else None,
    }


@require_GET
@vary_on_headers("HX-Request")
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    actor = _actor(request)
    run = _run_or_404(pk)
    context = run_context(request, run, actor)
    partial = htmx_partial(request)
    template = "agents/workflows/run.html#region" if partial else "agents/workflows/run.html"
    return render(request, template, context)


# --- previews ----------------------------------------------------------------------------------


@require_GET
def retry_preview(request: HttpRequest, pk: int) -> HttpResponse:
    actor = _actor(request)
    run = _run_or_404(pk)
    mode = request.GET.get("mode", "failed")
    from_step = request.GET.get("from_step", "")
    definition = engine.definition_of(run)
    changed = _changed_parameters(run, request.GET) if definition else {}
    context = {
        "run": run,
        "mode": mode,
        "from_step": from_step,
        "definition": definition,
        "param_fields": [
            (p, {**run.parameters, **changed}.get(p.name)) for p in definition.parameters
        ]
        if definition
        else [],
        "plan": None,
        "problem": "",
        "can_operate": actor.has(roles.OPERATE),
    }
    try:
        context["plan"] = services.plan_retry(run, mode, from_step, changed or None).as_dict()
    except (Refused, ParameterError) as refused:
        context["problem"] = refused.message  # answered 200: the dialog shows it as you choose
    part = "#plan" if request.GET.get("part") == "plan" else "#dialog"
    return render(request, f"agents/workflows/retry.html{part}", context)


def _changed_parameters(run: WorkflowRun, data) -> dict:
    """The parameters the form changed (only those, as text), when it sent any."""
    definition = engine.definition_of(run)
    if definition is None or data.get("with_parameters") != "1":
        return {}
    values = {p.name: data.get(p.name) for p in definition.parameters if data.get(p.name)}
    return {k: v for k, v in values.items() if str(v) != str(run.parameters.get(k, ""))}


@require_GET
def rollback_preview(request: HttpRequest, pk: int) -> HttpResponse:
    actor = _actor(request)
    run = _run_or_404(pk)
    context: dict = {
        "run": run,
        "plan": None,
        "problem": "",
        "can_operate": actor.has(roles.OPERATE),
    }
    try:
        context["plan"] = services.plan_rollback(run)
    except Refused as refused:
        context["problem"] = refused.message
    return render(request, "agents/workflows/rollback.html#dialog", context)


@require_GET
def mark_dialog(request: HttpRequest, pk: int, step_id: str) -> HttpResponse:
    _actor(request)
    run = _run_or_404(pk)
    row = run.steps.filter(current=True, role=Role.FORWARD, step_id=step_id).first()
    if row is None:
        raise Http404(f"Run #{run.pk} has no step {step_id[:63]!r}.")
    return render(request, "agents/workflows/mark.html#dialog", {"run": run, "row": row})


# --- controls ----------------------------------------------------------------------------------


def _fallback(pk: int, action: str = "") -> str:
    return reverse("workflows:run", args=[pk])


@require_POST
@answers_refusals(_fallback)
def control(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    if action not in CONTROLS:
        raise Http404(f"{action[:20]!r} is not something a run does.")
    actor = Actor.from_request(request)
    run = _run_or_404(pk)
    data = request.POST
    if action == "pause":
        services.pause(run, actor)
        message = f"Paused run #{run.pk}: running steps finish, nothing new starts."
    elif action == "resume":
        services.resume(run, actor)
        message = f"Resumed run #{run.pk}."
    elif action == "cancel":
        services.cancel(run, actor)
        message = f"Cancelled run #{run.pk}."
    elif action == "retry":
        changed = _changed_parameters(run, data)
        mode = data.get("mode", "failed")
        services.retry(run, actor, mode, data.get("from_step", ""), changed or None)
        message = f"Retrying run #{run.pk}" + (
            f" from {data.get('from_step')}." if mode == "from" else "."
        )
    elif action == "rollback":
        services.rollback(run, actor, data.get("reason", ""))
        message = f"Rolling back run #{run.pk}: compensations run newest first."
    elif action == "mark":
        step_id = data.get("step", "")
        services.mark(run, step_id, data.get("status", ""), actor, data.get("reason", ""))
        message = f"Marked {step_id} {data.get('status')}."
    else:
        step_id = data.get("step", "")
        services.approve(run, step_id, actor, approved=action == "approve",
                         note=data.get("note", ""))  # fmt: skip
        message = f"{'Approved' if action == 'approve' else 'Rejected'} {step_id}."
    if htmx_partial(request):
        response = toast(request, message)
        del response["HX-Reswap"]  # the modal it came from is emptied
        response["HX-Trigger"] = live.RUN_EVENT
        return response
    messages.success(request, message)
    return redirect("workflows:run", pk=run.pk)
