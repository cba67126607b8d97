"""Creating, retrying, rolling back and cancelling bulk operations: checked, recorded with their items in one transaction, and handed to a worker when the request commits."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from agents import events
from agents.bulk.plan import (
    BulkPlan,
    BulkRefused,
    is_upward,
    plan_bulk,
    plan_rollback,
    resolve_targets,
)
from agents.bulk.runner import (
    RUN_TASK,
    RUNNER_LOCK,
    cancel_message,
    finish,
    skip_pending,
)
from agents.models import (
    Agent,
    BulkItem,
    BulkOperation,
)
from agents.services.refusals import UNAVAILABLE
from portal import roles, work
from portal.actors import Actor
from portal.models import ActorStamped, AuditEntry
from portal.services import record_audit

logger = logging.getLogger(__name__)


# --- creating ---------------------------------------------------------------------------------------


def _refusal_audited(actor: Actor, action: str, target: str, refused: Exception) -> None:
    record_audit(
        actor, f"bulk.{action}", target=target, outcome=AuditEntry.Outcome.REFUSED,
        phase="requested", error=getattr(refused, "message", str(refused)),
    )  # fmt: skip


def create_bulk_operation(
    action: str,
    actor: Actor,
    *,
    targets: Iterable[str] | None = None,
    filter: dict | None = None,
    parallelism: object = None,
    confirm: str = "",
    reason: str = "",
    enqueue: bool = True,
) -> BulkOperation:
    """Record a bulk operation from a selection and hand it to a worker.

    The plan is made again under row locks, so what runs is what is true now. Raises
    ``PermissionDenied`` or ``BulkRefused`` (nothing to do, a confirmation missing or wrong,
    bad input); nothing changes then.
    """
    targets = list(targets or [])
    try:
        actor.require(roles.OPERATE, "run bulk operations")
        agents = resolve_targets(targets, filter)
        with _sent_or_refused(), transaction.atomic():
            _lock(agents)
            plan = plan_bulk(action, _fresh(agents), parallelism=parallelism)
            return _create(
                plan, actor, kind=BulkOperation.Kind.RUN, targets=[a.slug for a in agents],
                filter=filter or {}, confirm=confirm, reason=reason, enqueue=enqueue,
            )  # fmt: skip
    except (BulkRefused, PermissionDenied) as refused:
        _refusal_audited(actor, action, "bulk", refused)
        raise


def retry_failed(
    bulk: BulkOperation, actor: Actor, *, parallelism: object = None, enqueue: bool = True
) -> BulkOperation:
    """A new bulk operation with the same action for the items that failed."""
    try:
        actor.require(roles.OPERATE, "run bulk operations")
        if not bulk.is_finished:
            raise BulkRefused(
                f"Bulk operation #{bulk.pk} is still {bulk.status}; retry once it has finished.",
                code="busy",
            )
        if bulk.kind == BulkOperation.Kind.ROLLBACK:
            raise BulkRefused(
                "A roll-back cannot be retried; roll back again instead.", code="invalid"
            )
        failed = list(
            Agent.objects.filter(
                bulk_items__bulk=bulk, bulk_items__status=BulkItem.Status.FAILED
            ).order_by("name")
        )
        if not failed:
            raise BulkRefused(
                f"Bulk operation #{bulk.pk} has no failed agent to retry.", code="empty"
            )
        with _sent_or_refused(), transaction.atomic():
            _lock(failed)
            plan = plan_bulk(
                bulk.action, _fresh(failed),
                parallelism=bulk.parallelism if parallelism is None else parallelism,
            )  # fmt: skip
            return _create(
                plan, actor, kind=BulkOperation.Kind.RETRY, follows=bulk,
                targets=[a.slug for a in failed], confirm=plan.confirmation_phrase,
                enqueue=enqueue,
            )  # fmt: skip
    except (BulkRefused, PermissionDenied) as refused:
        _refusal_audited(actor, bulk.action, f"bulk:{bulk.pk}", refused)
        raise


def roll_back(
    bulk: BulkOperation, actor: Actor, *, parallelism: object = None, enqueue: bool = True
) -> BulkOperation:
    """A new bulk operation returning the agents ``bulk`` changed to their earlier states."""
    try:
        actor.require(roles.OPERATE, "run bulk operations")
        agents = [item.agent for item in bulk.items.select_related("agent")]
        with _sent_or_refused(), transaction.atomic():
            _lock(agents)
            plan = plan_rollback(bulk, parallelism=parallelism)
            return _create(
                plan, actor, kind=BulkOperation.Kind.ROLLBACK, follows=bulk,
                targets=[item.agent.slug for item in plan.items], enqueue=enqueue,
                options={"upward": not is_upward(bulk.action)},
            )  # fmt: skip
    except (BulkRefused, PermissionDenied) as refused:
        _refusal_audited(actor, "rollback", f"bulk:{bulk.pk}", refused)
        raise


def _lock(agents: list[Agent]) -> None:
    """Row locks on the agents, in id order (no deadlock between two bulk requests)."""
    list(Agent.objects.select_for_update().filter(pk__in=[a.pk for a in agents]).order_by("pk"))


def _fresh(agents: list[Agent]) -> list[Agent]:
    by_id = Agent.objects.in_bulk([a.pk for a in agents])
    return [by_id[a.pk] for a in agents if a.pk in by_id]


def _create(
    plan: BulkPlan,
    actor: Actor,
    *,
    kind: str,
    targets: list[str],
    filter: dict | None = None,
    follows: BulkOperation | None = None,
    confirm: str = "",
    reason: str = "",
    options: dict | None = None,
    enqueue: bool = True,
) -> BulkOperation:
    if not plan.changing:
        reasons = "; ".join(item.message for item in plan.skipped[:5])
        raise BulkRefused(
            f"Nothing to do: every chosen agent would be skipped ({reasons}).",
            code="empty",
            details={"plan": plan.as_dict()},
        )
    if plan.confirmation_phrase and confirm.strip().lower() != plan.confirmation_phrase:
        raise BulkRefused(
            f"This {plan.label.lower()} changes {len(plan.changing)} agents; type "
            f"“{plan.confirmation_phrase}” to confirm it.",
            code="confirm",
            details={"confirmation_phrase": plan.confirmation_phrase},
        )
    now = timezone.now()
    bulk = BulkOperation.objects.create(
        action=plan.action,
        kind=kind,
        follows=follows,
        **ActorStamped.stamp(actor),
        targets=targets,
        filter=filter or {},
        parallelism=plan.parallelism,
        options={**(options or {}), "reason": reason.strip()[:500]},
        total=len(plan.items),
        skipped=len(plan.skipped),
    )
    try:
        with transaction.atomic():
            BulkItem.objects.bulk_create(
                BulkItem(
                    bulk=bulk,
                    agent=item.agent,
                    position=position,
                    status=BulkItem.Status.PENDING if item.will_change else BulkItem.Status.SKIPPED,
                    steps=item.steps,
                    from_state=item.agent.state,
                    to_state=item.to_state,
                    code=item.code,
                    message=item.message,
                    finished_at=None if item.will_change else now,
                )
                for position, item in enumerate(plan.items)
            )
    except IntegrityError:
        raise BulkRefused(
            "Another bulk operation took some of these agents a moment ago; preview again.",
            code="busy",
        ) from None
    record_audit(
        actor, f"bulk.{plan.action}", target=f"bulk:{bulk.pk}", phase="requested", kind=kind,
        agents=[item.agent.slug for item in plan.changing],
        skipped={item.agent.slug: item.code for item in plan.skipped},
        parallelism=plan.parallelism, follows=follows.pk if follows else None,
    )  # fmt: skip
    events.emit_bulk("created", bulk.pk)
    if enqueue:
        _send(bulk)
    return bulk


def _send(bulk: BulkOperation) -> None:
    """Hand the job to a worker when the request commits; if the task queue cannot take it,
    the job ends cancelled with every item skipped, so no agent stays reserved by it."""

    def undo(message: str) -> None:
        now = timezone.now()
        with transaction.atomic():
            if not BulkOperation.objects.filter(
                pk=bulk.pk, status=BulkOperation.Status.PENDING
            ).update(
                status=BulkOperation.Status.CANCELLED, finished_at=now,
                cancelled_by="the portal (task queue unreachable)", cancel_requested_at=now,
            ):  # fmt: skip
                return
            items = BulkItem.objects.filter(bulk=bulk, status__in=BulkItem.ACTIVE)
            skipped = items.update(
                status=BulkItem.Status.SKIPPED, code=UNAVAILABLE, message=message, finished_at=now
            )
            BulkOperation.objects.filter(pk=bulk.pk).update(skipped=F("skipped") + skipped)
            events.emit_bulk("finished", bulk.pk)

    work.send_after_commit(RUN_TASK, bulk.pk, undo=undo)


@contextmanager
def _sent_or_refused() -> Iterator[None]:
    """Turn "the task queue did not take the job" (raised as the transaction commits) into the
    refusal every door answers 503 to; ``_send`` has already cancelled the job."""
    try:
        yield
    except work.BrokerUnreachable as unreachable:
        raise BulkRefused(unreachable.message, code=UNAVAILABLE) from None


def cancel_bulk_operation(bulk: BulkOperation, actor: Actor) -> BulkOperation:
    """Stop starting new items; those in flight finish, the pending ones are skipped."""
    try:
        actor.require(roles.OPERATE, "cancel bulk operations")
        with transaction.atomic():
            bulk = BulkOperation.objects.select_for_update().get(pk=bulk.pk)
            if bulk.is_finished:
                raise BulkRefused(
                    f"Bulk operation #{bulk.pk} has already finished ({bulk.status}).",
                    code="finished",
                )
            if bulk.cancel_requested_at is None:
                bulk.cancel_requested_at = timezone.now()
                bulk.cancelled_by = actor.label
                bulk.save(update_fields=["cancel_requested_at", "cancelled_by"])
                record_audit(actor, f"bulk.{bulk.action}", target=f"bulk:{bulk.pk}", phase="cancel")
                events.emit_bulk("progress", bulk.pk)
    except (BulkRefused, PermissionDenied) as refused:
        _refusal_audited(actor, bulk.action, f"bulk:{bulk.pk}", refused)
        raise
    # Nobody running it (still queued, or its worker is gone): skip what has not begun here.
    # An item its dead worker left half-way needs a runner to finish its step: hand it back.
    with work.try_lease(RUNNER_LOCK, bulk.pk) as held:
        if held:
            skip_pending(bulk.pk, "cancelled", cancel_message(bulk))
            if bulk.items.filter(status=BulkItem.Status.RUNNING).exists():
                work.send(RUN_TASK, bulk.pk)
            else:
                finish(bulk.pk)
    bulk.refresh_from_db()
    return bulk
