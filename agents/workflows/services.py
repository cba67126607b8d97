"""What people do to workflows, at every door: start a run, pause, resume, cancel, retry (after
a preview), roll back, mark a step, approve; each permission-checked and audited, and each
refused with the reason, changing nothing, when the run's status does not allow it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from portal import roles
from portal.actors import Actor
from portal.models import AuditEntry
from portal.refusals import Refused
from portal.services import audits_refusals, record_audit

from . import engine, live, registry
from .definitions import Definition
from .kinds import kind
from .models import (
    STEP_BUSY,
    DeadlineState,
    Role,
    RunStatus,
    StepRun,
    StepStatus,
    WorkflowRun,
)

RETRY_MODES = ("failed", "from")
BULK_ACTIONS = ("retry", "cancel")
BULK_MAX = 500
REASON_CHARS = 300


class WorkflowRefused(Refused):
    """A control the run's status does not allow (409), input that names nothing (400), or a
    run that does not exist (404)."""

    status_by_code = {**Refused.status_by_code, "invalid": 400, "not_found": 404}


def get_run(run_id: object) -> WorkflowRun:
    try:
        number = int(str(run_id))
        if not 0 < number < 2**63:
            raise ValueError
    except ValueError:
        raise WorkflowRefused(
            f"{str(run_id)[:40]!r} is not a run number; use the number the list shows.", "invalid"
        ) from None
    run = WorkflowRun.objects.filter(pk=number).first()
    if run is None:
        raise WorkflowRefused(f"There is no workflow run #{number}.", "not_found")
    return run


def _audited(actor: Actor, action: str, run: WorkflowRun | None, work):
    """Run ``work()``; a refusal is audited as one and raised again."""
    try:
        return work()
    except (Refused, PermissionDenied) as refused:
        record_audit(
            actor, f"workflow.{action}", target=f"workflow:{run.pk}" if run else "",
            outcome=AuditEntry.Outcome.REFUSED, error=getattr(refused, "message", str(refused)),
        )  # fmt: skip
        raise


# --- starting --------------------------------------------------------------------------------


def start(
    actor: Actor,
    name: object,
    parameters: Mapping[str, Any] | None = None,
    *,
    version: int | None = None,
) -> WorkflowRun:
    """Start a run of the definition ``name`` with ``parameters`` (checked against it)."""

    def go() -> WorkflowRun:
        actor.require(roles.OPERATE, "start workflows")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise WorkflowRefused("Parameters are an object of names and values.", "invalid")
        definition = registry.get(str(name), version)
        values = definition.parse_parameters(parameters)
        subject = (
            str(values.get(definition.subject_parameter, ""))
            if definition.subject_parameter
            else ""
        )
        with transaction.atomic():
            run = engine.create_run(
                definition, values, actor, subject_kind=definition.subject_kind, subject=subject
            )
            record_audit(
                actor, "workflow.start", target=f"workflow:{run.pk}", definition=definition.key,
                parameters=values,
            )  # fmt: skip
        return run

    return _audited(actor, "start", None, go)


# --- pause, resume, cancel -------------------------------------------------------------------


# How a refusal says where a run is: "Run #12 has failed; ...".
STATUS_PHRASES: dict[str, str] = {
    RunStatus.PENDING: "is pending",
    RunStatus.RUNNING: "is running",
    RunStatus.PAUSED: "is paused",
    RunStatus.SUCCEEDED: "has succeeded",
    RunStatus.FAILED: "has failed",
    RunStatus.CANCELLED: "was cancelled",
    RunStatus.ROLLING_BACK: "is rolling back",
    RunStatus.ROLLED_BACK: "was rolled back",
}


def _refuse_status(run: WorkflowRun, doing: str, allowed: Iterable[str]) -> None:
    if run.status not in allowed:
        labels = [RunStatus(s).label.lower().replace("rolled back", "rolled-back") for s in allowed]
        names = labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} or {labels[-1]}"
        raise WorkflowRefused(
            f"Run #{run.pk} {STATUS_PHRASES.get(run.status, run.status)}; only a {names} run "
            f"can be {doing}."
        )


def pause(run: WorkflowRun, actor: Actor) -> WorkflowRun:
    """No new step starts; steps already running finish."""

    def go() -> WorkflowRun:
        actor.require(roles.OPERATE, "pause workflows")
        with transaction.atomic():
            locked = WorkflowRun.objects.select_for_update().get(pk=run.pk)
            _refuse_status(locked, "paused", [RunStatus.RUNNING])
            locked.status = RunStatus.PAUSED
            locked.paused_at = timezone.now()
            locked.save(update_fields=["status", "paused_at"])
            record_audit(actor, "workflow.pause", target=f"workflow:{run.pk}")
            live.run_changed(run.pk)
        return locked

    return _audited(actor, "pause", run, go)


def resume(run: WorkflowRun, actor: Actor) -> WorkflowRun:
    def go() -> WorkflowRun:
        actor.require(roles.OPERATE, "resume workflows")
        with transaction.atomic():
            locked = WorkflowRun.objects.select_for_update().get(pk=run.pk)
            _refuse_status(locked, "resumed", [RunStatus.PAUSED])
            paused_for = (
                (timezone.now() - locked.paused_at).total_seconds() if locked.paused_at else 0
            )
            locked.status = RunStatus.RUNNING
            locked.paused_at = None
            queued = list(
                locked.steps.filter(current=True, status=StepStatus.QUEUED).values_list(
                    "pk", flat=True
                )
            )
            engine.dispatch([(pk, 0.0) for pk in queued] + engine.advance(locked))
            record_audit(
                actor, "workflow.resume", target=f"workflow:{run.pk}",
                paused_seconds=round(paused_for, 1),
            )  # fmt: skip
        return locked

    return _audited(actor, "resume", run, go)


CANCELLABLE = [RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.ROLLING_BACK]


def cancel(run: WorkflowRun, actor: Actor) -> WorkflowRun:
    """Running steps are asked to stop; steps not started are skipped."""

    def go() -> WorkflowRun:
        actor.require(roles.OPERATE, "cancel workflows")
        with transaction.atomic():
            locked = WorkflowRun.objects.select_for_update().get(pk=run.pk)
            _refuse_status(locked, "cancelled", CANCELLABLE)
            stopped = _cancel_locked(locked, f"Cancelled by {actor.label}.")
            record_audit(
                actor, "workflow.cancel", target=f"workflow:{run.pk}", stopped_steps=stopped
            )
        return locked

    return _audited(actor, "cancel", run, go)


def cancel_internal(run: WorkflowRun, why: str) -> None:
    """Cancel on the system's behalf (a parent run cancelled, a deadline missed)."""
    with transaction.atomic():
        locked = WorkflowRun.objects.select_for_update().get(pk=run.pk)
        if locked.status in CANCELLABLE:
            _cancel_locked(locked, f"Cancelled: {why}.")
            record_audit(Actor.system("workflows"), "workflow.cancel", target=f"workflow:{run.pk}",
                         why=why)  # fmt: skip


