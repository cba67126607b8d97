"""Retention: entries older than ``AUDIT_RETENTION_DAYS`` are deleted by a daily job, the only
delete the append-only trigger lets through (it says so with ``portal.audit_purge``), and the
purge is itself an entry."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from portal import roles
from portal.actors import Actor
from portal.models import AuditEntry
from portal.services import record_audit, refusals_audited

BATCH = 10_000


def purge_expired(actor: Actor | None = None, *, now=None, batch: int = BATCH) -> int:
    """Delete the entries past retention, a batch per transaction; returns how many. Nothing
    is deleted when ``AUDIT_RETENTION_DAYS`` is 0 (keep forever). The nightly task purges as
    the system; anyone else needs the Admin role."""
    actor = actor or Actor.system("audit retention")
    with refusals_audited(actor, "audit.purge"):
        actor.require(roles.MANAGE, "purge the audit log")
    days = settings.AUDIT_RETENTION_DAYS
    if not days:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL portal.audit_purge = 'on'")
            cursor.execute(
                "DELETE FROM portal_auditentry WHERE id IN (SELECT id FROM portal_auditentry"
                " WHERE at < %s ORDER BY at LIMIT %s)",
                [cutoff, batch],
            )
            count = cursor.rowcount
        deleted += count
        if count < batch:
            break
    if deleted:
        record_audit(actor, "audit.purge",
                     target=f"before {cutoff:%Y-%m-%d %H:%M}", deleted=deleted, days=days)  # fmt: skip
    return deleted


def oldest_kept() -> AuditEntry | None:
    return AuditEntry.objects.order_by("at", "id").first()
