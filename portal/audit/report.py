"""The compliance report: for a period, who did what through which door, what was refused,
where an Admin overrode a rule, whose role changed, and which API tokens were used. A few
aggregate queries whatever the period's size; downloadable as JSON or CSV."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from portal import roles
from portal.actors import Actor
from portal.audit.queries import AuditFilter, AuditQueryError, entry_dict, filtered
from portal.models import AuditEntry

LISTED = 200  # entries listed per section (refusals, overrides, role changes); counts are whole
MAX_PERIOD = timedelta(days=400)
OVERRIDE_KEYS = ("window_override", "override")
ROLE_ACTIONS = Q(app="user") | Q(action__contains="grant")


def default_period(now: datetime | None = None) -> tuple[datetime, datetime]:
    """The last seven days, up to now."""
    until = now or timezone.now()
    return until - timedelta(days=7), until


def compliance_report(actor: Actor, since: datetime | None, until: datetime | None) -> dict:
    """The report for ``since`` ≤ at < ``until`` (the last seven days when both are left out).
    Admins only: it gathers every actor's activity."""
    actor.require(roles.MANAGE, "read the compliance report")
    if since is None and until is None:
        since, until = default_period()
    elif since is None or until is None:
        raise AuditQueryError("A report needs both since and until, or neither (the last 7 days).")
    if until - since > MAX_PERIOD:
        raise AuditQueryError(f"The period is {(until - since).days} days; at most 400 per report.")
    period = filtered(AuditFilter(since=since, until=until)).order_by()

    def counted(*names: str):
        return (
            period.values(*names)
            .annotate(
                entries=Count("id"),
                success=Count("id", filter=Q(outcome="success")),
                refused=Count("id", filter=Q(outcome="refused")),
                failed=Count("id", filter=Q(outcome="failed")),
                first=Min("at"),
                last=Max("at"),
            )
            .order_by("-entries", *names)
        )

    overrides = Q(door=AuditEntry.Door.ADMIN) | Q(action__contains="override")
    for key in OVERRIDE_KEYS:
        overrides |= Q(**{f"detail__{key}__isnull": False}) & ~Q(**{f"detail__{key}": ""})

    def listed(condition: Q) -> dict:
        rows = period.filter(condition).select_related("user").order_by("-at", "-id")
        return {"count": rows.count(), "entries": [entry_dict(e) for e in rows[:LISTED]]}

    totals = period.aggregate(
        entries=Count("id"),
        success=Count("id", filter=Q(outcome="success")),
        refused=Count("id", filter=Q(outcome="refused")),
        failed=Count("id", filter=Q(outcome="failed")),
    )
    return {
        "period": {"since": since.isoformat(), "until": until.isoformat()},
        "generated_at": timezone.now().isoformat(),
        "totals": totals,
        "by_door": [_times(row) for row in counted("door")],
        "by_actor": [_times(row) for row in counted("actor")[:LISTED]],
        "by_action": [_times(row) for row in counted("app", "action")[:LISTED]],
        "refusals": listed(Q(outcome=AuditEntry.Outcome.REFUSED)),
        "overrides": listed(overrides),
        "role_changes": listed(ROLE_ACTIONS),
        "token_changes": listed(Q(app="api_token")),
        "token_use": [_times(row) for row in counted("actor").filter(door="api")[:LISTED]],
    }


def _times(row: dict) -> dict:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


CSV_COLUMNS = ["section", "name", "entries", "success", "refused", "failed", "first", "last",
               "at", "actor", "door", "action", "target", "outcome"]  # fmt: skip


def report_csv(report: dict) -> str:
    """The report as one CSV: the counted sections as rows of counts, the listed ones as rows
    of entries; ``section`` says which is which."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerow({"section": "period", "name": f"{report['period']['since']} – "
                     f"{report['period']['until']}", **report["totals"]})  # fmt: skip
    for section, key in (("by_door", "door"), ("by_actor", "actor"), ("by_action", "action"),
                         ("token_use", "actor")):  # fmt: skip
        for row in report[section]:
            writer.writerow({"section": section, "name": row[key], **row})
    for section in ("refusals", "overrides", "role_changes", "token_changes"):
        for entry in report[section]["entries"]:
            writer.writerow({"section": section, "name": entry["action"], **entry})
    return out.getvalue()
