"""Tickets, outgoing: create a Zendesk ticket or a Jira issue (from a diagnosis, its summary and
evidence in the body), link an existing one, change its status, assignee or add a comment, and
settle a conflict by keeping their side or ours.

Every change is made here first and sent by the outbox (``helpdesk.tickets.outbox``): the local
change, the ``TicketChange`` row (with its unique idempotency key) and the audit entry are one
transaction, and the send is enqueued when it commits. Reading a remote ticket (``link``) is the
only remote call made while the person waits. Each function checks the role first and refuses
with a sentence (``HelpdeskRefused``) before anything changes.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from helpdesk.customers import require_viewer
from helpdesk.models import (
    Customer,
    Diagnosis,
    OutboxStatus,
    SyncState,
    Ticket,
    TicketChange,
    TicketComment,
    TicketSystem,
)
from helpdesk.refusals import HelpdeskRefused
from helpdesk.tickets import clients
from helpdesk.tickets.clients import RateLimited, Rejected, RemoteError, Transient
from portal import roles
from portal.actors import Actor
from portal.services import audits_refusals, record_audit

SUBJECT_MAX = 300
BODY_MAX = 30_000
COMMENT_MAX = 10_000
ASSIGNEE_MAX = 200
STATUS_MAX = 40
FIELDS = ("status", "assignee", "priority", "subject")


def _text(field: str, value: object, limit: int, *, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise HelpdeskRefused(f"{field}: give text, not {type(value).__name__}.", "invalid")
    if "\x00" in value:
        raise HelpdeskRefused(f"{field}: NUL characters are not allowed.", "invalid")
    text = value.strip()
    if required and not text:
        raise HelpdeskRefused(f"{field}: it may not be empty.", "invalid")
    if len(text) > limit:
        raise HelpdeskRefused(
            f"{field}: {len(text)} characters is too long; use at most {limit}.", "invalid"
        )
    return text


def check_system(system: object) -> str:
    """``system`` when it names a ticket system that is on; refused (invalid/unavailable)."""
    if not isinstance(system, str) or system.strip().lower() not in TicketSystem.values:
        shown = repr(system)[:30] if isinstance(system, str) and "\x00" not in system else "that"
        raise HelpdeskRefused(
            f"system: {shown} is not a ticket system; use zendesk or jira.", "invalid"
        )
    system = system.strip().lower()
    if not clients.enabled(system):
        raise clients.off_refusal(system)
    return system


def systems() -> list[dict[str, Any]]:
    """Each ticket system, whether it is on, and the sentence saying how to turn it on."""
    return [
        {
            "value": value,
            "label": label,
            "on": clients.enabled(value),
            "off_reason": "" if clients.enabled(value) else clients.off_refusal(value).message,
        }
        for value, label in TicketSystem.choices
    ]


def get_ticket(ticket_id: object, *, customer: Customer | None = None) -> Ticket:
    """The ticket with ``ticket_id`` (of ``customer`` when given); ``not_found`` otherwise."""
    number = None
    if isinstance(ticket_id, int) and not isinstance(ticket_id, bool):
        number = ticket_id
    elif isinstance(ticket_id, str) and ticket_id.strip().isdecimal() and len(ticket_id) < 19:
        number = int(ticket_id)
    ticket = None
    if number is not None and 0 < number < 2**63:
        found = Ticket.objects.select_related("customer").filter(pk=number)
        if customer is not None:
            found = found.filter(customer=customer)
        ticket = found.first()
    if ticket is None:
        raise HelpdeskRefused(
            "No such ticket here; list the customer's tickets (`helpdesk tickets CUSTOMER`) "
            "to find its id.",
            "not_found",
        )
    return ticket


def get_diagnosis(customer: Customer, diagnosis_id: object) -> Diagnosis:
    """The customer's diagnosis ``diagnosis_id``; ``invalid`` when it is not one of theirs."""
    number = None
    if isinstance(diagnosis_id, int) and not isinstance(diagnosis_id, bool):
        number = diagnosis_id
    elif (
        isinstance(diagnosis_id, str)
        and diagnosis_id.strip().isdecimal()
        and len(diagnosis_id) < 19
    ):
        number = int(diagnosis_id)
    found = None
    if number is not None and 0 < number < 2**63:
        found = Diagnosis.objects.filter(pk=number, customer=customer).first()
    if found is None:
        raise HelpdeskRefused(
            f"diagnosis_id: {customer.company_name} has no diagnosis with that id; diagnose "
            "first or pick one of its diagnoses.",
            "invalid",
        )
    return found


def list_tickets(actor: Actor, customer: Customer) -> list[Ticket]:
    require_viewer(actor)
    return list(Ticket.objects.filter(customer=customer).order_by("-created_at", "-id"))


