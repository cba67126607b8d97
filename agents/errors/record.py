"""What went wrong with an agent, recorded once: the signals gathered (exit, logs, health, task failures), classified by ``agents.errors.rules`` into a root cause with evidence and ranked fixes. The same failure seen again while open is counted, not recorded twice. Also the automatic-recovery switch and what it allows."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from agents import events
from agents.agentd import contract
from agents.errors.rules import Signals, diagnose
from agents.models import (
    Agent,
    AgentError,
    AgentTransition,
    ErrorClass,
    RecoveryAttempt,
    RecoverySwitch,
    State,
)
from agents.placement import runtime_for, spec_for
from portal import roles
from portal.actors import Actor
from portal.models import AuditEntry
from portal.refusals import Refused
from portal.services import audits_refusals, record_audit

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
        agent_slug=agent.slug,
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
        dead_letter_group=str(details.get("dead_letter_group") or ""),
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

    try:
        runtime = runtime_for(agent)
        spec = spec_for(agent)
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
    # Failing again while a recovery runs is the same error, seen once more.
    existing = (
        AgentError.objects.select_for_update()
        .open()
        .filter(agent=agent, signature=diagnosis.signature)
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
    last_error = newest[0][1].get(contract.DLQ_ERROR, "") if newest else ""
    group = newest[0][1].get(contract.DLQ_FINGERPRINT, "") if newest else ""
    with transaction.atomic():
        return record_error(
            agent, "tasks",
            f"{new} task(s) of {agent.name} failed every retry and went to the dead-letter queue",
            {"reason": "task_failures", "dead_lettered": new, "dead_letters": total,
             "last_error": last_error, "queue": queue, "log_lines": lines,
             "dead_letter_group": group},
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


@audits_refusals("agent.error.ignore", target="error")
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
