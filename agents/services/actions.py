"""Lifecycle actions in two steps: ``request_action`` checks and records an ``Operation`` (one wins under a row lock), ``run_operation`` (a worker) drives the runtime and applies the transition. Running it again for a finished operation does nothing."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django_fsm import ConcurrentTransition, TransitionNotAllowed

from agents import events, lifecycle
from agents.errors.record import (
    record_error,
)
from agents.models import (
    ACTION_LABELS,
    ACTIONS,
    Agent,
    AgentTransition,
    BulkOperation,
    Health,
    Operation,
    State,
)
from agents.placement import runtime_effect
from agents.runtimes import RuntimeFailure
from agents.services.graph import DependencyGraph, names_of, transitive_dependencies
from agents.services.refusals import UNAVAILABLE, ActionRefused, Conflict, NeedsConfirmation
from portal import extensions, roles, work
from portal.actors import Actor
from portal.models import ActorStamped, AuditEntry
from portal.services import record_audit

logger = logging.getLogger(__name__)


@dataclass
class ActionCheck:
    """What would happen if ``actor`` took ``action`` on ``agent`` now: for previews and menus."""

    action: str
    allowed: bool
    message: str = ""
    code: str = ""
    missing_dependencies: list[Agent] = field(default_factory=list)
    affected_dependents: list[Agent] = field(default_factory=list)

    @property
    def label(self) -> str:
        return ACTION_LABELS[self.action][0]

    @property
    def needs_typed_confirmation(self) -> bool:
        return self.action == "revoke"


def illegal_action_message(agent: Agent, action: str) -> str:
    """Why the state machine refuses ``action`` in the agent's state, and what to do instead."""
    name, state = agent.name, agent.state
    if state == State.REVOKED:
        return f"{name} is REVOKED; a revoked agent cannot be changed. Create a new agent instead."
    hints = {
        ("suspend", State.STOPPED): "start it before suspending",
        ("suspend", State.DEPLOYED): "start it before suspending",
        ("suspend", State.SUSPENDED): "it is already suspended; resume it to run again",
        ("resume", State.RUNNING): "it is already running",
        ("start", State.RUNNING): "it is already running",
        ("start", State.SUSPENDED): "resume it instead",
        ("start", State.ERRORED): "restart it instead",
        ("start", State.DRAFT): "provision and deploy it first (or start it with its dependencies)",
        ("start", State.PROVISIONED): "deploy it first",
        ("stop", State.STOPPED): "it is already stopped",
        ("stop", State.DEPLOYED): "it was never started",
        ("deploy", State.RUNNING): "stop it before deploying a new version",
        ("deploy", State.DRAFT): "provision it first",
        ("deploy", State.DEPLOYED): "it is already deployed; start it",
        ("provision", State.PROVISIONED): "it is already provisioned; deploy it next",
        ("restart", State.STOPPED): "start it instead",
        ("restart", State.SUSPENDED): "resume it instead",
    }
    hint = hints.get((action, state))
    if hint is None:
        legal = agent.legal_actions()
        hint = f"from {state} you can {', '.join(legal)}" if legal else "no action is possible now"
    return f"{name} is {state}; {hint}."


