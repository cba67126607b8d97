"""Errors an operator can act on: every failure the portal sees becomes an ``AgentError`` with
a classification, a root cause, evidence (the last log lines) and ranked suggestions; a
one-click recovery runs through the normal lifecycle services and then checks that it worked.

- ``record_error`` is called by the services when an action fails, the monitor sees a crash or
  failing health checks. The rules live in ``agents.error_rules``. The same failure seen again
  while its error is open is counted on that error, not recorded twice.
- ``request_recovery`` (a person's click, the API, the CLI) records a ``RecoveryAttempt`` and
  hands it to a worker; ``run_recovery`` carries it out and verifies: the agent RUNNING and
  healthy within ``AGENT_RECOVERY_VERIFY_SECONDS``, or the attempt says it did not help.
- Automatic recovery (the monitor's restarts) follows the classification: transient failures
  are restarted with backoff; resource, configuration and permanent ones are not restarted
  blindly. ``RecoverySwitch`` turns all automatic recovery off.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Max, Min, Q, Sum
from django.utils import timezone

from agents import events, lifecycle
from agents.agentd import contract
from agents.error_rules import RECOVERIES, Signals, diagnose
from agents.models import (
    Agent,
    AgentError,
    AgentTransition,
    ErrorClass,
    Health,
    RecoveryAttempt,
    RecoverySwitch,
    RuntimeKind,
    State,
)
from agents.services import _actor_kind, recorded_actor
from portal import roles, work
from portal.actors import Actor
from portal.refusals import Refused
from portal.models import AuditEntry
from portal.services import record_audit

logger = logging.getLogger(__name__)

EVIDENCE_LINES = 20
# A log line's time is the agent's clock, an exit's time the supervisor's: allow this much skew.
EVIDENCE_CLOCK_SLACK_SECONDS = 0.5
CRASH_WINDOW = timedelta(minutes=10)
# Classifications the monitor restarts by itself (with backoff); the others wait for a person.
AUTOMATIC_RESTART_CLASSES = {ErrorClass.TRANSIENT, ErrorClass.DEPENDENCY}


class RecoveryRefused(Refused):
    """A recovery that cannot go ahead, with the reason and what to do."""

    status_by_code = {**Refused.status_by_code, "unknown": 400}


# --- recording ---------------------------------------------------------------------------------------


def _signals(agent: Agent, source: str, details: dict, message: str, action: str) -> Signals:
    now = timezone.now()
    dependencies_down = tuple(
        (dep.name, dep.state) for dep in agent.dependencies.all() if dep.state != State.RUNNING
    )
    changed = (
        (now - agent.config_changed_at).total_seconds() / 60 if agent.config_changed_at else None
    )
    crashes = AgentTransition.objects.filter(
        agent=agent, action="fail", at__gte=now - CRASH_WINDOW
    ).count()
    holder = details.get("holder") or {}
    readiness = details.get("last_readiness") or {}
    body = readiness.get("body") if isinstance(readiness, dict) else None
    said = body.get("reason") if isinstance(body, dict) else ""
    if source == "health" and "not ready" in message:
        said = said or message
    return Signals(
        agent=agent.name,
        source=source,
        reason=details.get("reason") or details.get("error_reason") or "",
        action=action,
        message=message,
        exit_code=details.get("exit_code"),
        signal=details.get("signal"),
        oom=bool(details.get("oom")),
        port=details.get("port"),
        holder=holder.get("description", "") if isinstance(holder, dict) else str(holder),
        runtime=agent.runtime,
        version=agent.version,
        memory_mb=agent.memory_mb,
        memory_ceiling_mb=settings.AGENT_MEMORY_CEILING_MB,
        dependencies_down=dependencies_down,
        config_changed_minutes_ago=changed,
        has_previous_config=agent.previous_config is not None,
        recent_crashes=crashes,
        crash_loop_after=max(3, settings.AGENT_RESTART_MAX_ATTEMPTS + 1),
        readiness=said or "",
        config_complaint=_config_complaint(details),
        dead_lettered=int(details.get("dead_lettered") or 0),
        last_task_error=str(details.get("last_error") or ""),
        queue=str(details.get("queue") or ""),
        drift=tuple(details.get("drift") or ()),
    )


def _config_complaint(details: dict) -> str:
    """agentd's own words about a config it refused, from its last log lines."""
    for line in reversed(details.get("log_lines") or []):
        if "bad configuration:" in str(line):
            return str(line).split("bad configuration:", 1)[1].strip().rstrip(".")
    return ""


def _crashed_run_window(details: dict) -> tuple[float, float] | None:
    """When the run that ended began and ended (Unix times), from an exit's ``at`` and
    ``uptime_seconds``; None when the exit did not say (found by reconciliation)."""
    try:
        ended = float(details["at"])
        started = ended - float(details["uptime_seconds"])
    except (KeyError, TypeError, ValueError):
        return None
    return started, ended + EVIDENCE_CLOCK_SLACK_SECONDS


