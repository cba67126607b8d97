"""The actions on one of the customer's agents, each through its owner's services: restart
(``agents.services.request_action``), scale and roll back a version (servicing), roll back a
config (``agents.services.liveconfig``), and redrive the customer's own dead letters
(observability's redrive jobs, over the letters whose ``customer`` is this customer)."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from agents import services as agent_services
from agents.agentd import contract
from agents.models import Agent, Operation
from agents.services.liveconfig import roll_back_config
from helpdesk.actions import params as p
from helpdesk.actions.base import ActionResult
from helpdesk.models import Customer
from helpdesk.refusals import HelpdeskRefused
from observability.queues import catalog, deadletters, redrive
from observability.queues import services as queues
from observability.queues.models import RedriveJob
from portal.actors import Actor
from servicing.upgrades import requests as upgrades

# How long a restart asked with ``wait`` is waited for.
RESTART_WAIT_SECONDS = 90.0
# At most this many of the customer's letters are sent back by one action (the queue's limit).
REDRIVE_MAX = queues.SELECT_MAX


def _reason(customer: Customer, params: dict[str, Any]) -> str:
    why = p.text(params, "reason", limit=300)
    return f"help desk, {customer.key}" + (f": {why}" if why else "")


# --- restart -----------------------------------------------------------------------------------


def restart(actor: Actor, customer: Customer, agent: Agent | None, params: dict) -> ActionResult:
    assert agent is not None
    wait = p.flag(params, "wait")
    operation = agent_services.request_action(
        agent, "restart", actor, reason=_reason(customer, params), confirm=p.flag(params, "confirm")
    )
    details: dict[str, Any] = {"operation": str(operation.pk), "status": operation.status}
    if not wait:
        return ActionResult(
            "restart-agent", True,
            f"Restarting {agent.name}: operation {operation.pk} runs now; its card shows when it "
            "is back.",
            details,
        )  # fmt: skip
    operation = _wait_for(operation)
    details["status"] = operation.status
    if operation.status == Operation.Status.SUCCEEDED:
        return ActionResult(
            "restart-agent", True, f"Restarted {agent.name} (operation {operation.pk}).", details
        )
    if operation.is_finished:
        details["error"] = operation.error
        return ActionResult(
            "restart-agent", False,
            f"{agent.name} could not be restarted (operation {operation.pk}): {operation.error}",
            details,
        )  # fmt: skip
    return ActionResult(
        "restart-agent", True,
        f"Restarting {agent.name}: operation {operation.pk} is still {operation.status} after "
        f"{RESTART_WAIT_SECONDS:.0f} s; its card shows when it is back.",
        details,
    )  # fmt: skip


def _wait_for(operation: Operation) -> Operation:
    deadline = time.monotonic() + RESTART_WAIT_SECONDS
    while True:
        operation.refresh_from_db()
        if operation.is_finished or time.monotonic() > deadline:
            return operation
        time.sleep(0.25)


def describe_restart(customer: Customer, agent: Agent | None, params: dict) -> str:
    assert agent is not None
    return f"Restart {agent.name} (now {agent.state}): its replicas stop and start again."


# --- start (or resume), raise the memory limit -------------------------------------------------

STARTABLE = {"DEPLOYED": "start", "STOPPED": "start", "SUSPENDED": "resume"}


def start(actor: Actor, customer: Customer, agent: Agent | None, params: dict) -> ActionResult:
    """Start a stopped (or deployed) agent, resume a suspended one; refused in other states by
    the lifecycle's own rules (its sentence says why)."""
    assert agent is not None
    action = STARTABLE.get(agent.state, "start")
    operation = agent_services.request_action(
        agent, action, actor, reason=_reason(customer, params)
    )
    verb = "Resuming" if action == "resume" else "Starting"
    return ActionResult(
        "start-agent", True,
        f"{verb} {agent.name}: operation {operation.pk} runs now; its card shows when it is up.",
        {"operation": str(operation.pk), "status": operation.status, "lifecycle": action},
    )  # fmt: skip


def describe_start(customer: Customer, agent: Agent | None, params: dict) -> str:
    assert agent is not None
    verb = "Resume" if STARTABLE.get(agent.state) == "resume" else "Start"
    return f"{verb} {agent.name} (now {agent.state})."


def _raised_memory(agent: Agent, params: dict) -> int:
    ceiling = settings.AGENT_MEMORY_CEILING_MB
    default = min(ceiling, max(agent.memory_mb * 2, agent.memory_mb + 128))
    return p.whole(params, "memory_mb", 1, ceiling, default)


def raise_memory(
    actor: Actor, customer: Customer, agent: Agent | None, params: dict
) -> ActionResult:
    """Raise the agent's memory limit (agents' own service, up to AGENT_MEMORY_CEILING_MB),
    then restart it so the new limit takes effect."""
    assert agent is not None
    memory_mb, was = _raised_memory(agent, params), agent.memory_mb
    raised = agent_services.set_memory_limit(agent, memory_mb, actor)
    operation = agent_services.request_action(
        raised, "restart", actor, reason=_reason(customer, params) + f", memory {was} → {memory_mb} MiB",
        confirm=p.flag(params, "confirm"),
    )  # fmt: skip
    return ActionResult(
        "raise-memory", True,
        f"{agent.name} may use {memory_mb} MiB now (was {was}); restarting it with the new limit "
        f"(operation {operation.pk}).",
        {"memory_mb": memory_mb, "was": was, "operation": str(operation.pk)},
    )  # fmt: skip


