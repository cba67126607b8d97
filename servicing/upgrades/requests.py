"""What a person asks of upgrades, at every door: request one, promote, pause, resume, abort,
roll back, scale. Each checks the role (Operator), refuses bad input with the reason having
changed nothing, and is audited; the upgrade itself runs as a workflow (``workflow.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

from django.db import IntegrityError, transaction
from django.utils import timezone

from agents import services as agent_services
from agents.agentd.config import ConfigError
from agents.lifecycle import SCALE
from agents.models import Agent
from agents.runtimes.base import RuntimeFailure
from agents.services.liveconfig import merged
from agents.workflows import services as workflows
from agents.workflows.models import RunStatus, WorkflowRun
from portal import roles
from portal.actors import Actor
from portal.models import AuditEntry
from portal.services import audits_refusals, record_audit
from servicing import services, windows
from servicing.models import ACTIVE_UPGRADE, Release, Strategy, Upgrade, UpgradeStatus
from servicing.services import ServicingRefused
from servicing.upgrades import gates, lifecycle, traffic
from servicing.upgrades import replicas as replicas_
from servicing.upgrades.workflow import NAME

DEFAULT_CANARY_STEPS = [10, 50, 100]
MAX_STEPS = 10
MAX_REPLICAS = 20
COMMANDS = ("promote", "pause", "resume", "abort", "rollback")


def parse_strategy(value: object) -> str:
    text = value if isinstance(value, str) else ""
    if text not in Strategy.values:
        raise ServicingRefused(
            f"strategy {str(value)[:40]!r} is not one; use {', '.join(Strategy.values)}.",
            "invalid",
        )
    return text


def parse_steps(value: object, strategy: str) -> list[int]:
    """The canary's shares: whole percents, rising, ending at 100."""
    if strategy != Strategy.CANARY:
        return []
    if value in (None, "", []):
        return list(DEFAULT_CANARY_STEPS)
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple) or len(value) > MAX_STEPS:
        raise ServicingRefused(
            f"steps are up to {MAX_STEPS} percents, rising and ending at 100, such as 10,50,100.",
            "invalid",
        )
    steps = []
    for item in value:
        text = str(item).strip()
        if not (text.isascii() and text.isdecimal()) or not 1 <= int(text) <= 100:
            raise ServicingRefused(
                f"step {text[:20]!r} is not a percent from 1 to 100; use e.g. 10,50,100.",
                "invalid",
            )
        steps.append(int(text))
    if steps != sorted(set(steps)) or steps[-1] != 100:
        raise ServicingRefused(
            f"steps {steps} must rise and end at 100, such as 10,50,100.", "invalid"
        )
    return steps


def parse_replicas(value: object, agent: Agent) -> int:
    if value in (None, ""):
        return agent.replicas
    text = str(value).strip()
    if not (text.isascii() and text.isdecimal()) or not 1 <= int(text) <= MAX_REPLICAS:
        raise ServicingRefused(
            f"replicas must be a whole number from 1 to {MAX_REPLICAS}, not {text[:20]!r}.",
            "invalid",
        )
    return int(text)


@audits_refusals("servicing.upgrade.request", target="agent")
def request_upgrade(
    actor: Actor,
    agent: Agent,
    target_version: object,
    strategy: object = Strategy.ROLLING,
    *,
    steps: object = None,
    gate_settings: object = None,
    replicas: object = None,
    config: object = None,
    allow_downgrade: bool = False,
    restore_data: bool = False,
    override_window: object = "",
    now: datetime | None = None,
    urgent: bool = False,
) -> Upgrade:
    """Plan an upgrade of ``agent`` to ``target_version`` and start its workflow (which waits
    for the next maintenance window when this is outside one)."""
    actor.require(roles.OPERATE, "upgrade agents")
    strategy = parse_strategy(strategy)
    steps_ = parse_steps(steps, strategy)
    try:
        gates_ = gates.parse_gates(gate_settings)
    except gates.GateError as error:
        raise ServicingRefused(str(error), "invalid") from None
    count = parse_replicas(replicas, agent)
    if config not in (None, "") and not isinstance(config, Mapping):
        raise ServicingRefused("config must be an object of agentd config keys.", "invalid")
    release = services.check_target(agent, target_version, allow_downgrade=allow_downgrade)
    problem = lifecycle.blocker(agent)
    if problem:
        raise ServicingRefused(problem, "conflict")
    try:
        config_ = lifecycle.new_config(agent, release, dict(cast("Mapping", config or {})))
    except ConfigError as error:
        raise ServicingRefused(f"config: {error}", "invalid") from None
    override = override_window.strip() if isinstance(override_window, str) else ""
    if urgent:  # a roll-back does not wait for a window
        not_before, note = None, ""
    else:
        not_before, note = _window(actor, agent, override, now or timezone.now())
    downgrade = services.versions.is_downgrade(agent.version, release.version)
    return _start(
        actor, agent, release, release.version, strategy, steps_, gates_, count, config_,
        restore_data=bool(restore_data), downgrade=downgrade, not_before=not_before, note=note,
        audit={"window_override": override or None},
    )  # fmt: skip