def _evidence(agent: Agent, details: dict) -> list[str]:
    lines = details.get("log_lines")
    if lines:
        return [str(line) for line in lines][-EVIDENCE_LINES:]
    from agents import services

    try:
        runtime = services.runtime_for(agent)
        spec = services.spec_for(agent)
        window = _crashed_run_window(details)
        if window is None:
            found = list(runtime.logs(spec, tail=EVIDENCE_LINES))
        else:
            # The run that crashed, wherever its lines are now: a restart since then has moved
            # them to the previous log, and the new run's lines are not evidence of this crash.
            started, ended = window
            last = datetime.fromtimestamp(ended, UTC).isoformat(timespec="milliseconds")
            last = last.replace("+00:00", "Z")
            found = [
                line
                for line in runtime.logs(
                    spec, since=started, tail=None, replica=details.get("replica")
                )
                if not line.ts or line.ts <= last
            ][-EVIDENCE_LINES:]
        return [line.text if hasattr(line, "text") else str(line) for line in found]
    except Exception as exc:  # evidence is best effort: the failure is recorded regardless
        logger.info("no log lines for %s: %s", agent.slug, exc)
        return []


def record_error(
    agent: Agent,
    source: str,
    message: str,
    details: dict | None = None,
    *,
    action: str = "",
    operation=None,
) -> AgentError:
    """Record (or count again) a failure of ``agent``; call it inside the change's transaction."""
    details = dict(details or {})
    agent = Agent.objects.prefetch_related("dependencies").get(pk=agent.pk)
    diagnosis = diagnose(_signals(agent, source, details, message, action))
    evidence = _evidence(agent, details)
    now = timezone.now()
    existing = (
        AgentError.objects.select_for_update()
        .filter(
            agent=agent,
            signature=diagnosis.signature,
            # Failing again while a recovery runs is the same error, seen once more.
            status__in=[AgentError.Status.OPEN, AgentError.Status.RECOVERING],
        )
        .first()
    )
    if existing is not None:
        existing.occurrences += 1
        existing.last_seen_at = now
        existing.details = _jsonable(details)
        existing.evidence = evidence or existing.evidence
        existing.summary = message[:500]
        existing.root_cause = diagnosis.root_cause
        existing.suggestions = [s.as_dict() for s in diagnosis.suggestions]
        existing.operation = operation or existing.operation
        existing.save()
        error = existing
    else:
        error = AgentError.objects.create(
            agent=agent,
            occurred_at=now,
            last_seen_at=now,
            source=source,
            summary=message[:500],
            details=_jsonable(details),
            evidence=evidence,
            classification=diagnosis.classification,
            rule=diagnosis.rule,
            root_cause=diagnosis.root_cause,
            suggestions=[s.as_dict() for s in diagnosis.suggestions],
            signature=diagnosis.signature,
            pattern=diagnosis.pattern[:200],
            operation=operation,
        )
    logger.warning(
        "agent error %s on %s: %s (%s)", error.pk, agent.slug, diagnosis.rule,
        diagnosis.classification,
    )  # fmt: skip
    events.emit("error", agent, error=error.pk, classification=error.classification)
    return error


def _jsonable(details: dict) -> dict:
    import json

    return json.loads(json.dumps(details, default=str))


def check_task_failures(agent: Agent, client) -> AgentError | None:
    """Compare the agent's dead-letter queue with the last look; tasks given up on since then
    are an error (source "tasks"). ``client`` is a Redis client on the agents' Redis (strings
    decoded). The first look only takes the count."""
    queue = contract.dead_letters(agent.slug)
    total = client.xlen(queue)
    seen = agent.runtime_details.get("dead_letters_seen")
    if seen != total:
        details = {**agent.runtime_details, "dead_letters_seen": total}
        Agent.objects.filter(pk=agent.pk).update(runtime_details=details)
        agent.runtime_details = details
    if seen is None or total <= seen:
        return None
    new = total - seen
    newest = client.xrevrange(queue, count=min(new, EVIDENCE_LINES))
    lines = [
        f"{entry_id}: failed {fields.get('failures', '?')} times: {fields.get('error', '')}"
        for entry_id, fields in reversed(newest)
    ]
    last_error = newest[0][1].get("error", "") if newest else ""
    with transaction.atomic():
        return record_error(
            agent, "tasks",
            f"{new} task(s) of {agent.name} failed every retry and went to the dead-letter queue",
            {"reason": "task_failures", "dead_lettered": new, "dead_letters": total,
             "last_error": last_error, "queue": queue, "log_lines": lines},
        )  # fmt: skip


