"""Planning a bulk operation: which agents (named, or by filter), in which order (dependencies first going up, dependents first going down), the steps for each from its state, who else it affects, and how to roll it back. Nothing here changes anything."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from django.conf import settings

from agents import lifecycle
from agents.models import (
    Agent,
    BulkItem,
    BulkOperation,
    State,
)
from agents.services.actions import illegal_action_message, pinned_version
from agents.services.graph import DependencyGraph, names_of
from agents.services.refusals import ActionRefused
from portal import roles
from portal.actors import Actor
from portal.refusals import BadFilter

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
ROLLBACK = "rollback"
BULK_ACTION_LABELS = {
    **{name: lifecycle.action(name).label for name in BULK_ACTIONS},
    ROLLBACK: "Roll back",
}


def is_upward(action: str) -> bool:
    """Whether a bulk action brings agents up (dependencies first); a roll-back is not one of
    the lifecycle's actions and goes its own way (``plan_rollback``)."""
    return action != ROLLBACK and lifecycle.is_upward(action)


def needs_running_dependencies(action: str) -> bool:
    return action != ROLLBACK and lifecycle.action(action).needs_running_dependencies


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


# How an agent that a bulk operation changed gets back to where it was: (now, before) → steps.
# The state reached is the one before, except that a started agent cannot become DEPLOYED
# again: stopping it is the closest (deployed, not running).
_ROLLBACK_STEPS: dict[tuple[str, str], tuple[list[str], str]] = {
    (State.RUNNING, State.STOPPED): (["stop"], State.STOPPED),
    (State.RUNNING, State.DEPLOYED): (["stop"], State.STOPPED),
    (State.RUNNING, State.SUSPENDED): (["suspend"], State.SUSPENDED),
    (State.SUSPENDED, State.RUNNING): (["resume"], State.RUNNING),
    (State.STOPPED, State.RUNNING): (["start"], State.RUNNING),
    (State.STOPPED, State.SUSPENDED): (["start", "suspend"], State.SUSPENDED),
}


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
        by_slug = {agent.slug: agent for agent in Agent.objects.filter(slug__in=targets)}
        unknown = [slug for slug in targets if slug not in by_slug]
        if unknown:
            raise BulkRefused(
                f"There is no agent {', '.join(repr(s) for s in unknown)}; "
                "`manage.py agents list` or the Agents page lists them.",
                code="unknown",
            )
        seen: dict[str, Agent] = {}
        for slug in targets:
            seen.setdefault(slug, by_slug[slug])
        return list(seen.values())
    unknown_keys = sorted(set(filter) - {"all", "state", "tier"})
    if unknown_keys:
        raise BulkRefused(
            f"Unknown filter {', '.join(unknown_keys)}; filter by all, state or tier.",
            code="invalid",
        )
    agents = Agent.objects.all()
    try:
        agents = agents.filtered(state=filter.get("state"), tier=filter.get("tier"))
    except BadFilter as bad:
        raise BulkRefused(bad.message, code="invalid") from None
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
        value = int(cast(Any, parallelism))  # a number or its text; anything else is refused
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
        if state in lifecycle.DEPLOY_AND_START_STEPS:
            return list(lifecycle.DEPLOY_AND_START_STEPS[state]), "", ""
        return [], "illegal", illegal_action_message(agent, "start")
    if action == "deploy":
        if state == State.DEPLOYED:
            return [], "already", f"{agent.name} is already DEPLOYED."
        if state in lifecycle.DEPLOY_STEPS:
            return list(lifecycle.DEPLOY_STEPS[state]), "", ""
        return [], "illegal", illegal_action_message(agent, "deploy")
    if action != "restart" and state == lifecycle.action(action).target:
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
        elif "deploy" in steps and (pinned := pinned_version(agent, graph)):
            item.skip("pinned", pinned)
        elif agent.pk in busy_in:
            item.skip(
                "busy",
                f"{agent.name} is in bulk operation #{busy_in[agent.pk]}, which has not finished.",
            )
        else:
            item.steps, item.to_state = steps, lifecycle.action(action).target
    ordered = _ordered(items, graph, upward=is_upward(action))
    if needs_running_dependencies(action):
        _skip_missing_dependencies(ordered, graph)
    if lifecycle.action(action).disrupts_dependents:
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
                f"{item.agent.name} needs {names_of(missing)}, which "
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
        "rollback", _ordered(items, graph, upward=not is_upward(bulk.action)), parallelism
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
