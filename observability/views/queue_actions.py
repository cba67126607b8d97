"""What an operator does on a queue's page: send messages, retry or delete dead letters (after a
confirmation that shows the snapshot), inspect and edit one, export, claim a stuck consumer's
entries, purge, set thresholds. Each calls one function of ``observability.queues.services``,
which checks the role and writes the audit; a refusal comes back as a toast (htmx) or a message.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from observability.queues import catalog, deadletters, figures, jsonview, live, services
from observability.queues.models import RedriveJob
from observability.views.queues import _ref_or_404
from observability.views.shared import viewer
from portal import roles
from portal.actors import Actor
from portal.htmx import answers_refusals, htmx_partial, toast


def _back(name: str, *_args, **_kwargs) -> str:
    return reverse("queues:detail", args=[name])


def _done(request: HttpRequest, name: str, message: str, *, to: str = "") -> HttpResponse:
    if htmx_partial(request):
        response = toast(request, message)
        response["HX-Trigger"] = live.QUEUE_EVENT
        return response
    messages.success(request, message)
    return redirect(to or _back(name))


def _selection(request: HttpRequest) -> dict:
    data = request.POST if request.method == "POST" else request.GET
    return {
        "scope": data.get("scope", ""),
        "ids": data.getlist("ids"),
        "fingerprint": data.get("group", ""),
    }


@require_POST
@answers_refusals(fallback=_back)
def send(request: HttpRequest, name: str) -> HttpResponse:
    actor = Actor.from_request(request)
    ids = services.send(
        actor,
        name,
        request.POST.get("payload", ""),
        count=request.POST.get("count") or 1,
        customer=request.POST.get("customer", ""),
    )
    return _done(request, name, f"Sent {len(ids):,} message{'s' if len(ids) != 1 else ''}.")


@require_GET
@answers_refusals(fallback=_back)
def confirm(request: HttpRequest, name: str) -> HttpResponse:
    """The confirmation of a retry or delete: how many letters, at what rate; nothing changes
    until it is sent (the snapshot is taken then)."""
    actor = viewer(request)
    ref = _ref_or_404(name)
    action = request.GET.get("action", "")
    if action not in RedriveJob.Action.values:
        raise services.QueueRefused("Choose retry (redrive) or delete.", "invalid")
    chosen = _selection(request)
    shot = services.snapshot(ref, chosen["scope"], chosen["ids"], chosen["fingerprint"])
    group = None
    if shot.fingerprint:
        group = next(
            (
                g
                for g in deadletters.groups(catalog.agent_redis(), ref)
                if g.fingerprint == shot.fingerprint
            ),
            None,
        )
    context = {
        "ref": ref,
        "action": action,
        "shot": shot,
        "group": group,
        "operate": actor.has(roles.OPERATE),
        "needs_typing": action == RedriveJob.Action.DELETE and shot.scope == RedriveJob.Scope.ALL,
        "max_redrives": settings.QUEUE_MAX_REDRIVES,
    }
    template = "observability/queue_confirm.html" + ("#dialog" if htmx_partial(request) else "")
    return render(request, template, context)


@require_POST
@answers_refusals(fallback=_back)
def act(request: HttpRequest, name: str) -> HttpResponse:
    """Start the retry or delete job the operator confirmed."""
    chosen = _selection(request)
    job = services.start_job(
        Actor.from_request(request),
        name,
        request.POST.get("action", ""),
        chosen["scope"],
        ids=chosen["ids"],
        fingerprint=chosen["fingerprint"],
        rate=request.POST.get("rate"),
        force=request.POST.get("force") in ("1", "on", "true"),
        confirm=request.POST.get("confirm", ""),
    )
    verb = "Retrying" if job.action == RedriveJob.Action.REDRIVE else "Deleting"
    job_url = reverse("queues:job", args=[job.pk])
    if htmx_partial(request):
        response = render(
            request,
            "observability/queue_job.html#started",
            {"job": job, "verb": verb, "job_url": job_url},
        )
        response["HX-Trigger"] = live.QUEUE_EVENT
        return response
    messages.success(request, f"{verb} {job.total:,} dead letters as job {job.pk}.")
    return redirect(job_url)


@require_GET
def inspect(request: HttpRequest, name: str, message_id: str) -> HttpResponse:
    actor = viewer(request)
    ref = _ref_or_404(name)
    try:
        letter = deadletters.get(catalog.agent_redis(), ref, message_id)
    except services.QueueRefused as bad:
        return render(
            request,
            "observability/dead_letter.html",
            {"ref": ref, "problem": bad.message},
            status=400,
        )
    context = {
        "ref": ref,
        "message_id": message_id,
        "operate": actor.has(roles.OPERATE),
        "active_section": "queues",
    }
    if letter is None:
        context["problem"] = (
            f"Dead letter {message_id} is not in {ref.dead_letters} any more: it was sent back or deleted."
        )
        return render(request, "observability/dead_letter.html", context, status=404)
    letter = services.read_letter(actor, ref, letter)
    context.update(
        letter=letter,
        payload_html=jsonview.render(letter.payload) if not letter.payload_error else "",
        edit_text=json.dumps(letter.payload, indent=2, ensure_ascii=False)
        if not letter.payload_error
        else letter.payload_text,
        max_redrives=settings.QUEUE_MAX_REDRIVES,
    )
    return render(request, "observability/dead_letter.html", context)


@require_POST
@answers_refusals(
    fallback=lambda name, message_id: reverse("queues:letter", args=[name, message_id])
)
def preview(request: HttpRequest, name: str, message_id: str) -> HttpResponse:
    """The diff an edit would send (a fragment under the editor); a parse error says where."""
    try:
        edit = services.preview_edit(
            Actor.from_request(request), name, message_id, request.POST.get("payload", "")
        )
    except services.QueueRefused as bad:
        if bad.code != "invalid":
            raise
        # As you type, a parse error is the preview's answer (200 for htmx: the page shows it
        # under the editor); anywhere else it is the 400 it is.
        status = 200 if htmx_partial(request) else 400
        context = {"error": bad.message, "where": bad.details}
        return render(request, "observability/dead_letter.html#diff", context, status=status)
    return render(request, "observability/dead_letter.html#diff", {"edit": edit})


@require_POST
@answers_refusals(
    fallback=lambda name, message_id: reverse("queues:letter", args=[name, message_id])
)
def edit(request: HttpRequest, name: str, message_id: str) -> HttpResponse:
    services.edit_and_retry(
        Actor.from_request(request),
        name,
        message_id,
        request.POST.get("payload", ""),
        force=request.POST.get("force") in ("1", "on", "true"),
    )
    message = f"Sent {message_id} back to {catalog.resolve(name).stream} with your edit."
    if htmx_partial(request):
        response = toast(request, message)
        response["HX-Redirect"] = _back(name) + "#dead-letters"
        return response
    messages.success(request, message)
    return redirect(_back(name) + "#dead-letters")


@require_GET
def export(request: HttpRequest, name: str) -> HttpResponse:
    """The selection as JSON lines (one dead letter a line, as the API shows them)."""
    actor = viewer(request)
    ref = _ref_or_404(name)
    chosen = _selection(request)
    try:
        shot = services.snapshot(
            ref, chosen["scope"] or "all", chosen["ids"], chosen["fingerprint"]
        )
    except services.QueueRefused as bad:
        return HttpResponse(bad.message + "\n", status=bad.status, content_type="text/plain")
    lines = services.export_lines(actor, ref, shot)
    response = StreamingHttpResponse(lines, content_type="application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="{ref.slug}-dead-letters.jsonl"'
    return response


@require_POST
@answers_refusals(fallback=_back)
def claim(request: HttpRequest, name: str) -> HttpResponse:
    result = services.claim(
        Actor.from_request(request),
        name,
        request.POST.get("consumer", ""),
        mode=request.POST.get("mode", "claim"),
        target=request.POST.get("target", ""),
    )
    count = len(result["ids"])
    if result["mode"] == "claim":
        message = f"Claimed {count:,} entr{'y' if count == 1 else 'ies'} of {result['consumer']} for {result['target']}."
    else:
        message = f"Redelivered {count:,} entr{'y' if count == 1 else 'ies'} of {result['consumer']} as new messages."
    return _done(request, name, message)


@require_POST
@answers_refusals(fallback=_back)
def purge(request: HttpRequest, name: str) -> HttpResponse:
    removed = services.purge(
        Actor.from_request(request), name, confirm=request.POST.get("confirm", "")
    )
    return _done(request, name, f"Purged {removed:,} waiting message{'s' if removed != 1 else ''}.")


@require_POST
@answers_refusals(fallback=_back)
def thresholds(request: HttpRequest, name: str) -> HttpResponse:
    values = {key: request.POST.get(key, "") for key in figures.Thresholds.FIELDS}
    row = services.set_thresholds(Actor.from_request(request), name, values)
    return _done(request, name, "Thresholds saved." if row else "Thresholds reset to the defaults.")
