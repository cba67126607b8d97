"""The Queues page (every queue with its health and figures, and the flow diagram) and one
queue's page (figures, charts, consumers and pending entries, the dead-letter panel, jobs).

Views read the request, call the queue services and render; every change goes through
``observability.queues.services``. Both pages follow the live beat of their topic (see
``observability.queues.live``) and fetch their own region again, with their own filters.
"""

from __future__ import annotations

import redis
from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from agents.agentd import contract
from observability.metrics import RANGES
from observability.queues import (
    catalog,
    deadletters,
    figures,
    flow,
    history,
    listing,
    live,
    pending,
    services,
)
from observability.queues.catalog import QueueNotFound, QueueRef
from observability.queues.models import RedriveJob
from observability.views.shared import FilterError, choice, context_of, shown, viewer
from portal import roles
from portal.actors import Actor
from portal.htmx import answers_refusals, htmx_partial, toast

STATUSES, KINDS, SORTS = listing.STATUSES, listing.KINDS, listing.SORTS


def queue_url(ref: QueueRef) -> str:
    return reverse("queues:detail", args=[ref.name])


def _ref_or_404(name: str) -> QueueRef:
    try:
        return catalog.resolve(name)
    except QueueNotFound as missing:
        raise Http404(str(missing)) from None


@require_GET
@vary_on_headers("HX-Request")
def queue_list(request: HttpRequest) -> HttpResponse:
    actor = viewer(request)
    partial = htmx_partial(request)
    resolved = context_of(request, actor, remember=not partial)
    agent = resolved.agent
    context: dict = {"active_section": "queues", **shown(request, agent)}
    try:
        status = choice(request, "status", STATUSES, "status")
        kind = choice(request, "kind", KINDS, "kind")
        sort_key, descending = listing.parse_sort(request.GET.get("sort"))
    except (FilterError, listing.ListFilterError) as bad:
        context.update(problem=str(bad), rows=[], totals={}, sort="", filters={})
        template = "observability/queues.html#region" if partial else "observability/queues.html"
        return render(request, template, context, status=400)
    text = request.GET.get("q", "").strip()[:100].replace("\x00", "")
    looks, problem = listing.look_all(agent.slug if agent else None)
    rows = listing.choose(
        looks,
        statuses={status} if status else None,
        kinds={kind} if kind else None,
        text=text,
        sort=(sort_key, descending),
    )
    context.update(
        rows=rows,
        problem=problem,
        filters={"status": status, "kind": kind, "q": text},
        sort=("-" if descending else "") + sort_key,
        sort_links=_sort_links(request, sort_key, descending),
        statuses=STATUSES,
        totals=_totals(looks),
        flow=flow.diagram(looks),
        oob_flow=partial,
        sample_seconds=_sample_seconds(),
        beat_id=live.beat_id(),
    )
    template = "observability/queues.html#region" if partial else "observability/queues.html"
    return render(request, template, context)


def _sample_seconds() -> int:
    return settings.QUEUE_SAMPLE_INTERVAL_SECONDS


def _sort_links(request: HttpRequest, key: str, descending: bool) -> dict[str, str]:
    links = {}
    for name in SORTS:
        params = request.GET.copy()
        # A number column sorts biggest first on the first click; the name column A to Z.
        first = "name" if name == "name" else "-" + name
        again = name if first.startswith("-") else "-" + name
        params["sort"] = again if name == key and (descending == first.startswith("-")) else first
        links[name] = "?" + params.urlencode()
    return links


def _totals(looks: list[figures.Figures]) -> dict:
    counts = {status: 0 for status in STATUSES}
    for f in looks:
        counts[f.status] += 1
    return {
        "queues": len(looks),
        "pending": sum(f.pending for f in looks),
        "in_flight": sum(f.in_flight for f in looks),
        "dead_letters": sum(f.dead_letters for f in looks),
        "out_rate": sum(f.out_rate or 0 for f in looks),
        "by_status": counts,
    }


# --- one queue ----------------------------------------------------------------------------------


@require_GET
@vary_on_headers("HX-Request")
def queue_detail(request: HttpRequest, name: str) -> HttpResponse:
    actor = viewer(request)
    ref = _ref_or_404(name)
    region = request.GET.get("region", "")
    range_key = request.GET.get("range") or "1h"
    context = _detail_context(request, actor, ref, range_key)
    status = 503 if context.get("unavailable") else 400 if context.get("problem") else 200
    if htmx_partial(request) and region in ("live", "dlq", "charts"):
        return render(request, f"observability/queue.html#{region}", context, status=status)
    return render(request, "observability/queue.html", context, status=status)


