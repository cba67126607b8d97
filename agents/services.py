"""Service functions of the agent registry and lifecycle: the one place where agents change.

The web views, the JSON API, the admin actions and the ``agents`` command all call these. A
lifecycle action happens in two steps:

1. ``request_action`` checks permission, the state machine, dependencies and that nothing else
   is in flight for the agent, then records an ``Operation`` and a pending marker on the agent
   (under a row lock, so of many concurrent requests exactly one wins) and returns at once.
2. ``run_operation`` (a Celery task, or the monitor for automatic restarts) drives the runtime,
   then applies the transition, writes the history row and clears the marker in one
   transaction. Running it again for a finished operation does nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django_fsm import ConcurrentTransition, TransitionNotAllowed

from agents import events, lifecycle
from agents.catalog import PLATFORM_AGENTS
from agents.models import (
    ACTION_LABELS,
    ACTIONS,
    Agent,
    AgentTransition,
    BulkOperation,
    Health,
    Operation,
    RestartPolicy,
    State,
    Tier,
)
from agents.runtimes import AgentSpec, Runtime, RuntimeFailure, get_runtime
from portal import roles, work
from portal.actors import Actor
from portal.refusals import Refused
from portal.models import AuditEntry
from portal.services import record_audit

logger = logging.getLogger(__name__)

# The code of a refusal because the task queue could not take the work (nothing was changed).
UNAVAILABLE = "unavailable"


class ActionRefused(Refused):
    """An action that cannot go ahead, with a sentence saying why and what to do: 409, or 503
    when no worker could be reached (code ``unavailable``: try again in a moment)."""


class Conflict(ActionRefused):
    """Something else is already happening to this agent."""


class NeedsConfirmation(ActionRefused):
    """The action affects other agents; ask again with ``confirm=True``."""


# --- reading ----------------------------------------------------------------------------


def get_agent(slug: str) -> Agent:
    """The agent with this slug; ``Agent.DoesNotExist`` with a helpful message otherwise."""
    try:
        return Agent.objects.get(slug=slug)
    except Agent.DoesNotExist:
        raise Agent.DoesNotExist(
            f"There is no agent {slug!r}. `manage.py agents list` or the Agents page lists them."
        ) from None


def dependency_order(agents: Iterable[Agent]) -> list[Agent]:
    """The agents sorted so that each comes after everything it depends on (Kahn's algorithm)."""
    agents = list(agents)
    by_id = {agent.pk: agent for agent in agents}
    edges = {
        agent.pk: {dep.pk for dep in agent.dependencies.all() if dep.pk in by_id}
        for agent in agents
    }
    ordered: list[Agent] = []
    ready = sorted((pk for pk, deps in edges.items() if not deps), key=lambda pk: by_id[pk].name)
    while ready:
        pk = ready.pop(0)
        ordered.append(by_id[pk])
        for other, deps in edges.items():
            if pk in deps:
                deps.discard(pk)
                if not deps and by_id[other] not in ordered and other not in ready:
                    ready.append(other)
                    ready.sort(key=lambda key: by_id[key].name)
    if len(ordered) != len(agents):
        cyclic = sorted(by_id[pk].name for pk, deps in edges.items() if deps)
        raise ValueError(f"The dependencies of {', '.join(cyclic)} form a cycle.")
    return ordered


def in_action_order(action: str, agents: Iterable[Agent]) -> list[Agent]:
    """The order in which every door acts on many agents: dependencies first for an action that
    brings agents up, dependents first for one that takes them down (agents.lifecycle)."""
    return lifecycle.in_order(action, dependency_order(agents))


class DependencyGraph:
    """Who depends on whom, for the whole registry, loaded in two queries.

    Menus check every card's dependencies; loading the graph once per page keeps that from
    costing a query per dependency per card.
    """

    def __init__(self, agents: dict[int, Agent], edges: dict[int, set[int]]) -> None:
        self.agents = agents
        self.edges = edges

    @classmethod
    def load(cls) -> DependencyGraph:
        agents = {agent.pk: agent for agent in Agent.objects.only("id", "slug", "name", "state")}
        edges: dict[int, set[int]] = {pk: set() for pk in agents}
        through = Agent.dependencies.through.objects.values_list("from_agent_id", "to_agent_id")
        for dependent_id, dependency_id in through:
            edges.setdefault(dependent_id, set()).add(dependency_id)
        return cls(agents, edges)

    def transitive(self, agent_id: int) -> list[Agent]:
        """Everything ``agent_id`` needs, directly or not, dependencies first."""
        needed: set[int] = set()
        stack = list(self.edges.get(agent_id, ()))
        while stack:
            pk = stack.pop()
            if pk not in needed:
                needed.add(pk)
                stack.extend(self.edges.get(pk, ()))
        ordered: list[Agent] = []
        placed: set[int] = set()
        pending = sorted(needed, key=lambda pk: self.agents[pk].name)
        while pending:
            ready = [pk for pk in pending if self.edges.get(pk, set()) & needed <= placed]
            if not ready:
                raise ValueError(
                    "The dependencies of "
                    + ", ".join(sorted(self.agents[pk].name for pk in pending))
                    + " form a cycle."
                )
            for pk in ready:
                ordered.append(self.agents[pk])
                placed.add(pk)
            pending = [pk for pk in pending if pk not in placed]
        return ordered

    def would_cycle(self, agent_id: int, dependency_ids: Iterable[int]) -> Agent | None:
        """The first proposed dependency that already (transitively) needs ``agent_id``."""
        for pk in dependency_ids:
            if pk == agent_id or any(a.pk == agent_id for a in self.transitive(pk)):
                return self.agents.get(pk)
        return None


def transitive_dependencies(agent: Agent, graph: DependencyGraph | None = None) -> list[Agent]:
    """Everything ``agent`` needs, directly or not, dependencies first."""
    return (graph or DependencyGraph.load()).transitive(agent.pk)


def check_dependencies_acyclic(agent: Agent, dependencies: Iterable[Agent]) -> None:
    """Refuse dependencies that would make a cycle (start order, menus and seeding need none)."""
    from django.core.exceptions import ValidationError

    dependencies = list(dependencies)
    if agent.pk is None:
        return
    if any(dependency.pk == agent.pk for dependency in dependencies):
        raise ValidationError(f"{agent.name} cannot depend on itself.")
    culprit = DependencyGraph.load().would_cycle(agent.pk, [d.pk for d in dependencies])
    if culprit is not None:
        raise ValidationError(
            f"{culprit.name} already depends on {agent.name}; depending on it back would make a cycle."
        )


def _names(agents: Iterable[Agent], with_state: bool = True) -> str:
    parts = [f"{a.name} ({a.state})" if with_state else a.name for a in agents]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


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
    if not actor.has(roles.OPERATE):
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
    if lifecycle.action(action).needs_running_dependencies:
        check.missing_dependencies = [
            dep for dep in transitive_dependencies(agent, graph) if dep.state != State.RUNNING
        ]
        direct_missing = [dep for dep in agent.dependencies.all() if dep.state != State.RUNNING]
        if direct_missing and not (with_dependencies and action == "start"):
            check.allowed, check.code = False, "dependencies"
            check.message = (
                f"{agent.name} depends on {_names(direct_missing)}, which "
                f"{'is' if len(direct_missing) == 1 else 'are'} not running. Start "
                f"{'it' if len(direct_missing) == 1 else 'them'} first, or start {agent.name} with its dependencies."
            )
            return check
        revoked = [dep for dep in check.missing_dependencies if dep.state == State.REVOKED]
        if revoked:
            check.allowed, check.code = False, "dependencies"
            check.message = f"{agent.name} depends on {_names(revoked)}, which cannot run again."
            return check
    if lifecycle.action(action).disrupts_dependents:
        check.affected_dependents = [
            dependent
            for dependent in agent.dependents.all()
            if dependent.state in (State.RUNNING, State.SUSPENDED)
        ]
    return check


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


# --- the registry ------------------------------------------------------------------------


def seed_platform_agents(actor: Actor) -> tuple[int, int]:
    """Register the 14 Platform CoE agents in DRAFT. Idempotent: existing agents keep their
    state and settings; only missing agents and missing dependency links are added.

    Returns (created, links added).
    """
    actor.require(roles.MANAGE, "seed the agent registry")
    created = links = 0
    with transaction.atomic():
        by_slug = {}
        for definition in PLATFORM_AGENTS:
            agent, was_created = Agent.objects.get_or_create(
                slug=definition.slug,
                defaults={
                    "name": definition.name,
                    "description": definition.description,
                    "tier": Tier.PLATFORM,
                    "capabilities": definition.capabilities,
                    "owner_team": definition.owner_team,
                    "cpu_millicores": definition.cpu_millicores,
                    "memory_mb": definition.memory_mb,
                    "runtime": settings.AGENT_RUNTIME,
                },
            )
            created += was_created
            by_slug[definition.slug] = agent
        for definition in PLATFORM_AGENTS:
            agent = by_slug[definition.slug]
            existing = set(agent.dependencies.values_list("slug", flat=True))
            missing = [by_slug[slug] for slug in definition.depends_on if slug not in existing]
            if missing:
                agent.dependencies.add(*missing)
                links += len(missing)
        dependency_order(Agent.objects.prefetch_related("dependencies"))  # refuses a cycle
        if created or links:
            record_audit(actor, "agents.seed", target="platform", created=created, links=links)
    return created, links


def seed_step(actor: Actor, out) -> None:
    """``manage.py setup`` step: make sure the registry holds the 14 Platform CoE agents."""
    created, _ = seed_platform_agents(actor)
    if created:
        out.write(f"Registered {created} Platform CoE agent(s).")


# --- requesting actions -------------------------------------------------------------------


def _actor_kind(actor: Actor) -> str:
    return {"user": "user", "token": "token", "command": "command"}.get(actor.kind, "system")


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
                f"{_names(check.affected_dependents, with_state=False)} "
                f"{'depends' if len(check.affected_dependents) == 1 else 'depend'} on {locked.name} and "
                f"{'is' if len(check.affected_dependents) == 1 else 'are'} running; "
                f"to {action} it anyway, confirm.",
                code="confirm",
                details={"dependents": [a.slug for a in check.affected_dependents]},
            )
        operation = Operation.objects.create(
            agent=locked,
            action=action,
            actor_kind=_actor_kind(actor),
            actor=actor.label,
            user=actor.user if actor.user is not None and actor.user.pk else None,
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
    from agents.tasks import run_operation_task

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
    work.send_after_commit(run_operation_task, str(operation.pk), undo=undo)


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


# --- carrying them out ------------------------------------------------------------------------


def build_runtime(name: str) -> Runtime:
    """The runtime called ``name``, configured from settings."""
    if name == "local":
        return get_runtime("local", root=settings.AGENT_ROOT, redis_url=settings.AGENT_REDIS_URL)
    if name == "docker":
        return get_runtime(
            "docker",
            base_url=settings.DOCKER_HOST,
            image=settings.AGENT_IMAGE,
            redis_url=settings.AGENT_REDIS_URL,
            network=settings.AGENT_DOCKER_NETWORK,
        )
    if name == "kubernetes":
        return get_runtime(
            "kubernetes",
            namespace=settings.KUBERNETES_NAMESPACE,
            image=settings.AGENT_IMAGE,
            redis_url=settings.KUBERNETES_AGENT_REDIS_URL,
            redis_secret=settings.KUBERNETES_AGENT_REDIS_SECRET,
            in_cluster=settings.KUBERNETES_IN_CLUSTER,
        )
    return get_runtime(name)


def runtime_for(agent: Agent) -> Runtime:
    return build_runtime(agent.runtime)


def spec_for(agent: Agent) -> AgentSpec:
    return AgentSpec(
        slug=agent.slug,
        name=agent.name,
        version=agent.version,
        replicas=agent.replicas,
        config=dict(agent.config),
        cpu_millicores=agent.cpu_millicores,
        memory_mb=agent.memory_mb,
        redis_url=settings.AGENT_REDIS_URL,
        ports=tuple(agent.runtime_details.get("ports", ())),
        grace_seconds=settings.AGENT_STOP_GRACE_SECONDS,
        ready_timeout=settings.AGENT_READY_TIMEOUT_SECONDS,
    )


def _runtime_effect(agent: Agent, action: str) -> dict:
    runtime, spec = runtime_for(agent), spec_for(agent)
    if action == "provision":
        return runtime.provision(spec)
    if action == "deploy":
        return runtime.deploy(spec)
    if action == "start":
        return runtime.start(spec)
    if action == "stop":
        return runtime.stop(spec)
    if action == "suspend":
        return runtime.suspend(spec)
    if action == "resume":
        return runtime.resume(spec)
    if action == "restart":
        return runtime.restart(spec)
    if action == "revoke":
        return runtime.remove(spec, purge=True)
    raise ValueError(f"unknown action {action!r}")


def recorded_actor(record) -> Actor:
    """The actor a row (operation, bulk operation, recovery attempt) was requested by, for the
    work a worker carries out later on its behalf."""
    if record.actor_kind == "system":
        return Actor.system(record.actor.removeprefix("system:"))
    return Actor(
        kind=record.actor_kind, user=record.user, source="worker", recorded_label=record.actor
    )


def _operation_actor(operation: Operation) -> Actor:
    return recorded_actor(operation)


# The advisory-lock kind of an operation's runner (see portal.work.lease).
OPERATION_LEASE = 7_303
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
        result.update(_runtime_effect(agent, operation.action))
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
    from agents.tasks import run_operation_task

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
        run_operation_task.delay(str(operation.pk))
        handed_out.append(str(operation.pk))
    return handed_out


def _bring_up_dependencies(operation: Operation) -> list[str]:
    """Take every dependency of the operation's agent to RUNNING, dependencies first."""
    actor = _operation_actor(operation)
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
    actor = _operation_actor(operation)
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
            _record_transition(
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
    actor = _operation_actor(operation)
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
            _record_transition(
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
            from agents import errors

            source = "runtime" if reason in ("engine_unreachable", "image_missing") else "action"
            errors.record_error(
                agent, source, message, {**details, "reason": reason},
                action=operation.action, operation=operation,
            )  # fmt: skip
        events.emit(
            "operation", agent, operation=str(operation.pk), action=operation.action, error=message
        )
    return operation


def _record_transition(
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
        actor_kind=_actor_kind(actor),
        actor=actor.label,
        user=actor.user if actor.user is not None and actor.user.pk else None,
        reason=reason,
        details=details,
        operation=operation,
    )


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
        _record_transition(
            agent, "fail", from_state, Actor.system(source), describe_exit(details), details, None
        )
        from agents import errors

        error = errors.record_error(agent, "crash", describe_exit(details), details)
        allowed, why_not = errors.allows_automatic_restart(error)
        if allowed:
            _plan_restart(agent, now)
        else:
            agent.next_restart_at = None
            # Not a failure a restart cures: the monitor leaves it to a person.
            agent.restart_gave_up = error.classification not in errors.AUTOMATIC_RESTART_CLASSES
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
    from agents import errors

    allowed, why_not = errors.allows_automatic_restart(None)
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
    errors.record_automatic_attempt(agent, operation)
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
            from agents import errors

            if health in (Health.UNHEALTHY, Health.DEGRADED) and agent.state == State.RUNNING:
                errors.record_error(agent, "health", detail or f"health is {health}", {})
            elif health == Health.HEALTHY and previous_health != Health.HEALTHY:
                errors.resolve_by_itself(agent, "healthy again")
            events.emit("health", agent)
    return changed


def require_viewer(actor: Actor) -> None:
    if not actor.has(roles.VIEW):
        raise PermissionDenied("You need a role to see agents. Ask an Admin.")


def update_agent_settings(agent: Agent, changed: list[str], actor: Actor) -> Agent:
    """Save edits to an agent's registry fields (not its state), made in the admin."""
    actor.require(roles.MANAGE, "edit agents")
    with transaction.atomic():
        if "config" in changed:
            before = Agent.objects.filter(pk=agent.pk).values_list("config", flat=True).first()
            if before is not None and before != agent.config:
                agent.previous_config, agent.config_changed_at = before, timezone.now()
        agent.save()
        record_audit(
            actor, "agent.edit", target=agent.slug,
            changes={name: _jsonable(getattr(agent, name, None)) for name in changed},
        )  # fmt: skip
        events.emit("registry", agent, changed=changed, actor=actor.label)
    return agent


def _jsonable(value):
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
            from agents import errors

            if found:
                messages = [i["message"] for i in found]
                logger.warning("drift on %s: %s", agent.slug, "; ".join(messages))
                errors.record_error(
                    agent,
                    "runtime",
                    "; ".join(messages)[:500],
                    {"drift": messages, "reason": "drift"},
                )
            else:
                errors.resolve_by_itself(
                    agent, "the runtime matches the portal again", rule="drift"
                )
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


# --- recoveries that change settings (offered by agents.errors) -----------------------------------


def rollback_config(agent: Agent, actor: Actor) -> Agent:
    """Put back the config the agent had before its last change (an Operator's recovery)."""
    actor.require(roles.OPERATE, "roll back an agent's config")
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        if agent.previous_config is None:
            raise ActionRefused(f"{agent.name} has no earlier config to go back to.", code="none")
        # The config replaced is kept in the audit entry, not offered back as "previous".
        bad, agent.config = agent.config, agent.previous_config
        agent.previous_config, agent.config_changed_at = None, timezone.now()
        agent.save(update_fields=["config", "previous_config", "config_changed_at", "updated_at"])
        record_audit(
            actor, "agent.config.rollback", target=agent.slug, config=agent.config, replaced=bad
        )
        events.emit("registry", agent, changed=["config"], actor=actor.label)
    return agent


def pick_new_ports(agent: Agent, actor: Actor) -> list[int]:
    """Move the agent to free ports (its own are held by someone else); audited."""
    actor.require(roles.OPERATE, "give an agent new ports")
    runtime = runtime_for(agent)
    ports = runtime.reassign_ports(spec_for(agent))
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        old = agent.runtime_details.get("ports")
        agent.runtime_details = {**agent.runtime_details, "ports": ports}
        agent.save(update_fields=["runtime_details", "updated_at"])
        record_audit(actor, "agent.ports", target=agent.slug, ports=ports, replaced=old)
    return ports


def set_memory_limit(agent: Agent, memory_mb: int, actor: Actor) -> Agent:
    """Raise an agent's memory limit up to AGENT_MEMORY_CEILING_MB (an Operator's recovery)."""
    actor.require(roles.OPERATE, "raise an agent's memory limit")
    ceiling = settings.AGENT_MEMORY_CEILING_MB
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        if memory_mb <= agent.memory_mb or memory_mb > ceiling:
            raise ActionRefused(
                f"{agent.name} has {agent.memory_mb} MiB; a raise must be above that and at most "
                f"{ceiling} MiB (AGENT_MEMORY_CEILING_MB).",
                code="ceiling",
            )
        before, agent.memory_mb = agent.memory_mb, memory_mb
        agent.save(update_fields=["memory_mb", "updated_at"])
        record_audit(actor, "agent.memory", target=agent.slug, memory_mb=memory_mb, was=before)
        events.emit("registry", agent, changed=["memory_mb"], actor=actor.label)
    return agent
