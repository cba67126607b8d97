"""Waiting for started containers to be ready, and saying why one never was."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..base import AgentSpec, RuntimeFailure
from ..failures import who
from ..probe import answered_by, endpoint_answer
from . import failures
from .containers import name_of
from .resources import Resources

POLL_INTERVAL = 0.1


def await_ready(
    resources: Resources,
    spec: AgentSpec,
    ports: Sequence[int] | Mapping[int, int],
    records: dict[int, dict[str, Any]],
    deadline: float,
) -> dict[int, dict[str, Any]]:
    """Wait until every replica (its container as inspected in ``records``) answers /readyz
    and /healthz with 200 (the same checks as the engine's health check and the portal's
    probes); raise as soon as one cannot. Answers a record of each ready replica."""
    pending = set(records)
    ready: dict[int, dict[str, Any]] = {}
    last_answer: dict[int, dict[str, Any]] = {}
    health: dict[int, str | None] = {}
    began = time.monotonic()
    while pending:
        for replica in sorted(pending):
            container_id = records[replica]["Id"]
            inspected = resources.inspect(container_id)
            if inspected is None:
                raise RuntimeFailure(
                    f"{who(spec, replica)}'s container was removed while it was starting.",
                    reason="crashed_on_start",
                    details={"replica": replica, "container_id": container_id},
                )
            state = inspected["State"]
            if not state.get("Running"):
                raise failures.start_failure(
                    spec, replica, ports[replica], inspected, resources.last_lines(container_id)
                )
            health[replica] = (state.get("Health") or {}).get("Status")
            if state.get("Paused"):
                pending.discard(replica)  # paused on purpose before this start: leave it
                ready[replica] = _ready_record(replica, inspected, ports, began, "paused")
                continue
            if health[replica] == "unhealthy":
                break  # reported below, with the last answer
            answer = endpoint_answer(ports[replica], "/readyz")
            if answer["status"] == 200 and answered_by(answer, spec.slug, replica):
                alive = endpoint_answer(ports[replica], "/healthz")
                if alive["status"] == 200:
                    pending.discard(replica)
                    ready[replica] = _ready_record(replica, inspected, ports, began, "ready")
                    continue
                answer = {**alive, "path": "/healthz"}
            last_answer[replica] = answer
        if not pending:
            break
        unhealthy = [r for r in sorted(pending) if health.get(r) == "unhealthy"]
        if unhealthy or time.monotonic() >= deadline:
            replica = unhealthy[0] if unhealthy else min(pending)
            container_id = records[replica]["Id"]
            raise failures.never_ready(
                spec,
                replica,
                ports[replica],
                last_answer.get(replica),
                health.get(replica),
                container_id,
                resources.last_lines(container_id),
            )
        time.sleep(POLL_INTERVAL)
    return ready


def _ready_record(
    replica: int,
    inspected: dict[str, Any],
    ports: Sequence[int] | Mapping[int, int],
    began: float,
    how: str,
) -> dict[str, Any]:
    state = inspected["State"]
    return {
        "replica": replica,
        "container_id": inspected["Id"],
        "container": name_of(inspected),
        "pid": state.get("Pid") or None,
        "port": ports[replica],
        "health": (state.get("Health") or {}).get("Status"),
        "state": how,
        "ready_seconds": round(time.monotonic() - began, 3),
    }
