"""Reading and changing an agent's probes: the one place every door (the agent page, the API,
``manage.py probes``) goes through.

``set_probes`` checks the role (Operator), validates with ``agents.probes.schema``, saves and
audits (``agent.probes``) in one transaction; a refusal changes nothing and is audited as
refused. A change is used by the monitor from its next round on (local and Docker agents); the
container's HEALTHCHECK and a Kubernetes Deployment's probes take it at the next deploy, start
or restart.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction

from agents import events
from agents.models import Agent, State
from agents.probes.engine import fingerprint, state_key
from agents.probes.schema import PROBES, InvalidProbes, effective_probes, validate_probes
from agents.services.actions import may_operate
from portal import roles
from portal.actors import Actor
from portal.models import AuditEntry
from portal.refusals import BadRequest, Refused
from portal.services import record_audit

ACTION = "agent.probes"
TAKES_EFFECT = {
    "local": "from the monitor's next round",
    "docker": "by the monitor from its next round; in the container's HEALTHCHECK at the next "
    "deploy, start or restart",
    "kubernetes": "in the Deployment's probes at the next deploy, start or restart (the kubelet "
    "runs them)",
}


class ProbesRefused(BadRequest):
    """Probe settings the portal will not store: the sentence names the field (400)."""

    def __init__(self, invalid: InvalidProbes) -> None:
        super().__init__(invalid.message, "invalid", details={"field": invalid.field})
        self.field = invalid.field


class ProbesLocked(Refused):
    """The agent cannot take probe settings now (revoked)."""

    default_code = "conflict"


def default_interval() -> int:
    return settings.AGENT_PROBE_INTERVAL_SECONDS


def probes_of(agent: Agent) -> dict[str, Any]:
    """What the doors show: the probes in use (``custom`` False: the defaults), and when a
    change takes effect on the agent's runtime."""
    probes = effective_probes(agent.probes, default_interval())
    return {
        "slug": agent.slug,
        "runtime": agent.runtime,
        "custom": bool(agent.probes),
        "liveness": probes["liveness"],
        "readiness": probes["readiness"],
        "takes_effect": TAKES_EFFECT.get(agent.runtime, "at the next deploy, start or restart"),
    }


def check_probes(data: object) -> dict[str, Any]:
    """``data`` validated and normalized, or :class:`ProbesRefused` naming the field."""
    try:
        return validate_probes(data, default_interval())
    except InvalidProbes as invalid:
        raise ProbesRefused(invalid) from None


def set_probes(agent: Agent, probes: object, actor: Actor) -> Agent:
    """Replace ``agent``'s probe settings with ``probes`` (``{}`` or None: the defaults)."""
    try:
        if not may_operate(actor, agent):
            actor.require(roles.OPERATE, "change an agent's probes")
        normalized = check_probes(probes)
        if agent.state == State.REVOKED:
            raise ProbesLocked(f"{agent.name} is REVOKED; a revoked agent is never probed again.")
    except (PermissionDenied, Refused) as refused:
        with transaction.atomic():
            record_audit(
                actor, ACTION, target=agent.slug, outcome=AuditEntry.Outcome.REFUSED,
                error=getattr(refused, "message", str(refused)),
            )  # fmt: skip
        raise
    with transaction.atomic():
        locked = Agent.objects.select_for_update().get(pk=agent.pk)
        before = locked.probes or {}
        locked.probes = normalized
        locked.save(update_fields=["probes", "updated_at"])
        record_audit(actor, ACTION, target=locked.slug, probes=normalized, replaced=before)
        if normalized != before:
            events.emit("registry", locked, changed=["probes"], actor=actor.label)
    return locked


def replica_status(agent: Agent) -> list[dict[str, Any]]:
    """The monitor's latest view of each replica, from its counts: for each probe, whether it
    passes, the passes or failures in a row, and why the last one failed. Empty when the
    monitor has not probed the agent as it is now (other settings, other processes)."""
    if agent.state != State.RUNNING:
        return []
    client = redis.Redis.from_url(
        settings.REDIS_URL, decode_responses=True, socket_timeout=1, socket_connect_timeout=1
    )
    try:
        raw = client.get(state_key(agent.slug))
    except redis.RedisError:
        return []
    finally:
        client.close()
    try:
        state = json.loads(raw) if raw else None
    except ValueError:
        return []
    if not isinstance(state, dict) or state.get("fp") != fingerprint(agent):
        return []
    rows = []
    for replica in range(len(state.get("liveness") or [])):
        row: dict[str, Any] = {"replica": replica}
        for which in PROBES:
            ok, passes, failures, why = state[which][replica]
            row[which] = {"ok": ok, "passes": passes, "failures": failures, "reason": why}
        rows.append(row)
    return rows