def check_action(
    agent: Agent,
    action: str,
    actor: Actor,
    *,
    with_dependencies: bool = False,
    graph: DependencyGraph | None = None,
) -> ActionCheck:
    """Decide whether the action may go ahead, without changing anything."""
    if action not in ACTIONS:
        return ActionCheck(
            action,
            False,
            f"{action!r} is not an action; use one of {', '.join(ACTIONS)}.",
            "unknown",
        )
    check = ActionCheck(action, True)
    if not may_operate(actor, agent):
        check.allowed, check.code = False, "forbidden"
        check.message = f"You cannot {action} agents: it needs the Operator role and you are {actor.role or 'without a role'}."
        return check
    if action not in agent.legal_actions():
        check.allowed, check.code = False, "illegal"
        check.message = illegal_action_message(agent, action)
        return check
    if agent.pending_action:
        check.allowed, check.code = False, "busy"
        check.message = f"{agent.name} is already {agent.pending_label}; wait until that finishes."
        return check
    if action == "deploy":
        pinned = pinned_version(agent, graph)
        if pinned:
            check.allowed, check.code, check.message = False, "pinned", pinned
            return check
    if lifecycle.action(action).needs_running_dependencies:
        check.missing_dependencies = [
            dep for dep in transitive_dependencies(agent, graph) if dep.state != State.RUNNING
        ]
        direct_missing = [dep for dep in agent.dependencies.all() if dep.state != State.RUNNING]
        if direct_missing and not (with_dependencies and action == "start"):
            check.allowed, check.code = False, "dependencies"
            check.message = (
                f"{agent.name} depends on {names_of(direct_missing)}, which "
                f"{'is' if len(direct_missing) == 1 else 'are'} not running. Start "
                f"{'it' if len(direct_missing) == 1 else 'them'} first, or start {agent.name} with its dependencies."
            )
            return check
        revoked = [dep for dep in check.missing_dependencies if dep.state == State.REVOKED]
        if revoked:
            check.allowed, check.code = False, "dependencies"
            check.message = f"{agent.name} depends on {names_of(revoked)}, which cannot run again."
            return check
    if lifecycle.action(action).disrupts_dependents:
        check.affected_dependents = [
            dependent
            for dependent in agent.dependents.all()
            if dependent.state in (State.RUNNING, State.SUSPENDED)
        ]
    return check


def may_operate(actor: Actor, agent: Agent) -> bool:
    """Whether ``actor`` may take lifecycle actions on ``agent``: the Operator role, or the
    Operator role scoped to this agent (the help desk's temporary access, asked through the
    ``scoped_role`` lookup: agents does not import the help desk)."""
    if actor.has(roles.OPERATE):
        return True
    if actor.user is None or actor.assumed_role:
        return False
    scoped = extensions.lookup("scoped_role", user=actor.user, agent=agent)
    return scoped in roles.ROLES and roles.role_allows(scoped, roles.OPERATE)


def pinned_version(agent: Agent, graph: DependencyGraph | None = None) -> str:
    """Why ``agent``'s version may not be deployed (a release the servicing app pinned), or "".
    Asked through a lookup: agents does not import servicing. With a page's ``graph``, the pins
    are loaded once for all its agents (``version_pinned_checker``), not once per agent."""
    if graph is None:
        return extensions.lookup("version_pinned", default="", agent=agent)
    if "version_pinned" not in graph.memo:
        graph.memo["version_pinned"] = extensions.lookup("version_pinned_checker", default=None)
    checker = graph.memo["version_pinned"]
    return checker(agent) if callable(checker) else ""


def available_actions(
    agent: Agent, actor: Actor, graph: DependencyGraph | None = None
) -> list[ActionCheck]:
    """The actions to offer in a menu: legal now and permitted (refusals by dependency included).
    Pass one ``graph`` for a whole page of cards."""
    if not actor.has(roles.OPERATE):
        return []
    actions = agent.legal_actions()
    if graph is None and any(lifecycle.action(a).needs_running_dependencies for a in actions):
        graph = DependencyGraph.load()
    return [check_action(agent, action, actor, graph=graph) for action in actions]


# --- requesting actions -------------------------------------------------------------------


def request_action(
    agent: Agent,
    action: str,
    actor: Actor,
    *,
    reason: str = "",
    with_dependencies: bool = False,
    confirm: bool = False,
    enqueue: bool = True,
) -> Operation:
    """Record the intent to take ``action`` and hand it to a worker; returns the operation.

    Raises ``PermissionDenied`` for a role that may not, ``ActionRefused`` (or its subclasses
    ``Conflict`` and ``NeedsConfirmation``) with the reason otherwise. Nothing changes then.
    """
    try:
        return _request_action(
            agent, action, actor, reason=reason.strip()[:500], with_dependencies=with_dependencies,
            confirm=confirm, enqueue=enqueue,
        )  # fmt: skip
    except (ActionRefused, PermissionDenied) as refused:
        record_audit(
            actor, f"agent.{action}", target=agent.slug, outcome=AuditEntry.Outcome.REFUSED,
            phase="requested", error=getattr(refused, "message", str(refused)),
        )  # fmt: skip
        raise