# --- the body of a ticket made from a diagnosis -------------------------------------------------


def _percent(confidence: object) -> str:
    try:
        value = float(confidence)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "?"
    return f"{value * 100 if value <= 1 else value:.0f} %"


def _fix_text(fix: object) -> str:
    if isinstance(fix, dict):
        for key in ("title", "label", "summary", "description", "action"):
            if fix.get(key):
                return str(fix[key])
        return ", ".join(f"{k}: {v}" for k, v in fix.items())
    return str(fix or "")


def diagnosis_body(diagnosis: Diagnosis) -> str:
    """The diagnosis as ticket text: the symptom, then each cause (best first) with its
    confidence, evidence and fix."""
    customer = diagnosis.customer
    lines = [
        f"Issue Detective diagnosis #{diagnosis.pk} for {customer.company_name} "
        f"({customer.key}), {diagnosis.created_at:%Y-%m-%d %H:%M} UTC.",
        f"Symptom: {diagnosis.symptom}",
    ]
    causes = [c for c in diagnosis.causes if isinstance(c, dict)][:5]
    if not causes:
        lines.append("No cause was found.")
    for rank, cause in enumerate(causes, 1):
        title = cause.get("title") or cause.get("cause") or "unnamed cause"
        lines.append("")
        lines.append(
            f"{rank}. {title} ({cause.get('cause', '')}), confidence {_percent(cause.get('confidence'))}"
        )
        for item in (cause.get("evidence") or [])[:10]:
            text = item.get("text") if isinstance(item, dict) else item
            if text:
                lines.append(f"   - {text}")
        if cause.get("fix"):
            lines.append(f"   Fix: {_fix_text(cause['fix'])}")
    return "\n".join(lines)


# --- the outbox: one row per change to send -----------------------------------------------------


def new_key() -> str:
    return f"hd-{uuid.uuid4().hex}"


def _enqueue(change: TicketChange) -> None:
    from helpdesk.tickets.tasks import send_ticket_change

    send_ticket_change.delay_on_commit(change.pk)


def _queue(ticket: Ticket, kind: str, payload: dict) -> TicketChange:
    change = TicketChange.objects.create(
        ticket=ticket,
        customer_id=ticket.customer_id,
        system=ticket.system,
        kind=kind,
        payload=payload,
        idempotency_key=new_key(),
    )
    _enqueue(change)
    return change


# --- create, link -------------------------------------------------------------------------------


@audits_refusals("helpdesk.ticket_create", target="customer")
def create_ticket(
    actor: Actor,
    customer: Customer,
    system: object,
    subject: object,
    body: object = "",
    diagnosis: Diagnosis | None = None,
) -> Ticket:
    """A new Zendesk ticket or Jira issue for ``customer``, sent by the outbox; from a
    diagnosis, its symptom is the default subject and its causes and evidence join the body."""
    actor.require(roles.OPERATE, "create a ticket")
    system = check_system(system)
    subject_text = _text("subject", subject, SUBJECT_MAX)
    body_text = _text("body", body, BODY_MAX)
    if diagnosis is not None:
        if diagnosis.customer_id != customer.pk:
            raise HelpdeskRefused(
                f"diagnosis_id: that diagnosis is not {customer.company_name}'s.", "invalid"
            )
        subject_text = subject_text or f"{customer.company_name}: {diagnosis.symptom}"[:SUBJECT_MAX]
        body_text = "\n\n".join(p for p in (body_text, diagnosis_body(diagnosis)) if p)
    if not subject_text:
        raise HelpdeskRefused("subject: it may not be empty.", "invalid")
    if not body_text:
        body_text = subject_text
    with transaction.atomic():
        key = new_key()
        ticket = Ticket.objects.create(
            customer=customer,
            system=system,
            external_id=f"pending-{key}",
            number="",
            subject=subject_text,
            status="new",
            diagnosis=diagnosis,
            sync_state=SyncState.PENDING,
        )
        change = TicketChange.objects.create(
            ticket=ticket,
            customer=customer,
            system=system,
            kind="create",
            payload={"subject": subject_text, "body": body_text},
            idempotency_key=key,
        )
        _enqueue(change)
        TicketComment.objects.create(
            ticket=ticket, author=actor.label[:200], body=body_text, from_portal=True
        )
        record_audit(
            actor, "helpdesk.ticket_create", target=f"{customer.key}/{system}",
            ticket=ticket.pk, subject=subject_text, diagnosis=diagnosis.pk if diagnosis else None,
            idempotency_key=key,
        )  # fmt: skip
    return ticket