def _start(
    actor: Actor, agent: Agent, release: Release | None, target: str, strategy: str,
    steps: list[int], gate_settings: dict, count: int, config: dict, *, restore_data: bool,
    downgrade: bool, not_before, note: str, audit: dict,
) -> Upgrade:  # fmt: skip
    """Create the upgrade and start its workflow, in one transaction with the audit entry."""
    try:
        with transaction.atomic():
            upgrade = Upgrade.objects.create(
                agent=agent, from_version=agent.version, to_version=target, release=release,
                strategy=strategy, steps=steps,
                gates={k: v for k, v in gate_settings.items() if v != gates.DEFAULT_GATES[k]},
                config=config, replicas=count, restore_data=restore_data, downgrade=downgrade,
                not_before=not_before, window_note=note[:300], requested_by=actor.label[:200],
                phase="Waiting for its window" if not_before else "Queued",
                status=UpgradeStatus.SCHEDULED if not_before else UpgradeStatus.RUNNING,
            )  # fmt: skip
            run = workflows.start(actor, NAME, {"upgrade": str(upgrade.pk), "agent": agent.slug})
            upgrade.run = run
            upgrade.save(update_fields=["run"])
            record_audit(
                actor, "servicing.upgrade.request", target=f"agent:{agent.slug}",
                upgrade=upgrade.pk, from_version=agent.version, to_version=target,
                strategy=strategy, steps=steps, replicas=count, downgrade=downgrade,
                not_before=not_before.isoformat() if not_before else None, workflow=run.pk,
                **audit,
            )  # fmt: skip
    except IntegrityError:
        raise ServicingRefused(
            f"{agent.name} already has an upgrade under way; wait for it or abort it.",
            "conflict",
        ) from None
    return upgrade


@audits_refusals("servicing.upgrade.request", target="agent")
def rollout_config(
    actor: Actor, agent: Agent, patch: object, *, gate_settings: object = None
) -> Upgrade:
    """Roll a config change out like a version: replica by replica (one first, beside the
    others, smoke-tested), readiness-gated, the gates watched afterwards, and rolled back by
    itself when one trips. The hot patch (``PATCH .../config``) is the instant alternative."""
    actor.require(roles.OPERATE, "change an agent's config")
    checked = agent_services.check_patch(agent, patch)  # a bad patch: 400 naming the key
    try:
        gates_ = gates.parse_gates(gate_settings)
    except gates.GateError as error:
        raise ServicingRefused(str(error), "invalid") from None
    config = merged(agent.config or {}, checked)
    if config == (agent.config or {}):
        raise ServicingRefused(f"{agent.name} runs this config already.", "conflict")
    problem = lifecycle.blocker(agent)
    if problem:
        raise ServicingRefused(problem, "conflict")
    release = next((r for r in services.releases_for(agent) if r.version == agent.version), None)
    return _start(
        actor, agent, release, agent.version, Strategy.ROLLING, [], gates_, agent.replicas,
        config, restore_data=False, downgrade=False, not_before=None, note="",
        audit={"config_rollout": checked},
    )  # fmt: skip


def _window(actor: Actor, agent: Agent, override: str, now: datetime) -> tuple[Any, str]:
    """When the upgrade may begin (None: now) and a sentence saying why."""
    opening = windows.next_opening(agent, now)
    if opening.open:
        return None, ""
    if override:
        actor.require(roles.MANAGE, "upgrade outside the maintenance window")
        return None, f"window overridden by {actor.label}: {override[:200]}"
    if opening.starts_at is None:
        raise ServicingRefused(
            f"{opening.explanation}; an Admin can override the window with a reason.", "conflict"
        )
    return opening.starts_at, opening.explanation


# --- commands on a running upgrade ------------------------------------------------------------


def get_upgrade(upgrade_id: object) -> Upgrade:
    text = str(upgrade_id).strip()
    upgrade = None
    if text.isascii() and text.isdecimal() and len(text) <= 18:
        upgrade = Upgrade.objects.select_related("agent", "release").filter(pk=int(text)).first()
    if upgrade is None:
        shown = repr(text[:40].replace("\x00", ""))
        raise ServicingRefused(
            f"There is no upgrade {shown}; `manage.py servicing upgrades` lists them.", "not_found"
        )
    return sync(upgrade)


