"""The lifecycle in one table: every action, what it does to an agent and to the agents around it.

Pure data and functions: no database, no runtime, no I/O. The state machine's transitions
(``Agent`` in agents.models) say which state allows which action; this table says the rest, and
every door reads it: the services (dependency checks, undo), bulk operations (targets, steps,
order), the admin's actions, the command line and the pages (labels).

One ordering rule for many agents, whatever the door: actions that bring agents up go
dependencies first; actions that take them down go dependents first (see ``in_order``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from django.db import models


class State(models.TextChoices):
    DRAFT = "DRAFT", "Draft"
    PROVISIONED = "PROVISIONED", "Provisioned"
    DEPLOYED = "DEPLOYED", "Deployed"
    RUNNING = "RUNNING", "Running"
    SUSPENDED = "SUSPENDED", "Suspended"
    STOPPED = "STOPPED", "Stopped"
    ERRORED = "ERRORED", "Errored"
    REVOKED = "REVOKED", "Revoked"


UP, DOWN = "up", "down"


@dataclass(frozen=True)
class Action:
    name: str
    label: str  # "Stop": buttons, menus, toasts
    doing: str  # "stopping": a card while it runs
    done: str  # "stopped": messages once it has
    target: str  # the state it leaves a changed agent in
    direction: str  # UP (dependencies first) or DOWN (dependents first)
    # Ends with the agent running, so what it depends on must be running.
    needs_running_dependencies: bool = False
    # Takes the agent away from the agents that depend on it.
    disrupts_dependents: bool = False
    # The action that undoes it (Undo in the result toast), if any.
    inverse: str = ""


_TABLE = [
    Action("provision", "Provision", "provisioning", "provisioned", State.PROVISIONED, UP),
    Action("deploy", "Deploy", "deploying", "deployed", State.DEPLOYED, UP),
    Action("start", "Start", "starting", "started", State.RUNNING, UP,
           needs_running_dependencies=True, inverse="stop"),
    Action("stop", "Stop", "stopping", "stopped", State.STOPPED, DOWN,
           disrupts_dependents=True, inverse="start"),
    Action("suspend", "Suspend", "suspending", "suspended", State.SUSPENDED, DOWN,
           disrupts_dependents=True, inverse="resume"),
    Action("resume", "Resume", "resuming", "resumed", State.RUNNING, UP,
           needs_running_dependencies=True, inverse="suspend"),
    Action("restart", "Restart", "restarting", "restarted", State.RUNNING, UP,
           needs_running_dependencies=True),
    Action("revoke", "Revoke", "revoking", "revoked", State.REVOKED, DOWN,
           disrupts_dependents=True),
]  # fmt: skip
# The system's own transition (a crash), never asked for.
FAIL = Action("fail", "Fail", "failing", "failed", State.ERRORED, DOWN)
# Bulk operations only: whatever it takes to have the agent running.
DEPLOY_AND_START = Action(
    "deploy_and_start", "Deploy and start", "deploying and starting", "deployed and started",
    State.RUNNING, UP, needs_running_dependencies=True,
)  # fmt: skip

ACTIONS_BY_NAME: dict[str, Action] = {action.name: action for action in _TABLE}
# The eight actions people take, in menu order.
ACTIONS: list[str] = [action.name for action in _TABLE]
# (label, doing) by name, "fail" included: the pages' and messages' words.
ACTION_LABELS: dict[str, tuple[str, str]] = {
    action.name: (action.label, action.doing) for action in [*_TABLE, FAIL]
}
# Not a transition: the pending marker an agent carries while servicing replaces its replicas.
UPGRADE = "upgrade"
ACTION_LABELS[UPGRADE] = ("Upgrade", "upgrading")
SCALE = "scale"
ACTION_LABELS[SCALE] = ("Scale", "scaling")

# The steps that take an agent from each state to RUNNING (bringing a dependency up).
STEPS_TO_RUNNING: dict[str, list[str]] = {
    State.DRAFT: ["provision", "deploy", "start"],
    State.PROVISIONED: ["deploy", "start"],
    State.DEPLOYED: ["start"],
    State.STOPPED: ["start"],
    State.SUSPENDED: ["resume"],
    State.ERRORED: ["restart"],
}
# The steps of a bulk "deploy and start" and "deploy" from each state they apply to.
DEPLOY_AND_START_STEPS: dict[str, list[str]] = {
    State.DRAFT: ["provision", "deploy", "start"],
    State.PROVISIONED: ["deploy", "start"],
    State.DEPLOYED: ["start"],
    State.STOPPED: ["start"],
}
DEPLOY_STEPS: dict[str, list[str]] = {
    State.DRAFT: ["provision", "deploy"],
    State.PROVISIONED: ["deploy"],
    State.STOPPED: ["deploy"],
}
# States in which the agent exists on its runtime (a container, a process, a deployment).
DEPLOYED_STATES = [State.DEPLOYED, State.RUNNING, State.SUSPENDED, State.STOPPED, State.ERRORED]
LIVE_STATES = [State.DEPLOYED, State.RUNNING, State.SUSPENDED]
NOT_REVOKED = [state for state in State.values if state != State.REVOKED]


def action(name: str) -> Action:
    """The row of an action people take, or of the bulk-only "deploy_and_start"."""
    if name == DEPLOY_AND_START.name:
        return DEPLOY_AND_START
    return ACTIONS_BY_NAME[name]


def is_upward(name: str) -> bool:
    return action(name).direction == UP


T = TypeVar("T")


def in_order(name: str, dependencies_first: Sequence[T]) -> list[T]:
    """The order to act on many agents: given them dependencies first, the same for an action
    that brings agents up, reversed (dependents first) for one that takes them down."""
    ordered = list(dependencies_first)
    return ordered if is_upward(name) else ordered[::-1]
