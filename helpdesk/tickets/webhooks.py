"""Tickets, incoming: the webhooks Zendesk and Jira call when a ticket changes.

A delivery is trusted only with a good signature: Zendesk's ``X-Zendesk-Webhook-Signature``
(base64 HMAC-SHA256 of the timestamp and the raw body, the timestamp at most five minutes old)
and Jira's ``X-Hub-Signature: sha256=<hex HMAC of the raw body>``. A bad or missing one is
answered 401, logged and kept as a refused delivery; nothing else changes.

Each delivery id is taken once (a unique row): a doubled delivery is answered 200 and ignored.
Our own change coming back (the version we last wrote, or our integration user as its author)
is ignored as an echo, so nothing is ever sent back out; an older version than ours is stale.
Otherwise status, assignee, priority, subject and new comments are applied and audited as done
by ``system:zendesk`` / ``system:jira``.

Payloads: Zendesk's ticket events (``{"type", "detail": {ticket}, "event": {...}}``) or a
trigger's JSON (``{"ticket": {...}}``); Jira's issue and comment events (``{"webhookEvent",
"user", "issue": {"key", "fields"}, "comment"}``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from helpdesk.models import SyncState, Ticket, TicketComment, TicketSystem, WebhookDelivery
from helpdesk.refusals import HelpdeskRefused
from helpdesk.tickets import clients
from helpdesk.tickets.clients import RemoteComment, RemoteError, adf_text, jira_person
from portal import roles
from portal.actors import Actor
from portal.services import record_audit

logger = logging.getLogger(__name__)

MAX_AGE = timedelta(minutes=5)
ZENDESK_SIGNATURE = "X-Zendesk-Webhook-Signature"
ZENDESK_TIMESTAMP = "X-Zendesk-Webhook-Signature-Timestamp"
ZENDESK_ID = "X-Zendesk-Webhook-Invocation-Id"
JIRA_SIGNATURE = "X-Hub-Signature"
JIRA_ID = "X-Atlassian-Webhook-Identifier"
Result = WebhookDelivery.Result


@dataclass(frozen=True)
class Receipt:
    """What the webhook answers: the HTTP status and ``{"result", "detail"}``."""

    status: int
    result: str
    detail: str
    delivery_id: str = ""


@dataclass
class Incoming:
    """One remote change, read from a delivery."""

    external_id: str
    version: str
    fields: dict[str, str]
    comment: RemoteComment | None = None
    author: str = ""


# --- signatures ---------------------------------------------------------------------------------


def zendesk_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret, timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def jira_signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _parse_timestamp(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            return datetime.fromtimestamp(float(text), tz=UTC)
        except (ValueError, OverflowError, OSError):
            return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def signature_problem(system: str, headers: Any, body: bytes, now: datetime) -> str:
    """Why this delivery's signature is not good ("" when it is)."""
    secret = clients.webhook_secret(system)
    if system == TicketSystem.ZENDESK:
        given = headers.get(ZENDESK_SIGNATURE, "")
        timestamp = headers.get(ZENDESK_TIMESTAMP, "")
        if not given or not timestamp:
            return f"missing {ZENDESK_SIGNATURE} or {ZENDESK_TIMESTAMP}"
        when = _parse_timestamp(timestamp)
        if when is None:
            return "the signature timestamp is not a time"
        if abs(now - when) > MAX_AGE:
            return "the signature timestamp is more than 5 minutes from now (a replay?)"
        expected = zendesk_signature(secret, timestamp, body)
    else:
        given = headers.get(JIRA_SIGNATURE, "")
        if not given:
            return f"missing {JIRA_SIGNATURE}"
        expected = jira_signature(secret, body)
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        return "the signature does not match the body"
    return ""


# --- reading the payloads -----------------------------------------------------------------------


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def read_zendesk(data: dict) -> Incoming:
    ticket: Any = data["detail"] if isinstance(data.get("detail"), dict) else data.get("ticket")
    if not isinstance(ticket, dict) or not _s(ticket.get("id")).strip():
        raise ValueError("no ticket in the payload (detail.id or ticket.id)")
    fields: dict[str, str] = {}
    for name in ("status", "priority", "subject"):
        if name in ticket:
            fields[name] = _s(ticket[name]).lower() if name != "subject" else _s(ticket[name])
    if "assignee_email" in ticket:
        fields["assignee"] = _s(ticket["assignee_email"])
    elif "assignee_id" in ticket:
        assignee_id = ticket["assignee_id"]
        fields["assignee"] = _zendesk_user(assignee_id) if assignee_id else ""
    event: dict = data["event"] if isinstance(data.get("event"), dict) else {}
    raw = event.get("comment") or ticket.get("latest_comment")
    comment = None
    if isinstance(raw, dict) and raw.get("id"):
        author: dict = raw["author"] if isinstance(raw.get("author"), dict) else {}
        comment = RemoteComment(
            external_id=_s(raw["id"]),
            author=_s(author.get("email") or raw.get("author_email") or author.get("name")),
            body=_s(raw.get("body")),
        )
    return Incoming(
        external_id=_s(ticket["id"]).strip(),
        version=_s(ticket.get("updated_at")),
        fields=fields,
        comment=comment,
        author=_s(ticket.get("updated_by_email") or (comment.author if comment else "")),
    )


