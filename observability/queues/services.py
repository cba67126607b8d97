"""Every change an operator makes to a queue, whatever the door (page, API, admin, command):
permission-checked here and audited here. Reading is in ``figures``, ``deadletters`` and
``pending``; the views, the API and the ``queues`` command call these functions.

Viewers read (payload fields with secret-looking names masked); Operators send, redrive,
edit, delete dead letters, claim and set thresholds; purging a whole stream is Admin only. A
refusal (``Refused``) is raised before anything changes.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.agentd import contract
from observability.queues import catalog, deadletters, live, pending, redrive
from observability.queues.catalog import QueueRef, QueueRefused
from observability.queues.figures import Thresholds
from observability.queues.models import QueueThreshold, RedriveJob
from portal import roles, work
from portal.actors import Actor
from portal.models import ActorStamped
from portal.services import audits_refusals, record_audit

PAYLOAD_MAX_BYTES = 64 * 1024
SEND_MAX = 10_000
SELECT_MAX = 1000
MIN_RATE = 0.1
FINGERPRINT = re.compile(r"^[0-9a-f]{6,40}$")
AUDIT_PAYLOAD_CHARS = 16_000


def _require_stream(ref: QueueRef, doing: str) -> None:
    if not ref.is_agent:
        raise QueueRefused(
            f"Cannot {doing} on {ref.name}: the Celery queue carries the portal's own jobs and has "
            f"no dead letters; choose an agent's stream.",
            "not_a_stream",
        )


# --- payloads -----------------------------------------------------------------------------------


def parse_payload(value: Any, what: str = "payload") -> dict:
    """A payload as a JSON object, from text or already decoded; refusals say where it broke."""
    if isinstance(value, str):
        if len(value.encode()) > PAYLOAD_MAX_BYTES:
            raise QueueRefused(
                f"The {what} is {len(value.encode()):,} bytes; the most a message may carry is "
                f"{PAYLOAD_MAX_BYTES:,}.",
                "invalid",
            )
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise QueueRefused(
                f"The {what} is not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}. "
                f"Nothing was sent.",
                "invalid",
                details={"line": exc.lineno, "column": exc.colno},
            ) from None
    if not isinstance(value, dict):
        raise QueueRefused(
            f"The {what} must be a JSON object ({{...}}), not {type(value).__name__}.", "invalid"
        )
    text = json.dumps(value)
    if "\\u0000" in text or "\x00" in text:
        raise QueueRefused(f"The {what} contains a NUL character (\\u0000); remove it.", "invalid")
    if len(text.encode()) > PAYLOAD_MAX_BYTES:
        raise QueueRefused(
            f"The {what} is {len(text.encode()):,} bytes; the most a message may carry is "
            f"{PAYLOAD_MAX_BYTES:,}.",
            "invalid",
        )
    return value


def _whole(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise QueueRefused(
            f"{name} must be a whole number from {low} to {high:,}.", "invalid"
        ) from None
    if not low <= number <= high:
        raise QueueRefused(f"{name} must be from {low} to {high:,}; got {number:,}.", "invalid")
    return number


def parse_rate(value: Any) -> float | None:
    """A rate cap in messages per second, or None (as fast as possible) for empty/0/none."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "0")):
        return None
    try:
        rate = float(str(value).strip())
    except ValueError:
        rate = math.nan
    if math.isnan(rate) or not MIN_RATE <= rate <= settings.QUEUE_REDRIVE_MAX_RATE:
        raise QueueRefused(
            f"The rate must be from {MIN_RATE} to {settings.QUEUE_REDRIVE_MAX_RATE:,} messages "
            f"per second (or empty for no cap); got {str(value)[:40]!r}. Nothing was started.",
            "invalid",
        )
    return rate if rate != 0 else None


def _ids(values: Any) -> list[str]:
    if isinstance(values, str):
        values = [v for v in re.split(r"[\s,]+", values) if v]
    if not isinstance(values, list | tuple) or not values:
        raise QueueRefused("Select at least one message.", "invalid")
    if len(values) > SELECT_MAX:
        raise QueueRefused(
            f"{len(values):,} messages selected; at most {SELECT_MAX:,} at once. For more, act "
            f"on their error group or on all.",
            "invalid",
        )
    ids = [deadletters.check_id(str(v)) for v in values]
    return list(dict.fromkeys(ids))


# --- sending ------------------------------------------------------------------------------------


