"""The upgrade's backup step and its compensation: the config, the running version and a
snapshot of the agent's data (the runtime's ``backup_data``), restored on roll-back when the
upgrade asked for it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from agents import services as agent_services
from agents.runtimes.base import RuntimeFailure
from agents.workflows.kinds import Done, Failed, Result, StepContext, StepKind
from servicing.models import Upgrade
from servicing.upgrades import gates, traffic
from servicing.upgrades.lifecycle import load, old_spec, set_phase


def backup_path(upgrade: Upgrade) -> Path:
    root = Path(settings.SERVICING_BACKUP_ROOT)
    return root / upgrade.agent.slug / f"upgrade-{upgrade.pk}.tar.gz"


class Backup(StepKind):
    name = "servicing_backup"
    title = "Backup"
    side_effects = "takes the data snapshot again"

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return "keeps the config, the running version and a snapshot of the agent's data"

    def start(self, ctx: StepContext) -> Result:
        upgrade = load(ctx)
        agent = upgrade.agent
        set_phase(upgrade, "Backing up")
        saved: dict[str, Any] = {
            "version": agent.version, "config": dict(agent.config), "replicas": agent.replicas,
            "taken_at": timezone.now().isoformat(),
        }  # fmt: skip
        path = backup_path(upgrade)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            saved["data"] = agent_services.runtime_for(agent).backup_data(
                old_spec(upgrade), str(path)
            )
        except RuntimeFailure as failure:
            if upgrade.restore_data:
                return Failed(f"The data snapshot failed: {failure.message}")
            saved["data"] = {"skipped": failure.message}
        # The old version's counters now: what it does until the cutover is the figure the new
        # version's latency is compared with.
        saved["baseline"] = gates.snapshot(
            gates.read_replicas(traffic.ports_of(traffic.live_or_none(agent)))
        )
        Upgrade.objects.filter(pk=upgrade.pk).update(backup=saved)
        data = saved["data"]
        note = (
            f"data snapshot {data.get('bytes', 0)} bytes, {data.get('files', 0)} file(s)"
            if "path" in data
            else f"no data snapshot ({data.get('skipped')})"
        )
        return Done(saved, log=f"Kept config and version {agent.version}; {note}.")


class Restore(StepKind):
    name = "servicing_restore"
    title = "Restore the backup"
    side_effects = "restores the data snapshot again (when asked)"

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return "restores the agent's data from the snapshot, when the upgrade asked for it"

    def start(self, ctx: StepContext) -> Result:
        upgrade = load(ctx)
        data = (upgrade.backup or {}).get("data") or {}
        if not upgrade.restore_data or "path" not in data:
            return Done({"restored": False}, log="Data kept as it is (no restore asked).")
        try:
            restored = agent_services.runtime_for(upgrade.agent).restore_data(
                old_spec(upgrade), data["path"]
            )
        except RuntimeFailure as failure:
            return Failed(f"The data restore failed: {failure.message}")
        return Done({"restored": True, **restored}, log="Data restored from the snapshot.")
