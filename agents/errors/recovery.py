"""One-click recovery: ``request_recovery`` records an attempt (one at a time per error) and a worker runs it through the lifecycle services, then verifies the agent stays RUNNING and healthy before calling it fixed."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from agents import events, lifecycle
from agents.errors.record import RecoveryRefused
from agents.errors.rules import RECOVERIES, raised_memory
from agents.models import (
    Agent,
    AgentError,
    Health,
    RecoveryAttempt,
    RuntimeKind,
    State,
)
from agents.placement import probe, runtime_for, spec_for
from agents.runtimes import RuntimeFailure
from agents.services.actions import request_action, run_operation
from agents.services.graph import transitive_dependencies
from agents.services.refusals import ActionRefused
from agents.services.registry import pick_new_ports, rollback_config, set_memory_limit
from agents.services.supervision import check_drift, reconcile_agent, record_health
from portal import roles, work
from portal.actors import Actor
from portal.models import ActorStamped, AuditEntry
from portal.services import record_audit

logger = logging.getLogger(__name__)


# --- one-click recovery ------------------------------------------------------------------------------


def request_recovery(
    error: AgentError, action: str, actor: Actor, *, enqueue: bool = True
) -> RecoveryAttempt:
    """Record a person's choice of fix and hand it to a worker. Raises ``PermissionDenied`` or
    ``RecoveryRefused`` (nothing changes then)."""
    try:
        actor.require(roles.OPERATE, "recover agents")
        with transaction.atomic():
            error = AgentError.objects.select_for_update().select_related("agent").get(pk=error.pk)
            offered = [s["action"] for s in error.suggestions if s.get("action")]
            if action not in RECOVERIES:
                raise RecoveryRefused(
                    f"{action!r} is not a recovery; use one of {', '.join(RECOVERIES)}.",
                    "unknown",
                )
            if error.status == AgentError.Status.RECOVERING:
                raise RecoveryRefused(
                    f"A recovery of error #{error.pk} is already running; wait for its result.",
                    "busy",
                )
            if not error.is_open:
                raise RecoveryRefused(
                    f"Error #{error.pk} is {error.status}; there is nothing to recover.", "closed"
                )
            if action not in offered:
                raise RecoveryRefused(
                    f"{RECOVERIES[action]} is not a fix for this error; offered: "
                    + (", ".join(RECOVERIES[a] for a in offered) or "none (manual steps only)")
                    + ".",
                    "not_offered",
                )
            attempt = RecoveryAttempt.objects.create(
                error=error,
                action=action,
                **ActorStamped.stamp(actor),
            )
            error.status = AgentError.Status.RECOVERING
            error.retry_count += 1
            error.save(update_fields=["status", "retry_count"])
            record_audit(
                actor, "agent.recover", target=error.agent.slug, error=error.pk, recovery=action,
                attempt=attempt.pk, phase="requested",
            )  # fmt: skip
            events.emit("error", error.agent, error=error.pk)
            if enqueue:
                _send(attempt)
        return attempt
    except work.BrokerUnreachable as unreachable:
        refused = RecoveryRefused(unreachable.message, "unavailable")
        record_audit(
            actor, "agent.recover", target=error.agent.slug, outcome=AuditEntry.Outcome.REFUSED,
            error=error.pk, recovery=action, reason=refused.message,
        )  # fmt: skip
        raise refused from None
    except (RecoveryRefused, PermissionDenied) as refused:
        record_audit(
            actor, "agent.recover", target=error.agent.slug, outcome=AuditEntry.Outcome.REFUSED,
            error=error.pk, recovery=action, reason=getattr(refused, "message", str(refused)),
        )  # fmt: skip
        raise


def _send(attempt: RecoveryAttempt) -> None:
    """Hand the recovery to a worker when the request commits; if the task queue cannot take
    it, the attempt fails at once and the error is open again (the request answers 503)."""

    def undo(message: str) -> None:
        with transaction.atomic():
            current = RecoveryAttempt.objects.select_for_update().get(pk=attempt.pk)
            if current.outcome != RecoveryAttempt.Outcome.RUNNING:
                return
            error = (
                AgentError.objects.select_for_update()
                .select_related("agent")
                .get(pk=current.error_id)
            )
            current.outcome, current.detail = RecoveryAttempt.Outcome.FAILED, message
            current.finished_at = timezone.now()
            current.save(update_fields=["outcome", "detail", "finished_at"])
            if error.status == AgentError.Status.RECOVERING:
                error.status = AgentError.Status.OPEN
                error.save(update_fields=["status"])
            events.emit("error", error.agent, error=error.pk, recovery=current.outcome)

    RecoveryAttempt.objects.filter(pk=attempt.pk).update(sent_at=timezone.now())
    work.send_after_commit(RUN_TASK, attempt.pk, undo=undo)


# The advisory-lock kind of a recovery's runner (see portal.work.lease).
RECOVERY_LEASE = 7_304


# The Celery task that carries a recovery out (agents.tasks registers it under this name).
RUN_TASK = "agents.run_recovery"


def resume_stalled_recoveries(older_than: timedelta) -> list[int]:
    """The sweep for one-click recoveries: hand each running one with no runner to a worker
    again, once it has waited ``older_than`` since it was last sent. Returns the ids."""

    cutoff = timezone.now() - older_than
    handed_out = []
    running = RecoveryAttempt.objects.filter(outcome=RecoveryAttempt.Outcome.RUNNING)
    for attempt in running.order_by("started_at"):
        if (attempt.sent_at or attempt.started_at) > cutoff:
            continue
        if work.has_runner(RECOVERY_LEASE, attempt.pk):
            continue
        logger.warning(
            "recovery attempt %s has no runner; handing it to a worker again", attempt.pk
        )
        RecoveryAttempt.objects.filter(pk=attempt.pk).update(sent_at=timezone.now())
        work.send(RUN_TASK, attempt.pk)
        handed_out.append(attempt.pk)
    return handed_out


def run_recovery(attempt_id: int) -> RecoveryAttempt:
    """Carry out a recovery and verify it. Running it again once finished does nothing; a
    second runner waits for the first and then finds it finished."""
    with work.lease(RECOVERY_LEASE, attempt_id):
        return _run_recovery(attempt_id)


def _run_recovery(attempt_id: int) -> RecoveryAttempt:
    attempt = RecoveryAttempt.objects.select_related("error__agent").get(pk=attempt_id)
    if attempt.outcome != RecoveryAttempt.Outcome.RUNNING:
        return attempt
    actor = attempt.requested_by
    agent = attempt.error.agent

    try:
        _perform(attempt.action, agent, actor)
    except (ActionRefused, RuntimeFailure, RecoveryRefused, PermissionDenied) as failure:
        message = getattr(failure, "message", str(failure))
        return _finish(attempt, RecoveryAttempt.Outcome.FAILED, message)
    except Exception as exc:  # never leave an error "recovering" for good
        logger.exception("recovery attempt %s failed unexpectedly", attempt.pk)
        return _finish(attempt, RecoveryAttempt.Outcome.FAILED, f"Unexpected error: {exc}")
    fixed, detail = verify_reconciled(agent) if attempt.action == "reconcile" else verify(agent)
    if fixed:
        return _finish(attempt, RecoveryAttempt.Outcome.FIXED, detail)
    return _finish(attempt, RecoveryAttempt.Outcome.DID_NOT_HELP, detail)


def _finish(attempt: RecoveryAttempt, outcome: str, detail: str) -> RecoveryAttempt:
    actor = attempt.requested_by
    with transaction.atomic():
        attempt = RecoveryAttempt.objects.select_for_update().get(pk=attempt.pk)
        error = (
            AgentError.objects.select_for_update().select_related("agent").get(pk=attempt.error_id)
        )
        attempt.outcome, attempt.detail, attempt.finished_at = outcome, detail, timezone.now()
        attempt.save(update_fields=["outcome", "detail", "finished_at"])
        label = RECOVERIES.get(attempt.action, attempt.action)
        if outcome == RecoveryAttempt.Outcome.FIXED:
            error.status = AgentError.Status.RESOLVED
            error.resolved_at = attempt.finished_at
            error.resolved_by = attempt.actor
            error.resolution = f"{label}: {detail}"[:300]
        else:
            error.status = AgentError.Status.OPEN
            if attempt.action == "rollback_config":
                # The earlier config is in place now; offering it again would change nothing.
                error.suggestions = [
                    s for s in error.suggestions if s.get("action") != "rollback_config"
                ]
        error.save(
            update_fields=["status", "resolved_at", "resolved_by", "resolution", "suggestions"]
        )
        record_audit(
            actor, "agent.recover", target=error.agent.slug, error=error.pk,
            recovery=attempt.action, attempt=attempt.pk, phase="completed", result=outcome,
            detail=detail,
            outcome=AuditEntry.Outcome.SUCCESS if outcome == "fixed" else AuditEntry.Outcome.FAILED,
        )  # fmt: skip
        events.emit("error", error.agent, error=error.pk, recovery=outcome)
    return attempt


# --- what each recovery does ---------------------------------------------------------------------------


def _act(agent: Agent, action: str, actor: Actor, reason: str, **options) -> None:
    """Take one lifecycle action now, through the services; raise if it fails."""

    operation = request_action(
        agent, action, actor, reason=reason, enqueue=False, confirm=True, **options
    )
    operation = run_operation(str(operation.pk))
    if operation.status != "succeeded":
        raise ActionRefused(operation.error, code=operation.error_reason or "failed")


def _fresh(agent: Agent) -> Agent:
    """The agent as stored now. (Not refresh_from_db: django-fsm lifts the state field's
    protection class-wide while refreshing, which races with other threads.)"""
    return Agent.objects.get(pk=agent.pk)


def _run_again(agent: Agent, actor: Actor, reason: str) -> None:
    """Get the agent running from wherever it is."""
    agent = _fresh(agent)
    if agent.state in (State.RUNNING, State.ERRORED):
        _act(agent, "restart", actor, reason)
    elif agent.state in (State.DEPLOYED, State.STOPPED):
        _act(agent, "start", actor, reason)
    elif agent.state == State.SUSPENDED:
        _act(agent, "resume", actor, reason)
    else:
        raise RecoveryRefused(f"{agent.name} is {agent.state}; it cannot be started from there.")


def _bring_up_dependencies(agent: Agent, actor: Actor, reason: str) -> None:

    for dependency in transitive_dependencies(agent):
        for step in lifecycle.STEPS_TO_RUNNING.get(_fresh(dependency).state, []):
            _act(dependency, step, actor, reason)


def _perform(action: str, agent: Agent, actor: Actor) -> None:

    reason = f"recovery: {RECOVERIES[action].lower()}"
    agent = _fresh(agent)
    if action == "restart":
        _run_again(agent, actor, reason)
    elif action == "restart_with_dependencies":
        _bring_up_dependencies(agent, actor, reason)
        _run_again(agent, actor, reason)
    elif action == "start_dependencies":
        _bring_up_dependencies(agent, actor, reason)
        if _fresh(agent).state != State.RUNNING:
            _run_again(agent, actor, reason)
    elif action == "rollback_config":
        rollback_config(agent, actor)
        _run_again(agent, actor, reason)
    elif action == "pick_new_port":
        pick_new_ports(agent, actor)
        _run_again(agent, actor, reason)
    elif action == "raise_memory":
        set_memory_limit(
            agent, raised_memory(agent.memory_mb, settings.AGENT_MEMORY_CEILING_MB), actor
        )
        agent = _fresh(agent)
        if agent.runtime != RuntimeKind.LOCAL:
            # The limit is part of the container or pod: make it again.
            if agent.state in (State.RUNNING, State.SUSPENDED, State.ERRORED):
                _act(agent, "stop", actor, reason)
            if _fresh(agent).state == State.DEPLOYED:
                # Deployed, never started (an OOM while starting): recreate the container in
                # place; the lifecycle state does not change.
                runtime_for(agent).deploy(spec_for(_fresh(agent)))
            else:
                _act(_fresh(agent), "deploy", actor, reason)
        _run_again(agent, actor, reason)
    elif action == "reconcile":
        reconcile_agent(agent, actor)
        if _fresh(agent).state == State.ERRORED:
            _run_again(agent, actor, reason)
    else:  # pragma: no cover (request_recovery refuses unknown actions)
        raise RecoveryRefused(f"unknown recovery {action!r}")


def verify(agent: Agent, timeout: float | None = None) -> tuple[bool, str]:
    """Whether the agent is RUNNING and stays healthy for ``AGENT_RECOVERY_SETTLE_SECONDS``
    within ``timeout`` (a fix that lasts a second is no fix); with what was seen."""

    timeout = settings.AGENT_RECOVERY_VERIFY_SECONDS if timeout is None else timeout
    settle = min(settings.AGENT_RECOVERY_SETTLE_SECONDS, timeout)
    deadline = time.monotonic() + timeout
    healthy_since: float | None = None
    seen = ""
    while True:
        agent = _fresh(agent)
        now = time.monotonic()
        if agent.state == State.RUNNING and not agent.pending_action:
            answer = runtime_for(agent).probe(spec_for(agent), agent.runtime_details)
            health, detail = answer if answer is not None else probe(agent)
            if health == Health.HEALTHY:
                healthy_since = now if healthy_since is None else healthy_since
                if now - healthy_since >= settle:
                    record_health(agent, health, detail)
                    return True, f"verified: RUNNING and healthy for {settle:g} s"
                seen = "RUNNING and healthy, not yet for long"
            else:
                healthy_since = None
                seen = f"RUNNING but {health}" + (f" ({detail})" if detail else "")
        else:
            healthy_since = None
            seen = f"{agent.state}" + (f", {agent.pending_label}" if agent.pending_action else "")
        if now >= deadline:
            return False, f"not RUNNING and healthy within {timeout:g} s: {seen}"
        time.sleep(0.5)


def verify_reconciled(agent: Agent) -> tuple[bool, str]:
    """After a reconcile: the runtime matches the portal, and an agent meant to run is healthy."""

    check_drift(agent.runtime)
    agent = _fresh(agent)
    if agent.drift:
        return False, "the runtime still differs: " + "; ".join(i["message"] for i in agent.drift)
    if agent.state == State.RUNNING:
        return verify(agent)
    return True, f"verified: the runtime matches the portal ({agent.state})"
