"""Bulk operations: one lifecycle action on many agents, previewed, then run by a Celery job
with bounded parallelism, in dependency order.

1. ``preview_bulk`` (or ``plan_bulk``) says, without changing anything, what each chosen agent
   would go through, which are skipped and why, and which agents outside the selection lose a
   dependency. It also names the phrase a dangerous run must be confirmed with.
2. ``create_bulk_operation`` re-plans under row locks and records a ``BulkOperation`` with one
   ``BulkItem`` per agent, then hands it to a worker.
3. ``run_bulk_operation`` (the task) works through the items: at most ``parallelism`` at a time,
   each holding one of ``AGENT_MAX_CONCURRENT_ACTIONS`` slots shared by every bulk job, an item
   starting only when the items it depends on have finished (dependencies first for actions
   that bring agents up, dependents first for those that take them down). Each step of an item
   is an ordinary ``Operation`` through ``services.request_action`` and ``run_operation``, so
   permission checks, history and audit are the same as for one agent.

Crash safety: a runner holds a PostgreSQL advisory lock for its bulk operation, so two workers
never run the same one, and the lock goes away with the worker's connection if it dies. The
items record each step's operation before running it, so a runner picking the job up again
(Celery redelivery, the beat sweep, a worker starting) finishes the step in flight and goes on;
nothing finished is done twice. Slots are advisory locks too, freed by a dead worker's
connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from agents import events, lifecycle
from agents.models import (
    ACTION_LABELS,
    Agent,
    BulkItem,
    BulkOperation,
    Operation,
    State,
    Tier,
)
from agents.services import (
    UNAVAILABLE,
    ActionRefused,
    DependencyGraph,
    _actor_kind,
    _names,
    illegal_action_message,
    recorded_actor,
    request_action,
    run_operation,
)
from portal import roles, work
from portal.actors import Actor
from portal.models import AuditEntry
from portal.services import record_audit

logger = logging.getLogger(__name__)

BULK_ACTIONS = [
    "deploy_and_start",
    "deploy",
    "start",
    "stop",
    "restart",
    "suspend",
    "resume",
    "revoke",
]
# The lifecycle table's words and rules for them (agents/lifecycle.py), "rollback" besides.
BULK_ACTION_LABELS = {
    **{name: lifecycle.action(name).label for name in BULK_ACTIONS},
    "rollback": "Roll back",
}
# Where a run leaves an agent that changes.
BULK_TARGETS = {name: lifecycle.action(name).target for name in BULK_ACTIONS}
# Actions that bring agents up go dependencies first; the others, dependents first.
UPWARD = {name for name in BULK_ACTIONS if lifecycle.is_upward(name)}
# Actions whose agents need their dependencies running.
NEEDS_RUNNING_DEPENDENCIES = {
    name for name in BULK_ACTIONS if lifecycle.action(name).needs_running_dependencies
}
# Actions that take agents away from whoever depends on them.
TAKES_DOWN = {name for name in BULK_ACTIONS if lifecycle.action(name).disrupts_dependents}

# The one-click buttons of the agents page: (action, filter).
SHORTCUTS = {
    "deploy-all": ("deploy", {"all": True}),
    "start-all": ("deploy_and_start", {"all": True}),
    "stop-running": ("stop", {"state": State.RUNNING}),
    "restart-errored": ("restart", {"state": State.ERRORED}),
}
SHORTCUT_LABELS = {
    "deploy-all": "Deploy all",
    "start-all": "Start all",
    "stop-running": "Stop all running",
    "restart-errored": "Restart errored",
}

_DEPLOY_AND_START_STEPS = lifecycle.DEPLOY_AND_START_STEPS
_DEPLOY_STEPS = lifecycle.DEPLOY_STEPS
# How an agent that a bulk operation changed gets back to where it was: (now, before) → steps.
# The state reached is the one before, except that a started agent cannot become DEPLOYED
# again: stopping it is the closest (deployed, not running).
_ROLLBACK_STEPS = {
    (State.RUNNING, State.STOPPED): (["stop"], State.STOPPED),
    (State.RUNNING, State.DEPLOYED): (["stop"], State.STOPPED),
    (State.RUNNING, State.SUSPENDED): (["suspend"], State.SUSPENDED),
    (State.SUSPENDED, State.RUNNING): (["resume"], State.RUNNING),
    (State.STOPPED, State.RUNNING): (["start"], State.RUNNING),
    (State.STOPPED, State.SUSPENDED): (["start", "suspend"], State.SUSPENDED),
}

# Advisory lock classes (the first key of pg_advisory_lock(int, int)).
_RUNNER_LOCK = 7_301
_SLOT_LOCK = 7_302
# A pending or running job with no runner for this long is picked up again by the sweep.
STALLED_AFTER = timedelta(seconds=15)


class BulkRefused(ActionRefused):
    """A bulk operation that cannot be created or changed, with the reason and what to do."""

    status_by_code = {**ActionRefused.status_by_code, "invalid": 400, "unknown": 400}


# --- choosing agents ---------------------------------------------------------------------------


def resolve_targets(
    targets: Iterable[str] | None = None, filter: dict | None = None
) -> list[Agent]:
    """The agents named by slugs or chosen by a filter (``all``, ``state``, ``tier``).

    Raises ``BulkRefused`` for unknown slugs, unknown filter values or an empty choice.
    """
    targets = [str(slug).strip() for slug in (targets or []) if str(slug).strip()]
    filter = {key: value for key, value in (filter or {}).items() if value not in (None, "", False)}
    if targets and filter:
        raise BulkRefused("Give either a list of agents or a filter, not both.", code="invalid")
    if not targets and not filter:
        raise BulkRefused(
            "Choose the agents: name them, or use a filter (all, a state or a tier).",
            code="invalid",
        )
    if targets:
        found = {agent.slug: agent for agent in Agent.objects.filter(slug__in=targets)}
        unknown = [slug for slug in targets if slug not in found]
        if unknown:
            raise BulkRefused(
                f"There is no agent {', '.join(repr(s) for s in unknown)}; "
                "`manage.py agents list` or the Agents page lists them.",
                code="unknown",
            )
        seen: dict[str, Agent] = {}
        for slug in targets:
            seen.setdefault(slug, found[slug])
        return list(seen.values())
    unknown_keys = sorted(set(filter) - {"all", "state", "tier"})
    if unknown_keys:
        raise BulkRefused(
            f"Unknown filter {', '.join(unknown_keys)}; filter by all, state or tier.",
            code="invalid",
        )
    agents = Agent.objects.all()
    if "state" in filter:
        state = str(filter["state"]).upper()
        if state not in State.values:
            raise BulkRefused(
                f"{filter['state']!r} is not a state; use one of {', '.join(State.values)}.",
                code="invalid",
            )
        agents = agents.filter(state=state)
    if "tier" in filter:
        tier = str(filter["tier"]).lower()
        if tier not in Tier.values:
            raise BulkRefused(
                f"{filter['tier']!r} is not a tier; use one of {', '.join(Tier.values)}.",
                code="invalid",
            )
        agents = agents.filter(tier=tier)
    found = list(agents.order_by("name"))
    if not found:
        raise BulkRefused(f"No agent matches {describe_filter(filter)}.", code="empty")
    return found


def describe_filter(filter: dict) -> str:
    parts = []
    if filter.get("state"):
        parts.append(f"state {str(filter['state']).upper()}")
    if filter.get("tier"):
        parts.append(f"tier {filter['tier']}")
    return " and ".join(parts) or "all agents"


# --- planning -------------------------------------------------------------------------------------


@dataclass
class PlannedItem:
    """What a bulk operation would do to one agent."""

    agent: Agent
    steps: list[str] = field(default_factory=list)
    to_state: str = ""
    code: str = ""  # set when skipped: "already", "illegal", "busy", "dependencies", ...
    message: str = ""
    affected_dependents: list[Agent] = field(default_factory=list)

    @property
    def will_change(self) -> bool:
        return bool(self.steps) and not self.code

    def skip(self, code: str, message: str) -> None:
        self.steps, self.to_state, self.code, self.message = [], "", code, message

    def as_dict(self) -> dict:
        return {
            "agent": self.agent.slug,
            "name": self.agent.name,
            "state": self.agent.state,
            "will_change": self.will_change,
            "steps": self.steps,
            "to_state": self.to_state or None,
            "skip_code": self.code or None,
            "skip_reason": self.message or None,
            "affected_dependents": [a.slug for a in self.affected_dependents],
        }


@dataclass
class BulkPlan:
    """A preview: every chosen agent in the order it would be worked on."""

    action: str
    items: list[PlannedItem]
    parallelism: int
    confirmation_phrase: str = ""

    @property
    def changing(self) -> list[PlannedItem]:
        return [item for item in self.items if item.will_change]

    @property
    def skipped(self) -> list[PlannedItem]:
        return [item for item in self.items if not item.will_change]

    @property
    def affected_dependents(self) -> list[Agent]:
        """Agents outside the operation that lose a dependency they are running on."""
        seen: dict[int, Agent] = {}
        for item in self.items:
            for agent in item.affected_dependents:
                seen.setdefault(agent.pk, agent)
        return sorted(seen.values(), key=lambda a: a.name)

    @property
    def label(self) -> str:
        return BULK_ACTION_LABELS[self.action]

    def as_dict(self) -> dict:
        return {
            "action": self.action,
            "parallelism": self.parallelism,
            "will_change": len(self.changing),
            "skipped": len(self.skipped),
            "confirmation_required": bool(self.confirmation_phrase),
            "confirmation_phrase": self.confirmation_phrase or None,
            "affected_dependents": [a.slug for a in self.affected_dependents],
            "items": [item.as_dict() for item in self.items],
        }


def check_parallelism(parallelism: object) -> int:
    """The parallelism asked for, or the default; ``BulkRefused`` outside 1..the ceiling."""
    ceiling = settings.BULK_MAX_PARALLELISM
    if parallelism in (None, ""):
        return settings.BULK_DEFAULT_PARALLELISM
    try:
        value = int(parallelism)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = 0
    if str(parallelism).strip() != str(value) or not 1 <= value <= ceiling:
        raise BulkRefused(
            f"Parallelism {parallelism!r} is not allowed: give a whole number from 1 to {ceiling} "
            "(BULK_MAX_PARALLELISM).",
            code="invalid",
        )
    return value


def steps_for(agent: Agent, action: str) -> tuple[list[str], str, str]:
    """The lifecycle steps ``action`` takes ``agent`` through from its current state, or the
    skip code and reason: (steps, code, message)."""
    state = agent.state
    if state == State.REVOKED:
        return [], "illegal", illegal_action_message(agent, "start")
    if action == "deploy_and_start":
        if state == State.RUNNING:
            return [], "already", f"{agent.name} is already RUNNING."
        if state in _DEPLOY_AND_START_STEPS:
            return list(_DEPLOY_AND_START_STEPS[state]), "", ""
        return [], "illegal", illegal_action_message(agent, "start")
    if action == "deploy":
        if state == State.DEPLOYED:
            return [], "already", f"{agent.name} is already DEPLOYED."
        if state in _DEPLOY_STEPS:
            return list(_DEPLOY_STEPS[state]), "", ""
        return [], "illegal", illegal_action_message(agent, "deploy")
    if action != "restart" and state == BULK_TARGETS[action]:
        return [], "already", f"{agent.name} is already {state}."
    if action in agent.legal_actions():
        return [action], "", ""
    return [], "illegal", illegal_action_message(agent, action)


def _active_bulk_items(agent_ids: Iterable[int], exclude_bulk: int | None = None) -> dict[int, int]:
    """agent id → bulk operation id, for agents already in an unfinished bulk operation."""
    items = BulkItem.objects.filter(agent_id__in=list(agent_ids), status__in=BulkItem.ACTIVE)
    if exclude_bulk is not None:
        items = items.exclude(bulk_id=exclude_bulk)
    return dict(items.values_list("agent_id", "bulk_id"))


def plan_bulk(
    action: str,
    agents: list[Agent],
    *,
    parallelism: object = None,
    graph: DependencyGraph | None = None,
) -> BulkPlan:
    """What ``action`` would do to each of ``agents`` now. Changes nothing."""
    if action not in BULK_ACTIONS:
        raise BulkRefused(
            f"{action!r} is not a bulk action; use one of {', '.join(BULK_ACTIONS)}.",
            code="unknown",
        )
    parallelism = check_parallelism(parallelism)
    graph = graph or DependencyGraph.load()
    items = [PlannedItem(agent) for agent in agents]
    busy_in = _active_bulk_items(agent.pk for agent in agents)
    for item in items:
        agent = item.agent
        steps, code, message = steps_for(agent, action)
        if code:
            item.skip(code, message)
        elif agent.pending_action:
            item.skip(
                "busy", f"{agent.name} is already {agent.pending_label}; wait until that finishes."
            )
        elif agent.pk in busy_in:
            item.skip(
                "busy",
                f"{agent.name} is in bulk operation #{busy_in[agent.pk]}, which has not finished.",
            )
        else:
            item.steps, item.to_state = steps, BULK_TARGETS[action]
    ordered = _ordered(items, graph, upward=action in UPWARD)
    if action in NEEDS_RUNNING_DEPENDENCIES:
        _skip_missing_dependencies(ordered, graph)
    if action in TAKES_DOWN:
        _find_affected_dependents(ordered, graph)
    plan = BulkPlan(action, ordered, parallelism)
    plan.confirmation_phrase = _confirmation_phrase(plan)
    return plan


def _ordered(
    items: list[PlannedItem], graph: DependencyGraph, *, upward: bool
) -> list[PlannedItem]:
    """Items with each after everything it depends on (or before, going down)."""
    by_id = {item.agent.pk: item for item in items}
    placed: set[int] = set()
    ordered: list[PlannedItem] = []
    pending = sorted(by_id, key=lambda pk: by_id[pk].agent.name)
    while pending:
        ready = [pk for pk in pending if (graph.edges.get(pk, set()) & by_id.keys()) <= placed]
        if not ready:  # a cycle (the registry refuses them): keep the rest by name
            ready = pending
        for pk in ready:
            ordered.append(by_id[pk])
            placed.add(pk)
        pending = [pk for pk in pending if pk not in placed]
    return ordered if upward else list(reversed(ordered))


def _skip_missing_dependencies(items: list[PlannedItem], graph: DependencyGraph) -> None:
    """Skip agents whose dependencies are neither running nor brought up by this operation."""
    running = {pk for pk, agent in graph.agents.items() if agent.state == State.RUNNING}
    for item in items:  # dependencies first, so a skip cascades to dependents
        if not item.will_change:
            continue
        missing = [
            graph.agents[pk]
            for pk in sorted(
                graph.edges.get(item.agent.pk, ()), key=lambda pk: graph.agents[pk].name
            )
            if pk not in running
        ]
        if missing:
            it = "it" if len(missing) == 1 else "them"
            item.skip(
                "dependencies",
                f"{item.agent.name} needs {_names(missing)}, which "
                f"{'is' if len(missing) == 1 else 'are'} not running and not brought up by this "
                f"operation; add {it} to the selection or start {it} first.",
            )
        else:
            running.add(item.agent.pk)


def _find_affected_dependents(items: list[PlannedItem], graph: DependencyGraph) -> None:
    taken_down = {item.agent.pk for item in items if item.will_change}
    dependents: dict[int, set[int]] = {}
    for dependent, deps in graph.edges.items():
        for dep in deps:
            dependents.setdefault(dep, set()).add(dependent)
    for item in items:
        if not item.will_change:
            continue
        item.affected_dependents = sorted(
            (
                graph.agents[pk]
                for pk in dependents.get(item.agent.pk, ())
                if pk not in taken_down
                and graph.agents[pk].state in (State.RUNNING, State.SUSPENDED)
            ),
            key=lambda a: a.name,
        )


def _confirmation_phrase(plan: BulkPlan) -> str:
    """Revoking, or stopping every running agent, must be confirmed by typing this phrase."""
    changing = plan.changing
    if not changing:
        return ""
    if plan.action == "revoke":
        return f"revoke {len(changing)}"
    if plan.action == "stop" and len(changing) > 1:
        running = set(Agent.objects.filter(state=State.RUNNING).values_list("pk", flat=True))
        stopping = {item.agent.pk for item in changing}
        if running and running <= stopping:
            return f"stop {len(changing)}"
    return ""


def preview_bulk(
    action: str,
    actor: Actor,
    *,
    targets: Iterable[str] | None = None,
    filter: dict | None = None,
    parallelism: object = None,
) -> BulkPlan:
    """The preview shown before running: permission-checked, changes nothing."""
    actor.require(roles.OPERATE, "run bulk operations")
    return plan_bulk(action, resolve_targets(targets, filter), parallelism=parallelism)


def rollback_steps(agent: Agent, before: str) -> tuple[list[str], str, str, str]:
    """The steps that return ``agent`` to the state ``before`` a bulk operation changed it:
    (steps, state reached, skip code, reason)."""
    now = agent.state
    if now == before:
        return [], "", "already", f"{agent.name} is {now} again already."
    if now == State.REVOKED:
        return [], "", "irreversible", f"{agent.name} was revoked; it cannot come back."
    if before in (State.DRAFT, State.PROVISIONED):
        return (
            [],
            "",
            "irreversible",
            f"{agent.name} was {before}; the portal cannot undo a deployment (revoke it if it "
            "should go).",
        )
    if before == State.ERRORED:
        return (
            [],
            "",
            "irreversible",
            f"{agent.name} was ERRORED; a roll-back does not break it again.",
        )
    planned = _ROLLBACK_STEPS.get((now, before))
    if planned is None:
        return [], "", "irreversible", f"{agent.name} cannot go from {now} back to {before}."
    steps, reached = planned
    return list(steps), reached, "", ""


def plan_rollback(bulk: BulkOperation, *, parallelism: object = None) -> BulkPlan:
    """Return every agent the operation changed to the state it had before."""
    if not bulk.is_finished:
        raise BulkRefused(
            f"Bulk operation #{bulk.pk} is still {bulk.status}; wait for it to finish (or cancel "
            "it) before rolling it back.",
            code="busy",
        )
    if bulk.kind == BulkOperation.Kind.ROLLBACK:
        raise BulkRefused(f"Bulk operation #{bulk.pk} is a roll-back itself.", code="invalid")
    changed = list(bulk.items.filter(status=BulkItem.Status.SUCCEEDED).select_related("agent"))
    if not changed:
        raise BulkRefused(
            f"Bulk operation #{bulk.pk} changed no agent; there is nothing to roll back.",
            code="empty",
        )
    parallelism = check_parallelism(parallelism if parallelism is not None else bulk.parallelism)
    graph = DependencyGraph.load()
    busy_in = _active_bulk_items(item.agent_id for item in changed)
    items = []
    for done in changed:
        agent = done.agent
        planned = PlannedItem(agent)
        steps, reached, code, message = rollback_steps(agent, done.from_state)
        if code:
            planned.skip(code, message)
        elif agent.pending_action or agent.pk in busy_in:
            planned.skip("busy", f"{agent.name} is busy with another operation; try again later.")
        else:
            planned.steps, planned.to_state = steps, reached
        items.append(planned)
    # Undoing a start goes dependents first; undoing a stop, dependencies first.
    plan = BulkPlan(
        "rollback", _ordered(items, graph, upward=bulk.action not in UPWARD), parallelism
    )
    if not plan.changing:
        raise BulkRefused(
            "Nothing can be rolled back: " + "; ".join(item.message for item in plan.skipped),
            code="empty",
            details={"plan": plan.as_dict()},
        )
    return plan


def preview_rollback(bulk: BulkOperation, actor: Actor, *, parallelism: object = None) -> BulkPlan:
    """The roll-back's preview: permission-checked, changes nothing."""
    actor.require(roles.OPERATE, "run bulk operations")
    return plan_rollback(bulk, parallelism=parallelism)