@audits_refusals("queues.send", target="name")
def send(actor: Actor, name: str, payload: Any, *, count: int = 1, customer: str = "") -> list[str]:
    """Put ``count`` messages carrying ``payload`` on an agent's stream, produced by the actor
    (``portal:<user>``); answers their ids."""
    actor.require(roles.OPERATE, "send messages to a queue")
    ref = catalog.resolve(name)
    _require_stream(ref, "send messages")
    count = _whole(count, "count", 1, SEND_MAX)
    body = json.dumps(parse_payload(payload))
    customer = (customer or "").strip()
    if len(customer) > 200 or "\x00" in customer:
        raise QueueRefused("The customer must be an id of at most 200 characters.", "invalid")
    fields: dict[Any, Any] = {
        contract.FIELD_PRODUCER: producer_of(actor),
        contract.FIELD_PAYLOAD: body,
        contract.FIELD_SENT_AT: str(int(time.time() * 1000)),
    }
    if customer:
        fields[contract.FIELD_CUSTOMER] = customer
    client = catalog.agent_redis()
    pipe = client.pipeline(transaction=False)
    for _ in range(count):
        pipe.xadd(ref.stream, fields)
    ids = pipe.execute()
    with transaction.atomic():
        record_audit(
            actor, "queues.send", target=ref.name, count=count, payload=body[:AUDIT_PAYLOAD_CHARS],
            customer=customer, first_id=ids[0], last_id=ids[-1],
        )  # fmt: skip
    return ids


def producer_of(actor: Actor) -> str:
    if actor.user is not None and actor.user.pk:
        return f"portal:{actor.user.get_username()}"
    return f"portal:{actor.label}"


# --- redrive and delete -------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    scope: str
    ids: list[str]
    fingerprint: str
    upto_id: str
    total: int


def snapshot(ref: QueueRef, scope: str, ids: Any = None, fingerprint: str = "") -> Snapshot:
    """What a job will touch, fixed now: the ids listed, or every letter (of a group) up to the
    newest id at this moment."""
    client = catalog.agent_redis()
    if scope == RedriveJob.Scope.SELECTED:
        chosen = _ids(ids)
        return Snapshot(scope, chosen, "", "", len(chosen))
    if scope not in (RedriveJob.Scope.GROUP, RedriveJob.Scope.ALL):
        raise QueueRefused(
            f"{str(scope)[:40]!r} is not a scope; use selected, group or all.", "invalid"
        )
    fingerprint = (fingerprint or "").strip() if scope == RedriveJob.Scope.GROUP else ""
    if scope == RedriveJob.Scope.GROUP and not FINGERPRINT.match(fingerprint):
        raise QueueRefused(
            f"{fingerprint[:60]!r} is not an error group; groups are the fingerprints the "
            f"dead-letter panel and `queues dlq --groups` list.",
            "invalid",
        )
    pipe = client.pipeline(transaction=True)
    pipe.xrevrange(ref.dead_letters, count=1)
    pipe.xlen(ref.dead_letters)
    pipe.hget(contract.dead_letter_groups(ref.slug), fingerprint or "-")
    newest, length, in_group = pipe.execute()
    total = int(in_group or 0) if fingerprint else length
    if not newest or not total:
        what = "that error group" if fingerprint else ref.dead_letters
        raise QueueRefused(f"There are no dead letters in {what}; nothing to do.", "empty")
    return Snapshot(scope, [], fingerprint, newest[0][0], total)


def _check_redrives(ref: QueueRef, ids: list[str], force: bool) -> None:
    if force:
        return
    client = catalog.agent_redis()
    limit = settings.QUEUE_MAX_REDRIVES
    for entry_id, fields in deadletters.iterate(client, ref, ids=ids):
        count = deadletters._int(fields.get(contract.FIELD_REDRIVES))
        if count >= limit:
            raise QueueRefused(
                f"Message {entry_id} has been sent back {count} times already (the limit is "
                f"{limit}, QUEUE_MAX_REDRIVES); it keeps failing. Fix the cause, or retry with "
                f"force to send it again. Nothing was sent.",
                "too_many_redrives",
            )


