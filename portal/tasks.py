from __future__ import annotations

from celery import shared_task

from portal import health


@shared_task(name="portal.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Runs every few seconds from beat; the dashboard shows how long ago it last ran."""
    health.record_heartbeat()
