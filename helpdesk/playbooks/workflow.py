"""A playbook run as a workflow on the engine: one definition per playbook version (and per
selection of its steps), its checks and actions as steps in order, each action that needs an
approval behind an ``approval`` step of the engine (an Operator approves or rejects it on the
run's page).

Definitions are data in the database (``Playbook``), so a process registers the one a run needs
when it needs it: the help desk before it starts a run or shows one, and a Celery worker before
a workflow task (``task_prerun``), reading the run's definition name
(``playbook-<playbook id>[-<selection>]``) and its ``steps`` parameter.

- ``helpdesk_check`` evaluates a check now and succeeds with what it saw (a check that is not ok
  is an observation, not a failure: the actions after it act on what it found);
- ``helpdesk_action`` takes a quick action through ``helpdesk.actions.services.run_action`` as
  the person who started the run: on each agent its target check found short in this run (or
  now, when that check was not selected), or on the customer when its ``when`` check was not
  ok; nothing to do is a success that says so. A restart is waited for until its operation ends. What each target got is kept in the
  step's state, so a step carried on by another worker does not act twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import PermissionDenied

from agents.models import Operation
from agents.workflows import engine, registry
from agents.workflows.definitions import Definition, Parameter, Step
from agents.workflows.kinds import Done, Failed, Result, StepContext, StepKind, Wait, register_kind
from agents.workflows.models import RunStatus, StepRun, StepStatus, WorkflowRun
from helpdesk.actions.services import SPECS, run_action
from helpdesk.models import Customer, Playbook
from helpdesk.playbooks import checks
from portal.refusals import Refused

logger = logging.getLogger(__name__)

PREFIX = "playbook-"
ACTION_TIMEOUT_SECONDS = 900


# --- definitions ---------------------------------------------------------------------------------


def selection_key(selected: list[str] | None) -> str:
    if not selected:
        return ""
    return hashlib.sha256(",".join(selected).encode()).hexdigest()[:8]


def definition_name(playbook: Playbook, selected: list[str] | None = None) -> str:
    key = selection_key(selected)
    return f"{PREFIX}{playbook.pk}" + (f"-{key}" if key else "")


def build_definition(playbook: Playbook, selected: list[str] | None = None) -> Definition:
    chosen = [s for s in playbook.steps if not selected or s["id"] in selected]
    by_id = {s["id"]: s for s in playbook.steps}
    steps: list[Step] = []
    for step in chosen:
        after = (steps[-1].id,) if steps else ()
        title = step["title"]
        if step["kind"] == "check":
            steps.append(Step(step["id"], "helpdesk_check", title=title, after=after, inputs={
                "customer": "${params.customer}", "check": step["check"], "expect": step["expect"],
            }, timeout_seconds=120))  # fmt: skip
            continue
        if step.get("approval"):
            gate = f"{step['id']}-approval"
            steps.append(Step(gate, "approval", title=f"Approve: {title}", after=after,
                              inputs={"role": "Operator"}, timeout_seconds=7 * 24 * 3600))  # fmt: skip
            after = (gate,)
        inputs: dict[str, Any] = {
            "customer": "${params.customer}", "action": step["action"],
            "params": step.get("params") or {},
        }  # fmt: skip
        for key in ("target", "when"):
            if step.get(key):
                ref = by_id[step[key]]
                inputs[key] = {"step": ref["id"], "check": ref["check"], "expect": ref["expect"]}
        steps.append(Step(step["id"], "helpdesk_action", title=title, after=after, inputs=inputs,
                          timeout_seconds=ACTION_TIMEOUT_SECONDS))  # fmt: skip
    suffix = " (selected steps)" if selected else ""
    return Definition(
        name=definition_name(playbook, selected), version=playbook.version,
        title=f"Playbook: {playbook.title} v{playbook.version}{suffix}",
        category="Help desk", description=playbook.description,
        parameters=(
            Parameter("customer", help="The customer id, e.g. acme-corp."),
            Parameter("steps", required=False, default="", help="The steps chosen (all if empty)."),
        ),
        steps=tuple(steps), subject_kind="customer", subject_parameter="customer", max_parallel=1,
    )  # fmt: skip


def register_playbook(playbook: Playbook, selected: list[str] | None = None) -> Definition:
    name = definition_name(playbook, selected)
    try:
        return registry.get(name, playbook.version)
    except registry.UnknownDefinition:
        return registry.register(build_definition(playbook, selected))


def ensure_registered(run: WorkflowRun) -> None:
    """Register the playbook definition ``run`` needs in this process, if it is one of ours."""
    if not run.definition.startswith(PREFIX) or engine.definition_of(run) is not None:
        return
    number = run.definition.removeprefix(PREFIX).split("-")[0]
    playbook = Playbook.objects.filter(pk=int(number)).first() if number.isdecimal() else None
    if playbook is None:
        return
    text = str((run.parameters or {}).get("steps") or "")
    selected = [s for s in text.split(",") if s] or None
    if definition_name(playbook, selected) == run.definition:
        register_playbook(playbook, selected)


def ensure_active_registered() -> None:
    """Every unfinished playbook run's definition (before a sweep reads them)."""
    active = WorkflowRun.objects.filter(definition__startswith=PREFIX).exclude(
        status__in=(RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED,
                    RunStatus.ROLLED_BACK)
    ).only("id", "definition", "version", "parameters")  # fmt: skip
    for run in active:
        ensure_registered(run)


def before_task(sender=None, task_id=None, task=None, args=None, kwargs=None, **extra) -> None:
    """Celery ``task_prerun``: a workflow task may need a playbook's definition."""
    name = getattr(task, "name", "")
    try:
        if name == engine.RUN_STEP_TASK and args:
            run = WorkflowRun.objects.filter(steps__pk=args[0]).first()
            if run is not None:
                ensure_registered(run)
        elif name.startswith("agents.") and "workflow" in name:
            ensure_active_registered()
    except Exception:  # a lookup before a task must never cost the task
        logger.exception("could not register playbook definitions before %s", name)