@audits_refusals("queues.{action}", target="name")
def start_job(
    actor: Actor,
    name: str,
    action: str,
    scope: str,
    *,
    ids: Any = None,
    fingerprint: str = "",
    rate: Any = None,
    force: bool = False,
    confirm: str = "",
    taken: Snapshot | None = None,
    enqueue: bool = True,
) -> RedriveJob:
    """Start a redrive (retry) or delete job over a snapshot taken now, or over ``taken``: the
    snapshot (``snapshot()``) the operator was shown and confirmed, so letters that arrived while
    they read the count are not touched. ``enqueue=False``: the caller runs the job itself
    (``redrive.run``; ``manage.py queues redrive --inline``)."""
    if action not in RedriveJob.Action.values:
        raise QueueRefused(
            f"{str(action)[:40]!r} is not an action; use redrive or delete.", "invalid"
        )
    verb = "retry dead letters" if action == RedriveJob.Action.REDRIVE else "delete dead letters"
    actor.require(roles.OPERATE, verb)
    ref = catalog.resolve(name)
    _require_stream(ref, verb)
    rate_limit = parse_rate(rate)
    all_deleted = action == RedriveJob.Action.DELETE and scope == RedriveJob.Scope.ALL
    if all_deleted and (confirm or "").strip() != ref.slug:
        raise QueueRefused(
            f"Deleting every dead letter of {ref.title} needs typed confirmation: type the "
            f"agent's slug, {ref.slug}. Nothing was deleted.",
            "confirmation_required",
        )
    shot = taken or snapshot(ref, scope, ids, fingerprint)
    if action == RedriveJob.Action.REDRIVE and shot.ids:
        _check_redrives(ref, shot.ids, force)
    with transaction.atomic():
        job = RedriveJob.objects.create(
            **ActorStamped.stamp(actor),
            queue_name=ref.name,
            action=action,
            scope=shot.scope,
            message_ids=shot.ids,
            fingerprint=shot.fingerprint,
            upto_id=shot.upto_id,
            rate_limit=rate_limit,
            force=bool(force),
            total=shot.total,
        )
        record_audit(
            actor, f"queues.{action}", target=ref.name, job=job.pk, scope=shot.scope,
            total=shot.total, fingerprint=shot.fingerprint, upto_id=shot.upto_id,
            ids=shot.ids[:50], rate=rate_limit, force=bool(force),
        )  # fmt: skip
        if enqueue:
            work.send_after_commit(
                redrive.RUN_TASK, job.pk, undo=lambda message: _undo(job.pk, message)
            )
    return job


def _undo(job_id: int, message: str) -> None:
    RedriveJob.objects.filter(pk=job_id).update(
        status=RedriveJob.Status.FAILED, message=message[:500], finished_at=timezone.now()
    )


@audits_refusals("queues.cancel_job", target="job_id")
def cancel_job(actor: Actor, job_id: int) -> RedriveJob:
    actor.require(roles.OPERATE, "cancel a redrive job")
    with transaction.atomic():
        job = RedriveJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            raise catalog.QueueNotFound(f"There is no redrive job {job_id}.")
        if job.finished:
            raise QueueRefused(
                f"Job {job_id} has already {job.status}; nothing to cancel.", "finished"
            )
        job.cancel_requested = True
        job.cancelled_by = actor.label
        job.save(update_fields=["cancel_requested", "cancelled_by"])
        record_audit(actor, "queues.cancel_job", target=job.queue_name, job=job.pk)
    return job


# --- edit, then retry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    letter: deadletters.DeadLetter
    original: str
    edited: str
    diff: list[str]

    @property
    def changed(self) -> bool:
        return self.original != self.edited


def preview_edit(actor: Actor, name: str, message_id: str, text: str) -> Edit:
    """What an edit would send: parses it (refusing with line and column) and diffs it."""
    actor.require(roles.OPERATE, "edit a dead letter")
    ref = catalog.resolve(name)
    _require_stream(ref, "edit dead letters")
    letter = deadletters.get(catalog.agent_redis(), ref, message_id)
    if letter is None:
        raise catalog.QueueNotFound(
            f"Dead letter {message_id} is not in {ref.dead_letters} any more (sent back or "
            f"deleted); reload the list."
        )
    edited = parse_payload(text, "edited payload")
    before = _pretty(letter.payload) if not letter.payload_error else letter.payload_text
    after = _pretty(edited)
    diff = list(
        difflib.unified_diff(
            before.splitlines(), after.splitlines(), "original", "edited", lineterm="", n=2
        )
    )
    return Edit(letter, before, after, diff)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