def _cancel_locked(run: WorkflowRun, reason: str) -> list[str]:
    now = timezone.now()
    rows = list(run.steps.filter(current=True))
    stopped = []
    for row in rows:
        if row.status in STEP_BUSY:
            engine._cancel_row(run, row, now, reason)
            stopped.append(row.step_id)
        elif row.status == StepStatus.PENDING:
            engine._end_row(
                row, StepStatus.SKIPPED, now, reason=f"Not started: {reason[0].lower()}{reason[1:]}"
            )
    engine._finish(run, RunStatus.CANCELLED, reason)
    engine._recount(run, rows)
    run.save()
    live.run_changed(run.pk)
    return stopped


# --- retry -----------------------------------------------------------------------------------


@dataclass
class PlannedStep:
    step_id: str
    title: str
    status: str  # the current attempt's status
    why: str = ""
    side_effect: str = ""
    output: dict = field(default_factory=dict)


@dataclass
class RetryPlan:
    run: WorkflowRun
    mode: str
    from_step: str
    parameters: dict
    changed: list[str]
    rerun: list[PlannedStep]
    reused: list[PlannedStep]
    continues_rollback: bool = False

    def as_dict(self) -> dict:
        def step(p: PlannedStep) -> dict:
            return {"step": p.step_id, "title": p.title, "status": p.status, "why": p.why,
                    "repeats": p.side_effect, "output": p.output}  # fmt: skip

        return {
            "workflow_id": self.run.pk, "mode": self.mode, "from_step": self.from_step,
            "parameters": self.parameters, "changed_parameters": self.changed,
            "continues_rollback": self.continues_rollback,
            "will_run": [step(p) for p in self.rerun], "reused": [step(p) for p in self.reused],
            "side_effects": [f"{p.title}: {p.side_effect}" for p in self.rerun if p.side_effect],
        }  # fmt: skip


