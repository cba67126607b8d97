"""An upgrade, as a workflow on the engine: six visible steps, each undone by a compensation.

    plan → backup → deploy → test → cutover → verify

- plan waits for the maintenance window, checks the target again (a version pinned meanwhile is
  refused) and marks the agent as upgrading, so neither the monitor nor a person's lifecycle
  action touches replicas that are being swapped;
- backup keeps the config, the version and a snapshot of the agent's data;
- deploy starts the new version's replicas beside the old ones, reachable only on their own
  stream (the agent's routing keeps its traffic on the old version);
- test asks each new replica for health and readiness and sends smoke tasks to its stream;
- cutover moves traffic by the strategy: blue-green at once, canary by its shares (each step
  measured and judged by the gates), rolling one replica at a time;
- verify watches the gates for a while, then moves the new version home (replicas 0..n-1).

A gate that trips in cutover or verify moves the traffic back at once, in the step itself, and
fails the step; the engine then runs the compensations (stop the new replicas and hand their
leftover tasks back, restore the data when asked, close the upgrade and pin the version). A
person's promote, pause, abort and roll back reach the steps through ``Upgrade.command``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents.lifecycle import UPGRADE
from agents.models import Agent
from agents.runtimes.base import RuntimeFailure
from agents.workflows import registry
from agents.workflows.definitions import Definition, Parameter, Retry, Step
from agents.workflows.kinds import Done, Failed, Result, StepContext, StepKind, Wait, register_kind
from servicing import windows
from servicing.models import Strategy, Upgrade, UpgradeStatus
from servicing.upgrades import backups, gates, replicas, traffic
from servicing.upgrades.lifecycle import (
    blocker,
    close,
    finish,
    load,
    new_spec,
    old_spec,
    record,
    set_phase,
)

logger = logging.getLogger(__name__)

NAME = "servicing-upgrade"
UPGRADE_ID = "${params.upgrade}"
# Plan may wait for a window up to the windows' horizon; cutover and verify wait for traffic
# (a step with too few tasks is extended, or paused for a person) at most a day, then the
# upgrade rolls back by itself.
WINDOW_WAIT_SECONDS = 36 * 24 * 3600
TRAFFIC_WAIT_SECONDS = 24 * 3600


def definition() -> Definition:
    undo = Retry(attempts=5, backoff_seconds=2)
    again = Retry(attempts=2, backoff_seconds=2)
    inputs = {"upgrade": UPGRADE_ID}
    return Definition(
        name=NAME, version=1, title="Upgrade an agent", category="Servicing",
        description="Servicing's upgrade of one agent to a release: plan, backup, deploy, test, "
        "cutover by the strategy, verify; rolled back by itself when a gate trips.",
        parameters=(
            Parameter("upgrade", help="The upgrade's id."),
            Parameter("agent", help="The agent's slug."),
        ),
        steps=(
            Step("plan", "servicing_plan", title="Plan", inputs=inputs,
                 timeout_seconds=WINDOW_WAIT_SECONDS,
                 compensation=Step("close", "servicing_close", title="Close and pin",
                                   inputs=inputs, retry=undo)),
            Step("backup", "servicing_backup", title="Backup", inputs=inputs, after=("plan",),
                 retry=again, timeout_seconds=300,
                 compensation=Step("restore", "servicing_restore", title="Restore the backup",
                                   inputs=inputs, retry=undo, timeout_seconds=300)),
            Step("deploy", "servicing_deploy", title="Deploy", inputs=inputs, after=("backup",),
                 retry=again, timeout_seconds=300,
                 compensation=Step("remove-new", "servicing_switch_back",
                                   title="Back to the old version", inputs=inputs, retry=undo,
                                   timeout_seconds=300)),
            Step("test", "servicing_test", title="Test", inputs=inputs, after=("deploy",),
                 timeout_seconds=120),
            Step("cutover", "servicing_cutover", title="Cutover", inputs=inputs,
                 after=("test",), timeout_seconds=TRAFFIC_WAIT_SECONDS,
                 compensation=Step("switch-back", "servicing_switch_back",
                                   title="Move traffic back", inputs=inputs, retry=undo,
                                   timeout_seconds=300)),
            Step("verify", "servicing_verify", title="Verify", inputs=inputs,
                 after=("cutover",), timeout_seconds=TRAFFIC_WAIT_SECONDS),
        ),
        roll_back_on_failure=True, subject_kind="agent", subject_parameter="agent",
        max_parallel=1,
    )  # fmt: skip


def _asked_to_stop(upgrade: Upgrade) -> str:
    """The reason, when a person asked to abort or roll back."""
    if upgrade.command in ("abort", "rollback"):
        who = upgrade.command_by or "someone"
        why = f": {upgrade.command_reason}" if upgrade.command_reason else ""
        verb = "aborted" if upgrade.command == "abort" else "rolled back"
        return f"{verb} by {who}{why}"
    return ""


# --- plan ---------------------------------------------------------------------------------------


class Plan(StepKind):
    name = "servicing_plan"
    title = "Plan"
    side_effects = "nothing new (the plan is checked again)"

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return "waits for the maintenance window, checks the target and marks the agent upgrading"

    def start(self, ctx: StepContext) -> Result:
        upgrade = load(ctx)
        stop = _asked_to_stop(upgrade)
        if stop:
            return Failed(f"The upgrade was {stop} before it began.", retryable=False)
        now = timezone.now()
        if upgrade.not_before and now >= upgrade.not_before:
            # The windows may have changed while it waited: ask again when its time comes.
            opening = windows.next_opening(upgrade.agent, now)
            if not opening.open and opening.starts_at is not None:
                Upgrade.objects.filter(pk=upgrade.pk).update(
                    not_before=opening.starts_at, window_note=opening.explanation[:300]
                )
                upgrade.refresh_from_db()
        if upgrade.not_before and now < upgrade.not_before:
            set_phase(upgrade, "Waiting for its window",
                      status=UpgradeStatus.SCHEDULED)  # fmt: skip
            return Wait(min(30.0, (upgrade.not_before - now).total_seconds()),
                        f"Waiting for the window at {upgrade.not_before:%Y-%m-%d %H:%M %Z}.")  # fmt: skip
        with transaction.atomic():
            # Locked with the upgrade, so an abort before it began and this start serialise.
            upgrade = Upgrade.objects.select_for_update().get(pk=upgrade.pk)
            if not upgrade.active or _asked_to_stop(upgrade):
                return Failed("The upgrade was ended before it began.", retryable=False)
            agent = Agent.objects.select_for_update().get(pk=upgrade.agent_id)
            problem = blocker(agent, upgrade)
            if problem:
                return Failed(problem, retryable=False)
            if agent.pending_action and agent.pending_action != UPGRADE:
                return Wait(1.0, f"{agent.name} is {agent.pending_label}; waiting for that.")
            agent.pending_action, agent.pending_since = UPGRADE, agent.pending_since or now
            agent.save(update_fields=["pending_action", "pending_since", "updated_at"])
            Upgrade.objects.filter(pk=upgrade.pk).update(
                status=UpgradeStatus.RUNNING, started_at=upgrade.started_at or now,
                phase="Planned",
            )  # fmt: skip
        plan = {
            "agent": agent.slug, "from": upgrade.from_version, "to": upgrade.to_version,
            "strategy": upgrade.strategy, "steps": upgrade.steps, "gates": upgrade.gates,
            "replicas": upgrade.replicas, "window": upgrade.window_note or "now",
        }  # fmt: skip
        return Done(plan, log=f"{agent.name}: {upgrade.from_version} → {upgrade.to_version} "
                    f"by {upgrade.get_strategy_display().lower()}.")  # fmt: skip


class Close(StepKind):
    name = "servicing_close"
    title = "Close and pin"
    side_effects = "nothing new (an upgrade is closed once)"

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return "ends the upgrade as rolled back, pins the version and frees the agent"

    def start(self, ctx: StepContext) -> Result:
        upgrade = load(ctx)
        close(upgrade, ctx.run.error or upgrade.outcome or "Rolled back.")
        return Done({"status": Upgrade.objects.get(pk=upgrade.pk).status})


# --- deploy and test ----------------------------------------------------------------------------


def new_numbers(upgrade: Upgrade) -> list[int]:
    """Where the new version's replicas start: beside the homes (one surge replica for rolling
    and canary, a full set for blue-green)."""
    base = upgrade.backup.get("replicas") or upgrade.agent.replicas
    count = upgrade.replicas if upgrade.strategy == Strategy.BLUE_GREEN else 1
    return list(range(base, base + count))


class Deploy(StepKind):
    name = "servicing_deploy"
    title = "Deploy"
    side_effects = "starts the new replicas again where they are not running"

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return "starts the new version's replicas beside the old ones, on their own stream"

    def start(self, ctx: StepContext) -> Result:
        upgrade = load(ctx)
        agent = upgrade.agent
        numbers = new_numbers(upgrade)
        set_phase(upgrade, f"Starting {len(numbers)} replica(s) of {upgrade.to_version}")
        # Traffic stays on the old version until the cutover; the new replicas read only their
        # own stream.
        traffic.route(agent, upgrade.from_version)
        try:
            started = replicas.launch(agent, new_spec(upgrade), numbers)
        except RuntimeFailure as failure:
            return Failed(f"{upgrade.to_version} did not start: {failure.message}")
        return Done({"replicas": numbers, "started": started.get("replicas", [])},
                    log=f"Started replica(s) {numbers} at {upgrade.to_version}.")  # fmt: skip


class Test(StepKind):
    name = "servicing_test"
    title = "Test"
    side_effects = "sends the smoke tasks again"

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return "checks health and readiness of each new replica and sends smoke tasks to it"

    def start(self, ctx: StepContext) -> Result:
        upgrade = load(ctx)
        stop = _asked_to_stop(upgrade)
        if stop:
            return Failed(f"The upgrade was {stop}.", retryable=False)
        agent = upgrade.agent
        ports = traffic.ports_of(traffic.live_or_none(agent), upgrade.to_version)
        readings = gates.read_replicas(ports)
        sick = [f"replica {r.replica}" for r in readings if not (r.healthy and r.ready)]
        if not readings or sick:
            waited = time.time() - ctx.state.setdefault("began", time.time())
            ctx.save_state(began=ctx.state["began"])
            if waited > 30:
                return Failed(f"{upgrade.to_version} is not healthy and ready: "
                              f"{', '.join(sick) or 'no replica answers'}.", retryable=False)  # fmt: skip
            return Wait(0.5, "Waiting for the new replicas' health and readiness.")
        tag = f"upgrade-{upgrade.pk}-a{ctx.step.attempt}"
        traffic.send_smoke(agent, upgrade.to_version, tag)
        set_phase(upgrade, f"Smoke tasks on {upgrade.to_version}'s own stream")
        ctx.save_state(tag=tag, began=ctx.state.get("began") or time.time())
        return self.poll(ctx)

    def poll(self, ctx: StepContext) -> Result:
        if not ctx.state.get("tag"):
            return self.start(ctx)
        upgrade = load(ctx)
        stop = _asked_to_stop(upgrade)
        if stop:
            return Failed(f"The upgrade was {stop}.", retryable=False)
        tag = ctx.state["tag"]
        answers = traffic.smoke_replies(tag)
        ids = [f"{tag}-smoke-{n}" for n in range(traffic.SMOKE_TASKS)]
        bad = [
            f"{task_id}: {answers[task_id].get('error') or answers[task_id].get('status')}"
            for task_id in ids
            if task_id in answers and answers[task_id].get("status") != "succeeded"
        ]
        if bad:
            return Failed(f"A smoke task failed on {upgrade.to_version}: {bad[0]}",
                          retryable=False)  # fmt: skip
        missing = [task_id for task_id in ids if task_id not in answers]
        if missing:
            return Wait(0.3, f"{len(ids) - len(missing)} of {len(ids)} smoke tasks answered.")
        traffic.forget_smoke(tag)
        versions_seen = sorted({answers[i].get("version", "") for i in ids})
        return Done({"smoke_tasks": len(ids), "answered_by": versions_seen},
                    log=f"{len(ids)} smoke tasks answered by {', '.join(versions_seen)}.")  # fmt: skip


# --- cutover ------------------------------------------------------------------------------------


class Cutover(StepKind):
    name = "servicing_cutover"
    title = "Cutover"
    side_effects = "moves traffic again from the step it was at"

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return "moves traffic to the new version by the strategy, judging the gates"

    def start(self, ctx: StepContext) -> Result:
        upgrade = load(ctx)
        stop = _asked_to_stop(upgrade)
        if stop:
            return trip(upgrade, f"The upgrade was {stop}.", manual=True)
        if upgrade.strategy == Strategy.BLUE_GREEN:
            return self._blue_green(ctx, upgrade)
        if upgrade.strategy == Strategy.ROLLING:
            return self._rolling(ctx, upgrade)
        return self._canary(ctx, upgrade)

    def _blue_green(self, ctx: StepContext, upgrade: Upgrade) -> Result:
        before = _measure(upgrade.agent, upgrade.backup.get("baseline") or {})
        traffic.route(upgrade.agent, upgrade.to_version)
        record(upgrade, {"step": "switch", "weight": 100, "note": "all traffic switched at once",
                         "old": before.get(upgrade.from_version), "new": None})  # fmt: skip
        Upgrade.objects.filter(pk=upgrade.pk).update(weight=100)
        return Done({"weight": 100}, log=f"All traffic on {upgrade.to_version}.")

    def _rolling(self, ctx: StepContext, upgrade: Upgrade) -> Result:
        agent = upgrade.agent
        if "old" not in ctx.state:
            ctx.save_state(
                old=_measure(agent, upgrade.backup.get("baseline") or {}).get(upgrade.from_version)
            )
        traffic.unroute(agent)  # both versions serve the agent's stream while replicas turn over
        count = upgrade.replicas

        def replaced(number: int) -> None:
            done = sorted({*ctx.state.get("replaced", []), number})
            ctx.save_state(replaced=done)
            set_phase(upgrade, f"Replaced {len(done)} of {count} replica(s)",
                      weight=round(100 * len(done) / count))  # fmt: skip
            verdict = _health_verdict(agent, upgrade.to_version)
            if verdict:
                raise _Tripped(verdict)

        try:
            result = replicas.converge(
                agent, new_spec(upgrade), count, on_step=replaced,
                force=upgrade.from_version == upgrade.to_version,  # a config rolled out
                done=frozenset(ctx.state.get("replaced", [])),
            )  # fmt: skip
        except _Tripped as tripped:
            return trip(upgrade, str(tripped))
        except RuntimeFailure as failure:
            return trip(upgrade, f"A replica of {upgrade.to_version} did not start: "
                        f"{failure.message}")  # fmt: skip
        record(upgrade, {"step": "rolling", "weight": 100, "note": f"{count} replica(s) replaced "
                         f"in {result['seconds']} s", "old": ctx.state.get("old"), "new": None})  # fmt: skip
        return Done(result, log=f"Replaced {count} replica(s) one at a time.")

    def _canary(self, ctx: StepContext, upgrade: Upgrade) -> Result:
        agent = upgrade.agent
        index = int(ctx.state.get("index", 0))
        weight = int(upgrade.steps[index])
        if ctx.state.get("weight") != weight:
            serving = upgrade.to_version if weight >= 100 else upgrade.from_version
            canary = "" if weight >= 100 else upgrade.to_version
            traffic.route(agent, serving, canary, 0 if weight >= 100 else weight)
            # Replicas take up a new routing within ROUTING_REFRESH_SECONDS: the step is
            # measured from then on, so the share is this step's and not the last one's.
            ctx.save_state(index=index, weight=weight, baseline=None, failures=0,
                           settles_at=time.time() + traffic.ROUTING_SETTLE_SECONDS)  # fmt: skip
            Upgrade.objects.filter(pk=upgrade.pk).update(weight=weight)
        return self.poll(ctx)

    def poll(self, ctx: StepContext) -> Result:
        upgrade = load(ctx)
        if upgrade.strategy != Strategy.CANARY or "weight" not in ctx.state:
            return self.start(ctx)
        stop = _asked_to_stop(upgrade)
        if stop:
            return trip(upgrade, f"The upgrade was {stop}.", manual=True)
        weight, index = ctx.state["weight"], ctx.state["index"]
        if ctx.state.get("baseline") is None:
            if time.time() < ctx.state.get("settles_at", 0):
                return Wait(0.2, f"Moving {weight} % of traffic to {upgrade.to_version}.")
            readings = gates.read_replicas(traffic.ports_of(traffic.live_or_none(upgrade.agent)))
            ctx.save_state(baseline=gates.snapshot(readings), began=time.time())
        settings_ = gates.parse_gates(upgrade.gates)
        figures, unhealthy = _figures(upgrade, ctx.state["baseline"])
        old, new = figures.get(upgrade.from_version), figures.get(upgrade.to_version)
        # At 100 % the old version takes nothing: its latency a step before is the reference.
        previous = ctx.state.get("previous_old")
        verdict = gates.judge(
            settings_, old, new, unhealthy=unhealthy,
            latency_baseline=gates.VersionFigures.from_dict(previous) if previous else None,
        )  # fmt: skip
        elapsed = time.time() - ctx.state["began"]
        label = f"{weight} %"
        if verdict.outcome == "failed":
            failures = int(ctx.state.get("failures", 0)) + 1
            ctx.save_state(failures=failures)
            limit = settings_["health_failure_limit" if verdict.failed_gates == ["health"]
                              else "failure_limit"]  # fmt: skip
            if failures >= limit:
                record(upgrade, _row(label, weight, verdict, old, new, "tripped"))
                return trip(upgrade, f"The {', '.join(verdict.failed_gates)} gate tripped at "
                            f"{label}: {'; '.join(verdict.reasons)}.", gate=True)  # fmt: skip
            return Wait(1.0, f"{label}: a check failed ({failures} of {int(limit)}).")
        ctx.save_state(failures=0)
        promoted = upgrade.command == "promote"
        if upgrade.command == "pause":
            set_phase(upgrade, f"Paused at {label} by {upgrade.command_by}",
                      status=UpgradeStatus.PAUSED)  # fmt: skip
            return Wait(1.0, f"Paused at {label}.")
        if not promoted and (
            verdict.outcome == "inconclusive" or elapsed < settings_["min_step_seconds"]
        ):
            share = "" if verdict.share is None else f", {verdict.share:g} % on the new version"
            set_phase(upgrade, f"Canary at {label}: {verdict.tasks} tasks so far (judged from "
                      f"{int(settings_['min_tasks'])}){share}",
                      status=UpgradeStatus.RUNNING)  # fmt: skip
            return Wait(1.0, verdict.reasons[0])
        record(upgrade, _row(label, weight, verdict, old, new,
                             "promoted by hand" if promoted else "passed"))  # fmt: skip
        if promoted:
            Upgrade.objects.filter(pk=upgrade.pk).update(command="", command_reason="")
        if index + 1 >= len(upgrade.steps):
            return Done({"steps": upgrade.steps}, log=f"Canary reached 100 % in "
                        f"{len(upgrade.steps)} step(s).")  # fmt: skip
        if old is not None and old.processed:
            ctx.save_state(previous_old=old.to_dict())
        ctx.save_state(index=index + 1)
        return self.start(ctx)


class _Tripped(Exception):
    pass


def _row(label, weight, verdict, old, new, outcome) -> dict[str, Any]:
    return {
        "step": label, "weight": weight, "share": verdict.share, "tasks": verdict.tasks,
        "old": old.to_dict() if old else None, "new": new.to_dict() if new else None,
        "verdict": outcome, "reasons": verdict.reasons,
    }  # fmt: skip


def _figures(upgrade: Upgrade, baseline: Mapping[str, Any]):
    readings = gates.read_replicas(traffic.ports_of(traffic.live_or_none(upgrade.agent)))
    unhealthy = [
        f"replica {r.replica}"
        for r in readings
        if r.version == upgrade.to_version and not (r.healthy and r.ready)
    ]
    if not any(r.version == upgrade.to_version for r in readings):
        unhealthy.append(f"no replica of {upgrade.to_version} answers")
    return gates.figures_since(baseline, readings), unhealthy


def _measure(agent: Agent, baseline: Mapping[str, Any]) -> dict[str, Any]:
    readings = gates.read_replicas(traffic.ports_of(traffic.live_or_none(agent)))
    return {v: f.to_dict() for v, f in gates.figures_since(baseline, readings).items()}


def _health_verdict(agent: Agent, version: str) -> str:
    readings = gates.read_replicas(traffic.ports_of(traffic.live_or_none(agent), version))
    sick = [f"replica {r.replica}" for r in readings if not (r.healthy and r.ready)]
    return f"{version} is not healthy: {', '.join(sick)}" if sick else ""


def trip(upgrade: Upgrade, reason: str, *, gate: bool = False, manual: bool = False) -> Result:
    """Move all traffic back to the old version now, and fail the step: the engine rolls back."""
    began = time.monotonic()
    traffic.route(upgrade.agent, upgrade.from_version)
    seconds = round(time.monotonic() - began, 3)
    Upgrade.objects.filter(pk=upgrade.pk).update(
        outcome=reason[:2000], weight=0,
        phase="Gate tripped; rolling back" if gate else "Rolling back",
    )  # fmt: skip
    record(upgrade, {"step": "roll-back", "weight": 0, "note": reason,
                     "switch_seconds": seconds, "gate": gate, "manual": manual})  # fmt: skip
    return Failed(reason, output={"tripped": gate, "manual": manual}, retryable=False)


# --- verify -------------------------------------------------------------------------------------


class Verify(StepKind):
    name = "servicing_verify"
    title = "Verify"
    side_effects = "watches the gates again"

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return "watches the gates for a while, then moves the new version home"

    def start(self, ctx: StepContext) -> Result:
        upgrade = load(ctx)
        if "began" not in ctx.state:
            readings = gates.read_replicas(traffic.ports_of(traffic.live_or_none(upgrade.agent)))
            ctx.save_state(began=time.time(), baseline=gates.snapshot(readings), failures=0)
        return self.poll(ctx)

    def poll(self, ctx: StepContext) -> Result:
        if "began" not in ctx.state:
            return self.start(ctx)
        upgrade = load(ctx)
        if ctx.state.get("finishing"):
            return self._finish(ctx, upgrade)
        stop = _asked_to_stop(upgrade)
        if stop:
            return trip(upgrade, f"The upgrade was {stop}.", manual=True)
        settings_ = gates.parse_gates(upgrade.gates)
        figures, unhealthy = _figures(upgrade, ctx.state["baseline"])
        new = figures.get(upgrade.to_version)
        # The old version's latency, as measured before the cutover, is what the new one's is
        # compared with.
        previous = next((row["old"] for row in reversed(upgrade.measurements)
                         if (row.get("old") or {}).get("processed")), None)  # fmt: skip
        verdict = gates.judge(
            settings_, figures.get(upgrade.from_version), new, unhealthy=unhealthy,
            latency_baseline=gates.VersionFigures.from_dict(previous) if previous else None,
        )  # fmt: skip
        elapsed = time.time() - ctx.state["began"]
        if verdict.outcome == "failed":
            failures = int(ctx.state.get("failures", 0)) + 1
            ctx.save_state(failures=failures)
            if failures >= settings_["failure_limit"]:
                record(upgrade, _row("verify", 100, verdict, figures.get(upgrade.from_version),
                                     new, "tripped"))  # fmt: skip
                return trip(upgrade, f"The {', '.join(verdict.failed_gates)} gate tripped while "
                            f"verifying: {'; '.join(verdict.reasons)}.", gate=True)  # fmt: skip
            return Wait(1.0, "A check failed while verifying.")
        ctx.save_state(failures=0)
        promoted = upgrade.command == "promote"
        if elapsed < settings_["verify_seconds"] and not promoted:
            set_phase(upgrade, f"Verifying: {int(elapsed)} of {int(settings_['verify_seconds'])} s")
            return Wait(1.0, "Watching the gates.")
        if verdict.outcome == "inconclusive" and not promoted:
            set_phase(upgrade, f"Verify inconclusive: {verdict.reasons[0]}; waiting for traffic "
                      "(promote to finish, or roll back)", status=UpgradeStatus.PAUSED)  # fmt: skip
            return Wait(2.0, verdict.reasons[0])
        record(upgrade, _row("verify", 100, verdict, figures.get(upgrade.from_version), new,
                             "promoted by hand" if promoted else "passed"))  # fmt: skip
        ctx.save_state(finishing=True)
        return self._finish(ctx, upgrade)

    def _finish(self, ctx: StepContext, upgrade: Upgrade) -> Result:
        set_phase(upgrade, "Moving the new version home", status=UpgradeStatus.RUNNING)
        try:
            result = replicas.converge(upgrade.agent, new_spec(upgrade), upgrade.replicas)
        except RuntimeFailure as failure:
            return Wait(2.0, f"Moving home: {failure.message}")
        traffic.hand_back(upgrade.agent, upgrade.from_version)
        traffic.unroute(upgrade.agent)
        finish(upgrade)
        return Done(result, log=f"{upgrade.agent.name} runs {upgrade.to_version} on "
                    f"{upgrade.replicas} replica(s).")  # fmt: skip


# --- switching back -----------------------------------------------------------------------------


class SwitchBack(StepKind):
    name = "servicing_switch_back"
    title = "Back to the old version"
    side_effects = "nothing new (the old version is where traffic goes)"

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return "moves traffic to the old version, stops the new replicas and hands back their tasks"

    def start(self, ctx: StepContext) -> Result:
        upgrade = load(ctx)
        agent = upgrade.agent
        traffic.route(agent, upgrade.from_version)
        count = (upgrade.backup or {}).get("replicas") or agent.replicas
        try:
            result = replicas.converge(agent, old_spec(upgrade), count)
        except RuntimeFailure as failure:
            return Failed(f"The old version did not start again: {failure.message}")
        moved = traffic.hand_back(agent, upgrade.to_version)
        traffic.unroute(agent)
        return Done({**result, "handed_back": moved},
                    log=f"{agent.name} runs {upgrade.from_version} again; {moved} task(s) "
                    "handed back.")  # fmt: skip


KINDS = (
    Plan(),
    Close(),
    backups.Backup(),
    backups.Restore(),
    Deploy(),
    Test(),
    Cutover(),
    Verify(),
    SwitchBack(),
)


def register_all() -> None:
    for kind in KINDS:
        register_kind(kind)
    registry.register(definition())
