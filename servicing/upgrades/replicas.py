"""Moving an agent's replicas from one version to another, the runtime's way.

An agent's replicas live at numbers 0..n-1 (their "homes", with their reserved ports). During an
upgrade the new version's replicas start beside them, at n and up; when the upgrade ends, one
way or the other, :func:`converge` leaves exactly the homes running, all at one version, and
stops everything else. It is idempotent: a worker that dies part-way and runs it again picks up
where the runtime is.
"""

from __future__ import annotations

import time
from typing import Any

from agents import services as agent_services
from agents.models import Agent
from agents.runtimes.base import AgentSpec
from servicing.upgrades import traffic


def launch(agent: Agent, spec: AgentSpec, numbers: list[int]) -> dict[str, Any]:
    """Start these replica numbers at ``spec``'s version, readiness-gated."""
    if not numbers:
        return {"replicas": []}
    return agent_services.runtime_for(agent).launch_replicas(spec, numbers)


def stop(agent: Agent, spec: AgentSpec, numbers: list[int]) -> dict[str, Any]:
    if not numbers:
        return {"replicas": []}
    return agent_services.runtime_for(agent).stop_replicas(spec, numbers)


def converge(
    agent: Agent,
    spec: AgentSpec,
    count: int,
    on_step=None,
    *,
    force: bool = False,
    done: frozenset[int] = frozenset(),
) -> dict[str, Any]:
    """Replicas 0..count-1 running ``spec.version``, one at a time (each new one ready before
    the next is touched), and every other replica of the agent stopped. ``force`` replaces
    replicas that run the version already (a new config rolled out), except those ``done``."""
    began = time.monotonic()
    replaced = []
    for number in range(count):
        live = {item["replica"]: item for item in traffic.live_replicas(agent)}
        current = live.get(number)
        same = current is not None and current["version"] == spec.version
        if same and (not force or number in done):
            continue
        if current is not None:
            stop(agent, spec, [number])
        launch(agent, spec, [number])
        replaced.append(number)
        if on_step is not None:
            on_step(number)
    extra = [item["replica"] for item in traffic.live_replicas(agent) if item["replica"] >= count]
    stop(agent, spec, extra)
    return {
        "version": spec.version,
        "replaced": replaced,
        "stopped": extra,
        "seconds": round(time.monotonic() - began, 3),
    }