RETRYABLE = [RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.ROLLED_BACK]


def plan_retry(
    run: WorkflowRun,
    mode: str = "failed",
    from_step: str = "",
    parameters: Mapping[str, Any] | None = None,
) -> RetryPlan:
    """What a retry would do, without doing it: the steps that run again and why, the outputs
    reused, and the side effects that repeat."""
    _refuse_status(run, "retried", RETRYABLE)
    if mode not in RETRY_MODES:
        raise WorkflowRefused(
            f"{str(mode)[:40]!r} is not a retry mode; use failed or from.", "invalid"
        )
    definition = engine.definition_of(run)
    if definition is None:
        raise WorkflowRefused(
            f"Definition {run.definition} v{run.version} is no longer registered."
        )
    rows = {r.step_id: r for r in run.steps.filter(current=True, role=Role.FORWARD)}
    if mode == "from" and from_step not in rows:
        known = ", ".join(s.id for s in definition.steps)
        raise WorkflowRefused(
            f"{str(from_step)[:63]!r} is not a step of {run.title}; its steps: {known}.", "invalid"
        )
    new_parameters = dict(run.parameters)
    changed: list[str] = []
    if parameters:
        if not isinstance(parameters, Mapping):
            raise WorkflowRefused("Parameters are an object of names and values.", "invalid")
        new_parameters = definition.parse_parameters({**run.parameters, **parameters})
        changed = sorted(k for k in new_parameters if new_parameters[k] != run.parameters.get(k))
    if run.phase == Role.COMPENSATION and run.status == RunStatus.FAILED:
        failed = run.steps.filter(current=True, role=Role.COMPENSATION, status=StepStatus.FAILED)
        rerun = [PlannedStep(r.step_id, r.title, r.status, "its compensation failed",
                             kind(r.kind).side_effects) for r in failed]  # fmt: skip
        return RetryPlan(run, mode, from_step, new_parameters, changed, rerun, [], True)
    why: dict[str, str] = {}
    for step in definition.steps:
        row = rows.get(step.id)
        status = row.status if row else StepStatus.PENDING
        if run.status == RunStatus.ROLLED_BACK:
            why[step.id] = (
                "the roll-back undid it" if status == StepStatus.SUCCEEDED else "it did not finish"
            )
        elif status not in (StepStatus.SUCCEEDED, StepStatus.SKIPPED) or (
            status == StepStatus.SKIPPED and not (row and row.reason.startswith("Marked"))
        ):
            why[step.id] = f"it {'never ran' if status == StepStatus.PENDING else status}"
    if mode == "from":
        why.setdefault(from_step, "you chose to retry from it")
        for step_id in descendants(definition, from_step):
            why.setdefault(step_id, f"it comes after {definition.step(from_step).label}")
    for name in changed:
        for step in definition.steps:
            if f"${{params.{name}}}" in str(step.inputs):
                why.setdefault(step.id, f"its input {name} changed")
                for step_id in descendants(definition, step.id):
                    why.setdefault(step_id, f"it comes after {step.label}")
    rerun, reused = [], []
    for step in definition.steps:
        row = rows.get(step.id)
        status = row.status if row else StepStatus.PENDING
        if step.id in why:
            effect = ""
            if status in (StepStatus.SUCCEEDED, StepStatus.CANCELLED, StepStatus.RUNNING) or (
                status == StepStatus.FAILED and row and row.started_at
            ):
                effect = kind(step.kind).side_effects
            rerun.append(PlannedStep(step.id, step.label, status, why[step.id], effect))
        else:
            reused.append(PlannedStep(step.id, step.label, status, "its output is reused",
                                      output=dict(row.output) if row else {}))  # fmt: skip
    return RetryPlan(run, mode, from_step, new_parameters, changed, rerun, reused)


def descendants(definition: Definition, step_id: str) -> list[str]:
    found: list[str] = []
    for step in definition.steps:  # declared order is topological
        if step_id in step.after or any(d in found for d in step.after):
            found.append(step.id)
    return found