def _request_action(
    agent: Agent,
    action: str,
    actor: Actor,
    *,
    reason: str,
    with_dependencies: bool,
    confirm: bool,
    enqueue: bool,
) -> Operation:
    if action not in ACTIONS:
        raise ActionRefused(
            f"{action!r} is not an action; use one of {', '.join(ACTIONS)}.", code="unknown"
        )
    if not may_operate(actor, agent):
        actor.require(roles.OPERATE, f"{action} agents")
    try:
        operation = _record_request(
            agent, action, actor, reason, with_dependencies, confirm, enqueue
        )
    except work.BrokerUnreachable as unreachable:
        # Raised as the transaction commits, once the operation's undo has run (see _send).
        raise ActionRefused(unreachable.message, code=UNAVAILABLE) from None
    agent.pending_action = action
    return operation


def _record_request(
    agent: Agent, action: str, actor: Actor, reason: str, with_dependencies: bool, confirm: bool,
    enqueue: bool,
) -> Operation:  # fmt: skip
    with transaction.atomic():
        try:
            locked = Agent.objects.select_for_update(nowait=False).get(pk=agent.pk)
        except Agent.DoesNotExist:
            raise ActionRefused(f"{agent.name} no longer exists.", code="gone") from None
        check = check_action(locked, action, actor, with_dependencies=with_dependencies)
        if not check.allowed:
            exc = Conflict if check.code == "busy" else ActionRefused
            raise exc(check.message, code=check.code)
        if check.affected_dependents and not confirm:
            raise NeedsConfirmation(
                f"{names_of(check.affected_dependents, with_state=False)} "
                f"{'depends' if len(check.affected_dependents) == 1 else 'depend'} on {locked.name} and "
                f"{'is' if len(check.affected_dependents) == 1 else 'are'} running; "
                f"to {action} it anyway, confirm.",
                code="confirm",
                details={"dependents": [a.slug for a in check.affected_dependents]},
            )
        operation = Operation.objects.create(
            agent=locked,
            action=action,
            **ActorStamped.stamp(actor),
            reason=reason,
            options={"with_dependencies": with_dependencies, "confirm": confirm},
            from_state=locked.state,
        )
        locked.pending_action = action
        locked.pending_since = timezone.now()
        locked.save(update_fields=["pending_action", "pending_since", "updated_at"])
        record_audit(
            actor,
            f"agent.{action}",
            target=locked.slug,
            operation=str(operation.pk),
            phase="requested",
            reason=reason,
        )
        events.emit("pending", locked, operation=str(operation.pk), action=action)
        if enqueue:
            _send(operation)
    return operation


def _send(operation: Operation) -> None:
    """Hand the operation to a worker when the request commits; if the task queue cannot take
    it, the operation fails at once and the agent is free again (the request answers 503)."""

    def undo(message: str) -> None:
        with transaction.atomic():
            current = Operation.objects.select_for_update().get(pk=operation.pk)
            if current.status != Operation.Status.PENDING:
                return
            agent = Agent.objects.select_for_update().get(pk=current.agent_id)
            if agent.pending_action == current.action:
                agent.pending_action, agent.pending_since = "", None
                agent.save(update_fields=["pending_action", "pending_since", "updated_at"])
            current.status, current.error, current.error_reason = (
                Operation.Status.FAILED, message, UNAVAILABLE
            )  # fmt: skip
            current.finished_at = timezone.now()
            current.save(update_fields=["status", "error", "error_reason", "finished_at"])
            events.emit(
                "operation", agent, operation=str(current.pk), action=current.action, error=message
            )

    Operation.objects.filter(pk=operation.pk).update(sent_at=timezone.now())
    work.send_after_commit(RUN_TASK, str(operation.pk), undo=undo)


# --- carrying them out ------------------------------------------------------------------------


# The advisory-lock kind of an operation's runner (see portal.work.lease).
OPERATION_LEASE = 7_303


# The Celery task that carries an operation out (agents.tasks registers it under this name).
RUN_TASK = "agents.run_operation"


# A worker that died this many times carrying an operation out is not given it again.
MAX_ATTEMPTS = 3


def run_operation(operation_id: str) -> Operation:
    """Carry out a requested action. Idempotent: a finished operation is returned untouched;
    a second runner waits for the first and then finds it finished."""
    with work.lease(OPERATION_LEASE, operation_id):
        return _run_operation(operation_id)


