"""An upgrade row's life: its phase as it goes, the measurements, and how it ends.

``finish`` (succeeded: the agent runs the new version) and ``close`` (rolled back or aborted:
the version is pinned unless the person who stopped it said otherwise) are the only places that
end an upgrade, each in one transaction with its audit entry, and both free the agent.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from agents import events
from agents.agentd.config import AgentConfig, merge_config
from agents.lifecycle import UPGRADE
from agents.models import Agent, State
from agents.runtimes.base import AgentSpec
from portal.actors import Actor
from portal.services import record_audit
from servicing.models import Release, Upgrade, UpgradeStatus
from servicing.upgrades import traffic

SYSTEM = Actor.system("servicing")
UNSUPPORTED_RUNTIMES = {
    "kubernetes": "Kubernetes agents are upgraded by their Deployment's rolling update "
    "(`kubectl set image`); the portal's blue-green, canary and rolling upgrades run on the "
    "local and Docker runtimes."
}
MAX_MEASUREMENTS = 200


def load(ctx) -> Upgrade:
    """The upgrade a workflow step works on."""
    return Upgrade.objects.select_related("agent", "release").get(pk=ctx.inputs["upgrade"])


def blocker(agent: Agent, upgrade: Upgrade | None = None) -> str:
    """Why ``agent`` cannot be upgraded now ("" when it can)."""
    if agent.runtime in UNSUPPORTED_RUNTIMES:
        return UNSUPPORTED_RUNTIMES[agent.runtime]
    if agent.state != State.RUNNING:
        return f"{agent.name} is {agent.state}; start it before upgrading it."
    if upgrade is not None and upgrade.release_id is not None:
        release = Release.objects.get(pk=upgrade.release_id)
        if release.pinned and not upgrade.downgrade:
            return f"{release.version} was pinned meanwhile: {release.pinned_reason}."
    return ""


def set_phase(upgrade: Upgrade, phase: str, *, status: str | None = None, **fields: Any) -> None:
    changes: dict[str, Any] = {"phase": phase[:200], **fields}
    if status is not None:
        changes["status"] = status
    Upgrade.objects.filter(pk=upgrade.pk, status__in=_OPEN).update(**changes)


_OPEN = (UpgradeStatus.SCHEDULED, UpgradeStatus.RUNNING, UpgradeStatus.PAUSED)


def record(upgrade: Upgrade, row: dict[str, Any]) -> None:
    """Append one measured step (the A/B table's row) to the upgrade."""
    row = {**row, "at": timezone.now().isoformat()}
    with transaction.atomic():
        locked = Upgrade.objects.select_for_update().get(pk=upgrade.pk)
        locked.measurements = [*locked.measurements, row][-MAX_MEASUREMENTS:]
        locked.save(update_fields=["measurements"])
    upgrade.measurements = locked.measurements


def new_config(agent: Agent, release: Release | None, overrides: dict | None) -> dict:
    """The config the new version runs with: the agent's, the release's default changes, then
    the upgrade's own."""
    config = dict(agent.config)
    for changes in ((release.config_changes if release else None) or {}, overrides or {}):
        config = _merge(config, changes)
    merge_config(AgentConfig(), config, slug=agent.slug)  # agentd would refuse it otherwise
    return config


def _merge(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def new_spec(upgrade: Upgrade) -> AgentSpec:
    return traffic.spec(upgrade.agent, upgrade.to_version, upgrade.config)


def old_spec(upgrade: Upgrade) -> AgentSpec:
    backup = upgrade.backup or {}
    return traffic.spec(
        upgrade.agent,
        backup.get("version") or upgrade.from_version,
        backup.get("config") if "config" in backup else None,
    )


def _free(agent_id: int, **changes: Any) -> Agent:
    agent = Agent.objects.select_for_update().get(pk=agent_id)
    if agent.pending_action == UPGRADE:
        agent.pending_action, agent.pending_since = "", None
    for name, value in changes.items():
        setattr(agent, name, value)
    agent.save()
    return agent


def record_ports(agent: Agent, live: dict[int, dict[str, Any]], count: int) -> None:
    """Keep the agent's recorded ports (what probes and scrapes read) in step with the replicas
    0..count-1 that run now."""
    ports = list(agent.runtime_details.get("ports") or [])
    for number in range(count):
        port = (live.get(number) or {}).get("port")
        if port:
            if number < len(ports):
                ports[number] = port
            else:
                ports.append(port)
    agent.runtime_details = {**agent.runtime_details, "ports": ports[:count]}


def finish(upgrade: Upgrade) -> None:
    """The upgrade succeeded: the agent runs the new version with the new config."""
    with transaction.atomic():
        locked = Upgrade.objects.select_for_update().get(pk=upgrade.pk)
        if not locked.active:
            return
        before = Agent.objects.only("config").get(pk=locked.agent_id).config
        changes: dict[str, Any] = {"version": locked.to_version, "config": locked.config,
                                   "replicas": locked.replicas}  # fmt: skip
        if locked.config != before:  # the config before is kept for a one-click roll-back
            changes.update(previous_config=before, config_changed_at=timezone.now())
        agent = _free(locked.agent_id, **changes)
        record_ports(agent, {r["replica"]: r for r in traffic.live_replicas(agent)}, agent.replicas)
        agent.save(update_fields=["runtime_details"])
        locked.status, locked.finished_at, locked.weight = (
            UpgradeStatus.SUCCEEDED, timezone.now(), 100,
        )  # fmt: skip
        locked.phase = f"Runs {locked.to_version}"
        locked.outcome = (
            f"{agent.name} runs {locked.to_version} (was {locked.from_version}), "
            f"{locked.get_strategy_display().lower()}."
        )
        locked.save()
        record_audit(
            SYSTEM, "servicing.upgrade.succeeded", target=f"agent:{agent.slug}",
            upgrade=locked.pk, from_version=locked.from_version, to_version=locked.to_version,
        )  # fmt: skip
        events.emit("upgrade", agent, status="succeeded", version=locked.to_version)


def close(upgrade: Upgrade, why: str) -> None:
    """The upgrade was rolled back (or aborted): the agent runs the old version; the version
    is pinned so nothing takes the agent to it again until an Admin unpins it."""
    from servicing import services  # the releases' service (pins), which imports this app

    with transaction.atomic():
        locked = (
            Upgrade.objects.select_for_update(of=("self",))
            .select_related("release")
            .get(pk=upgrade.pk)
        )
        if not locked.active:
            return
        agent = _free(locked.agent_id)
        aborted = locked.command == "abort"
        locked.status = UpgradeStatus.ABORTED if aborted else UpgradeStatus.ROLLED_BACK
        locked.finished_at, locked.weight = timezone.now(), 0
        locked.phase = f"Runs {locked.from_version} again"
        locked.outcome = (locked.outcome or why)[:2000]
        locked.save()
        pinned = ""
        release = locked.release
        if release is not None and not aborted and not release.pinned and not locked.downgrade:
            services.pin(
                Actor.system("servicing"), release,
                f"rolled back on {agent.name} (upgrade #{locked.pk}): {locked.outcome[:300]}",
            )  # fmt: skip
            pinned = release.version
        record_audit(
            SYSTEM, f"servicing.upgrade.{'aborted' if aborted else 'rolled_back'}",
            target=f"agent:{agent.slug}", upgrade=locked.pk, from_version=locked.from_version,
            to_version=locked.to_version, why=locked.outcome[:500], pinned=pinned,
        )  # fmt: skip
        events.emit("upgrade", agent, status=locked.status, version=locked.from_version)