def retry(
    run: WorkflowRun,
    actor: Actor,
    mode: str = "failed",
    from_step: str = "",
    parameters: Mapping[str, Any] | None = None,
) -> WorkflowRun:
    """Run again what the plan names; the earlier attempts stay as the rows the new ones
    replace (the run's lineage)."""

    def go() -> WorkflowRun:
        actor.require(roles.OPERATE, "retry workflows")
        with transaction.atomic():
            locked = WorkflowRun.objects.select_for_update().get(pk=run.pk)
            plan = plan_retry(locked, mode, from_step, parameters)
            if not plan.rerun:
                raise WorkflowRefused(f"Run #{run.pk} has nothing to retry.")
            _apply_retry(locked, plan, actor)
            record_audit(
                actor, "workflow.retry", target=f"workflow:{run.pk}", mode=mode,
                from_step=from_step, steps=[p.step_id for p in plan.rerun],
                changed_parameters=plan.changed,
            )  # fmt: skip
        return locked

    return _audited(actor, "retry", run, go)


def _apply_retry(run: WorkflowRun, plan: RetryPlan, actor: Actor) -> None:
    now = timezone.now()
    role = Role.COMPENSATION if plan.continues_rollback else Role.FORWARD
    rows = {r.step_id: r for r in run.steps.filter(current=True, role=role)}
    reason = f"Retried by {actor.label}" + (
        f" from {plan.from_step}" if plan.mode == "from" else ""
    )
    for planned in plan.rerun:
        row = rows[planned.step_id]
        if row.status == StepStatus.PENDING and not row.started_at:
            continue
        again = engine._new_attempt(row, f"{reason}: {planned.why}.", now)
        again.save()
    run.retries += 1
    run.parameters = plan.parameters
    run.error = ""
    run.finished_at = None
    run.status = RunStatus.ROLLING_BACK if plan.continues_rollback else RunStatus.RUNNING
    if not plan.continues_rollback:
        run.phase = Role.FORWARD
        definition = engine.definition_of(run)
        if definition is not None and definition.deadline_seconds:
            run.deadline_at = now + timedelta(seconds=definition.deadline_seconds)
            run.deadline_state = DeadlineState.ON_TIME
            run.deadline_alerted_at = None
    engine.dispatch(engine.advance(run))


# --- roll back -------------------------------------------------------------------------------

ROLLBACKABLE = [
    RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.SUCCEEDED,
]  # fmt: skip


def plan_rollback(run: WorkflowRun) -> dict:
    """The compensations a roll-back would run, in order, and the done steps nothing undoes."""
    _refuse_status(run, "rolled back", ROLLBACKABLE)
    definition = engine.definition_of(run)
    if definition is None:
        raise WorkflowRefused(
            f"Definition {run.definition} v{run.version} is no longer registered."
        )
    done = sorted(
        run.steps.filter(current=True, role=Role.FORWARD, status=StepStatus.SUCCEEDED),
        key=lambda r: (r.finished_at, r.position), reverse=True,
    )  # fmt: skip
    undo, kept = [], []
    for row in done:
        compensation = definition.step(row.step_id).compensation
        if compensation is None:
            kept.append({"step": row.step_id, "title": row.title})
        else:
            undo.append({
                "step": row.step_id, "title": compensation.title or f"Undo {row.title.lower()}",
                "undoes": row.title, "does": kind(compensation.kind).describe(compensation.inputs),
            })  # fmt: skip
    busy = list(
        run.steps.filter(current=True, status__in=STEP_BUSY).values_list("title", flat=True)
    )
    return {"workflow_id": run.pk, "compensations": undo, "not_undone": kept, "cancels": busy}


def rollback(run: WorkflowRun, actor: Actor, reason: str = "") -> WorkflowRun:
    def go() -> WorkflowRun:
        actor.require(roles.OPERATE, "roll back workflows")
        with transaction.atomic():
            locked = WorkflowRun.objects.select_for_update().get(pk=run.pk)
            plan = plan_rollback(locked)
            if not plan["compensations"]:
                raise WorkflowRefused(
                    f"Run #{run.pk} has no finished step with a compensation; nothing to roll back."
                )
            rows = list(locked.steps.filter(current=True))
            why = f"Rolled back by {actor.label}" + (
                f": {reason.strip()[:200]}" if reason.strip() else "."
            )
            engine.dispatch(engine.begin_rollback(locked, rows, why, timezone.now()))
            engine._recount(locked, rows)
            locked.save()
            record_audit(
                actor, "workflow.rollback", target=f"workflow:{run.pk}",
                compensations=[c["step"] for c in plan["compensations"]],
            )  # fmt: skip
        return locked

    return _audited(actor, "rollback", run, go)


# --- mark and approve ------------------------------------------------------------------------

MARKS = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)


