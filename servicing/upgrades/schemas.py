"""What the upgrade endpoints take and answer, shared with ``manage.py servicing ... --json``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Schema

from servicing.models import Upgrade


class UpgradeIn(Schema):
    # Any JSON for each: the service refuses what it cannot use (400 naming it), not ninja (422).
    target_version: Any = None
    strategy: Any = "rolling"
    steps: Any = None  # the canary's shares, e.g. [10, 50, 100]
    gates: Any = None  # {"max_error_rate": 5, "min_tasks": 200, ...}
    replicas: Any = None  # the new version's replica count (scaling during the upgrade)
    config: Any = None  # agentd config keys the new version runs with, over the release's
    allow_downgrade: bool = False
    restore_data: bool = False  # on roll-back, restore the data snapshot
    override_window: str = ""  # Admin: upgrade now, outside the window, with this reason


class RolloutIn(Schema):
    config: Any = None  # the patch: agentd config keys, checked as PATCH .../config checks them
    gates: Any = None


class RollbackIn(Schema):
    reason: str = ""
    restore_data: bool = False


class CommandIn(Schema):
    reason: str = ""


class ScaleIn(Schema):
    replicas: Any = None


class UpgradeOut(Schema):
    id: int
    agent: str
    from_version: str
    to_version: str
    strategy: str
    status: str
    phase: str
    weight: int
    steps: list[int]
    gates: dict[str, Any]
    replicas: int
    not_before: datetime | None
    window: str
    measurements: list[dict[str, Any]]
    outcome: str
    command: str
    workflow_id: int | None
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class Upgrades(Schema):
    upgrades: list[UpgradeOut]


class ScaleOut(Schema):
    agent: str
    replicas: int
    version: str
    seconds: float


def upgrade_out(upgrade: Upgrade) -> dict[str, Any]:
    return {
        "id": upgrade.pk,
        "agent": upgrade.agent.slug,
        "from_version": upgrade.from_version,
        "to_version": upgrade.to_version,
        "strategy": upgrade.strategy,
        "status": upgrade.status,
        "phase": upgrade.phase,
        "weight": upgrade.weight,
        "steps": list(upgrade.steps or []),
        "gates": dict(upgrade.gates or {}),
        "replicas": upgrade.replicas,
        "not_before": upgrade.not_before,
        "window": upgrade.window_note,
        "measurements": [
            {key: value for key, value in row.items() if key != "buckets"}
            | {
                side: {k: v for k, v in (row.get(side) or {}).items() if k != "buckets"} or None
                for side in ("old", "new")
                if side in row
            }
            for row in upgrade.measurements or []
        ],
        "outcome": upgrade.outcome,
        "command": upgrade.command,
        "workflow_id": upgrade.run_id,
        "requested_by": upgrade.requested_by,
        "created_at": upgrade.created_at,
        "started_at": upgrade.started_at,
        "finished_at": upgrade.finished_at,
    }