@audits_refusals("queues.edit_and_retry", target="name")
def edit_and_retry(
    actor: Actor, name: str, message_id: str, text: str, *, force: bool = False
) -> tuple[Edit, str]:
    """Send a dead letter back with an edited payload (atomically: back on the stream with the
    edit, gone from the dead letters). The original and the edit go in the audit trail."""
    edit = preview_edit(actor, name, message_id, text)
    ref = catalog.resolve(name)
    if not force and edit.letter.redrive_count >= settings.QUEUE_MAX_REDRIVES:
        _check_redrives(ref, [edit.letter.id], force)
    client = catalog.agent_redis()
    compact = json.dumps(json.loads(edit.edited))
    keys = [
        ref.dead_letters,
        ref.stream,
        contract.dead_letter_groups(ref.slug),
        f"observability:redrive:edit:{message_id}",
    ]
    done, held, skipped = redrive.move_ids(
        client, keys, [edit.letter.id], mode="redrive", max_redrives=settings.QUEUE_MAX_REDRIVES,
        force=True, payload=compact,
    )  # fmt: skip
    client.delete(keys[3])
    if skipped:
        raise catalog.QueueNotFound(
            f"Dead letter {message_id} went (sent back or deleted by someone else) before the "
            f"edit was sent; nothing was sent."
        )
    with transaction.atomic():
        record_audit(
            actor, "queues.edit_and_retry", target=ref.name, message_id=message_id,
            original=edit.original[:AUDIT_PAYLOAD_CHARS], edited=edit.edited[:AUDIT_PAYLOAD_CHARS],
        )  # fmt: skip
    live.dead_letters_changed(ref)
    return edit, edit.letter.id


# --- pending entries ----------------------------------------------------------------------------


@audits_refusals("queues.{mode}", target="name")
def claim(actor: Actor, name: str, consumer: str, *, mode: str = "claim", target: str = "") -> dict:
    """Hand the entries a (stuck) consumer holds to a healthy replica (``claim``), or put them
    back on the stream as new messages (``redeliver``)."""
    actor.require(roles.OPERATE, "claim pending entries")
    ref = catalog.resolve(name)
    _require_stream(ref, "claim pending entries")
    if mode not in ("claim", "redeliver"):
        raise QueueRefused(
            f"{str(mode)[:40]!r} is not a way to claim; use claim or redeliver.", "invalid"
        )
    client = catalog.agent_redis()
    states = pending.consumers(client, ref)
    holder = next((s for s in states if s.name == consumer), None)
    if holder is None:
        known = ", ".join(s.name for s in states) or "none"
        raise catalog.QueueNotFound(
            f"{ref.name} has no consumer {consumer[:80]!r}; its consumers: {known}."
        )
    if not holder.pending:
        raise QueueRefused(f"{consumer} holds no pending entries; nothing to claim.", "empty")
    if mode == "claim":
        target = target or pending.healthy_target(states, ref, exclude=consumer) or ""
        if not target:
            raise QueueRefused(
                f"No healthy replica of {ref.title} to hand the entries to (it is "
                f"{ref.agent_state.lower() or 'not running'}); start it, or redeliver instead.",
                "no_target",
            )
        if target == consumer:
            raise QueueRefused(
                "Choose another consumer than the one holding the entries.", "invalid"
            )
        ids = pending.claim(client, ref, consumer, target)
        gone = 0
    else:
        ids, gone = pending.redeliver(client, ref, consumer)
    with transaction.atomic():
        record_audit(
            actor, f"queues.{mode}", target=ref.name, consumer=consumer, to=target or None,
            count=len(ids), ids=ids[:50], gone=gone,
        )  # fmt: skip
    return {"mode": mode, "consumer": consumer, "target": target or None, "ids": ids, "gone": gone}


# --- purge, thresholds, groups ------------------------------------------------------------------


@audits_refusals("queues.purge", target="name")
def purge(actor: Actor, name: str, *, confirm: str = "") -> int:
    """Delete every message waiting on an agent's stream (Admin). Typed confirmation: the slug."""
    actor.require(roles.MANAGE, "purge a whole queue")
    ref = catalog.resolve(name)
    _require_stream(ref, "purge")
    if (confirm or "").strip() != ref.slug:
        raise QueueRefused(
            f"Purging {ref.stream} deletes every task waiting for {ref.title}: type the agent's "
            f"slug, {ref.slug}, to confirm. Nothing was deleted.",
            "confirmation_required",
        )
    client = catalog.agent_redis()
    script = client.register_script(
        "local n = redis.call('XLEN', KEYS[1]) redis.call('XTRIM', KEYS[1], 'MAXLEN', 0) "
        "redis.call('HINCRBY', KEYS[2], ARGV[1], n) return n"
    )
    removed = int(
        script(keys=[ref.stream, contract.counters(ref.slug)], args=[contract.COUNTER_PURGED])
    )
    with transaction.atomic():
        record_audit(actor, "queues.purge", target=ref.name, removed=removed)
    return removed


