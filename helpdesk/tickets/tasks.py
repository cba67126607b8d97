"""The tickets' Celery task, send one outbox change (ids in, one service call), and the sweep
that enqueues the due ones."""

from __future__ import annotations

from celery import shared_task

from helpdesk.tickets import outbox, webhooks


@shared_task(name="helpdesk.send_ticket_change")
def send_ticket_change(change_id: int) -> dict:
    result = outbox.send_change(change_id)
    return {"change": result.change_id, "outcome": result.outcome, "detail": result.detail}


def sweep() -> None:
    """Enqueue every due change (the beat's sweep: postponed and retried ones come back here),
    and forget webhook deliveries older than a month."""
    for change_id in outbox.due_changes():
        send_ticket_change.delay(change_id)
    webhooks.prune_deliveries()
