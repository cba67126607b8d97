"""The playbooks the help desk ships with, as data, and the rules every playbook's steps follow
(seeded or edited by an Admin).

A step is ``{"id", "kind": "check"|"action", "title"}`` plus, for a check, ``"check"`` (a name
from ``checks.CHECKS``) and ``"expect"``; for an action, ``"action"`` (a quick action),
``"params"``, ``"approval"`` (true for destructive ones: the run waits for an Operator) and
either ``"target"`` (the id of an earlier check: the action is taken on each agent that check
found short) or, for an action on the customer, ``"when"`` (an earlier check: taken only if
that check is not ok).
"""

from __future__ import annotations

import re
from typing import Any

from helpdesk.actions.services import SPECS
from helpdesk.playbooks.checks import CHECKS

STEP_ID = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
MAX_STEPS = 30
STEP_KEYS = {
    "check": {"id", "kind", "title", "check", "expect"},
    "action": {"id", "kind", "title", "action", "params", "approval", "target", "when"},
}


def check(name: str, step_id: str, title: str, expect: Any = True) -> dict[str, Any]:
    return {"id": step_id, "kind": "check", "title": title, "check": name, "expect": expect}


def action(step_id: str, title: str, name: str, *, params: dict | None = None,
           approval: bool = False, target: str = "", when: str = "") -> dict[str, Any]:  # fmt: skip
    step: dict[str, Any] = {"id": step_id, "kind": "action", "title": title, "action": name,
                            "params": params or {}, "approval": approval}  # fmt: skip
    if target:
        step["target"] = target
    if when:
        step["when"] = when
    return step


SEED: tuple[dict[str, Any], ...] = (
    {
        "slug": "agent-not-responding", "title": "Agent not responding", "category": "not_responding",
        "description": "The customer says an agent does not answer: check the agents run and are "
        "healthy and their queues are not backed up; restart the ones that are down or unhealthy "
        "(approval), scale the backed-up ones, and send the customer's dead letters back.",
        "steps": [
            check("agents_running", "running", "The agents are running"),
            check("agents_healthy", "healthy", "The running agents are healthy"),
            check("queue_backlog", "backlog", "Queues are not backed up", {"max": 100}),
            check("dead_letters", "letters", "No dead letters for the customer", {"max": 0}),
            action("restart", "Restart the unhealthy agents", "restart-agent", approval=True, target="healthy"),
            action("scale", "Scale the backed-up agents to 3 replicas", "scale-agent", params={"replicas": 3}, approval=True, target="backlog"),
            action("redrive", "Send the customer's dead letters back", "redrive-dead-letters", approval=True, target="letters"),
        ],
    },
    {
        "slug": "slow-performance", "title": "Slow performance", "category": "slow",
        "description": "Tasks take too long: check recent latency (p95) and backlogs, then scale "
        "the slow or backed-up agents (approval).",
        "steps": [
            check("slow_interactions", "latency", "Recent tasks are fast enough", {"max_ms": 2000}),
            check("queue_backlog", "backlog", "Queues are not backed up", {"max": 100}),
            action("scale-slow", "Scale the slow agents to 3 replicas", "scale-agent", params={"replicas": 3}, approval=True, target="latency"),
            action("scale-backlog", "Scale the backed-up agents to 3 replicas", "scale-agent", params={"replicas": 3}, approval=True, target="backlog"),
        ],
    },
    {
        "slug": "authentication-errors", "title": "Authentication errors", "category": "auth",
        "description": "Tasks fail with 401/403 or token errors: count them, roll back the config "
        "of the agents failing that way (a changed credential is the usual cause; approval), then "
        "clear the customer's cache of stale tokens (approval).",
        "steps": [
            check("auth_errors", "auth", "No authentication errors in 24 h", {"max": 0}),
            action("rollback-config", "Roll back the config of the failing agents", "rollback-config", approval=True, target="auth"),
            action("clear-cache", "Clear the customer's cached tokens", "clear-cache", approval=True, when="auth"),
        ],
    },
    {
        "slug": "trial-not-activating", "title": "Trial not activating", "category": "trial",
        "description": "A new customer's trial does not work: check the trial is active and the "
        "agents run; extend an expired trial by 7 days and send the welcome email again.",
        "steps": [
            check("trial_active", "trial", "The trial is active"),
            check("agents_running", "running", "The agents are running"),
            action("reset-trial", "Extend the trial by 7 days", "reset-trial", params={"days": 7}, approval=True, when="trial"),
            action("welcome", "Send the welcome email again", "resend-email", params={"kind": "welcome"}, when="trial"),
        ],
    },
    {
        "slug": "payment-failures", "title": "Payment failures", "category": "payment",
        "description": "A payment failed: check the last payment and send the payment-failed "
        "email to the primary contact.",
        "steps": [
            check("payment_ok", "payment", "No failed payment in 30 days"),
            action("notify", "Send the payment-failed email", "resend-email", params={"kind": "payment-failed"}, when="payment"),
        ],
    },
    {
        "slug": "crash-loop", "title": "Crash loop", "category": "crash",
        "description": "An agent keeps dying: find the crashing agents, roll back their last "
        "version (approval) and check they run again.",
        "steps": [
            check("crash_loop", "crashing", "No agent is crash-looping", {"max": 2}),
            action("rollback", "Roll back the crashing agents' version", "rollback-version", approval=True, target="crashing"),
            check("agents_running", "running-again", "The agents are running again"),
        ],
    },
    {
        "slug": "dead-letter-storm", "title": "Dead-letter storm", "category": "dead_letters",
        "description": "Many of the customer's tasks end as dead letters: count them and the "
        "recent failures, then send the letters back once the cause is fixed (approval).",
        "steps": [
            check("dead_letters", "letters", "Few dead letters for the customer", {"max": 10}),
            check("recent_failures", "failures", "Few failed tasks in the last hour", {"max": 20}),
            action("redrive", "Send the customer's dead letters back", "redrive-dead-letters", approval=True, target="letters"),
        ],
    },
)  # fmt: skip