def can_roll_back(bulk: BulkOperation) -> bool:
    """Whether a roll-back would change at least one agent now (for showing the button)."""
    try:
        plan_rollback(bulk)
    except BulkRefused:
        return False
    return True


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
                options={"upward": bulk.action not in UPWARD},
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
        actor_kind=_actor_kind(actor),
        actor=actor.label,
        user=actor.user if actor.user is not None and actor.user.pk else None,
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
    from agents.tasks import run_bulk_operation_task

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

    work.send_after_commit(run_bulk_operation_task, bulk.pk, undo=undo)


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
    with _advisory_lock(_RUNNER_LOCK, bulk.pk) as held:
        if held:
            _skip_pending(bulk.pk, "cancelled", _cancel_message(bulk))
            if bulk.items.filter(status=BulkItem.Status.RUNNING).exists():
                from agents.tasks import run_bulk_operation_task

                run_bulk_operation_task.delay(bulk.pk)
            else:
                _finish(bulk.pk)
    bulk.refresh_from_db()
    return bulk


def _cancel_message(bulk: BulkOperation) -> str:
    return f"Not started: the operation was cancelled by {bulk.cancelled_by or 'someone'}."


# --- running ---------------------------------------------------------------------------------------


@contextmanager
def _advisory_lock(kind: int, key: int) -> Iterator[bool]:
    """Try a session advisory lock on this thread's connection; yields whether it was taken."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [kind, key])
        held = cursor.fetchone()[0]
    try:
        yield held
    finally:
        if held:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [kind, key])
            except Exception:  # the connection is gone, and the lock with it
                logger.warning("could not release advisory lock (%s, %s)", kind, key)


def run_bulk_operation(bulk_id: int) -> BulkOperation | None:
    """Work through a bulk operation. Safe to call again at any time: a second runner finds
    the lock taken and returns None; a finished operation is returned untouched; an
    interrupted one carries on where it stopped."""
    with _advisory_lock(_RUNNER_LOCK, bulk_id) as held:
        if not held:
            logger.info("bulk operation %s is being run by another worker", bulk_id)
            return None
        try:
            bulk = BulkOperation.objects.get(pk=bulk_id)
        except BulkOperation.DoesNotExist:
            return None
        if bulk.is_finished:
            return bulk
        _Runner(bulk).run()
        return BulkOperation.objects.get(pk=bulk_id)


class _Runner:
    """Runs one bulk operation's items, at most ``parallelism`` at a time, in order."""

    HEARTBEAT_SECONDS = 2.0

    def __init__(self, bulk: BulkOperation) -> None:
        self.bulk = bulk
        self.actor = recorded_actor(bulk)
        self.items = {item.pk: item for item in bulk.items.select_related("agent")}
        upward = bulk.options.get("upward", bulk.action in UPWARD)
        self.cascade = bulk.action in NEEDS_RUNNING_DEPENDENCIES or (
            bulk.kind == BulkOperation.Kind.ROLLBACK and upward
        )
        graph = DependencyGraph.load()
        item_of_agent = {item.agent_id: item.pk for item in self.items.values()}
        self.blockers: dict[int, set[int]] = {pk: set() for pk in self.items}
        for item in self.items.values():
            for dependency in graph.edges.get(item.agent_id, ()):
                if dependency in item_of_agent:
                    if upward:  # wait for the dependency
                        self.blockers[item.pk].add(item_of_agent[dependency])
                    else:  # the dependency waits for this dependent
                        self.blockers[item_of_agent[dependency]].add(item.pk)
        self._last_heartbeat = 0.0
        self.cancelled = False

    def run(self) -> None:
        bulk = self.bulk
        now = timezone.now()
        BulkOperation.objects.filter(pk=bulk.pk).update(
            status=BulkOperation.Status.RUNNING,
            started_at=bulk.started_at or now,
            heartbeat_at=now,
            runs=bulk.runs + 1,
        )
        events.emit_bulk("progress", bulk.pk)  # autocommit: delivered at once
        running: dict[Future, int] = {}
        with ThreadPoolExecutor(
            max_workers=bulk.parallelism, thread_name_prefix=f"bulk-{bulk.pk}"
        ) as pool:
            while True:
                self._heartbeat()
                if self.cancelled:
                    _skip_pending(
                        bulk.pk,
                        "cancelled",
                        _cancel_message(self._reload()),
                        exclude=running.values(),
                    )
                self._refresh()
                for pk in self._ready(exclude=set(running.values())):
                    if len(running) >= bulk.parallelism:
                        break
                    running[pool.submit(self._run_item_in_thread, pk)] = pk
                if not running:
                    if not any(not item.is_finished for item in self.items.values()):
                        break
                    # Nothing can start (blocked by unfinished items of nobody): should not happen.
                    _skip_pending(
                        bulk.pk, "blocked", "Not started: what it waited for never finished."
                    )
                    continue
                done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    pk = running.pop(future)
                    try:
                        future.result()
                    except Exception:
                        logger.exception("bulk %s item %s failed unexpectedly", bulk.pk, pk)
                        _finish_item(
                            pk,
                            BulkItem.Status.FAILED,
                            "unknown",
                            "Unexpected error; see the portal's log.",
                        )
        _finish(bulk.pk)

    def _reload(self) -> BulkOperation:
        return BulkOperation.objects.get(pk=self.bulk.pk)

    def _heartbeat(self) -> None:
        if not self.cancelled:
            self.cancelled = BulkOperation.objects.filter(
                pk=self.bulk.pk, cancel_requested_at__isnull=False
            ).exists()
        now = time.monotonic()
        if now - self._last_heartbeat >= self.HEARTBEAT_SECONDS:
            self._last_heartbeat = now
            BulkOperation.objects.filter(pk=self.bulk.pk).update(heartbeat_at=timezone.now())

    def _refresh(self) -> None:
        for item in BulkItem.objects.filter(bulk_id=self.bulk.pk).only(
            "id", "status", "agent_id", "code"
        ):
            known = self.items[item.pk]
            known.status, known.code = item.status, item.code

    def _ready(self, exclude: set[int]) -> list[int]:
        ready = []
        for pk, item in sorted(self.items.items(), key=lambda kv: kv[1].position):
            if item.is_finished or pk in exclude:
                continue
            blockers = [self.items[b] for b in self.blockers[pk]]
            if any(not b.is_finished for b in blockers):
                continue
            # A dependency that failed (or was skipped for any reason but being there already)
            # is not running: its dependents are not started.
            down = [
                b
                for b in blockers
                if b.status == BulkItem.Status.FAILED
                or (b.status == BulkItem.Status.SKIPPED and b.code != "already")
            ]
            if self.cascade and down and item.status == BulkItem.Status.PENDING:
                names = _names([b.agent for b in down], with_state=False)
                _finish_item(
                    pk, BulkItem.Status.SKIPPED, "dependency_failed",
                    f"Not started: {names} did not come up in this operation.",
                )  # fmt: skip
                item.status = BulkItem.Status.SKIPPED
                continue
            ready.append(pk)
        return ready

    def _run_item_in_thread(self, pk: int) -> None:
        try:
            self._run_item(pk)
        finally:
            connection.close()  # threads' connections are their own; give it back

    def _run_item(self, pk: int) -> None:
        # An item begun by an earlier run must finish even after a cancel; a pending one may
        # give up waiting for a slot.
        begun = BulkItem.objects.filter(pk=pk, status=BulkItem.Status.RUNNING).exists()
        slot = self._acquire_slot(may_give_up=not begun)
        if slot is None:
            _finish_item(pk, BulkItem.Status.SKIPPED, "cancelled", _cancel_message(self._reload()))
            return
        try:
            _run_item_steps(self.bulk, pk, self.actor)
        finally:
            if slot is not None:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_SLOT_LOCK, slot])

    def _acquire_slot(self, *, may_give_up: bool) -> int | None:
        """One of the machine-wide runtime-action slots; None if cancelled while waiting
        (when ``may_give_up``)."""
        ceiling = settings.AGENT_MAX_CONCURRENT_ACTIONS
        while True:
            with connection.cursor() as cursor:
                for slot in range(ceiling):
                    cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_SLOT_LOCK, slot])
                    if cursor.fetchone()[0]:
                        return slot
            if (
                may_give_up
                and BulkOperation.objects.filter(
                    pk=self.bulk.pk, cancel_requested_at__isnull=False
                ).exists()
            ):
                return None
            time.sleep(0.1)


