from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from celery.signals import worker_ready

from portal import health, work


@shared_task(name="portal.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Runs every few seconds from beat; the dashboard shows how long ago it last ran."""
    health.record_heartbeat()


@shared_task(name="portal.sweep", ignore_result=True)
def sweep(older_than_seconds: float | None = None) -> dict[str, list]:
    """Beat, every few seconds: hand accepted work whose runner died back to a worker."""
    if older_than_seconds is None:
        return work.sweep()
    return work.sweep(timedelta(seconds=older_than_seconds))


@shared_task(name="portal.purge_audit", ignore_result=True)
def purge_audit() -> int:
    """Beat, daily: delete the audit entries past ``AUDIT_RETENTION_DAYS``."""
    from portal.audit.retention import purge_expired

    return purge_expired()


@worker_ready.connect
def _sweep_on_start(sender=None, **kwargs) -> None:
    """A worker starting (perhaps in place of one that was killed) picks up what it left."""
    sweep.apply_async(kwargs={"older_than_seconds": 0})