def _zendesk_user(user_id: object) -> str:
    try:
        return clients.ZendeskClient(
            settings.ZENDESK_URL, settings.ZENDESK_EMAIL, settings.ZENDESK_API_TOKEN
        ).user_email(user_id)
    except (RemoteError, ValueError):
        return _s(user_id)


def read_jira(data: dict) -> Incoming:
    issue = data.get("issue")
    if not isinstance(issue, dict) or not _s(issue.get("key")).strip():
        raise ValueError("no issue in the payload (issue.key)")
    raw_fields: dict = issue["fields"] if isinstance(issue.get("fields"), dict) else {}
    fields: dict[str, str] = {}
    if "summary" in raw_fields:
        fields["subject"] = _s(raw_fields["summary"])
    if "status" in raw_fields:
        fields["status"] = _s((raw_fields["status"] or {}).get("name")).lower()
    if "priority" in raw_fields:
        fields["priority"] = _s((raw_fields["priority"] or {}).get("name")).lower()
    if "assignee" in raw_fields:
        fields["assignee"] = jira_person(raw_fields["assignee"])
    raw = data.get("comment")
    comment = None
    if isinstance(raw, dict) and raw.get("id"):
        comment = RemoteComment(
            external_id=_s(raw["id"]), author=jira_person(raw.get("author")),
            body=adf_text(raw.get("body")),
        )  # fmt: skip
    return Incoming(
        external_id=_s(issue["key"]).strip().upper(),
        version=_s(raw_fields.get("updated")),
        fields=fields,
        comment=comment,
        author=jira_person(data.get("user")) or (comment.author if comment else ""),
    )


# --- receiving ----------------------------------------------------------------------------------


def _delivery_id(system: str, headers: Any, body: bytes) -> str:
    header = ZENDESK_ID if system == TicketSystem.ZENDESK else JIRA_ID
    given = _s(headers.get(header, "")).strip()
    if given and len(given) <= 128 and "\x00" not in given:
        return given
    return "body-" + hashlib.sha256(body).hexdigest()[:40]


def _refuse(system: str, delivery_id: str, problem: str, source: str, status: int) -> Receipt:
    logger.warning("refused %s webhook %s from %s: %s", system, delivery_id, source, problem)
    WebhookDelivery.objects.create(
        system=system, delivery_id=delivery_id[:128], result=Result.REFUSED,
        detail=problem[:500], source=source[:100],
    )  # fmt: skip
    return Receipt(status, Result.REFUSED, problem, delivery_id)


def receive(system: str, headers: Any, body: bytes, source: str = "") -> Receipt:
    """Take one webhook delivery of ``system``; nothing changes unless it is signed rightly,
    new, and neither our own change nor older than what we hold."""
    if not clients.enabled(system):
        raise clients.off_refusal(system)
    delivery_id = _delivery_id(system, headers, body)
    label = TicketSystem(system).label
    if not clients.webhook_secret(system):
        refused = HelpdeskRefused(
            f"{label} webhooks cannot be verified: set {system.upper()}_WEBHOOK_SECRET to the "
            "webhook's signing secret.",
            "off",
        )
        _refuse(system, delivery_id, refused.message, source, 409)
        raise refused
    problem = signature_problem(system, headers, body, timezone.now())
    if problem:
        return _refuse(system, delivery_id, f"bad signature: {problem}", source, 401)
    try:
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("the body is not a JSON object")
        incoming = read_zendesk(data) if system == TicketSystem.ZENDESK else read_jira(data)
    except (ValueError, UnicodeDecodeError) as error:
        return _refuse(system, delivery_id, f"unreadable payload: {error}", source, 400)
    with transaction.atomic():
        try:
            with transaction.atomic():
                delivery = WebhookDelivery.objects.create(
                    system=system, delivery_id=delivery_id, result=Result.APPLIED,
                    source=source[:100],
                )  # fmt: skip
        except IntegrityError:
            logger.info("duplicate %s webhook %s ignored", system, delivery_id)
            return Receipt(200, Result.DUPLICATE, "seen before; ignored", delivery_id)
        result, detail = _apply(system, incoming)
        delivery.result = result
        delivery.detail = detail[:500]
        delivery.save(update_fields=["result", "detail"])
    return Receipt(200, result, detail, delivery_id)


