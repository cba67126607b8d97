"""Bulk operation pages: the preview dialog, running, the progress page and its follow-ups
(cancel, retry the failed items, roll back), and the list of recent bulk operations.

Views read the request, check the role, call one function of ``agents.bulk`` and render. The
markup lives once, in the partials of ``agents/bulk_preview.html``, ``agents/bulk_detail.html``
and ``agents/bulk_list.html``; ``agents.live`` pushes the same partials over the WebSocket.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect

from agents import bulk
from agents.models import BulkItem, BulkOperation
from agents.services import require_viewer
from portal import roles
from portal.actors import Actor
from portal.htmx import htmx_partial, refusal

RECENT_BULK_OPERATIONS = 50


# --- what the request chose --------------------------------------------------------------------


def _choice(data: QueryDict) -> dict:
    """The action and agents a request names: a shortcut, ticked agents, or a filter.

    Returns the keyword arguments of ``bulk.preview_bulk``/``create_bulk_operation`` plus the
    hidden fields that carry the same choice through the preview form.
    """
    shortcut = data.get("shortcut", "")
    if shortcut:
        if shortcut not in bulk.SHORTCUTS:
            raise bulk.BulkRefused(
                f"There is no shortcut {shortcut!r}; use one of {', '.join(bulk.SHORTCUTS)}.",
                code="unknown",
            )
        action, filter = bulk.SHORTCUTS[shortcut]
        return {
            "action": action,
            "targets": [],
            "filter": {key: str(value) if key != "all" else True for key, value in filter.items()},
            "hidden": [("shortcut", shortcut)],
        }
    action = data.get("action", "")
    targets = [slug for slug in data.getlist("agent") if slug]
    filter: dict = {key: data[key] for key in ("state", "tier") if data.get(key)}
    if data.get("all") in ("1", "on", "true"):
        filter["all"] = True
    hidden = [("action", action)] + [("agent", slug) for slug in targets]
    hidden += [(key, "1" if value is True else value) for key, value in filter.items()]
    return {"action": action, "targets": targets, "filter": filter, "hidden": hidden}


def _title(action: str, count: int) -> str:
    label = bulk.BULK_ACTION_LABELS.get(action, action)
    return f"{label} {count} agent{'s' if count != 1 else ''}"


# --- the preview and running -------------------------------------------------------------------


def _preview_context(data: QueryDict, actor: Actor, **extra) -> dict:
    """The preview of what ``data`` chose, or the reason there is none."""
    context = {
        "form_action": reverse("agents:bulk-run"),
        "default_parallelism": settings.BULK_DEFAULT_PARALLELISM,
        "max_parallelism": settings.BULK_MAX_PARALLELISM,
        "plan": None,
        "error": "",
        "hidden": [],
        "title": "Bulk operation",
    }
    try:
        choice = _choice(data)
        context["hidden"] = choice["hidden"]
        plan = bulk.preview_bulk(
            choice["action"], actor, targets=choice["targets"], filter=choice["filter"]
        )
    except bulk.BulkRefused as refused:
        context["error"] = refused.message
    else:
        context["plan"] = plan
        context["upward"] = bulk.is_upward(plan.action)
        context["title"] = _title(plan.action, len(plan.items))
        if choice["filter"]:
            context["chosen_by"] = bulk.describe_filter(choice["filter"])
    context.update(extra)
    return context


def _render_preview(request: HttpRequest, context: dict) -> HttpResponse:
    if htmx_partial(request):
        # The dialog when it opens; only its form when a run sent from it was refused, so the
        # open dialog stays and shows why.
        part = "preview-form" if request.method == "POST" else "dialog"
        return render(request, f"agents/bulk_preview.html#{part}", context)
    return render(request, "agents/bulk_preview.html", context)


@require_GET
@vary_on_headers("HX-Request")
def bulk_preview(request: HttpRequest) -> HttpResponse:
    """What a bulk action would do to the chosen agents; changes nothing."""
    actor = Actor.from_request(request)
    actor.require(roles.OPERATE, "run bulk operations")
    return _render_preview(request, _preview_context(request.GET, actor))


def _forbidden_in_dialog(
    request: HttpRequest, refused: PermissionDenied, form_action: str
) -> HttpResponse:
    """A run refused for the role (it changed since the dialog opened): a 403 that the open
    dialog shows (portal.js swaps 403 answers into forms marked data-keep-dialog)."""
    if not htmx_partial(request):
        raise refused
    context = {
        "form_action": form_action,
        "plan": None,
        "hidden": [],
        "error": str(refused),
        "title": "Not allowed",
    }
    return render(request, "agents/bulk_preview.html#preview-form", context, status=403)


@require_POST
def bulk_run(request: HttpRequest) -> HttpResponse:
    """Create the bulk operation the preview showed and go to its progress page."""
    actor = Actor.from_request(request)
    try:
        actor.require(roles.OPERATE, "run bulk operations")
    except PermissionDenied as refused:
        return _forbidden_in_dialog(request, refused, reverse("agents:bulk-run"))
    try:
        choice = _choice(request.POST)
        operation = bulk.create_bulk_operation(
            choice["action"],
            actor,
            targets=choice["targets"],
            filter=choice["filter"],
            parallelism=request.POST.get("parallelism"),
            confirm=request.POST.get("confirm", ""),
            reason=request.POST.get("reason", ""),
        )
    except bulk.BulkRefused as refused:
        context = _preview_context(
            request.POST, actor, run_error=refused.message, values=_typed(request.POST)
        )
        return _render_preview(request, context)
    return _to_operation(request, operation)


def _typed(data: QueryDict) -> dict:
    """What the person typed into the preview form, to show again after a refusal."""
    return {"parallelism": data.get("parallelism", ""), "reason": data.get("reason", "")}


def _to_operation(request: HttpRequest, operation: BulkOperation) -> HttpResponse:
    url = reverse("agents:bulk-detail", args=[operation.pk])
    if getattr(request, "htmx", False):
        return HttpResponseClientRedirect(url)
    return redirect(url)


# --- one bulk operation ------------------------------------------------------------------------


def describe_item(item: BulkItem) -> BulkItem:
    """Give an item the words its row shows: the step it is on ("deploy (2/3)")."""
    total = len(item.steps)
    if item.status == BulkItem.Status.RUNNING and item.steps_done < total:
        item.step_label = f"{item.steps[item.steps_done]} ({item.steps_done + 1}/{total})"
    elif item.status == BulkItem.Status.PENDING:
        item.step_label = " → ".join(item.steps)
    elif item.status == BulkItem.Status.SUCCEEDED:
        item.step_label = " → ".join(item.steps) or "—"
    elif item.status == BulkItem.Status.FAILED and item.steps:
        at = min(item.steps_done, total - 1)
        item.step_label = f"{item.steps[at]} ({at + 1}/{total})"
    else:
        item.step_label = "—"
    # Finished: where it ended. Running: where it is now, and where it is going. Pending: where
    # it is meant to go (shown as a target).
    if item.is_finished:
        item.now_state, item.target_state = item.to_state, ""
    else:
        moved = item.status == BulkItem.Status.RUNNING and item.agent.state != item.from_state
        item.now_state = item.agent.state if moved else ""
        item.target_state = item.to_state if item.to_state != item.now_state else ""
    item.elapsed = (
        (timezone.now() - item.started_at).total_seconds()
        if item.status == BulkItem.Status.RUNNING and item.started_at
        else None
    )
    return item


def bulk_context(operation: BulkOperation, *, operate: bool) -> dict:
    """Everything the progress page shows, for a person who may (or may not) operate."""
    items = [describe_item(item) for item in operation.items.select_related("agent")]
    total = operation.total or 1
    segments = [
        (name, round(100 * count / total, 2))
        for name, count in (
            ("succeeded", operation.succeeded),
            ("failed", operation.failed),
            ("skipped", operation.skipped),
        )
        if count
    ]
    finished = operation.is_finished
    return {
        "bulk": operation,
        "label": bulk.BULK_ACTION_LABELS.get(operation.action, operation.action),
        "items": items,
        "segments": segments,
        "running_count": sum(1 for item in items if item.status == BulkItem.Status.RUNNING),
        "estimate": None if finished else bulk.estimate_seconds_left(operation),
        "operate": operate,
        "summary": {
            "succeeded": [item for item in items if item.status == BulkItem.Status.SUCCEEDED],
            "failed": [item for item in items if item.status == BulkItem.Status.FAILED],
            "skipped": [item for item in items if item.status == BulkItem.Status.SKIPPED],
        }
        if finished
        else None,
        "can_retry": operate
        and finished
        and operation.failed > 0
        and operation.kind != BulkOperation.Kind.ROLLBACK,
        "can_roll_back": operate and finished and bulk.can_roll_back(operation),
    }


def finished_toast(operation: BulkOperation) -> tuple[str, str]:
    """(text, level) of the toast the person who started a bulk operation gets at its end."""
    label = bulk.BULK_ACTION_LABELS.get(operation.action, operation.action)
    if operation.kind == BulkOperation.Kind.RETRY:
        label = f"{label} (retry)"
    parts = []
    if operation.succeeded or not (operation.failed or operation.skipped):
        parts.append(f"{operation.succeeded} succeeded")
    if operation.failed:
        parts.append(f"{operation.failed} failed")
    if operation.skipped:
        parts.append(f"{operation.skipped} skipped")
    took = operation.duration_seconds
    text = f"{label}: {', '.join(parts)}"
    if operation.status == BulkOperation.Status.CANCELLED:
        text += " (cancelled)"
    if took is not None:
        text += f" in {took:.1f} s" if took < 10 else f" in {took:.0f} s"
    if operation.failed:
        level = "error"
    elif operation.status == BulkOperation.Status.CANCELLED:
        level = "warning"
    else:
        level = "success"
    return text, level


def _get_operation(pk: int) -> BulkOperation:
    return get_object_or_404(BulkOperation.objects.select_related("follows"), pk=pk)


@require_GET
@vary_on_headers("HX-Request")
def bulk_detail(request: HttpRequest, pk: int) -> HttpResponse:
    actor = Actor.from_request(request)
    require_viewer(actor)
    operation = _get_operation(pk)
    context = {
        **bulk_context(operation, operate=actor.has(roles.OPERATE)),
        "follow_ups": list(operation.follow_ups.order_by("-requested_at")),
    }
    template = (
        "agents/bulk_detail.html#region" if htmx_partial(request) else "agents/bulk_detail.html"
    )
    return render(request, template, context)


@require_POST
def bulk_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """Stop starting items: those in flight finish, the pending ones are skipped."""
    actor = Actor.from_request(request)
    actor.require(roles.OPERATE, "cancel bulk operations")
    operation = _get_operation(pk)
    try:
        operation = bulk.cancel_bulk_operation(operation, actor)
    except bulk.BulkRefused as refused:
        return _refused(request, operation, refused.message)
    if operation.is_finished:
        message = f"Bulk operation #{operation.pk} cancelled."
    else:
        message = (
            f"Cancelling bulk operation #{operation.pk}: the agents in progress finish, "
            "the pending ones are skipped."
        )
    if htmx_partial(request):
        context = {
            **bulk_context(operation, operate=True),
            "toast": message,
            "toast_level": "info",
        }
        return render(request, "agents/bulk_detail.html#progress-result", context)
    messages.info(request, message)
    return redirect(reverse("agents:bulk-detail", args=[operation.pk]))


@require_POST
def bulk_retry(request: HttpRequest, pk: int) -> HttpResponse:
    """A new bulk operation with the same action, for the agents that failed."""
    actor = Actor.from_request(request)
    actor.require(roles.OPERATE, "run bulk operations")
    operation = _get_operation(pk)
    try:
        retry = bulk.retry_failed(operation, actor)
    except bulk.BulkRefused as refused:
        return _refused(request, operation, refused.message)
    return _to_operation(request, retry)


@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def bulk_rollback(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the roll-back's preview; POST: run it and go to its progress page."""
    actor = Actor.from_request(request)
    operation = _get_operation(pk)
    try:
        actor.require(roles.OPERATE, "run bulk operations")
    except PermissionDenied as refused:
        if request.method == "GET":
            raise
        form_action = reverse("agents:bulk-rollback", args=[operation.pk])
        return _forbidden_in_dialog(request, refused, form_action)
    if request.method == "POST":
        try:
            rollback = bulk.roll_back(operation, actor, parallelism=request.POST.get("parallelism"))
        except bulk.BulkRefused as refused:
            context = _rollback_context(
                operation, run_error=refused.message, values=_typed(request.POST)
            )
            return _render_preview(request, context)
        return _to_operation(request, rollback)
    return _render_preview(request, _rollback_context(operation))