def _run_item_steps(bulk: BulkOperation, pk: int, actor: Actor) -> None:
    """Take one item through its steps, recording each step's operation before running it."""
    with transaction.atomic():
        item = BulkItem.objects.select_for_update().select_related("agent").get(pk=pk)
        if item.is_finished:
            return
        if item.status == BulkItem.Status.PENDING:
            latest = BulkOperation.objects.get(pk=bulk.pk)
            if latest.cancel_requested_at is not None:
                _finish_item(pk, BulkItem.Status.SKIPPED, "cancelled", _cancel_message(latest))
                return
            if bulk.kind != BulkOperation.Kind.ROLLBACK:
                # Things may have moved since the plan: take the agent from where it is now.
                steps, code, message = steps_for(item.agent, bulk.action)
                if code:
                    _finish_item(pk, BulkItem.Status.SKIPPED, code, message)
                    return
                item.steps = steps
            item.status = BulkItem.Status.RUNNING
            item.started_at = timezone.now()
            item.save(update_fields=["status", "started_at", "steps"])
            events.emit_bulk("item", bulk.pk, pk)
    reason = f"bulk operation #{bulk.pk}"
    for index in range(item.steps_done, len(item.steps)):
        step = item.steps[index]
        if index < len(item.operation_ids):  # begun by an earlier run: finish that one
            operation_id = item.operation_ids[index]
        else:
            with transaction.atomic():
                agent = Agent.objects.get(pk=item.agent_id)
                try:
                    operation = request_action(
                        agent, step, actor, reason=reason, confirm=True, enqueue=False
                    )
                except (ActionRefused, PermissionDenied) as refused:
                    message = getattr(refused, "message", str(refused))
                    code = getattr(refused, "code", "forbidden")
                    # Busy with someone else's action: skipped, not failed.
                    status = BulkItem.Status.SKIPPED if code == "busy" else BulkItem.Status.FAILED
                    _finish_item(pk, status, code, message)
                    return
                item.operation_ids = [*item.operation_ids, str(operation.pk)]
                item.operation = operation
                item.save(update_fields=["operation_ids", "operation"])
            operation_id = str(operation.pk)
        operation = run_operation(operation_id)
        if operation.status != Operation.Status.SUCCEEDED:
            label = ACTION_LABELS[step][0]
            _finish_item(
                pk, BulkItem.Status.FAILED, operation.error_reason or "failed",
                f"{label} failed: {operation.error}",
            )  # fmt: skip
            return
        item.steps_done = index + 1
        BulkItem.objects.filter(pk=pk).update(steps_done=item.steps_done)
        events.emit_bulk("item", bulk.pk, pk)
    _finish_item(pk, BulkItem.Status.SUCCEEDED, "", "")


