"""Hot config patches: an agent's config changed while it runs, without a restart.

A patch is checked by agentd's own rules (``agents.agentd.config``: the same code the agent runs,
so a value the portal accepts is one the agent accepts), saved with the config it replaces (for a
one-click roll-back), audited, and then sent to every running replica's ``PATCH /config``.
agentd merges a patch the same way: top-level keys replace, ``faults`` merges fault by fault,
``null`` puts a key back to its default. A replica that cannot be reached gets the saved config
when it next starts; the answer says which replicas took it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents import events
from agents.agentd.config import AgentConfig, ConfigError, merge_config, parse_config
from agents.models import Agent, State
from portal import roles
from portal.actors import Actor
from portal.refusals import BadRequest
from portal.services import audits_refusals, record_audit

REPLICA_TIMEOUT_SECONDS = 2.0
LIVE_STATES = (State.RUNNING, State.SUSPENDED)
MAX_PATCH_BYTES = 64 * 1024


@dataclass(frozen=True)
class Applied:
    """What a config change did: the agent as saved, and each replica's answer."""

    agent: Agent
    replicas: list[dict[str, Any]]

    @property
    def all_applied(self) -> bool:
        return all(replica["applied"] for replica in self.replicas)


def merged(config: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``patch`` applied to a stored ``config`` as agentd applies it (no defaults filled in)."""
    result = dict(config)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif key == "faults" and isinstance(value, Mapping):
            faults = {**(result.get("faults") or {}), **value}
            result["faults"] = {k: v for k, v in faults.items() if v is not None}
        else:
            result[key] = value
    return result


def check_patch(agent: Agent, patch: object) -> dict[str, Any]:
    """The patch if agentd would take it on top of the agent's config; ``BadRequest`` naming
    the key and the rule otherwise."""
    if not isinstance(patch, Mapping):
        raise BadRequest('The patch is a JSON object of config keys, e.g. {"task_retry_ms": 500}.')
    if not patch:
        raise BadRequest("The patch is empty: name at least one config key to change.")
    if len(json.dumps(patch, default=str)) > MAX_PATCH_BYTES:
        raise BadRequest(f"The patch is larger than {MAX_PATCH_BYTES // 1024} KiB.")
    try:
        current = parse_config(dict(agent.config or {}), slug=agent.slug)
    except ConfigError:
        current = AgentConfig()  # a stored config agentd would refuse: check the patch alone
    try:
        merge_config(current, dict(patch), slug=agent.slug)
    except ConfigError as bad:
        raise BadRequest(f"{agent.name}'s config was not changed: {bad}", "invalid") from None
    return dict(patch)


@audits_refusals("agent.config.patch", target="agent")
def patch_config(agent: Agent, patch: object, actor: Actor) -> Applied:
    """Change ``agent``'s config by ``patch``: saved (the old one kept for a roll-back),
    audited, and applied to its running replicas without a restart."""
    actor.require(roles.OPERATE, "change an agent's config")
    patch = check_patch(agent, patch)
    with transaction.atomic():
        locked = Agent.objects.select_for_update().get(pk=agent.pk)
        before = dict(locked.config or {})
        locked.config = merged(before, patch)
        locked.previous_config, locked.config_changed_at = before, timezone.now()
        locked.save(update_fields=["config", "previous_config", "config_changed_at", "updated_at"])
        record_audit(actor, "agent.config.patch", target=locked.slug, patch=patch, replaced=before)
        events.emit("registry", locked, changed=["config"], actor=actor.label)
    return Applied(locked, apply_to_replicas(locked, patch))


def roll_back_config(agent: Agent, actor: Actor) -> Applied:
    """Put back the config before the last change, on the running replicas too."""
    from agents.services.registry import rollback_config

    before = dict(agent.config or {})
    restored = rollback_config(agent, actor)
    return Applied(restored, apply_to_replicas(restored, patch_between(before, restored.config)))


def patch_between(current: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """The patch that takes a replica running ``current`` to ``target`` (``null`` for what
    ``target`` leaves out, fault by fault)."""
    patch: dict[str, Any] = {key: None for key in current if key not in target}
    for key, value in target.items():
        if key == "faults" and isinstance(value, Mapping):
            old = current.get("faults") or {}
            patch["faults"] = {**{name: None for name in old if name not in value}, **value}
        elif current.get(key) != value:
            patch[key] = value
    return patch


def apply_to_replicas(agent: Agent, patch: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Send ``patch`` to each replica's ``PATCH /config``; answers each one's outcome."""
    if agent.state not in LIVE_STATES or not patch:
        why = "not running: it takes the saved config when it starts"
        return [
            {"replica": None, "applied": False, "detail": f"{agent.name} is {agent.state}, {why}"}
        ]
    ports = list(agent.runtime_details.get("ports") or [])[: agent.replicas]
    outcomes = []
    body = json.dumps(patch).encode()
    for replica, port in enumerate(ports):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/config", data=body, method="PATCH",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=REPLICA_TIMEOUT_SECONDS) as answer:
                applied = json.loads(answer.read() or b"{}")
            outcomes.append(
                {"replica": replica, "applied": True, "detail": "applied", "config": applied}
            )
        except urllib.error.HTTPError as refused:
            detail = refused.read().decode(errors="replace")[:300]
            outcomes.append(
                {
                    "replica": replica,
                    "applied": False,
                    "detail": f"refused ({refused.code}): {detail}",
                }
            )
        except (OSError, ValueError) as exc:
            outcomes.append({"replica": replica, "applied": False,
                             "detail": f"did not answer ({exc}); it takes the saved config when it restarts"})  # fmt: skip
    if not ports:
        outcomes.append({"replica": None, "applied": False, "detail": "no replica port is known"})
    return outcomes