def resolve_by_itself(agent: Agent, how: str, *, rule: str = "") -> int:
    """The agent is healthy again on its own (or, with ``rule``, that kind of failure is gone):
    close its open errors (not those a recovery is verifying). Returns how many were closed."""
    open_errors = AgentError.objects.filter(agent=agent, status=AgentError.Status.OPEN)
    if rule:
        open_errors = open_errors.filter(rule=rule)
    closed = open_errors.update(
        status=AgentError.Status.RESOLVED,
        resolved_at=timezone.now(),
        resolved_by="system:monitor",
        resolution=how,
    )
    if closed:
        events.emit("error", agent)
    return closed


# --- automatic recovery ---------------------------------------------------------------------------


def automatic_recovery_on() -> bool:
    switch = RecoverySwitch.objects.filter(pk=1).first()
    return settings.AGENT_AUTO_RECOVERY if switch is None else switch.automatic


def set_automatic_recovery(on: bool, actor: Actor) -> None:
    """The global kill switch. Admins only; audited."""
    try:
        actor.require(roles.MANAGE, "switch automatic recovery on or off")
    except PermissionDenied as refused:
        record_audit(
            actor, "errors.automatic_recovery", target="fleet", outcome=AuditEntry.Outcome.REFUSED,
            on=on, reason=str(refused),
        )  # fmt: skip
        raise
    with transaction.atomic():
        RecoverySwitch.objects.update_or_create(
            pk=1,
            defaults={"automatic": on, "changed_by": actor.label, "changed_at": timezone.now()},
        )
        record_audit(actor, "errors.automatic_recovery", target="fleet", on=on)


def allows_automatic_restart(error: AgentError | None) -> tuple[bool, str]:
    """Whether the monitor may restart the agent of ``error`` by itself, and why not."""
    if not automatic_recovery_on():
        return False, "automatic recovery is switched off"
    if error is not None and error.classification not in AUTOMATIC_RESTART_CLASSES:
        return False, (
            f"a {error.classification} error is not restarted blindly ({error.root_cause}); "
            "choose a fix"
        )
    return True, ""


def latest_open_error(agent: Agent) -> AgentError | None:
    return (
        AgentError.objects.filter(agent=agent, status__in=[AgentError.Status.OPEN])
        .order_by("-last_seen_at")
        .first()
    )


def record_automatic_attempt(agent: Agent, operation) -> None:
    """Count an automatic restart on the error it answered, as the system (audited by the
    lifecycle service as ``system:monitor``)."""
    error = latest_open_error(agent)
    if error is None:
        return
    fixed = operation is not None and operation.status == "succeeded"
    RecoveryAttempt.objects.create(
        error=error,
        action="restart",
        automatic=True,
        actor_kind="system",
        actor="system:monitor",
        outcome=RecoveryAttempt.Outcome.FIXED if fixed else RecoveryAttempt.Outcome.DID_NOT_HELP,
        detail=(operation.error if operation is not None and not fixed else ""),
        finished_at=timezone.now(),
    )
    AgentError.objects.filter(pk=error.pk).update(retry_count=error.retry_count + 1)


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
                actor_kind=_actor_kind(actor),
                actor=actor.label,
                user=actor.user if actor.user is not None and actor.user.pk else None,
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
    from agents.tasks import run_recovery_task

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
    work.send_after_commit(run_recovery_task, attempt.pk, undo=undo)


# The advisory-lock kind of a recovery's runner (see portal.work.lease).
RECOVERY_LEASE = 7_304


def resume_stalled_recoveries(older_than: timedelta) -> list[int]:
    """The sweep for one-click recoveries: hand each running one with no runner to a worker
    again, once it has waited ``older_than`` since it was last sent. Returns the ids."""
    from agents.tasks import run_recovery_task

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
        run_recovery_task.delay(attempt.pk)
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
    actor = recorded_actor(attempt)
    agent = attempt.error.agent
    from agents.runtimes import RuntimeFailure
    from agents.services import ActionRefused

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
    actor = recorded_actor(attempt)
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


def ignore_error(error: AgentError, actor: Actor, why: str = "") -> AgentError:
    actor.require(roles.OPERATE, "ignore errors")
    with transaction.atomic():
        error = AgentError.objects.select_for_update().select_related("agent").get(pk=error.pk)
        if error.status == AgentError.Status.RECOVERING:
            raise RecoveryRefused(
                f"A recovery of error #{error.pk} is running; wait for its result.", "busy"
            )
        if not error.is_open:
            raise RecoveryRefused(
                f"Error #{error.pk} is {error.status}; there is nothing to ignore.", "closed"
            )
        error.status = AgentError.Status.IGNORED
        error.resolved_at = timezone.now()
        error.resolved_by = actor.label
        error.resolution = (why or "ignored")[:300]
        error.save(update_fields=["status", "resolved_at", "resolved_by", "resolution"])
        record_audit(actor, "agent.error.ignore", target=error.agent.slug, error=error.pk, why=why)
        events.emit("error", error.agent, error=error.pk)
    return error


