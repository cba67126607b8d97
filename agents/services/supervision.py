"""What the monitor reports, and what the portal does about it: crashes (ERRORED, automatic restart with backoff), health, and drift between the portal and the runtime."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents import events, lifecycle
from agents.errors.record import (
    AUTOMATIC_RESTART_CLASSES,
    allows_automatic_restart,
    record_automatic_attempt,
    record_error,
    resolve_by_itself,
)
from agents.models import (
    Agent,
    Health,
    Operation,
    RestartPolicy,
    State,
)
from agents.placement import build_runtime, runtime_for, spec_for
from agents.services.actions import record_transition, request_action, run_operation
from agents.services.refusals import ActionRefused
from portal import roles
from portal.actors import Actor
from portal.services import audits_refusals, record_audit

logger = logging.getLogger(__name__)


# --- what the monitor reports ------------------------------------------------------------------


def record_crash(agent: Agent, details: dict, *, source: str = "monitor") -> bool:
    """An agent's process ended without the portal asking: move it to ERRORED and plan a restart.

    Returns False (and changes nothing) when the exit was expected: the agent is not live, or
    an action of the portal's own (stop, restart, revoke...) is in flight.
    """
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        if (
            agent.state not in (State.RUNNING, State.SUSPENDED, State.DEPLOYED)
            or agent.pending_action
        ):
            return False
        from_state = agent.state
        agent.fail()
        now = timezone.now()
        agent.state_changed_at = now
        agent.health = Health.UNHEALTHY
        agent.health_detail = describe_exit(details)
        agent.last_exit = details
        agent.save()
        record_transition(
            agent, "fail", from_state, Actor.system(source), describe_exit(details), details, None
        )

        error = record_error(agent, "crash", describe_exit(details), details)
        allowed, why_not = allows_automatic_restart(error)
        if allowed:
            _plan_restart(agent, now)
        else:
            agent.next_restart_at = None
            # Not a failure a restart cures: the monitor leaves it to a person.
            agent.restart_gave_up = error.classification not in AUTOMATIC_RESTART_CLASSES
            agent.health_detail = f"{describe_exit(details)}; no automatic restart: {why_not}"[:300]
        agent.save()
        events.emit("transition", agent, action="fail", from_state=from_state, exit=details)
    return True


def describe_exit(details: dict) -> str:
    if details.get("reason") == "missing":
        return "process disappeared (not found by the runtime)"
    if details.get("oom"):
        return "killed: out of memory"
    signal_number = details.get("signal")
    if signal_number:
        import signal as signals

        try:
            name = signals.Signals(signal_number).name
        except ValueError:
            name = f"signal {signal_number}"
        # Shells report a death by signal N as exit status 128 + N; operators know it that way.
        return f"process killed by {name} (exit code {128 + int(signal_number)})"
    if details.get("exit_code") is None:
        return "process exited; its exit code is unknown (it ended while nobody watched)"
    return f"process exited with code {details.get('exit_code')}"


def restart_delay(attempt: int) -> float:
    """Seconds before automatic restart number ``attempt`` (1-based): exponential, capped."""
    base = settings.AGENT_RESTART_BACKOFF_SECONDS
    return min(settings.AGENT_RESTART_BACKOFF_MAX_SECONDS, base * (2 ** (attempt - 1)))


def _plan_restart(agent: Agent, now) -> None:
    if agent.restart_policy != RestartPolicy.ON_FAILURE:
        agent.next_restart_at = None
        return
    if agent.restart_attempts >= settings.AGENT_RESTART_MAX_ATTEMPTS:
        agent.next_restart_at = None
        agent.restart_gave_up = True
        return
    agent.restart_attempts += 1
    agent.next_restart_at = now + timedelta(seconds=restart_delay(agent.restart_attempts))


def due_restarts(now=None) -> list[Agent]:
    now = now or timezone.now()
    return list(
        Agent.objects.filter(
            state=State.ERRORED, next_restart_at__lte=now, pending_action=""
        ).order_by("next_restart_at")
    )


def auto_restart(agent: Agent) -> Operation | None:
    """Restart an ERRORED agent by its policy, as the system, and wait for the outcome."""
    actor = Actor.system("monitor")
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        if agent.state != State.ERRORED or agent.next_restart_at is None or agent.pending_action:
            return None
        attempt = agent.restart_attempts
        agent.next_restart_at = None
        agent.save(update_fields=["next_restart_at", "updated_at"])

    allowed, why_not = allows_automatic_restart(None)
    if not allowed:
        logger.info("automatic restart of %s skipped: %s", agent.slug, why_not)
        return None
    try:
        operation = request_action(
            agent,
            "restart",
            actor,
            reason=f"automatic restart #{attempt} (policy on-failure)",
            enqueue=False,
        )
    except ActionRefused as refused:
        logger.warning("automatic restart of %s refused: %s", agent.slug, refused.message)
        with transaction.atomic():
            agent = Agent.objects.select_for_update().get(pk=agent.pk)
            agent.health_detail = f"automatic restart waiting: {refused.message}"[:300]
            _plan_restart(agent, timezone.now())
            agent.save()
        return None
    operation = run_operation(str(operation.pk))
    record_automatic_attempt(agent, operation)
    if operation.status == Operation.Status.FAILED:
        with transaction.atomic():
            agent = Agent.objects.select_for_update().get(pk=agent.pk)
            if agent.state == State.ERRORED and agent.next_restart_at is None:
                _plan_restart(agent, timezone.now())
                agent.save()
                events.emit("health", agent)
    return operation


def record_health(agent: Agent, health: str, detail: str = "") -> bool:
    """Store a probe result; emits an event only when something visible changed."""
    now = timezone.now()
    if not agent.restart_attempts:
        # The common case, every probe of a steady fleet: the same health as stored. One
        # statement, guarded by what it must still be, instead of a locked read and a write.
        same = Agent.objects.filter(
            pk=agent.pk, state=State.RUNNING, pending_action="", health=health,
            health_detail=detail[:300], restart_attempts=0,
        )  # fmt: skip
        stamps = {"health_checked_at": now, "updated_at": now}
        if health == Health.HEALTHY:
            stamps["last_healthy_at"] = now
        if same.update(**stamps):
            return False
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        if agent.state != State.RUNNING or agent.pending_action:
            return False  # a stale probe: the agent moved on while it was being probed
        previous_health = agent.health
        changed = agent.health != health or agent.health_detail != detail
        agent.health = health
        agent.health_detail = detail[:300]
        agent.health_checked_at = now
        if health == Health.HEALTHY:
            agent.last_healthy_at = now
            reset_after = timedelta(seconds=settings.AGENT_RESTART_RESET_SECONDS)
            if (
                agent.restart_attempts
                and agent.state == State.RUNNING
                and now - agent.state_changed_at >= reset_after
            ):
                agent.restart_attempts, agent.restart_gave_up = 0, False
                changed = True
        agent.save(update_fields=[
            "health", "health_detail", "health_checked_at", "last_healthy_at",
            "restart_attempts", "restart_gave_up", "updated_at",
        ])  # fmt: skip
        if changed:
            if health in (Health.UNHEALTHY, Health.DEGRADED) and agent.state == State.RUNNING:
                record_error(agent, "health", detail or f"health is {health}", {})
            elif health == Health.HEALTHY and previous_health != Health.HEALTHY:
                resolve_by_itself(agent, "healthy again")
            events.emit("health", agent)
    return changed


def jsonable(value):
    if hasattr(value, "all"):
        return sorted(str(item) for item in value.all())
    return (
        value if isinstance(value, (str, int, float, bool, list, dict, type(None))) else str(value)
    )


# --- drift --------------------------------------------------------------------------------------

# The portal states in which an agent has resources in its runtime.


def record_drift(agent: Agent, items: list[dict]) -> bool:
    """Store what the monitor found out of line for ``agent``; emits an event when it changed."""
    now = timezone.now()
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        found = [{"kind": item["kind"], "message": item["message"]} for item in items]
        known = [{"kind": item["kind"], "message": item["message"]} for item in agent.drift]
        changed = found != known
        if changed:
            agent.drift = [{**item, "since": now.isoformat()} for item in found]
        agent.drift_checked_at = now
        agent.save(update_fields=["drift", "drift_checked_at", "updated_at"])
        if changed:
            if found:
                messages = [i["message"] for i in found]
                logger.warning("drift on %s: %s", agent.slug, "; ".join(messages))
                record_error(
                    agent,
                    "runtime",
                    "; ".join(messages)[:500],
                    {"drift": messages, "reason": "drift"},
                )
            else:
                resolve_by_itself(agent, "the runtime matches the portal again", rule="drift")
            events.emit("drift", agent, drift=found)
    return changed


def check_drift(runtime_name: str) -> dict[str, list[dict]]:
    """Ask one runtime how it differs from the portal; record it per agent. Returns the
    findings by slug (orphans under their own slug, even with no agent of that name)."""
    runtime = build_runtime(runtime_name)
    agents = list(Agent.objects.filter(runtime=runtime_name, state__in=lifecycle.DEPLOYED_STATES))
    findings = runtime.drift([(spec_for(agent), agent.state) for agent in agents])
    by_slug: dict[str, list[dict]] = {}
    for item in findings:
        by_slug.setdefault(item["slug"], []).append(item)
    # An agent with an action in flight (a revoke tearing down) is between states: skip it.
    for agent in Agent.objects.filter(runtime=runtime_name, pending_action=""):
        items = by_slug.get(agent.slug, [])
        if items or agent.drift:
            record_drift(agent, items)
    return by_slug


@audits_refusals("agent.reconcile", target="agent")
def reconcile_agent(agent: Agent, actor: Actor) -> dict:
    """The one-click fix for drift: make the runtime match the portal where that is safe
    (remove orphans, stop or pause what should not run), then check again."""
    actor.require(roles.OPERATE, "reconcile agents")
    runtime = runtime_for(agent)
    if agent.state in lifecycle.DEPLOYED_STATES:
        result = runtime.reconcile(spec_for(agent), agent.state)
    else:
        result = runtime.remove_orphan(agent.slug)
    with transaction.atomic():
        record_audit(actor, "agent.reconcile", target=agent.slug, result=result)
    check_drift(agent.runtime)
    return result