@audits_refusals("queues.thresholds", target="name")
def set_thresholds(actor: Actor, name: str, values: dict[str, Any]) -> QueueThreshold | None:
    """Give a queue its own thresholds (empty values take the defaults; all empty removes
    the override)."""
    actor.require(roles.OPERATE, "change a queue's thresholds")
    ref = catalog.resolve(name)
    unknown = sorted(set(values) - set(Thresholds.FIELDS))
    if unknown:
        raise QueueRefused(
            f"Unknown threshold {unknown[0]!r}; use {', '.join(Thresholds.FIELDS)}.", "invalid"
        )
    clean: dict[str, float | None] = {}
    for key, value in values.items():
        if value is None or str(value).strip() == "":
            clean[key] = None
            continue
        try:
            number = float(str(value).strip())
        except ValueError:
            number = math.nan
        if math.isnan(number) or not 0 <= number <= 10**9:
            raise QueueRefused(f"{key} must be a number from 0 to 1,000,000,000.", "invalid")
        clean[key] = int(number) if not key.startswith(("error_rate", "dlq_inflow")) else number
    current = QueueThreshold.objects.filter(queue_name=ref.name).first()
    defaults = Thresholds.defaults().as_dict()
    merged = {
        key: (clean[key] if key in clean else getattr(current, key, None)) for key in defaults
    }
    merged = {key: defaults[key] if value is None else value for key, value in merged.items()}
    for low, high in (
        ("backlog_degraded", "backlog_critical"),
        ("age_degraded_seconds", "age_critical_seconds"),
        ("error_rate_degraded", "error_rate_critical"),
        ("dlq_inflow_degraded", "dlq_inflow_critical"),
    ):
        lower, upper = merged[low], merged[high]
        if lower is not None and upper is not None and lower > upper:
            raise QueueRefused(
                f"{low} ({lower:g}) must not be above {high} ({upper:g}).", "invalid"
            )
    with transaction.atomic():
        if all(v is None for v in clean.values()) and set(clean) == set(Thresholds.FIELDS):
            QueueThreshold.objects.filter(queue_name=ref.name).delete()
            row = None
        else:
            row, _ = QueueThreshold.objects.get_or_create(queue_name=ref.name)
            for key, value in clean.items():
                setattr(row, key, value)
            row.updated_by = actor.label
            row.save()
        record_audit(actor, "queues.thresholds", target=ref.name, thresholds=clean)
    return row


@audits_refusals("queues.recount", target="name")
def recount_groups(actor: Actor, name: str) -> list[deadletters.Group]:
    actor.require(roles.OPERATE, "recount the dead-letter groups")
    ref = catalog.resolve(name)
    _require_stream(ref, "recount dead-letter groups")
    groups = deadletters.recount(catalog.agent_redis(), ref)
    with transaction.atomic():
        record_audit(actor, "queues.recount", target=ref.name, groups=len(groups))
    return groups


def read_letter(
    actor: Actor, ref: QueueRef, letter: deadletters.DeadLetter
) -> deadletters.DeadLetter:
    """The letter as this actor may see it (secret-looking payload fields masked for Viewers)."""
    return letter.masked(actor.has(roles.VIEW_SECRETS) or actor.has(roles.OPERATE))


def export_lines(actor: Actor, ref: QueueRef, shot: Snapshot | None) -> Iterator[str]:
    """The letters of a snapshot as JSON lines (as the API shows a letter, masked for Viewers),
    oldest first; nothing for no snapshot (an empty queue exports an empty file)."""
    if shot is None:
        return
    rows = deadletters.iterate(
        catalog.agent_redis(), ref, upto=shot.upto_id or "+", fingerprint=shot.fingerprint,
        ids=shot.ids or None,
    )  # fmt: skip
    for entry_id, fields in rows:
        letter = read_letter(actor, ref, deadletters.DeadLetter.parse(entry_id, fields))
        yield json.dumps(letter.as_json(), default=str) + "\n"


def redis_errors() -> tuple[type[Exception], ...]:
    return (redis.RedisError, OSError)