@audits_refusals("servicing.upgrade.{action}", target="upgrade")
def command(actor: Actor, upgrade: Upgrade, action: object, reason: object = "") -> Upgrade:
    """Promote (skip the current step's wait), pause, resume, abort or roll back a running
    upgrade. Abort and roll back move traffic back at the step's next look (within a second);
    an abort does not pin the version, a roll-back does."""
    if action not in COMMANDS:
        raise ServicingRefused(
            f"{str(action)[:20]!r} is not an upgrade command; use {', '.join(COMMANDS)}.",
            "invalid",
        )
    actor.require(roles.OPERATE, f"{action} upgrades")
    why = reason.strip()[:300] if isinstance(reason, str) and "\x00" not in reason else ""
    with transaction.atomic():
        locked = Upgrade.objects.select_for_update().select_related("agent").get(pk=upgrade.pk)
        if not locked.active:
            raise ServicingRefused(
                f"Upgrade #{locked.pk} has {locked.get_status_display().lower()}; nothing to "
                f"{action}.",
                "conflict",
            )
        if action == "resume" and locked.command != "pause":
            raise ServicingRefused(f"Upgrade #{locked.pk} is not paused.", "conflict")
        if action in ("promote", "pause") and locked.status == UpgradeStatus.SCHEDULED:
            raise ServicingRefused(
                f"Upgrade #{locked.pk} is waiting for its window; there is nothing to {action} "
                "yet (abort it, or ask again with a window override).",
                "conflict",
            )
        locked.command = "" if action == "resume" else action
        locked.command_reason, locked.command_by = why, actor.label[:200]
        if action == "resume" and locked.status == UpgradeStatus.PAUSED:
            locked.status = UpgradeStatus.RUNNING
        ended = action in ("abort", "rollback") and locked.started_at is None
        if ended:  # its plan has not begun: nothing moved, so it ends here and now
            locked.status, locked.finished_at = UpgradeStatus.ABORTED, timezone.now()
            locked.phase = "Aborted before it began"
            locked.outcome = f"{action} by {actor.label} before it began" + (
                f": {why}" if why else ""
            )
        locked.save()
        record_audit(
            actor, f"servicing.upgrade.{action}", target=f"agent:{locked.agent.slug}",
            upgrade=locked.pk, reason=why,
        )  # fmt: skip
    if ended and locked.run_id is not None:
        run = workflows.get_run(locked.run_id)
        if run.status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED):
            workflows.cancel(run, actor)
    return locked


def sync(upgrade: Upgrade) -> Upgrade:
    """An upgrade whose run ended without it being closed (the run failed before any step had
    something to undo, or was cancelled from the workflow page) is closed as failed."""
    if not upgrade.active or upgrade.run_id is None:
        return upgrade
    run = WorkflowRun.objects.filter(pk=upgrade.run_id).only("status", "error").first()
    if run is not None and run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
        error = run.error
        with transaction.atomic():
            locked = Upgrade.objects.select_for_update().get(pk=upgrade.pk)
            if locked.active:
                lifecycle._free(locked.agent_id)
                stopped = locked.command in ("abort", "rollback")  # before it moved anything
                locked.status = UpgradeStatus.ABORTED if stopped else UpgradeStatus.FAILED
                locked.finished_at = timezone.now()
                locked.outcome = (locked.outcome or error or "The upgrade's run ended.")[:2000]
                locked.phase = "Aborted" if stopped else "Failed"
                locked.save()
        upgrade.refresh_from_db()
    return upgrade


def active_upgrade(agent: Agent) -> Upgrade | None:
    return Upgrade.objects.filter(agent=agent, status__in=ACTIVE_UPGRADE).first()