def _remote_refusal(system: str, error: RemoteError, doing: str) -> HelpdeskRefused:
    label = TicketSystem(system).label
    if isinstance(error, RateLimited):
        return HelpdeskRefused(
            f"{label} asks us to slow down; try {doing} again in {error.retry_after} s.",
            "rate_limited",
        )
    if isinstance(error, Transient):
        return HelpdeskRefused(
            f"{label} did not answer ({error}); try {doing} again in a minute.", "unavailable"
        )
    return HelpdeskRefused(f"{label} refused {doing}: {error}", "invalid")


def parse_number(system: str, number: object) -> str:
    """The external id of ``number`` as people write it (ZD-4312 or 4312; SUP-12)."""
    text = _text("number", number, 40, required=True).upper()
    if system == TicketSystem.ZENDESK:
        digits = text.removeprefix("ZD-").removeprefix("#")
        if digits.isdecimal() and 0 < int(digits) < 2**53:
            return str(int(digits))
        raise HelpdeskRefused(
            f"number: {text!r} is not a Zendesk ticket number; write ZD-4312 or 4312.", "invalid"
        )
    project, _, digits = text.partition("-")
    if project.isalnum() and project[:1].isalpha() and digits.isdecimal() and len(digits) < 12:
        return f"{project}-{int(digits)}"
    raise HelpdeskRefused(f"number: {text!r} is not a Jira issue key; write SUP-12.", "invalid")


@audits_refusals("helpdesk.ticket_link", target="customer")
def link_ticket(actor: Actor, customer: Customer, system: object, number: object) -> Ticket:
    """Link an existing ticket to ``customer``, read from the remote (with its comments);
    linking it again answers the same ticket; one linked to another customer is refused."""
    actor.require(roles.OPERATE, "link a ticket")
    system = check_system(system)
    external_id = parse_number(system, number)
    linked = Ticket.objects.filter(system=system, external_id=external_id).first()
    if linked is not None:
        if linked.customer_id != customer.pk:
            raise HelpdeskRefused(
                f"{linked.number} is linked to another customer already; unlink it there first.",
                "conflict",
            )
        return linked
    client = clients.client_for(system)
    try:
        remote = client.get(external_id)
    except Rejected as error:
        label = TicketSystem(system).label
        raise HelpdeskRefused(
            f"{label} has no ticket {external_id} that we may read ({error}); check the number.",
            "not_found",
        ) from None
    except RemoteError as error:
        raise _remote_refusal(system, error, f"linking {external_id}") from None
    try:
        with transaction.atomic():
            ticket = Ticket.objects.create(
                customer=customer, system=system, external_id=remote.external_id,
                number=remote.number, subject=remote.subject or remote.number,
                status=remote.status, priority=remote.priority, assignee=remote.assignee[:200],
                url=remote.url, remote_version=remote.version, last_synced_at=timezone.now(),
            )  # fmt: skip
            TicketComment.objects.bulk_create(
                [
                    TicketComment(
                        ticket=ticket,
                        external_id=c.external_id,
                        author=c.author[:200] or "?",
                        body=c.body,
                    )  # fmt: skip
                    for c in remote.comments
                ]
            )
            record_audit(
                actor, "helpdesk.ticket_link", target=f"{customer.key}/{remote.number}",
                ticket=ticket.pk, system=system,
            )  # fmt: skip
    except IntegrityError:
        # Linked by someone else meanwhile: answer that link (or refuse if another customer's).
        linked = Ticket.objects.filter(system=system, external_id=remote.external_id).first()
        if linked is None:
            raise
        if linked.customer_id != customer.pk:
            raise HelpdeskRefused(
                f"{linked.number} is linked to another customer already; unlink it there first.",
                "conflict",
            ) from None
        return linked
    return ticket


# --- update, resolve ----------------------------------------------------------------------------


def _clean_status(system: str, status: object) -> str:
    text = _text("status", status, STATUS_MAX, required=True).lower()
    if system == TicketSystem.ZENDESK and text not in clients.ZENDESK_STATUSES:
        raise HelpdeskRefused(
            f"status: {text!r} is not a Zendesk status; use one of "
            f"{', '.join(clients.ZENDESK_STATUSES)}.",
            "invalid",
        )
    return text