def _run_operation(operation_id: str) -> Operation:
    with transaction.atomic():
        operation = (
            Operation.objects.select_for_update().select_related("agent").get(pk=operation_id)
        )
        if operation.is_finished:
            return operation
        gave_up = operation.attempts >= MAX_ATTEMPTS
        if not gave_up:
            operation.status = Operation.Status.RUNNING
            operation.attempts += 1
            operation.started_at = operation.started_at or timezone.now()
            operation.save(update_fields=["status", "attempts", "started_at"])
    if gave_up:
        return _finish_failed(
            operation,
            f"The worker carrying this out stopped {operation.attempts} times before it finished "
            f"(killed, or its database connection lost); it was not tried again. Check "
            f"{operation.agent.name}'s state and the worker's log, then ask again.",
            "worker_lost",
            {"attempts": operation.attempts},
        )

    try:
        result = {}
        if operation.action == "start" and operation.options.get("with_dependencies"):
            result["dependencies"] = _bring_up_dependencies(operation)
        agent = Agent.objects.get(pk=operation.agent_id)
        result.update(runtime_effect(agent, operation.action))
    except RuntimeFailure as failure:
        return _finish_failed(operation, failure.message, failure.reason, failure.details)
    except ActionRefused as refused:
        return _finish_failed(operation, refused.message, refused.code, refused.details)
    except Exception as exc:
        logger.exception("operation %s failed unexpectedly", operation.pk)
        return _finish_failed(operation, f"Unexpected error: {exc}", "unknown", {})
    return _finish_succeeded(operation, result)


def resume_stalled_operations(older_than: timedelta) -> list[str]:
    """The sweep for single operations: hand each unfinished one with no runner to a worker.

    Pending ones wait ``older_than`` since they were last sent (their task may simply be queued
    behind others); a running one with no runner lost it (the worker was killed, or the task
    died on a database error), so it goes at once. An operation of an unfinished bulk job is
    that job's to resume. Returns the ids handed out.
    """
    cutoff = timezone.now() - older_than
    unfinished = Operation.objects.filter(
        status__in=[Operation.Status.PENDING, Operation.Status.RUNNING]
    ).exclude(
        bulk_items__bulk__status__in=[BulkOperation.Status.PENDING, BulkOperation.Status.RUNNING]
    )
    handed_out = []
    for operation in unfinished.order_by("requested_at"):
        last_sent = operation.sent_at or operation.requested_at
        if operation.status == Operation.Status.PENDING and last_sent > cutoff:
            continue
        if work.has_runner(OPERATION_LEASE, str(operation.pk)):
            continue
        logger.warning(
            "%s of %s (operation %s) has no runner; handing it to a worker again",
            operation.action, operation.agent_id, operation.pk,
        )  # fmt: skip
        Operation.objects.filter(pk=operation.pk).update(sent_at=timezone.now())
        work.send(RUN_TASK, str(operation.pk))
        handed_out.append(str(operation.pk))
    return handed_out


def _bring_up_dependencies(operation: Operation) -> list[str]:
    """Take every dependency of the operation's agent to RUNNING, dependencies first."""
    actor = operation.requested_by
    brought_up = []
    for dependency in transitive_dependencies(operation.agent):
        # Re-fetched, not refresh_from_db (which django-fsm makes unsafe across threads).
        dependency = Agent.objects.get(pk=dependency.pk)
        steps = lifecycle.STEPS_TO_RUNNING.get(dependency.state, [])
        for step in steps:
            step_operation = request_action(
                dependency,
                step,
                actor,
                reason=f"dependency of {operation.agent.name}",
                enqueue=False,
            )
            finished = run_operation(str(step_operation.pk))
            if finished.status != Operation.Status.SUCCEEDED:
                raise ActionRefused(
                    f"Could not {step} dependency {dependency.name}: {finished.error}",
                    code="dependencies",
                    details={"dependency": dependency.slug, "operation": str(finished.pk)},
                )
        if steps:
            brought_up.append(dependency.slug)
    return brought_up