def _finish_item(pk: int, status: str, code: str, message: str) -> None:
    """Record how an item ended and update its operation's counts, in one transaction."""
    with transaction.atomic():
        item = BulkItem.objects.select_for_update().select_related("agent").get(pk=pk)
        if item.is_finished:
            return
        bulk = BulkOperation.objects.select_for_update().get(pk=item.bulk_id)
        item.status, item.code, item.message = status, code, message
        item.finished_at = timezone.now()
        item.to_state = Agent.objects.filter(pk=item.agent_id).values_list("state", flat=True)[0]
        item.save(update_fields=["status", "code", "message", "finished_at", "to_state"])
        _recount(bulk)
        events.emit_bulk("item", bulk.pk, pk)


def _recount(bulk: BulkOperation) -> None:
    counts = bulk.items.aggregate(
        total=Count("id"),
        succeeded=Count("id", filter=Q(status=BulkItem.Status.SUCCEEDED)),
        failed=Count("id", filter=Q(status=BulkItem.Status.FAILED)),
        skipped=Count("id", filter=Q(status=BulkItem.Status.SKIPPED)),
    )
    for name, value in counts.items():
        setattr(bulk, name, value)
    bulk.save(update_fields=list(counts))


def _skip_pending(bulk_id: int, code: str, message: str, exclude: Iterable[int] = ()) -> None:
    exclude = set(exclude)
    pending = BulkItem.objects.filter(bulk_id=bulk_id, status=BulkItem.Status.PENDING).exclude(
        pk__in=exclude
    )
    for pk in pending.values_list("pk", flat=True):
        _finish_item(pk, BulkItem.Status.SKIPPED, code, message)


