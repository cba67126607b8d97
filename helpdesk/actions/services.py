"""Quick actions on a customer and its agents, the one way every door (page, API, command, the
Issue Detective's one-click fix, a playbook step) takes them.

``run_action(actor, customer, action, agent=..., params=...)`` checks the role (Operator; for a
restart, a grant on this customer's agents does too), that the agent is one of THIS customer's,
and the params, refusing with a sentence before anything changes (``HelpdeskRefused``, or the
owning app's refusal); then it calls the owning app's service and audits
``helpdesk.action.<name>`` with the customer and the agent. ``describe_action`` says what it
would do, for dry runs and confirmations, changing nothing.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction

from agents.models import Agent
from helpdesk.actions import account, cache, fleet, grants
from helpdesk.actions import params as p
from helpdesk.actions.base import ActionResult, Spec
from helpdesk.models import Customer, CustomerAgent
from helpdesk.refusals import HelpdeskRefused
from portal import roles
from portal.actors import Actor
from portal.models import AuditEntry
from portal.refusals import Refused
from portal.services import record_audit

__all__ = ["ACTIONS", "SPECS", "ActionResult", "describe_action", "run_action", "spec"]

ACTIONS = (
    "restart-agent", "start-agent", "scale-agent", "raise-memory", "clear-cache", "reset-trial",
    "resend-email", "grant-access", "revoke-access", "redrive-dead-letters", "rollback-version",
    "rollback-config",
)  # fmt: skip

_SPECS = (
    Spec("restart-agent", "Restart", "required", ("wait", "confirm", "reason"), True,
         fleet.restart, fleet.describe_restart, "Stop and start the agent's replicas."),
    Spec("start-agent", "Start", "required", ("reason",), False,
         fleet.start, fleet.describe_start, "Start a stopped agent, resume a suspended one."),
    Spec("scale-agent", "Scale", "required", ("replicas",), False,
         fleet.scale, fleet.describe_scale, "Run the agent on this many replicas."),
    Spec("raise-memory", "Raise memory", "required", ("memory_mb", "confirm", "reason"), True,
         fleet.raise_memory, fleet.describe_raise_memory,
         "Raise the agent's memory limit (default: double), then restart it."),
    Spec("clear-cache", "Clear cache", "optional", (), True,
         cache.clear_cache, cache.describe_clear_cache,
         "Delete the customer's keys in its memory stores and WowCache."),
    Spec("reset-trial", "Reset trial", "none", ("days",), False,
         account.reset_trial, account.describe_reset_trial, "Extend the trial by some days.",
         atomic=True),
    Spec("resend-email", "Resend email", "none", ("kind", "to"), False,
         account.resend_email, account.describe_resend_email,
         "Send a notification email again to a contact."),
    Spec("grant-access", "Grant access", "none", ("username", "hours", "role", "reason"), False,
         grants.grant_access, grants.describe_grant,
         "Give a user the Operator role on this customer's agents for some hours.", atomic=True),
    Spec("revoke-access", "Revoke access", "none", ("grant", "username"), True,
         grants.revoke_access, grants.describe_revoke, "End a temporary access now.",
         atomic=True),
    Spec("redrive-dead-letters", "Redrive dead letters", "required", ("force",), True,
         fleet.redrive_letters, fleet.describe_redrive,
         "Send this customer's dead letters on the agent back to its queue."),
    Spec("rollback-version", "Roll back version", "required", ("reason",), True,
         fleet.rollback_version, fleet.describe_rollback_version,
         "Take the agent back to the version before its last upgrade."),
    Spec("rollback-config", "Roll back config", "required", (), True,
         fleet.rollback_config, fleet.describe_rollback_config,
         "Put the agent's config before its last change back."),
)  # fmt: skip
SPECS: dict[str, Spec] = {s.name: s for s in _SPECS}
# What a temporary grant on the customer's agents allows: their lifecycle.
LIFECYCLE = ("restart-agent", "start-agent")
assert tuple(SPECS) == ACTIONS


def spec(action: object) -> Spec:
    found = SPECS.get(action) if isinstance(action, str) else None
    if found is None:
        shown = str(action)[:40].replace("\x00", "\\0")
        raise HelpdeskRefused(
            f"{shown!r} is not a quick action; use one of {', '.join(ACTIONS)}.", "not_found"
        )
    return found


def customer_agent(customer: Customer, agent: object) -> Agent:
    """``agent`` (a slug or an Agent) if it is one of the customer's agents; a refusal saying
    which agents are the customer's otherwise."""
    slug = agent.slug if isinstance(agent, Agent) else agent
    if not isinstance(slug, str) or not slug.strip() or "\x00" in slug or len(slug) > 63:
        raise HelpdeskRefused("Name the agent by its slug, such as acme-support.", "invalid")
    link = (
        CustomerAgent.objects.filter(customer=customer, agent__slug=slug.strip())
        .select_related("agent")
        .first()
    )
    if link is None:
        own = list(customer.links.values_list("agent__slug", flat=True).order_by("agent__slug"))
        raise HelpdeskRefused(
            f"{slug.strip()!r} is not one of {customer.company_name}'s agents, so the help desk "
            f"will not act on it; its agents: {', '.join(own) or 'none'}.",
            "forbidden",
        )
    return link.agent