@audits_refusals("servicing.upgrade.rollback", target="agent")
def rollback_agent(
    actor: Actor,
    agent: Agent,
    reason: object = "",
    *,
    restore_data: bool = False,
    gate_settings: object = None,
) -> Upgrade:
    """Roll ``agent`` back: the upgrade under way is rolled back at its next look; otherwise the
    last upgrade that succeeded is undone by a rolling upgrade back to the version it left, with
    the config it had (and its data, on request), and the version left is pinned."""
    actor.require(roles.OPERATE, "roll back agents")
    current = active_upgrade(agent)
    if current is not None:
        return command(actor, current, "rollback", reason)
    last = (
        Upgrade.objects.filter(agent=agent, status=UpgradeStatus.SUCCEEDED)
        .select_related("release")
        .first()
    )
    if last is None or last.to_version != agent.version:
        raise ServicingRefused(
            f"{agent.name} has no upgrade to roll back: it runs {agent.version}, and no finished "
            "upgrade took it there.",
            "conflict",
        )
    why = reason.strip()[:300] if isinstance(reason, str) and "\x00" not in reason else ""
    restored = ""
    if restore_data:
        restored = _restore_snapshot(actor, agent, last)
    upgrade = request_upgrade(
        actor, agent, last.from_version, Strategy.ROLLING,
        config=(last.backup or {}).get("config"), allow_downgrade=True,
        replicas=(last.backup or {}).get("replicas"), gate_settings=gate_settings, urgent=True,
    )  # fmt: skip
    if last.release is not None and not last.release.pinned:
        services.pin(
            actor if actor.has(roles.MANAGE) else lifecycle.SYSTEM, last.release,
            f"rolled back on {agent.name} by {actor.label}" + (f": {why}" if why else ""),
        )  # fmt: skip
    Upgrade.objects.filter(pk=upgrade.pk).update(
        outcome=f"Roll-back of upgrade #{last.pk} ({last.from_version} → {last.to_version})"
        + (f"; {restored}" if restored else "")
    )
    return upgrade


def _restore_snapshot(actor: Actor, agent: Agent, last: Upgrade) -> str:
    """Put back the data snapshot ``last`` took before it began; answers what was done."""
    data = (last.backup or {}).get("data") or {}
    if "path" not in data:
        raise ServicingRefused(
            f"Upgrade #{last.pk} kept no data snapshot ({data.get('skipped', 'none taken')}); "
            "roll back without restoring the data.",
            "conflict",
        )
    try:
        done = agent_services.runtime_for(agent).restore_data(
            lifecycle.old_spec(last), data["path"]
        )
    except RuntimeFailure as failure:
        raise ServicingRefused(f"The data snapshot was not restored: {failure.message}",
                               "conflict") from None  # fmt: skip
    record_audit(
        actor, "servicing.restore", target=f"agent:{agent.slug}", upgrade=last.pk,
        snapshot=data["path"], files=done.get("files"),
    )  # fmt: skip
    return f"data restored from upgrade #{last.pk}'s snapshot"


# --- scaling ------------------------------------------------------------------------------------


@audits_refusals("servicing.scale", target="agent")
def scale(actor: Actor, agent: Agent, replicas: object) -> dict[str, Any]:
    """Run ``agent`` on ``replicas`` replicas: new ones start readiness-gated before the call
    answers, extra ones stop gracefully (their tasks in hand finished, the rest taken by the
    others). Refused while the agent is not running, busy, or being upgraded."""
    actor.require(roles.OPERATE, "scale agents")
    count = parse_replicas(replicas, agent)
    with transaction.atomic():
        locked = Agent.objects.select_for_update().get(pk=agent.pk)
        problem = lifecycle.blocker(locked)
        if not problem and locked.pending_action:
            problem = f"{locked.name} is {locked.pending_label}; wait until that finishes."
        if problem:
            raise ServicingRefused(problem, "conflict")
        if count == locked.replicas:
            raise ServicingRefused(f"{locked.name} runs {count} replica(s) already.", "conflict")
        locked.pending_action, locked.pending_since = SCALE, timezone.now()
        locked.save(update_fields=["pending_action", "pending_since", "updated_at"])
    was = locked.replicas
    began = timezone.now()
    try:
        spec = replace(traffic.spec(locked), replicas=count)
        replicas_.converge(locked, spec, count)
    except RuntimeFailure as failure:
        _end_scale(locked, was)
        record_audit(
            actor, "servicing.scale", target=f"agent:{locked.slug}", replicas=count, was=was,
            outcome=AuditEntry.Outcome.FAILED, error=failure.message,
        )  # fmt: skip
        raise ServicingRefused(
            f"{locked.name} could not run {count} replica(s): {failure.message}", "conflict"
        ) from None
    _end_scale(locked, count)
    seconds = round((timezone.now() - began).total_seconds(), 3)
    record_audit(
        actor, "servicing.scale", target=f"agent:{locked.slug}", replicas=count, was=was,
        seconds=seconds,
    )  # fmt: skip
    return {"agent": locked.slug, "replicas": count, "version": locked.version, "seconds": seconds}


def _end_scale(agent: Agent, count: int) -> None:
    live = {item["replica"]: item for item in traffic.live_replicas(agent)}
    with transaction.atomic():
        locked = Agent.objects.select_for_update().get(pk=agent.pk)
        if locked.pending_action == SCALE:
            locked.pending_action, locked.pending_since = "", None
        locked.replicas = count
        lifecycle.record_ports(locked, live, count)
        locked.save()
