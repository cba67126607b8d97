"""Where an agent's tasks go during an upgrade, and the replicas that take them.

Traffic moves through the agent's routing hash, which every agentd replica reads (see
``agents.agentd.routing``): the version that serves the agent's stream, and a canary version
with its share. Tasks for one version only (smoke tests, the canary's share) travel on that
version's own stream. The replicas are the runtime's: ``status`` says which runs, on which port
and at which version.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from typing import Any, cast

import redis
from django.conf import settings

from agents import services as agent_services
from agents.agentd import contract, routing
from agents.models import Agent
from agents.runtimes.base import AgentSpec, RuntimeFailure

SMOKE_TASKS = 5
# How long after a routing change every replica acts on it (agentd reads it this often), and
# a task read just before has been handed on.
ROUTING_SETTLE_SECONDS = routing.ROUTING_REFRESH_SECONDS + 0.5
logger = logging.getLogger(__name__)


def client() -> redis.Redis:
    return redis.Redis.from_url(settings.AGENT_REDIS_URL, decode_responses=True)


def spec(agent: Agent, version: str | None = None, config: dict | None = None) -> AgentSpec:
    """The agent's runtime spec, at ``version`` with ``config`` when given."""
    base = agent_services.spec_for(agent)
    changes: dict[str, Any] = {}
    if version is not None:
        changes["version"] = version
    if config is not None:
        changes["config"] = dict(config)
    return replace(base, **changes) if changes else base


def live_replicas(agent: Agent) -> list[dict[str, Any]]:
    """Every live replica of the agent (beyond its replica count too): number, port, version,
    state."""
    runtime = agent_services.runtime_for(agent)
    status = runtime.status(spec(agent))
    return [
        {
            "replica": replica.replica,
            "port": replica.port,
            "version": getattr(replica, "version", "") or "",
            "state": replica.state,
        }
        for replica in status.replicas
        if replica.state in ("running", "paused")
    ]


def live_or_none(agent: Agent) -> list[dict[str, Any]]:
    """:func:`live_replicas`, or none when the runtime cannot say (it is logged)."""
    try:
        return live_replicas(agent)
    except RuntimeFailure as failure:
        logger.warning("cannot read %s's replicas: %s", agent.slug, failure.message)
        return []


def ports_of(replicas: list[dict[str, Any]], version: str | None = None) -> list[tuple[int, int]]:
    return [
        (item["replica"], item["port"])
        for item in replicas
        if item.get("port") and (version is None or item.get("version") == version)
    ]


def route(agent: Agent, serving: str, canary: str = "", weight: int = 0) -> None:
    routing.set_routing(client(), agent.slug, serving, canary, weight)


def unroute(agent: Agent) -> None:
    routing.clear_routing(client(), agent.slug)


def current_route(agent: Agent) -> dict[str, Any] | None:
    found = routing.read_routing(client(), agent.slug)
    if found is None:
        return None
    return {"serving": found.serving, "canary": found.canary, "weight": found.weight}


def hand_back(agent: Agent, version: str) -> int:
    """Move what is left on ``version``'s own stream back to the agent's stream."""
    # A replica may act on the routing it read up to ROUTING_REFRESH_SECONDS ago: wait that
    # out, so none sends a task straight back to the stream being emptied.
    time.sleep(ROUTING_SETTLE_SECONDS)
    return routing.move_tasks(
        client(),
        contract.version_stream(agent.slug, version),
        contract.task_stream(agent.slug),
        slug=agent.slug,
    )


# --- smoke tasks ------------------------------------------------------------------------------


def send_smoke(agent: Agent, version: str, tag: str, count: int = SMOKE_TASKS) -> list[str]:
    """Put ``count`` smoke tasks on ``version``'s own stream, each answered on the reply stream
    ``tag`` names; answers their task ids. Sending again with the same tag sends nothing new
    (the ids are the same, and agentd answers an id once)."""
    connection = client()
    reply_to = contract.reply_stream(tag)
    ids = [f"{tag}-smoke-{number}" for number in range(count)]
    marker = f"servicing:sent:{tag}"
    if connection.set(marker, "1", nx=True, ex=3600):
        pipeline = connection.pipeline(transaction=True)
        for task_id in ids:
            pipeline.xadd(
                contract.version_stream(agent.slug, version),
                {
                    contract.FIELD_PRODUCER: f"servicing:{tag}",
                    contract.FIELD_PAYLOAD: json.dumps({"smoke": task_id}),
                    contract.FIELD_SENT_AT: str(int(time.time() * 1000)),
                    contract.FIELD_TASK_ID: task_id,
                    contract.FIELD_REPLY_TO: reply_to,
                },
            )
        pipeline.execute()
    return ids


def smoke_replies(tag: str) -> dict[str, dict[str, str]]:
    """The replies to the smoke tasks of ``tag`` so far, by task id."""
    replies: dict[str, dict[str, str]] = {}
    entries = cast(
        "list[tuple[str, dict[str, str]]]", client().xrange(contract.reply_stream(tag), count=1000)
    )
    for _id, fields in entries:
        replies[fields.get(contract.REPLY_TASK_ID, "")] = fields
    return replies


def forget_smoke(tag: str) -> None:
    connection = client()
    connection.expire(contract.reply_stream(tag), 600)
