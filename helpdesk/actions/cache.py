"""Clearing a customer's cache: every running memory store that serves the customer (its own
memory-template agents, and WowCache when it runs the memory template) is asked to
``forget_customer`` by a task carrying the customer, and answers on a reply stream how many keys
it deleted; the action waits for those replies and says what was deleted where."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from agents.agentd import contract
from agents.lifecycle import State
from agents.models import Agent
from agents.workflows.steps import agent_redis
from helpdesk.actions.base import ActionResult
from helpdesk.models import Customer
from helpdesk.refusals import HelpdeskRefused
from observability.queues.services import producer_of
from portal.actors import Actor

MEMORY_TEMPLATE = "memory"
# The platform's shared cache: it serves every customer when it runs the memory template.
SHARED_CACHE = "wow-cache"
REPLY_TIMEOUT_SECONDS = 15.0
FORGET = {"op": "forget_customer"}


def memory_stores(customer: Customer, agent: Agent | None = None) -> list[Agent]:
    """The running memory stores that serve the customer: its memory-template agents (or the
    one named), then WowCache if it runs the memory template."""
    if agent is not None:
        candidates = [agent]
    else:
        candidates = list(Agent.objects.filter(customer_link__customer=customer).order_by("slug"))
        shared = Agent.objects.filter(slug=SHARED_CACHE).first()
        if shared is not None:
            candidates.append(shared)
    return [
        a
        for a in candidates
        if a.state == State.RUNNING and (a.config or {}).get("template") == MEMORY_TEMPLATE
    ]


def _refuse_without_store(customer: Customer, agent: Agent | None) -> None:
    where = agent.name if agent is not None else f"{customer.company_name}'s agents or WowCache"
    raise HelpdeskRefused(
        f"No memory store serves {customer.company_name}: {where} "
        f"{'is not' if agent is not None else 'are not'} running the memory template. Nothing "
        "was deleted; start the memory agent first.",
        "conflict",
    )


def clear_cache(
    actor: Actor, customer: Customer, agent: Agent | None, params: dict
) -> ActionResult:
    stores = memory_stores(customer, agent)
    if not stores:
        _refuse_without_store(customer, agent)
    client = agent_redis()
    reply_to = contract.reply_stream(f"helpdesk-action:{uuid.uuid4().hex}")
    sent: dict[str, Agent] = {}
    for store in stores:
        task_id = f"helpdesk-clear-cache-{uuid.uuid4().hex}"
        client.xadd(
            contract.task_stream(store.slug),
            {
                contract.FIELD_PRODUCER: producer_of(actor),
                contract.FIELD_PAYLOAD: json.dumps(FORGET),
                contract.FIELD_CUSTOMER: customer.key,
                contract.FIELD_SENT_AT: str(int(time.time() * 1000)),
                contract.FIELD_TASK_ID: task_id,
                contract.FIELD_REPLY_TO: reply_to,
            },
        )
        sent[task_id] = store
    replies = _wait_for_replies(client, reply_to, set(sent))
    client.delete(reply_to)
    results: list[dict[str, Any]] = []
    for task_id, store in sent.items():
        reply = replies.get(task_id)
        if reply is None:
            results.append({"agent": store.slug, "answered": False, "deleted": None,
                            "error": f"no answer in {REPLY_TIMEOUT_SECONDS:.0f} s"})  # fmt: skip
            continue
        output = _output(reply)
        if reply.get(contract.REPLY_STATUS) != contract.REPLY_SUCCEEDED:
            results.append({"agent": store.slug, "answered": True, "deleted": None,
                            "error": reply.get(contract.REPLY_ERROR, "")})  # fmt: skip
            continue
        results.append({"agent": store.slug, "answered": True, "deleted": output.get("deleted", 0),
                        "short": output.get("short", 0), "long": output.get("long", 0),
                        "error": ""})  # fmt: skip
    deleted = sum(r["deleted"] or 0 for r in results)
    ok = all(r["deleted"] is not None for r in results)
    parts = [
        f"{r['deleted']} on {r['agent']}" if r["deleted"] is not None
        else f"{r['agent']} failed ({r['error']})"
        for r in results
    ]  # fmt: skip
    message = f"Deleted {deleted} cached key(s) of {customer.company_name}: {', '.join(parts)}."
    return ActionResult("clear-cache", ok, message, {"deleted": deleted, "stores": results})


def _wait_for_replies(client, reply_to: str, task_ids: set[str]) -> dict[str, dict[str, str]]:
    deadline = time.monotonic() + REPLY_TIMEOUT_SECONDS
    found: dict[str, dict[str, str]] = {}
    while True:
        for _id, fields in client.xrange(reply_to):
            task_id = fields.get(contract.REPLY_TASK_ID, "")
            if task_id in task_ids:
                found[task_id] = fields
        if len(found) == len(task_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _output(reply: dict[str, str]) -> dict[str, Any]:
    try:
        output = json.loads(reply.get(contract.REPLY_OUTPUT) or "{}")
    except ValueError:
        return {}
    return output if isinstance(output, dict) else {}


def describe_clear_cache(customer: Customer, agent: Agent | None, params: dict) -> str:
    stores = memory_stores(customer, agent)
    if not stores:
        return f"Nothing: no running memory store serves {customer.company_name}."
    names = ", ".join(store.name for store in stores)
    return f"Delete {customer.company_name}'s cached keys (short- and long-term) on {names}."