def _rollback_context(operation: BulkOperation, **extra) -> dict:
    context = {
        "form_action": reverse("agents:bulk-rollback", args=[operation.pk]),
        "default_parallelism": operation.parallelism,
        "max_parallelism": settings.BULK_MAX_PARALLELISM,
        "plan": None,
        "error": "",
        "hidden": [],
        "rollback_of": operation,
        "title": f"Roll back bulk operation #{operation.pk}",
        "no_reason": True,
        # Undoing what brought agents up goes dependents first, and the other way round.
        "upward": not bulk.is_upward(operation.action),
    }
    try:
        context["plan"] = bulk.plan_rollback(operation)
    except bulk.BulkRefused as refused:
        context["error"] = refused.message
    context.update(extra)
    return context


def _refused(request: HttpRequest, operation: BulkOperation, message: str) -> HttpResponse:
    # htmx swaps the toast out of band from a 200 (nothing else is swapped).
    return refusal(
        request, message, status=200, fallback=reverse("agents:bulk-detail", args=[operation.pk])
    )


# --- recent bulk operations --------------------------------------------------------------------


def recent_bulk_operations() -> list[BulkOperation]:
    return list(BulkOperation.objects.select_related("follows")[:RECENT_BULK_OPERATIONS])


@require_GET
@vary_on_headers("HX-Request")
def bulk_list(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    require_viewer(actor)
    context = {"operations": recent_bulk_operations(), "limit": RECENT_BULK_OPERATIONS}
    template = "agents/bulk_list.html#rows" if htmx_partial(request) else "agents/bulk_list.html"
    return render(request, template, context)