def _finish(bulk_id: int) -> None:
    with transaction.atomic():
        bulk = BulkOperation.objects.select_for_update().get(pk=bulk_id)
        if bulk.is_finished:
            return
        _recount(bulk)
        cancelled_items = bulk.items.filter(code="cancelled").exists()
        if bulk.cancel_requested_at and cancelled_items:
            status = BulkOperation.Status.CANCELLED
        elif bulk.failed == 0:
            status = BulkOperation.Status.SUCCEEDED
        elif bulk.succeeded == 0:
            status = BulkOperation.Status.FAILED
        else:
            status = BulkOperation.Status.PARTIAL
        bulk.status = status
        bulk.finished_at = timezone.now()
        bulk.started_at = bulk.started_at or bulk.finished_at
        bulk.save(update_fields=["status", "finished_at", "started_at"])
        record_audit(
            recorded_actor(bulk), f"bulk.{bulk.action}", target=f"bulk:{bulk.pk}",
            outcome=AuditEntry.Outcome.FAILED if bulk.failed else AuditEntry.Outcome.SUCCESS,
            phase="completed", status=status, succeeded=bulk.succeeded, failed=bulk.failed,
            skipped=bulk.skipped, seconds=round(bulk.duration_seconds or 0, 1),
        )  # fmt: skip
        events.emit_bulk("finished", bulk.pk)


