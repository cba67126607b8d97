"""The help desk's Celery tasks: reading agentd's interaction records, and the sweep."""

from __future__ import annotations

from celery import shared_task

from helpdesk import interactions


@shared_task(name="helpdesk.ingest_interactions")
def ingest_interactions() -> dict:
    done = interactions.ingest_interactions()
    return {"stored": done.stored, "unknown_customer": done.unknown_customer}


@shared_task(name="helpdesk.sweep")
def sweep() -> None:
    """Periodic upkeep; each part registers itself in ``SWEEPS``."""
    for step in SWEEPS:
        step()


SWEEPS: list = []
