"""Sending the outbox: each ``TicketChange`` goes to Zendesk or Jira once.

A change is sent under a row lock on it and on its ticket (so a webhook about the same ticket
waits for our answer and recognises our own change), and marked sent in that same transaction.
Changes of one ticket go in order. A 429 postpones the change to its ``Retry-After`` (nothing
sent before then); a 5xx or network failure postpones it with a growing backoff, up to
``MAX_ATTEMPTS``; a remote that changed since the version our change was based on is a conflict:
both sides are kept on the ticket and nothing is overwritten until an operator picks one.

A create that reached the remote but whose answer was lost is sent again with the same
idempotency key: Zendesk answers the ticket it made; for Jira the key is an issue property,
searched for before creating again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from helpdesk.models import (
    OutboxStatus,
    SyncState,
    Ticket,
    TicketChange,
    TicketComment,
)
from helpdesk.tickets import clients
from helpdesk.tickets.clients import (
    RateLimited,
    Rejected,
    RemoteConflict,
    RemoteError,
    RemoteTicket,
    Transient,
)
from portal.actors import Actor
from portal.services import record_audit

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
BACKOFF_SECONDS = 15
BACKOFF_MAX = 1800
SEND_BATCH = 50
OFF_RETRY_SECONDS = 300


@dataclass(frozen=True)
class SendResult:
    change_id: int
    outcome: str  # sent, postponed, retry, conflict, failed, waiting, not_due, done, busy
    detail: str = ""
    ticket_id: int | None = None


def backoff(attempts: int) -> int:
    return min(BACKOFF_SECONDS * 2 ** max(attempts - 1, 0), BACKOFF_MAX)


def send_change(change_id: int, *, now: datetime | None = None) -> SendResult:
    """Send one change if it is due and first in line for its ticket; what happened."""
    now = now or timezone.now()
    with transaction.atomic():
        change = (
            TicketChange.objects.select_for_update(skip_locked=True).filter(pk=change_id).first()
        )
        if change is None:
            exists = TicketChange.objects.filter(pk=change_id).exists()
            return SendResult(change_id, "busy" if exists else "done", "being sent elsewhere")
        if change.status != OutboxStatus.PENDING:
            return SendResult(change_id, "done", f"already {change.status}", change.ticket_id)
        if change.next_attempt_at > now:
            wait = (change.next_attempt_at - now).total_seconds()
            return SendResult(change_id, "not_due", f"due in {wait:.0f} s", change.ticket_id)
        ticket = None
        if change.ticket_id is not None:
            ticket = Ticket.objects.select_for_update().filter(pk=change.ticket_id).first()
        if ticket is None:
            change.status = OutboxStatus.FAILED
            change.last_error = "the ticket was deleted"
            change.save(update_fields=["status", "last_error"])
            return SendResult(change_id, "failed", change.last_error)
        earlier = TicketChange.objects.filter(
            ticket=ticket, status=OutboxStatus.PENDING, pk__lt=change.pk
        ).exists()
        if earlier:
            return SendResult(change_id, "waiting", "an earlier change goes first", ticket.pk)
        if not clients.enabled(change.system):
            change.next_attempt_at = now + timedelta(seconds=OFF_RETRY_SECONDS)
            change.last_error = clients.off_refusal(change.system).message[:500]
            change.save(update_fields=["next_attempt_at", "last_error"])
            return SendResult(change_id, "postponed", change.last_error, ticket.pk)
        change.attempts += 1
        try:
            remote = _send(change, ticket)
        except RateLimited as limited:
            change.next_attempt_at = now + timedelta(seconds=limited.retry_after)
            change.last_error = f"429: retry after {limited.retry_after} s"
            change.save(update_fields=["attempts", "next_attempt_at", "last_error"])
            return SendResult(change_id, "postponed", change.last_error, ticket.pk)
        except Transient as error:
            return _retry_or_fail(change, ticket, str(error), now)
        except RemoteConflict as conflict:
            theirs = conflict.theirs
            if theirs is not None and _already_applied(change, theirs):
                remote = theirs  # our own earlier try got through; its answer was lost
            else:
                return _conflict(change, ticket, theirs, str(conflict))
        except (Rejected, RemoteError) as error:
            return _fail(change, ticket, str(error))
        _sent(change, ticket, remote, now)
        return SendResult(change_id, "sent", remote.number, ticket.pk)


def _send(change: TicketChange, ticket: Ticket) -> RemoteTicket:
    client = clients.client_for(change.system)
    payload = change.payload
    if change.kind == "create":
        if isinstance(client, clients.JiraClient):
            return client.create(
                payload["subject"], payload["body"], change.idempotency_key,
                retry=change.attempts > 1,
            )  # fmt: skip
        return client.create(payload["subject"], payload["body"], change.idempotency_key)
    if change.kind == "update":
        base = payload.get("base_version") or ticket.remote_version
        return client.update(ticket.external_id, dict(payload["changes"]), base)
    if change.kind == "comment":
        return client.update(ticket.external_id, {}, "", comment=payload["comment"])
    raise Rejected(f"unknown change kind {change.kind!r}")


def _already_applied(change: TicketChange, theirs: RemoteTicket) -> bool:
    changes = change.payload.get("changes") or {}
    held = theirs.fields()
    return (
        change.kind == "update"
        and bool(changes)
        and all(held.get(k, "") == v for k, v in changes.items())
    )


def _sent(change: TicketChange, ticket: Ticket, remote: RemoteTicket, now: datetime) -> None:
    change.status = OutboxStatus.SENT
    change.sent_at = now
    change.last_error = ""
    change.save(update_fields=["status", "sent_at", "attempts", "last_error"])
    if change.kind == "create":
        ticket.external_id = remote.external_id
        ticket.number = remote.number
        ticket.url = remote.url
    if change.kind == "comment" and remote.comment_id:
        TicketComment.objects.filter(pk=change.payload.get("comment_row")).update(
            external_id=remote.comment_id
        )
    later = TicketChange.objects.filter(ticket=ticket, status=OutboxStatus.PENDING).exists()
    if not later and ticket.sync_state != SyncState.CONFLICT:
        # Nothing else of ours is on its way: the remote's answer is the truth.
        for name, value in remote.fields().items():
            setattr(ticket, name, value[:300] if name == "subject" else value[:200])
        ticket.sync_state = SyncState.IN_SYNC
        ticket.sync_problem = ""
    elif ticket.sync_state == SyncState.CONFLICT:
        # Our comment moved the remote's version: their side is what the remote now holds.
        ticket.conflict = {
            **ticket.conflict,
            "theirs": {**remote.fields(), "version": remote.version},
        }
    ticket.remote_version = remote.version
    ticket.last_synced_at = now
    ticket.save()
    record_audit(
        Actor.system("helpdesk.outbox"), f"helpdesk.ticket_sent_{change.kind}",
        target=ticket.number, ticket=ticket.pk, change=change.pk,
        idempotency_key=change.idempotency_key, attempts=change.attempts,
    )  # fmt: skip


def _conflict(
    change: TicketChange, ticket: Ticket, theirs: RemoteTicket | None, detail: str
) -> SendResult:
    change.status = OutboxStatus.CONFLICT
    change.last_error = detail[:500]
    change.save(update_fields=["status", "attempts", "last_error"])
    ours = dict(change.payload.get("changes") or {})
    ticket.sync_state = SyncState.CONFLICT
    ticket.sync_problem = "Changed on both sides: keep theirs or ours. Nothing was overwritten."
    ticket.conflict = {
        "change_id": change.pk,
        "base_version": change.payload.get("base_version") or "",
        "ours": ours,
        "previous": change.payload.get("previous") or {},
        "theirs": {**theirs.fields(), "version": theirs.version} if theirs else {},
        "detected_at": timezone.now().isoformat(),
    }
    ticket.save()
    record_audit(
        Actor.system("helpdesk.outbox"), "helpdesk.ticket_conflict", target=ticket.number,
        outcome="failure", ticket=ticket.pk, change=change.pk, ours=ours,
        theirs=ticket.conflict["theirs"],
    )  # fmt: skip
    return SendResult(change.pk, "conflict", "changed on both sides", ticket.pk)


def _retry_or_fail(change: TicketChange, ticket: Ticket, error: str, now: datetime) -> SendResult:
    if change.attempts >= MAX_ATTEMPTS:
        return _fail(change, ticket, f"gave up after {change.attempts} tries: {error}")
    change.next_attempt_at = now + timedelta(seconds=backoff(change.attempts))
    change.last_error = error[:500]
    change.save(update_fields=["attempts", "next_attempt_at", "last_error"])
    return SendResult(change.pk, "retry", error, ticket.pk)


def _fail(change: TicketChange, ticket: Ticket, error: str) -> SendResult:
    change.status = OutboxStatus.FAILED
    change.last_error = error[:500]
    change.save(update_fields=["status", "attempts", "last_error"])
    ticket.sync_state = SyncState.FAILED
    ticket.sync_problem = f"{change.kind} not sent: {error}"[:500]
    ticket.save(update_fields=["sync_state", "sync_problem", "updated_at"])
    logger.warning("ticket change %s failed: %s", change.pk, error)
    record_audit(
        Actor.system("helpdesk.outbox"), f"helpdesk.ticket_sent_{change.kind}",
        target=ticket.number or f"ticket {ticket.pk}", outcome="failure", ticket=ticket.pk,
        change=change.pk, error=error[:300],
    )  # fmt: skip
    return SendResult(change.pk, "failed", error, ticket.pk)


def due_changes(now: datetime | None = None, limit: int = SEND_BATCH) -> list[int]:
    now = now or timezone.now()
    return list(
        TicketChange.objects.filter(status=OutboxStatus.PENDING, next_attempt_at__lte=now)
        .order_by("created_at", "id")
        .values_list("pk", flat=True)[:limit]
    )


def send_due(now: datetime | None = None, limit: int = SEND_BATCH) -> list[SendResult]:
    """Send every due change now, oldest first (the CLI's ``tickets sync``); a change that
    waited for an earlier one of its ticket goes in a further pass."""
    results: dict[int, SendResult] = {}
    for _ in range(5):
        due = [
            change_id
            for change_id in due_changes(now, limit)
            if change_id not in results or results[change_id].outcome == "waiting"
        ]
        for change_id in due:
            results[change_id] = send_change(change_id, now=now)
        if all(results[change_id].outcome == "waiting" for change_id in due):
            break
    return list(results.values())