@audits_refusals("helpdesk.ticket_update", target="ticket")
def update_ticket(
    actor: Actor,
    ticket: Ticket,
    status: object = None,
    assignee: object = None,
    comment: object = None,
) -> Ticket:
    """Change the status or the assignee (``""`` unassigns) and/or add a comment, here at once
    and on the remote through the outbox (a field change against the version we last saw)."""
    actor.require(roles.OPERATE, "update a ticket")
    check_system(ticket.system)
    changes: dict[str, str] = {}
    if status is not None:
        changes["status"] = _clean_status(ticket.system, status)
    if assignee is not None:
        changes["assignee"] = _text("assignee", assignee, ASSIGNEE_MAX)
    comment_text = _text("comment", comment, COMMENT_MAX)
    with transaction.atomic():
        ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
        if ticket.sync_state == SyncState.CONFLICT:
            raise HelpdeskRefused(
                f"{ticket.number or 'This ticket'} changed on both sides; keep theirs or ours "
                "first (`helpdesk tickets resolve ID --keep theirs|ours`).",
                "conflict",
            )
        if ticket.external_id.startswith("pending-") and not _has_pending(ticket):
            raise HelpdeskRefused(
                f"This ticket never reached {ticket.get_system_display()} ({ticket.sync_problem}); "
                "create it again.",
                "conflict",
            )
        changes = {k: v for k, v in changes.items() if getattr(ticket, k) != v}
        if not changes and not comment_text:
            raise HelpdeskRefused(
                "Nothing to change: give a new status, a new assignee or a comment.", "invalid"
            )
        previous = {k: getattr(ticket, k) for k in changes}
        if changes:
            for name, value in changes.items():
                setattr(ticket, name, value)
            _queue(ticket, "update", {
                "changes": changes, "previous": previous,
                "base_version": ticket.remote_version or None,
            })  # fmt: skip
        if comment_text:
            row = TicketComment.objects.create(
                ticket=ticket, author=actor.label[:200], body=comment_text, from_portal=True
            )
            _queue(ticket, "comment", {"comment": comment_text, "comment_row": row.pk})
        ticket.sync_state = SyncState.PENDING
        ticket.sync_problem = ""
        ticket.save()
        record_audit(
            actor, "helpdesk.ticket_update", target=ticket.number or f"ticket {ticket.pk}",
            ticket=ticket.pk, changes=changes, previous=previous, comment=bool(comment_text),
        )  # fmt: skip
    return ticket


KEEP = ("theirs", "ours")


@audits_refusals("helpdesk.ticket_resolve", target="ticket")
def resolve_conflict(actor: Actor, ticket: Ticket, keep: object = "theirs") -> Ticket:
    """Settle a conflict: ``theirs`` takes the remote's values here (our change is dropped);
    ``ours`` sends our change again against their newest version."""
    actor.require(roles.OPERATE, "resolve a ticket conflict")
    if keep not in KEEP:
        raise HelpdeskRefused("keep: use theirs or ours.", "invalid")
    with transaction.atomic():
        ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
        if ticket.sync_state != SyncState.CONFLICT or not ticket.conflict:
            raise HelpdeskRefused(
                f"{ticket.number or 'This ticket'} is not in conflict; nothing to resolve.",
                "conflict",
            )
        theirs = dict(ticket.conflict.get("theirs") or {})
        ours = dict(ticket.conflict.get("ours") or {})
        version = str(theirs.pop("version", ""))
        if keep == "theirs":
            for name in FIELDS:
                if name in theirs:
                    setattr(ticket, name, str(theirs[name])[: 300 if name == "subject" else 200])
            ticket.sync_state = SyncState.PENDING if _has_pending(ticket) else SyncState.IN_SYNC
        else:
            resend = {k: v for k, v in ours.items() if theirs.get(k) != v}
            for name, value in ours.items():
                setattr(ticket, name, value)
            if resend:
                _queue(ticket, "update", {
                    "changes": resend, "previous": {k: theirs.get(k, "") for k in resend},
                    "base_version": version or None,
                })  # fmt: skip
            ticket.sync_state = (
                SyncState.PENDING if resend or _has_pending(ticket) else (SyncState.IN_SYNC)
            )
        ticket.remote_version = version or ticket.remote_version
        settled = ticket.conflict
        ticket.conflict = {}
        ticket.sync_problem = ""
        ticket.save()
        record_audit(
            actor, "helpdesk.ticket_resolve", target=ticket.number or f"ticket {ticket.pk}",
            ticket=ticket.pk, keep=keep, ours=ours, theirs=settled.get("theirs"),
        )  # fmt: skip
    return ticket


def _has_pending(ticket: Ticket) -> bool:
    return ticket.changes.filter(status=OutboxStatus.PENDING).exists()


def conflict_sides(ticket: Ticket) -> list[dict[str, Any]]:
    """The conflicting fields, each with our value and theirs, for the pages."""
    ours = ticket.conflict.get("ours") or {}
    theirs = ticket.conflict.get("theirs") or {}
    return [
        {"field": name, "ours": ours.get(name, ""), "theirs": theirs.get(name, "")}
        for name in FIELDS
        if name in ours or (name in theirs and theirs.get(name) != getattr(ticket, name))
    ]
