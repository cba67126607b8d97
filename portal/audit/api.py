"""``GET /api/platform/audit`` (the log, filtered, a page at a time) and
``GET /api/platform/audit/report`` (the compliance report for a period)."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Schema

from portal import roles
from portal.actors import Actor
from portal.audit import queries, report
from portal.schemas import Problem

router = Router(tags=["audit"])


class AuditEntryOut(Schema):
    id: int
    at: str
    actor: str
    user: str | None
    door: str
    app: str
    action: str
    target: str
    source: str
    outcome: str
    detail: dict


class AuditPageOut(Schema):
    entries: list[AuditEntryOut]
    next_cursor: str


@router.get(
    "/audit",
    response={200: AuditPageOut, 400: Problem, 403: Problem},
    summary="The audit log, newest first: filter by actor (username, email or label), action, "
    "object, app, door, outcome, since, until and words (q); page on with next_cursor",
)
def audit_search(request: HttpRequest):
    # Query parameters are read as text and parsed here, so a bad one gets a sentence (400).
    Actor.from_request(request).require(roles.VIEW, "read the audit log")
    wanted = queries.parse_filter(request.GET)
    limit = queries.parse_limit(request.GET.get("limit"))
    page = queries.search(wanted, cursor=request.GET.get("cursor", ""), limit=limit)
    return {
        "entries": [queries.entry_dict(e) for e in page.entries],
        "next_cursor": page.next_cursor,
    }


@router.get(
    "/audit/report",
    response={200: dict, 400: Problem, 403: Problem},
    summary="The compliance report for since ≤ at < until (default: the last 7 days); Admins",
)
def audit_report(request: HttpRequest):
    since, until = queries.parse_period(request.GET)
    return report.compliance_report(Actor.from_request(request), since, until)