# --- step kinds ----------------------------------------------------------------------------------


def _customer(inputs: Mapping[str, Any]) -> Customer | None:
    return Customer.objects.filter(key=str(inputs.get("customer") or "")).first()


class HelpdeskCheck(StepKind):
    name = "helpdesk_check"
    title = "Help desk check"
    side_effects = "nothing: it reads the state again"

    def check(self, inputs: Mapping[str, Any]) -> None:
        found = checks.CHECKS.get(inputs.get("check"))  # type: ignore[arg-type]
        if found is None:
            raise ValueError(f"no check {inputs.get('check')!r}")
        found.check_expect(inputs.get("expect"))

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return f"checks {inputs.get('check')}"

    def start(self, ctx: StepContext) -> Result:
        customer = _customer(ctx.inputs)
        if customer is None:
            return Failed(f"There is no customer {ctx.inputs.get('customer')!r}.", retryable=False)
        seen = checks.evaluate(customer, ctx.inputs["check"], ctx.inputs["expect"])
        return Done(seen.as_dict(), log=("ok: " if seen.ok else "not ok: ") + seen.seen)


class HelpdeskAction(StepKind):
    name = "helpdesk_action"
    title = "Help desk quick action"
    side_effects = "takes the action again on the targets it did not reach"

    def check(self, inputs: Mapping[str, Any]) -> None:
        if inputs.get("action") not in SPECS:
            raise ValueError(f"no quick action {inputs.get('action')!r}")

    def describe(self, inputs: Mapping[str, Any]) -> str:
        return f"takes the quick action {inputs.get('action')}"

    def start(self, ctx: StepContext) -> Result:
        customer = _customer(ctx.inputs)
        if customer is None:
            return Failed(f"There is no customer {ctx.inputs.get('customer')!r}.", retryable=False)
        if "targets" not in ctx.state:
            targets = self._targets(ctx, customer)
            ref = ctx.inputs.get("target") or ctx.inputs.get("when") or {}
            skipped = (
                ""
                if targets
                else f"Nothing to do: check {ref.get('step')!r} found nothing to act on."
            )
            ctx.save_state(targets=targets, results={}, skipped=skipped)
        results: dict[str, dict] = dict(ctx.state.get("results") or {})
        for target in ctx.state["targets"]:
            key = target or "customer"
            if key in results:
                continue
            results[key] = self._act(ctx, customer, target)
            ctx.save_state(results=results)
        return self.poll(ctx)

    def poll(self, ctx: StepContext) -> Result:
        if "targets" not in ctx.state:
            return self.start(ctx)
        results: dict[str, dict] = dict(ctx.state.get("results") or {})
        if not ctx.state["targets"]:
            return Done({"results": {}, "skipped": ctx.state.get("skipped", "")},
                        log=ctx.state.get("skipped", ""))  # fmt: skip
        waiting = self._settle(results)
        ctx.save_state(results=results)
        if waiting:
            return Wait(1.0, f"Waiting for {', '.join(waiting)}.")
        log = "\n".join(f"{k}: {r['message']}" for k, r in results.items())
        failed = [r["message"] for r in results.values() if not r["ok"]]
        if failed:
            return Failed("; ".join(failed)[:2000], {"results": results}, log=log, retryable=False)
        return Done({"results": results}, log=log)

    def _targets(self, ctx: StepContext, customer: Customer) -> list[str]:
        """The agents to act on ([""]: the customer itself; []: nothing to do), as the check
        the step names found them in this run (checked now when that step was not selected)."""
        ref = ctx.inputs.get("target") or ctx.inputs.get("when")
        if not ref:
            return [""]
        found = (
            StepRun.objects.filter(
                run=ctx.run, step_id=ref["step"], current=True, status=StepStatus.SUCCEEDED
            )
            .values_list("output", flat=True)
            .first()
        )
        if found is None:
            found = checks.evaluate(customer, ref["check"], ref["expect"]).as_dict()
        if ctx.inputs.get("target"):
            return [str(slug) for slug in found.get("agents") or []]
        return [] if found.get("ok") else [""]

    def _act(self, ctx: StepContext, customer: Customer, target: str) -> dict[str, Any]:
        try:
            result = run_action(
                ctx.actor, customer, ctx.inputs["action"], agent=target or None,
                params=dict(ctx.inputs.get("params") or {}),
            )  # fmt: skip
        except (Refused, PermissionDenied) as refused:
            return {
                "ok": False,
                "message": getattr(refused, "message", str(refused)),
                "details": {},
            }
        return {"ok": result.ok, "message": result.message, "details": result.details}

    def _settle(self, results: dict[str, dict]) -> list[str]:
        """Follow the lifecycle operations the actions asked for; answers what still runs."""
        waiting = []
        for key, result in results.items():
            operation_id = (result.get("details") or {}).get("operation")
            if not operation_id or result.get("settled"):
                continue
            operation = Operation.objects.filter(pk=operation_id).first()
            if operation is None or operation.is_finished:
                result["settled"] = True
                if operation is not None and operation.status != Operation.Status.SUCCEEDED:
                    result["ok"] = False
                    result["message"] = f"{key}: {operation.action} failed: {operation.error}"
                elif operation is not None:
                    result["message"] = (
                        f"{key}: {operation.action} done (operation {operation.pk})."
                    )
                continue
            waiting.append(f"{key}'s {operation.action}")
        return waiting


def register_all() -> None:
    register_kind(HelpdeskCheck())
    register_kind(HelpdeskAction())
