"""Observability's log tasks (metrics, alerts and events have theirs in ``jobs.py``)."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from observability import logs


@shared_task(name="observability.purge_logs", ignore_result=True)
def purge_logs() -> int:
    """Delete log lines older than LOG_RETENTION_DAYS (beat runs it hourly). Running it twice
    deletes nothing more: the second run finds nothing that old."""
    return logs.purge(timedelta(days=settings.LOG_RETENTION_DAYS))