def resume_stalled_bulk_operations(older_than: timedelta = STALLED_AFTER) -> list[int]:
    """Hand every unfinished bulk operation whose runner is gone back to a worker.

    A runner holds the operation's advisory lock for as long as it lives; one we can take
    has no runner. Called by beat and when a worker starts. Returns the ids handed out.
    """
    from agents.tasks import run_bulk_operation_task

    cutoff = timezone.now() - older_than
    resumed = []
    for bulk in BulkOperation.objects.filter(
        status__in=[BulkOperation.Status.PENDING, BulkOperation.Status.RUNNING],
        requested_at__lte=cutoff,
    ).filter(Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lte=cutoff)):
        with _advisory_lock(_RUNNER_LOCK, bulk.pk) as free:
            if not free:
                continue
        logger.warning("bulk operation %s has no runner; handing it to a worker again", bulk.pk)
        run_bulk_operation_task.delay(bulk.pk)
        resumed.append(bulk.pk)
    return resumed


# --- reading -----------------------------------------------------------------------------------------


def estimate_seconds_left(bulk: BulkOperation) -> float | None:
    """Rough time to finish: the mean item time so far, times the waves still to go."""
    if bulk.is_finished or not bulk.pending:
        return None
    finished = [
        item.duration_seconds
        for item in bulk.items.filter(
            status__in=[BulkItem.Status.SUCCEEDED, BulkItem.Status.FAILED]
        ).only("started_at", "finished_at")
        if item.duration_seconds is not None
    ]
    if not finished:
        return None
    mean = sum(finished) / len(finished)
    waves = -(-bulk.pending // max(1, bulk.parallelism))
    return round(mean * waves, 1)


def bulk_summary(bulk: BulkOperation) -> dict:
    """A JSON-ready account of the operation and its items (API, CLI)."""
    items = list(bulk.items.select_related("agent"))
    return {
        "id": bulk.pk,
        "action": bulk.action,
        "kind": bulk.kind,
        "follows": bulk.follows_id,
        "status": bulk.status,
        "actor": bulk.actor,
        "parallelism": bulk.parallelism,
        "targets": bulk.targets,
        "filter": bulk.filter,
        "counts": {
            "total": bulk.total,
            "succeeded": bulk.succeeded,
            "failed": bulk.failed,
            "skipped": bulk.skipped,
            "pending": bulk.pending,
        },
        "cancel_requested": bulk.cancel_requested_at is not None,
        "requested_at": bulk.requested_at.isoformat(),
        "started_at": bulk.started_at.isoformat() if bulk.started_at else None,
        "finished_at": bulk.finished_at.isoformat() if bulk.finished_at else None,
        "duration_seconds": bulk.duration_seconds,
        "items": [
            {
                "agent": item.agent.slug,
                "name": item.agent.name,
                "status": item.status,
                "steps": item.steps,
                "steps_done": item.steps_done,
                "from_state": item.from_state,
                "to_state": item.to_state or None,
                "code": item.code or None,
                "message": item.message or None,
                "operations": item.operation_ids,
                "started_at": item.started_at.isoformat() if item.started_at else None,
                "finished_at": item.finished_at.isoformat() if item.finished_at else None,
                "duration_seconds": item.duration_seconds,
            }
            for item in items
        ],
    }
