"""What the tickets API answers, shared with ``manage.py helpdesk tickets ... --json``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Schema

from helpdesk.models import Ticket, TicketChange, TicketComment, WebhookDelivery

# --- input: Any, so the services refuse a wrong type with a sentence (400), not ninja (422) ----


class TicketIn(Schema):
    """Create (``system``, ``subject``, ``body``, ``diagnosis_id``) or link (``system``,
    ``number``)."""

    system: Any = None
    subject: Any = None
    body: Any = None
    diagnosis_id: Any = None
    number: Any = None


class TicketPatch(Schema):
    status: Any = None
    assignee: Any = None
    comment: Any = None


class ResolveIn(Schema):
    keep: Any = None


# --- output -------------------------------------------------------------------------------------


class CommentOut(Schema):
    author: str
    body: str
    from_portal: bool
    external_id: str
    created_at: datetime


class ChangeOut(Schema):
    id: int
    kind: str
    status: str
    attempts: int
    idempotency_key: str
    next_attempt_at: datetime
    last_error: str
    sent_at: datetime | None


class TicketOut(Schema):
    id: int
    customer_id: str
    system: str
    number: str
    external_id: str
    subject: str
    status: str
    priority: str
    assignee: str
    url: str
    open: bool
    diagnosis_id: int | None
    remote_version: str
    sync_state: str
    sync_problem: str
    conflict: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    last_synced_at: datetime | None


class TicketDetail(TicketOut):
    comments: list[CommentOut]
    changes: list[ChangeOut]


class SystemOut(Schema):
    system: str
    label: str
    on: bool
    off_reason: str


class Tickets(Schema):
    customer_id: str
    systems: list[SystemOut]
    tickets: list[TicketOut]


class DeliveryOut(Schema):
    id: int
    system: str
    delivery_id: str
    result: str
    detail: str
    source: str
    received_at: datetime


class Deliveries(Schema):
    deliveries: list[DeliveryOut]


class WebhookAnswer(Schema):
    result: str
    detail: str


def ticket_out(ticket: Ticket, customer_key: str | None = None) -> dict[str, Any]:
    return {
        "id": ticket.pk,
        "customer_id": customer_key or ticket.customer.key,
        "system": ticket.system,
        "number": ticket.number,
        "external_id": "" if ticket.external_id.startswith("pending-") else ticket.external_id,
        "subject": ticket.subject,
        "status": ticket.status,
        "priority": ticket.priority,
        "assignee": ticket.assignee,
        "url": ticket.url,
        "open": ticket.open,
        "diagnosis_id": ticket.diagnosis_id,
        "remote_version": ticket.remote_version,
        "sync_state": ticket.sync_state,
        "sync_problem": ticket.sync_problem,
        "conflict": ticket.conflict or {},
        "created_at": ticket.created_at,
        "updated_at": ticket.updated_at,
        "last_synced_at": ticket.last_synced_at,
    }


def comment_out(comment: TicketComment) -> dict[str, Any]:
    return {
        "author": comment.author,
        "body": comment.body,
        "from_portal": comment.from_portal,
        "external_id": comment.external_id,
        "created_at": comment.created_at,
    }


def change_out(change: TicketChange) -> dict[str, Any]:
    return {
        "id": change.pk,
        "kind": change.kind,
        "status": change.status,
        "attempts": change.attempts,
        "idempotency_key": change.idempotency_key,
        "next_attempt_at": change.next_attempt_at,
        "last_error": change.last_error,
        "sent_at": change.sent_at,
    }


def ticket_detail(ticket: Ticket) -> dict[str, Any]:
    return {
        **ticket_out(ticket),
        "comments": [comment_out(c) for c in ticket.comments.all()],
        "changes": [change_out(c) for c in ticket.changes.order_by("created_at", "id")],
    }


def tickets_out(customer_key: str, tickets: list[Ticket], systems: list[dict]) -> dict[str, Any]:
    return {
        "customer_id": customer_key,
        "systems": [
            {
                "system": s["value"],
                "label": s["label"],
                "on": s["on"],
                "off_reason": s["off_reason"],
            }
            for s in systems
        ],
        "tickets": [ticket_out(t, customer_key) for t in tickets],
    }


def deliveries_out(deliveries: list[WebhookDelivery]) -> dict[str, Any]:
    return {
        "deliveries": [
            {
                "id": d.pk,
                "system": d.system,
                "delivery_id": d.delivery_id,
                "result": d.result,
                "detail": d.detail,
                "source": d.source,
                "received_at": d.received_at,
            }
            for d in deliveries
        ]
    }