def _detail_context(request: HttpRequest, actor: Actor, ref: QueueRef, range_key: str) -> dict:
    client = catalog.agent_redis()
    [look] = figures.with_rates(figures.look([ref], client, catalog.broker_redis()))
    own = figures.thresholds_for([ref.name]).get(ref.name)
    context: dict = {
        "active_section": "queues",
        "ref": ref,
        "look": look,
        "thresholds": own or figures.Thresholds.defaults(),
        "own_thresholds": own is not None,
        "threshold_fields": _threshold_rows(own),
        "operate": actor.has(roles.OPERATE),
        "admin": actor.has(roles.MANAGE),
        "beat_id": live.beat_id(ref),
        "topic": f"{live.QUEUE_KIND}:{live.topic_key(ref)}",
        "jobs": list(RedriveJob.objects.filter(queue_name=ref.name)[:8]),
        "range_key": range_key,
        "ranges": list(RANGES.values()),
        "sample_seconds": _sample_seconds(),
        "problem": "",
    }
    time_range = RANGES.get(range_key)
    if time_range is None:
        context["problem"] = (
            f"There is no time range “{range_key[:20]}”. Choose one of "
            + ", ".join(r.label for r in RANGES.values())
            + "."
        )
    else:
        context["charts"] = history.build_charts(ref.name, time_range, celery=not ref.is_agent)
    if ref.is_agent:
        try:
            context["consumers"] = pending.consumers(client, ref)
            context["pending_entries"] = pending.entries(client, ref, count=20)
            context.update(_dlq_context(request, actor, ref, client))
        except (redis.RedisError, OSError) as exc:
            context["problem"] = f"Redis does not answer ({exc}); the page fills in when it does."
            context["unavailable"] = True
        except services.QueueRefused as bad:
            context["problem"] = bad.message
    return context


def _threshold_rows(own) -> list[dict]:
    defaults = figures.Thresholds.defaults()
    return [
        {
            "name": name,
            "value": getattr(own, name)
            if own is not None and getattr(own, name) is not None
            else "",
            "default": getattr(defaults, name),
        }
        for name in figures.Thresholds.FIELDS
    ]


def _dlq_context(request: HttpRequest, actor: Actor, ref: QueueRef, client) -> dict:
    fingerprint = request.GET.get("group", "").strip()[:40]
    try:
        limit = int(request.GET.get("limit") or deadletters.PAGE_DEFAULT)
    except ValueError:
        raise services.QueueRefused(
            "limit must be a whole number from 1 to 500.", "invalid"
        ) from None
    page = deadletters.page(
        client,
        ref,
        before=request.GET.get("before") or None,
        after=request.GET.get("after") or None,
        last=request.GET.get("last") == "1",
        limit=limit,
        fingerprint=fingerprint,
    )
    page.letters = [services.read_letter(actor, ref, letter) for letter in page.letters]
    groups = deadletters.groups(client, ref)
    return {
        "page": page,
        "groups": groups,
        "group": next((g for g in groups if g.fingerprint == fingerprint), None),
        "group_param": fingerprint,
        "first_page": not request.GET.get("before")
        and not request.GET.get("after")
        and request.GET.get("last") != "1",
    }


# --- jobs ---------------------------------------------------------------------------------------


@require_GET
@vary_on_headers("HX-Request")
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    actor = viewer(request)
    job = RedriveJob.objects.filter(pk=pk).first()
    if job is None:
        raise Http404(f"There is no redrive job {pk}.")
    context = {"job": job, "operate": actor.has(roles.OPERATE), "active_section": "queues"}
    try:
        context["ref"] = catalog.resolve(job.queue_name)
        context["topic"] = f"{live.QUEUE_KIND}:{live.topic_key(context['ref'])}"
        context["beat_id"] = live.beat_id(context["ref"])
    except QueueNotFound:
        pass
    if htmx_partial(request):
        return render(request, "observability/queue_job.html#job", context)
    return render(request, "observability/queue_job.html", context)


@require_POST
@answers_refusals(fallback=lambda pk: reverse("queues:job", args=[pk]))
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = services.cancel_job(Actor.from_request(request), pk)
    message = f"Cancelling job {job.pk}: it stops after the batch in hand."
    if htmx_partial(request):
        return toast(request, message)
    messages.success(request, message)
    return redirect("queues:job", pk=pk)


def dead_letters_link(agent: str, group: str = "") -> str:
    """Where an agent's dead letters (of one error group) are shown: the ``dead_letters`` link
    other apps ask ``portal.extensions.link`` for."""
    if not agent:
        return ""
    query = f"?group={group}" if group and services.FINGERPRINT.match(group) else ""
    return reverse("queues:detail", args=[contract.task_stream(agent)]) + query + "#dead-letters"