def _target(customer: Customer, found: Spec, agent: object) -> Agent | None:
    if found.agent == "none":
        if agent not in (None, ""):
            raise HelpdeskRefused(
                f"{found.name} acts on the customer, not on an agent; leave the agent out.",
                "invalid",
            )
        return None
    if agent in (None, ""):
        if found.agent == "required":
            raise HelpdeskRefused(
                f"{found.name} acts on one of {customer.company_name}'s agents: name it.",
                "invalid",
            )
        return None
    return customer_agent(customer, agent)


def _require(actor: Actor, found: Spec, customer: Customer, agent: Agent | None) -> None:
    if actor.has(roles.OPERATE):
        return
    # Temporary access: Operator on this customer's agents, for lifecycle actions.
    scoped = agent is not None and grants.scoped_role(actor.user, agent) == roles.OPERATOR
    if found.name in LIFECYCLE and scoped:
        return
    actor.require(roles.OPERATE, f"{found.label.lower()} for {customer.company_name}")


def run_action(
    actor: Actor,
    customer: Customer,
    action: str,
    *,
    agent: str | Agent | None = None,
    params: dict | None = None,
) -> ActionResult:
    """Take quick action ``action`` for ``customer`` (on its ``agent`` where it needs one) with
    ``params``; audited. Raises ``PermissionDenied`` or a ``Refused`` with nothing changed;
    answers an ``ActionResult`` (``ok`` False when it was carried out and did not work)."""
    found = spec(action)
    target: Agent | None = None
    try:
        with transaction.atomic() if found.atomic else nullcontext():
            target = _target(customer, found, agent)
            _require(actor, found, customer, target)
            values = p.check_params(params, found.params, found.name)
            result = found.run(actor, customer, target, values)
            with transaction.atomic():
                record_audit(
                    actor, f"helpdesk.action.{found.name}", target=f"customer:{customer.key}",
                    outcome=AuditEntry.Outcome.SUCCESS if result.ok else AuditEntry.Outcome.FAILED,
                    customer=customer.key, agent=target.slug if target else "",
                    params=_shown(params), message=result.message, details=result.details,
                )  # fmt: skip
    except (Refused, PermissionDenied) as refused:
        _audit_refusal(actor, found, customer, target, agent, refused)
        raise
    return result


def _shown(params: object) -> dict[str, Any]:
    if not isinstance(params, dict):
        return {}
    return {str(k)[:40]: str(v)[:100] for k, v in list(params.items())[:10]}


def _audit_refusal(actor, found, customer, target, agent, refused) -> None:
    slug = target.slug if target else (agent if isinstance(agent, str) else "")
    record_audit(
        actor, f"helpdesk.action.{found.name}", target=f"customer:{customer.key}",
        outcome=AuditEntry.Outcome.REFUSED, customer=customer.key,
        agent=str(slug or "")[:63].replace("\x00", ""),
        error=getattr(refused, "message", str(refused)),
    )  # fmt: skip


def describe_action(
    customer: Customer, action: str, *, agent: str | Agent | None = None, params: dict | None = None
) -> str:
    """What ``run_action`` would do now, in a sentence; refuses what it would refuse (an
    unknown action, another customer's agent, bad params). Changes nothing."""
    found = spec(action)
    target = _target(customer, found, agent)
    values = p.check_params(params, found.params, found.name)
    return found.describe(customer, target, values)