def check_steps(steps: object) -> list[dict[str, Any]]:
    """``steps`` as a playbook may have them; ``ValueError`` names the step and what is wrong."""
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
        raise ValueError(f"steps is a list of 1 to {MAX_STEPS} steps")
    seen: dict[str, dict[str, Any]] = {}
    for number, step in enumerate(steps, 1):
        where = f"step {number}"
        if not isinstance(step, dict):
            raise ValueError(f"{where} is not an object")
        step_id = step.get("id")
        if not isinstance(step_id, str) or not STEP_ID.match(step_id) or step_id in seen:
            raise ValueError(f"{where}: id is unique, lower case letters, digits and -")
        where = f"step {step_id!r}"
        kind = step.get("kind")
        if kind not in STEP_KEYS:
            raise ValueError(f"{where}: kind is check or action")
        extra = set(step) - STEP_KEYS[kind]
        if extra:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        title = step.get("title")
        if not isinstance(title, str) or not title.strip() or len(title) > 200 or "\x00" in title:
            raise ValueError(f"{where}: title is text of 1 to 200 characters")
        if kind == "check":
            _check_check(where, step)
        else:
            _check_action(where, step, seen)
        seen[step_id] = step
    return steps


def _check_check(where: str, step: dict[str, Any]) -> None:
    found = CHECKS.get(step.get("check"))  # type: ignore[arg-type]
    if found is None:
        raise ValueError(f"{where}: check is one of {', '.join(CHECKS)}")
    try:
        found.check_expect(step.get("expect"))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _check_action(where: str, step: dict[str, Any], seen: dict[str, dict[str, Any]]) -> None:
    spec = SPECS.get(step.get("action"))  # type: ignore[arg-type]
    if spec is None:
        raise ValueError(f"{where}: action is one of {', '.join(SPECS)}")
    params = step.get("params", {})
    if not isinstance(params, dict) or set(params) - set(spec.params):
        raise ValueError(f"{where}: params of {spec.name} are {', '.join(spec.params) or 'none'}")
    if not isinstance(step.get("approval", False), bool):
        raise ValueError(f"{where}: approval is true or false")
    for key in ("target", "when"):
        ref = step.get(key)
        if ref is not None and (ref not in seen or seen[ref]["kind"] != "check"):
            raise ValueError(f"{where}: {key} names an earlier check")
    if spec.agent == "required" and "target" not in step:
        raise ValueError(
            f"{where}: {spec.name} acts on agents: target names the check that finds them"
        )
    if spec.agent == "none" and "target" in step:
        raise ValueError(f"{where}: {spec.name} acts on the customer: use when, not target")