# --- what each recovery does ---------------------------------------------------------------------------


def _act(agent: Agent, action: str, actor: Actor, reason: str, **options) -> None:
    """Take one lifecycle action now, through the services; raise if it fails."""
    from agents.services import ActionRefused, request_action, run_operation

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
    from agents.services import transitive_dependencies

    for dependency in transitive_dependencies(agent):
        for step in lifecycle.STEPS_TO_RUNNING.get(_fresh(dependency).state, []):
            _act(dependency, step, actor, reason)


def _perform(action: str, agent: Agent, actor: Actor) -> None:
    from agents import services

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
        services.rollback_config(agent, actor)
        _run_again(agent, actor, reason)
    elif action == "pick_new_port":
        services.pick_new_ports(agent, actor)
        _run_again(agent, actor, reason)
    elif action == "raise_memory":
        from agents.error_rules import raised_memory

        services.set_memory_limit(
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
                services.runtime_for(agent).deploy(services.spec_for(_fresh(agent)))
            else:
                _act(_fresh(agent), "deploy", actor, reason)
        _run_again(agent, actor, reason)
    elif action == "reconcile":
        services.reconcile_agent(agent, actor)
        if _fresh(agent).state == State.ERRORED:
            _run_again(agent, actor, reason)
    else:  # pragma: no cover (request_recovery refuses unknown actions)
        raise RecoveryRefused(f"unknown recovery {action!r}")


def verify(agent: Agent, timeout: float | None = None) -> tuple[bool, str]:
    """Whether the agent is RUNNING and stays healthy for ``AGENT_RECOVERY_SETTLE_SECONDS``
    within ``timeout`` (a fix that lasts a second is no fix); with what was seen."""
    from agents import services
    from agents.monitor import probe

    timeout = settings.AGENT_RECOVERY_VERIFY_SECONDS if timeout is None else timeout
    settle = min(settings.AGENT_RECOVERY_SETTLE_SECONDS, timeout)
    deadline = time.monotonic() + timeout
    healthy_since: float | None = None
    seen = ""
    while True:
        agent = _fresh(agent)
        now = time.monotonic()
        if agent.state == State.RUNNING and not agent.pending_action:
            answer = services.runtime_for(agent).probe(
                services.spec_for(agent), agent.runtime_details
            )
            health, detail = answer if answer is not None else probe(agent)
            if health == Health.HEALTHY:
                healthy_since = now if healthy_since is None else healthy_since
                if now - healthy_since >= settle:
                    services.record_health(agent, health, detail)
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
    from agents import services

    services.check_drift(agent.runtime)
    agent = _fresh(agent)
    if agent.drift:
        return False, "the runtime still differs: " + "; ".join(i["message"] for i in agent.drift)
    if agent.state == State.RUNNING:
        return verify(agent)
    return True, f"verified: the runtime matches the portal ({agent.state})"


# --- patterns ------------------------------------------------------------------------------------


def patterns(since=None, agent: Agent | None = None) -> list[dict]:
    """The same failure grouped: how often, on how many agents, first and last seen."""
    since = since or timezone.now() - timedelta(days=7)
    errors = AgentError.objects.filter(last_seen_at__gte=since)
    if agent is not None:
        errors = errors.filter(agent=agent)
    rows = (
        errors.values("signature", "pattern", "classification")
        .annotate(
            times=Sum("occurrences"),
            agents=Count("agent", distinct=True),
            first=Min("occurred_at"),
            last=Max("last_seen_at"),
            open=Count("id", filter=Q(status__in=["open", "recovering"])),
        )
        .order_by("-times", "-last")
    )
    return list(rows)


def error_rate(window: timedelta = timedelta(hours=1)) -> dict:
    """Errors seen in the last ``window`` and per hour over the last 24 h (dashboard)."""
    now = timezone.now()
    last_window = AgentError.objects.filter(last_seen_at__gte=now - window).aggregate(
        n=Sum("occurrences")
    )["n"]
    day = AgentError.objects.filter(last_seen_at__gte=now - timedelta(hours=24)).aggregate(
        n=Sum("occurrences")
    )["n"]
    return {
        "last_hour": last_window or 0,
        "per_hour_24h": round((day or 0) / 24, 2),
        "open": AgentError.objects.filter(
            status__in=[AgentError.Status.OPEN, AgentError.Status.RECOVERING]
        ).count(),
    }


def counts_by_agent_and_class(since=None) -> list[dict]:
    since = since or timezone.now() - timedelta(days=7)
    return list(
        AgentError.objects.filter(last_seen_at__gte=since)
        .values("agent__slug", "agent__name", "classification")
        .annotate(times=Sum("occurrences"))
        .order_by("agent__name", "classification")
    )
