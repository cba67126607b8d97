"""The Audit log page, its exports and the compliance report."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from portal import roles
from portal.actors import Actor
from portal.audit import export, queries, report
from portal.audit.queries import AuditQueryError
from portal.htmx import htmx_partial
from portal.models import AuditEntry
from portal.refusals import BadRequest


def _reader(request: HttpRequest) -> Actor:
    actor = Actor.from_request(request)
    actor.require(roles.VIEW, "read the audit log")
    return actor


def _filters(request: HttpRequest) -> dict[str, str]:
    return {name: request.GET.get(name, "") for name in queries.FILTER_NAMES}


def _apps() -> list[str]:
    return list(AuditEntry.objects.order_by("app").values_list("app", flat=True).distinct()[:100])


@require_GET
@vary_on_headers("HX-Request")
def audit_log(request: HttpRequest) -> HttpResponse:
    actor = _reader(request)
    shown = _filters(request)
    if shown["object"] and not shown["target"]:
        shown["target"] = shown["object"]
    context = {
        "active_section": "audit",
        "filters": shown,
        "doors": AuditEntry.Door.values,
        "outcomes": AuditEntry.Outcome.values,
        "apps": queries.apps_in_use(),
        "entries": [],
        "may_report": actor.has(roles.MANAGE),
    }
    partial = htmx_partial(request)
    try:
        wanted = queries.parse_filter(request.GET)
        limit = queries.parse_limit(request.GET.get("limit"))
        page = queries.search(wanted, cursor=request.GET.get("cursor", ""), limit=limit)
    except BadRequest as problem:
        context["problem"] = problem.message
        template = "portal/audit.html#results" if partial else "portal/audit.html"
        return render(request, template, context, status=400)
    params = wanted.as_params()
    context.update(
        entries=page.entries,
        query=urlencode(params),
        filtered=bool(params),
    )
    if page.next_cursor:
        context["older_url"] = "?" + urlencode({**params, "cursor": page.next_cursor})
    if partial and request.GET.get("cursor"):
        return render(request, "portal/audit.html#older-page", context)
    if partial:
        return render(request, "portal/audit.html#results", context)
    return render(request, "portal/audit.html", context)


@require_GET
def audit_export(request: HttpRequest, fmt: str) -> HttpResponse:
    """Every entry the filters find, as CSV or JSON lines, streamed."""
    _reader(request)
    try:
        wanted = queries.parse_filter(request.GET)
    except BadRequest as problem:
        return HttpResponse(problem.message + "\n", status=400, content_type="text/plain")
    lines = export.export_lines(wanted, fmt)

    async def streamed():
        # A database cursor per chunk, off the event loop; the response starts at once.
        while True:
            piece = await sync_to_async(next, thread_sensitive=True)(lines, None)
            if piece is None:
                return
            yield piece

    response = StreamingHttpResponse(streamed(), content_type=export.FORMATS[fmt])
    response["Content-Disposition"] = f'attachment; filename="{export.export_filename(fmt)}"'
    return response


@require_GET
def compliance_report(request: HttpRequest) -> HttpResponse:
    """The report for a period: a page, or a download with ``?format=json`` or ``csv``."""
    actor = Actor.from_request(request)
    fmt = request.GET.get("format", "")
    since_text, until_text = request.GET.get("since", ""), request.GET.get("until", "")
    context = {"active_section": "audit", "since": since_text, "until": until_text}
    try:
        if fmt not in ("", "html", "json", "csv"):
            raise AuditQueryError(f"format={fmt[:20]!r} is not one of html, json, csv.")
        since, until = queries.parse_period(request.GET)
        found = report.compliance_report(actor, since, until)
    except BadRequest as problem:
        if fmt in ("json", "csv"):
            return HttpResponse(problem.message + "\n", status=400, content_type="text/plain")
        context["problem"] = problem.message
        return render(request, "portal/audit_report.html", context, status=400)
    name = f"compliance-{found['period']['since'][:10]}-{found['period']['until'][:10]}"
    if fmt == "json":
        response = HttpResponse(json.dumps(found, indent=2), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="{name}.json"'
        return response
    if fmt == "csv":
        response = HttpResponse(report.report_csv(found), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
        return response
    context.update(report=found, period_query=urlencode(
        {"since": found["period"]["since"], "until": found["period"]["until"]}))  # fmt: skip
    return render(request, "portal/audit_report.html", context)