def _integration_user(system: str) -> str:
    return str(getattr(settings, f"{system.upper()}_EMAIL", "") or "").lower()


def _apply(system: str, incoming: Incoming) -> tuple[str, str]:
    ticket = (
        Ticket.objects.select_for_update()
        .filter(system=system, external_id=incoming.external_id)
        .first()
    )
    if ticket is None:
        return Result.UNKNOWN, f"no ticket {incoming.external_id} is linked here"
    ours = _integration_user(system)
    if ours and incoming.author.lower() == ours:
        return Result.ECHO, f"{ticket.number}: changed by our integration user"
    theirs = clients.parse_version(incoming.version)
    held = clients.parse_version(ticket.remote_version)
    if (
        incoming.version
        and incoming.version == ticket.remote_version
        or (theirs and held and theirs == held)
    ):
        return Result.ECHO, f"{ticket.number}: version {incoming.version} is the one we have"
    if theirs and held and theirs < held:
        return Result.STALE, f"{ticket.number}: {incoming.version} is older than ours"
    changes = _apply_fields(ticket, incoming)
    added = _add_comment(ticket, incoming.comment)
    if incoming.version:
        ticket.remote_version = incoming.version
    ticket.last_synced_at = timezone.now()
    ticket.save()
    if changes or added:
        record_audit(
            Actor.system(system), "helpdesk.ticket_synced", target=ticket.number,
            ticket=ticket.pk, changes=changes, comment=added, version=incoming.version,
        )  # fmt: skip
    said = ", ".join(f"{k} {v['from']!r} → {v['to']!r}" for k, v in changes.items())
    detail = "; ".join(p for p in (said, "a new comment" if added else "") if p)
    return Result.APPLIED, f"{ticket.number}: {detail or 'nothing new'}"


def _apply_fields(ticket: Ticket, incoming: Incoming) -> dict[str, dict[str, str]]:
    changes: dict[str, dict[str, str]] = {}
    if ticket.sync_state == SyncState.CONFLICT:
        # Ours stays on the ticket until an operator picks; their side is brought up to date.
        theirs = dict(ticket.conflict.get("theirs") or {})
        for name, value in incoming.fields.items():
            if theirs.get(name) != value:
                changes[name] = {"from": str(theirs.get(name, "")), "to": value}
            theirs[name] = value
        theirs["version"] = incoming.version or theirs.get("version", "")
        ticket.conflict = {**ticket.conflict, "theirs": theirs}
        return changes
    for name, value in incoming.fields.items():
        value = value[:300] if name == "subject" else value[:200]
        if name == "subject" and not value:
            continue
        if getattr(ticket, name) != value:
            changes[name] = {"from": getattr(ticket, name), "to": value}
            setattr(ticket, name, value)
    return changes


def _add_comment(ticket: Ticket, comment: RemoteComment | None) -> bool:
    if comment is None or not comment.body:
        return False
    if TicketComment.objects.filter(ticket=ticket, external_id=comment.external_id).exists():
        return False
    ours = _integration_user(ticket.system)
    if ours and comment.author.lower() == ours:
        return False
    TicketComment.objects.create(
        ticket=ticket, external_id=comment.external_id[:64], author=comment.author[:200] or "?",
        body=comment.body,
    )  # fmt: skip
    return True


DELIVERIES_MAX = 500
KEEP_DELIVERIES = timedelta(days=30)


def prune_deliveries(now: datetime | None = None) -> int:
    """Forget deliveries older than 30 days (the sweep); a replay that old is stale anyway."""
    cutoff = (now or timezone.now()) - KEEP_DELIVERIES
    deleted, _ = WebhookDelivery.objects.filter(received_at__lt=cutoff).delete()
    return deleted


def recent_deliveries(actor: Actor, limit: object = 100) -> list[WebhookDelivery]:
    """The newest webhook deliveries, refused ones included (Admin: they show who knocks)."""
    actor.require(roles.MANAGE, "see the webhook deliveries")
    if isinstance(limit, str) and limit.strip().isdecimal() and len(limit) < 7:
        limit = int(limit)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= DELIVERIES_MAX:
        raise HelpdeskRefused(f"limit: give a whole number from 1 to {DELIVERIES_MAX}.", "invalid")
    return list(WebhookDelivery.objects.order_by("-received_at", "-id")[:limit])