def describe_raise_memory(customer: Customer, agent: Agent | None, params: dict) -> str:
    assert agent is not None
    return (
        f"Raise {agent.name}'s memory limit {agent.memory_mb} → {_raised_memory(agent, params)} MiB, "
        "then restart it."
    )


# --- scale -------------------------------------------------------------------------------------


def scale(actor: Actor, customer: Customer, agent: Agent | None, params: dict) -> ActionResult:
    assert agent is not None
    replicas = p.whole(params, "replicas", 1, upgrades.MAX_REPLICAS, None)
    was = agent.replicas
    done = upgrades.scale(actor, agent, replicas)
    return ActionResult(
        "scale-agent", True,
        f"{agent.name} runs {done['replicas']} replica(s) now (was {was}), in {done['seconds']} s.",
        {**done, "was": was},
    )  # fmt: skip


def describe_scale(customer: Customer, agent: Agent | None, params: dict) -> str:
    assert agent is not None
    replicas = p.whole(params, "replicas", 1, upgrades.MAX_REPLICAS, None)
    return f"Scale {agent.name} from {agent.replicas} to {replicas} replica(s)."


# --- roll back a version, a config -------------------------------------------------------------


def rollback_version(
    actor: Actor, customer: Customer, agent: Agent | None, params: dict
) -> ActionResult:
    assert agent is not None
    upgrade = upgrades.rollback_agent(actor, agent, _reason(customer, params))
    details = {"upgrade": upgrade.pk, "to_version": upgrade.to_version,
               "workflow_run": upgrade.run_id}  # fmt: skip
    return ActionResult(
        "rollback-version", True,
        f"Rolling {agent.name} back to {upgrade.to_version} (upgrade #{upgrade.pk}); the version "
        "it left is pinned.",
        details,
    )  # fmt: skip


def describe_rollback_version(customer: Customer, agent: Agent | None, params: dict) -> str:
    assert agent is not None
    return f"Roll {agent.name} back from {agent.version} to the version it ran before its last upgrade."


def rollback_config(
    actor: Actor, customer: Customer, agent: Agent | None, params: dict
) -> ActionResult:
    assert agent is not None
    applied = roll_back_config(agent, actor)
    ok = applied.all_applied or agent.state != "RUNNING"
    return ActionResult(
        "rollback-config", ok,
        f"{agent.name} has its previous config back"
        + ("" if applied.all_applied else "; not every replica took it, see details")
        + ".",
        {"config": applied.agent.config, "replicas": applied.replicas},
    )  # fmt: skip


def describe_rollback_config(customer: Customer, agent: Agent | None, params: dict) -> str:
    assert agent is not None
    if agent.previous_config is None:
        return f"Nothing: {agent.name} has no earlier config to go back to."
    return f"Put {agent.name}'s config before its last change back, on its running replicas too."


# --- redrive the customer's dead letters -------------------------------------------------------


def customer_letters(agent: Agent, customer: Customer) -> tuple[list[str], int]:
    """The ids of the customer's dead letters on ``agent`` (oldest first, at most
    REDRIVE_MAX), and how many there are in all."""
    ref = catalog.for_agent(agent)
    ids: list[str] = []
    total = 0
    for entry_id, fields in deadletters.iterate(catalog.agent_redis(), ref):
        if fields.get(contract.FIELD_CUSTOMER) == customer.key:
            total += 1
            if len(ids) < REDRIVE_MAX:
                ids.append(entry_id)
    return ids, total


def redrive_letters(
    actor: Actor, customer: Customer, agent: Agent | None, params: dict
) -> ActionResult:
    assert agent is not None
    force = p.flag(params, "force")
    ids, total = customer_letters(agent, customer)
    if not ids:
        raise HelpdeskRefused(
            f"{agent.name} has no dead letters of {customer.company_name}; nothing to send back.",
            "conflict",
        )
    ref = catalog.for_agent(agent)
    job = queues.start_job(
        actor, ref.name, RedriveJob.Action.REDRIVE, RedriveJob.Scope.SELECTED, ids=ids,
        force=force, enqueue=False,
    )  # fmt: skip
    # At most REDRIVE_MAX moves by one script each: carried out here, so the answer says it.
    finished = redrive.run(job.pk) or job
    finished.refresh_from_db()
    left = total - len(ids)
    ok = finished.status == RedriveJob.Status.SUCCEEDED
    message = (
        f"Sent {finished.done} of {customer.company_name}'s dead letters on {agent.name} back "
        f"to its queue (job {job.pk})."
    )
    if not ok:
        message = (
            f"Redrive job {job.pk} on {agent.name} ended {finished.status}: {finished.message}"
        )
    if left:
        message += f" {left} more are left: run the action again."
    return ActionResult(
        "redrive-dead-letters", ok, message,
        {"job": job.pk, "status": finished.status, "selected": len(ids), "sent": finished.done,
         "left": left},
    )  # fmt: skip


def describe_redrive(customer: Customer, agent: Agent | None, params: dict) -> str:
    assert agent is not None
    _ids, total = customer_letters(agent, customer)
    if not total:
        return f"Nothing: {agent.name} has no dead letters of {customer.company_name}."
    return (
        f"Send {min(total, REDRIVE_MAX)} of {customer.company_name}'s {total} dead letter(s) on "
        f"{agent.name} back to its queue (other customers' letters stay)."
    )
