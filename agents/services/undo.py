"""Undo: withdraw an action no worker has begun, or ask for its inverse, within the toast's window."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from agents import events, lifecycle
from agents.models import (
    ACTION_LABELS,
    Agent,
    Operation,
)
from agents.services.actions import request_action
from agents.services.refusals import ActionRefused
from portal import roles
from portal.actors import Actor
from portal.models import AuditEntry
from portal.services import record_audit

logger = logging.getLogger(__name__)


# --- undo ---------------------------------------------------------------------------------------

# Undo is still taken this long after the window the toast shows (a click in its last second).
UNDO_SLACK_SECONDS = 5


# How long an undo waits for the action it undoes to finish before doing the inverse.
UNDO_WAIT_SECONDS = 30


def can_undo(operation: Operation) -> bool:
    """Whether the result of ``operation`` should offer Undo (it has an inverse; Undo is on)."""
    return bool(lifecycle.action(operation.action).inverse) and settings.ACTION_UNDO_SECONDS > 0


@dataclass
class Undone:
    """What an undo did: ``operation`` is the inverse action it asked for (None when the action
    was withdrawn before it ran), ``message`` says so in a sentence."""

    message: str
    operation: Operation | None = None


def undo_operation(operation: Operation, actor: Actor) -> Undone:
    """Undo a recent action through the services: withdraw it if no worker has begun it, else
    wait for it to finish and ask for its inverse (start after stop, resume after suspend …),
    permission-checked and audited like any action.

    Raises ``PermissionDenied``, or ``ActionRefused`` when it has no inverse, the window of
    ``ACTION_UNDO_SECONDS`` has passed, the action failed (nothing to undo) or the inverse is
    refused (someone changed the agent meanwhile); nothing changes then.
    """
    action, agent = operation.action, operation.agent
    try:
        actor.require(roles.OPERATE, "undo actions")
        if not can_undo(operation):
            raise ActionRefused(
                f"{ACTION_LABELS.get(action, (action,))[0]} cannot be undone from here; "
                "take the action you want instead.",
                code="no_undo",
            )
        window = settings.ACTION_UNDO_SECONDS
        if timezone.now() - operation.requested_at > timedelta(seconds=window + UNDO_SLACK_SECONDS):
            raise ActionRefused(
                f"Undo is offered for {window} s after an action and this {action} of "
                f"{agent.name} is older; {lifecycle.action(action).inverse} {agent.name} instead.",
                code="too_late",
            )
        if _withdraw(operation, actor):
            return Undone(
                f"{ACTION_LABELS[action][0]} of {agent.name} withdrawn before it ran; "
                f"{agent.name} is still {agent.state}."
            )
    except (ActionRefused, PermissionDenied) as refused:
        record_audit(
            actor, f"agent.{action}", target=agent.slug, outcome=AuditEntry.Outcome.REFUSED,
            operation=str(operation.pk), phase="undo", error=getattr(refused, "message", str(refused)),
        )  # fmt: skip
        raise
    finished = _wait_until_finished(operation)
    if finished.status != Operation.Status.SUCCEEDED:
        if finished.error_reason == "undone":
            outcome = "was already withdrawn by an earlier Undo; nothing more to do."
        elif finished.is_finished:
            outcome = "failed, so there is nothing to undo."
        else:
            outcome = (
                f"is still running; try Undo again in a moment, or {lifecycle.action(action).inverse} "
                f"{agent.name} once it has finished."
            )
        message = f"The {action} of {agent.name} {outcome}"
        record_audit(
            actor, f"agent.{action}", target=agent.slug, outcome=AuditEntry.Outcome.REFUSED,
            operation=str(operation.pk), phase="undo", error=message,
        )  # fmt: skip
        raise ActionRefused(message, code="nothing_to_undo" if finished.is_finished else "busy")
    inverse = request_action(
        Agent.objects.get(pk=agent.pk), lifecycle.action(action).inverse, actor,
        reason=f"undo of the {action} requested by {operation.actor}",
    )  # fmt: skip
    return Undone(
        f"Undo: {ACTION_LABELS[inverse.action][1]} {agent.name} again…", operation=inverse
    )


def _withdraw(operation: Operation, actor: Actor) -> bool:
    """Take back an operation no worker has begun; False if one has (or it is finished)."""
    with transaction.atomic():
        current = Operation.objects.select_for_update().get(pk=operation.pk)
        if current.status != Operation.Status.PENDING:
            return False
        agent = Agent.objects.select_for_update().get(pk=current.agent_id)
        if agent.pending_action == current.action:
            agent.pending_action, agent.pending_since = "", None
            agent.save(update_fields=["pending_action", "pending_since", "updated_at"])
        current.status, current.error_reason = Operation.Status.FAILED, "undone"
        current.error = f"Withdrawn by {actor.label} (Undo) before a worker began it."
        current.finished_at = timezone.now()
        current.save(update_fields=["status", "error", "error_reason", "finished_at"])
        record_audit(
            actor, f"agent.{current.action}", target=agent.slug, operation=str(current.pk),
            phase="undone",
        )  # fmt: skip
        events.emit("operation", agent, operation=str(current.pk), action=current.action)
    return True


def _wait_until_finished(operation: Operation) -> Operation:
    deadline = time.monotonic() + UNDO_WAIT_SECONDS
    while True:
        current = Operation.objects.get(pk=operation.pk)
        if current.is_finished or time.monotonic() > deadline:
            return current
        time.sleep(0.2)