def mark(run: WorkflowRun, step_id: str, status: str, actor: Actor, reason: str) -> WorkflowRun:
    """Mark a step succeeded or skipped by hand (Admin, with a reason); the run goes on."""

    def go() -> WorkflowRun:
        actor.require(roles.MANAGE, "mark workflow steps")
        if status not in MARKS:
            raise WorkflowRefused(
                f"{str(status)[:20]!r}: a step is marked succeeded or skipped.", "invalid"
            )
        text = (reason or "").strip()
        if not text or "\x00" in text or len(text) > REASON_CHARS:
            raise WorkflowRefused(
                f"Say why, in at most {REASON_CHARS} characters: the reason is kept with the step.",
                "invalid",
            )
        with transaction.atomic():
            locked = WorkflowRun.objects.select_for_update().get(pk=run.pk)
            _refuse_status(locked, "changed by marking a step",
                           [RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.FAILED])  # fmt: skip
            row = locked.steps.filter(current=True, role=Role.FORWARD, step_id=step_id).first()
            if row is None:
                raise WorkflowRefused(
                    f"{str(step_id)[:63]!r} is not a step of run #{run.pk}.", "invalid"
                )
            if row.status in MARKS:
                raise WorkflowRefused(
                    f"{row.title} already {row.status}; there is nothing to mark."
                )
            now = timezone.now()
            if row.status in STEP_BUSY:
                engine._cancel_row(locked, row, now, "Stopped: marked by hand.")
                row = engine._new_attempt(row, "", now)
                row.save()
            row.started_at = row.started_at or now
            engine._end_row(row, status, now, reason=f"Marked {status} by {actor.label}: {text}")
            if locked.status == RunStatus.FAILED:
                locked.status = RunStatus.RUNNING
                locked.finished_at = None
                locked.error = ""
            engine.dispatch(engine.advance(locked))
            record_audit(actor, "workflow.mark", target=f"workflow:{run.pk}", step=step_id,
                         status=status, reason=text)  # fmt: skip
        return locked

    return _audited(actor, "mark", run, go)


def approve(
    run: WorkflowRun, step_id: str, actor: Actor, *, approved: bool, note: str = ""
) -> StepRun:
    """Give (or refuse) the approval a step waits for."""

    def go() -> StepRun:
        with transaction.atomic():
            locked = WorkflowRun.objects.select_for_update().get(pk=run.pk)
            row = locked.steps.filter(current=True, step_id=step_id, kind="approval").first()
            if row is None or row.status != StepStatus.RUNNING:
                raise WorkflowRefused(
                    f"Run #{run.pk} has no step {str(step_id)[:63]!r} waiting for an approval."
                )
            needed = row.inputs.get("role", roles.OPERATOR)
            actor.require(
                roles.MANAGE if needed == roles.ADMIN else roles.OPERATE, "approve this step"
            )
            text = (note or "").replace("\x00", "")[:REASON_CHARS]
            row.state = {**row.state, "decision": "approved" if approved else "rejected",
                         "by": actor.label, "note": text}  # fmt: skip
            row.wake_at = timezone.now()
            row.save(update_fields=["state", "wake_at"])
            engine.dispatch([(row.pk, 0.0)])
            record_audit(actor, "workflow.approve" if approved else "workflow.reject",
                         target=f"workflow:{run.pk}", step=step_id, note=text)  # fmt: skip
            live.run_changed(run.pk)
        return row

    return _audited(actor, "approve", run, go)


# --- bulk ------------------------------------------------------------------------------------


@audits_refusals("workflow.{action}")
def bulk(actor: Actor, action: str, run_ids: Iterable[object]) -> list[dict]:
    """Retry (failed steps) or cancel each selected run; answers each run's outcome."""
    if action not in BULK_ACTIONS:
        raise WorkflowRefused(
            f"{str(action)[:20]!r}: select runs, then retry or cancel them.", "invalid"
        )
    ids = list(run_ids)
    if not ids:
        raise WorkflowRefused("Select at least one run.", "invalid")
    if len(ids) > BULK_MAX:
        raise WorkflowRefused(f"Select at most {BULK_MAX} runs at once.", "invalid")
    runs = [get_run(run_id) for run_id in ids]
    actor.require(roles.OPERATE, f"{action} workflows")
    outcomes = []
    for run in runs:
        try:
            if action == "retry":
                retry(run, actor)
            else:
                cancel(run, actor)
            outcomes.append({"workflow_id": run.pk, "ok": True, "detail": ""})
        except Refused as refused:
            outcomes.append({"workflow_id": run.pk, "ok": False, "detail": refused.message})
    return outcomes