def _finish_succeeded(operation: Operation, result: dict) -> Operation:
    actor = operation.requested_by
    try:
        with transaction.atomic():
            agent = Agent.objects.select_for_update().get(pk=operation.agent_id)
            from_state = agent.state
            getattr(agent, operation.action)()
            agent.pending_action = ""
            agent.pending_since = None
            agent.state_changed_at = timezone.now()
            if operation.action == "provision":
                agent.runtime_details = {**agent.runtime_details, **result}
            elif operation.action in ("start", "restart", "resume", "deploy"):
                agent.runtime_details = {
                    **agent.runtime_details,
                    **{k: v for k, v in result.items() if k != "dependencies"},
                }
            if operation.action in ("stop", "revoke"):
                agent.health = Health.UNKNOWN
            if operation.action == "revoke":
                agent.runtime_details = {}
            if actor.kind != "system" and operation.action in (
                "start",
                "restart",
                "stop",
                "revoke",
            ):
                # A person took charge: forget earlier automatic-restart attempts.
                agent.restart_attempts, agent.next_restart_at, agent.restart_gave_up = (
                    0,
                    None,
                    False,
                )
            agent.save()
            record_transition(
                agent, operation.action, from_state, actor, operation.reason, result, operation
            )
            operation.status = Operation.Status.SUCCEEDED
            operation.result = result
            operation.finished_at = timezone.now()
            operation.save(update_fields=["status", "result", "finished_at"])
            record_audit(
                actor,
                f"agent.{operation.action}",
                target=agent.slug,
                operation=str(operation.pk),
                phase="completed",
            )
            events.emit(
                "transition",
                agent,
                operation=str(operation.pk),
                action=operation.action,
                from_state=from_state,
            )
    except (TransitionNotAllowed, ConcurrentTransition):
        current = Agent.objects.get(pk=operation.agent_id)
        return _finish_failed(
            operation,
            f"{current.name} changed to {current.state} while it was being {lifecycle.action(operation.action).done}; nothing more was done.",
            "conflict",
            result,
        )
    return operation


def _finish_failed(operation: Operation, message: str, reason: str, details: dict) -> Operation:
    actor = operation.requested_by
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=operation.agent_id)
        agent.pending_action = ""
        agent.pending_since = None
        if operation.action == "restart" and agent.state == State.RUNNING:
            # A failed restart has stopped the agent and could not start it again.
            from_state = agent.state
            agent.fail()
            agent.state_changed_at = timezone.now()
            agent.health = Health.UNHEALTHY
            agent.last_exit = {
                k: v for k, v in details.items() if k in ("exit_code", "signal", "reason")
            }
            agent.save()
            record_transition(
                agent,
                "fail",
                from_state,
                Actor.system("runtime"),
                f"restart failed: {message}",
                details,
                operation,
            )
            events.emit(
                "transition",
                agent,
                operation=str(operation.pk),
                action="fail",
                from_state=from_state,
            )
        else:
            agent.save(update_fields=["pending_action", "pending_since", "updated_at"])
        operation.status = Operation.Status.FAILED
        operation.error = message
        operation.error_reason = reason
        operation.result = details
        operation.finished_at = timezone.now()
        operation.save(update_fields=["status", "error", "error_reason", "result", "finished_at"])
        record_audit(
            actor, f"agent.{operation.action}", target=agent.slug, outcome=AuditEntry.Outcome.FAILED,
            operation=str(operation.pk), phase="completed", error=message,
        )  # fmt: skip
        if reason not in ("conflict", "busy"):
            source = "runtime" if reason in ("engine_unreachable", "image_missing") else "action"
            record_error(
                agent, source, message, {**details, "reason": reason},
                action=operation.action, operation=operation,
            )  # fmt: skip
        events.emit(
            "operation", agent, operation=str(operation.pk), action=operation.action, error=message
        )
    return operation


def record_transition(
    agent: Agent,
    action: str,
    from_state: str,
    actor: Actor,
    reason: str,
    details: dict,
    operation: Operation | None,
) -> AgentTransition:
    return AgentTransition.objects.create(
        agent=agent,
        action=action,
        from_state=from_state,
        to_state=agent.state,
        **ActorStamped.stamp(actor),
        reason=reason,
        details=details,
        operation=operation,
    )
