"""What a bulk operation has done so far, and how long the rest should take."""

from __future__ import annotations

import logging

from agents.models import (
    BulkItem,
    BulkOperation,
)

logger = logging.getLogger(__name__)


# --- reading -----------------------------------------------------------------------------------------


def estimate_seconds_left(bulk: BulkOperation) -> float | None:
    """Rough time to finish: the mean item time so far, times the waves still to go."""
    if bulk.is_finished or not bulk.pending:
        return None
    finished = [
        item.duration_seconds
        for item in bulk.items.filter(
            status__in=[BulkItem.Status.SUCCEEDED, BulkItem.Status.FAILED]
        ).only("started_at", "finished_at")
        if item.duration_seconds is not None
    ]
    if not finished:
        return None
    mean = sum(finished) / len(finished)
    waves = -(-bulk.pending // max(1, bulk.parallelism))
    return round(mean * waves, 1)


def bulk_summary(bulk: BulkOperation) -> dict:
    """A JSON-ready account of the operation and its items (API, CLI)."""
    items = list(bulk.items.select_related("agent"))
    return {
        "id": bulk.pk,
        "action": bulk.action,
        "kind": bulk.kind,
        "follows": bulk.follows_id,
        "status": bulk.status,
        "actor": bulk.actor,
        "parallelism": bulk.parallelism,
        "targets": bulk.targets,
        "filter": bulk.filter,
        "counts": {
            "total": bulk.total,
            "succeeded": bulk.succeeded,
            "failed": bulk.failed,
            "skipped": bulk.skipped,
            "pending": bulk.pending,
        },
        "cancel_requested": bulk.cancel_requested_at is not None,
        "requested_at": bulk.requested_at.isoformat(),
        "started_at": bulk.started_at.isoformat() if bulk.started_at else None,
        "finished_at": bulk.finished_at.isoformat() if bulk.finished_at else None,
        "duration_seconds": bulk.duration_seconds,
        "items": [
            {
                "agent": item.agent.slug,
                "name": item.agent.name,
                "status": item.status,
                "steps": item.steps,
                "steps_done": item.steps_done,
                "from_state": item.from_state,
                "to_state": item.to_state or None,
                "code": item.code or None,
                "message": item.message or None,
                "operations": item.operation_ids,
                "started_at": item.started_at.isoformat() if item.started_at else None,
                "finished_at": item.finished_at.isoformat() if item.finished_at else None,
                "duration_seconds": item.duration_seconds,
            }
            for item in items
        ],
    }
