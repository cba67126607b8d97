"""Running workflows: one Celery task per step attempt, successors queued as their inputs are
ready, at most ``max_parallel`` steps of a run busy at once.

Every change of a run's step rows happens with the run's row locked, so two workers finishing
parallel steps of one run at the same moment queue each successor once. A step is carried out
in three parts, each safe to repeat: mark it running (committed), call its kind without any
lock but the step's runner lease (a PostgreSQL advisory lock, gone with the connection of a
worker that dies), then record what the kind answered and queue what became ready (one
transaction). A worker SIGKILLed in the middle leaves a running row with no runner; the sweep
(``sweep.resume_stalled_steps``) hands it to a worker again, whose kind finds in the row's ``state``
what the first one already did (the task it sent, the operation it recorded) and carries on
from there instead of doing it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import redis
from django.db import transaction
from django.utils import timezone

from portal import work
from portal.actors import Actor

from . import live, registry
from .definitions import Definition, InputError, Step, resolve_inputs
from .kinds import Done, Failed, Result, StepContext, Wait, kind
from .models import (
    STEP_BUSY,
    DeadlineState,
    Role,
    RunStatus,
    StepRun,
    StepStatus,
    WorkflowRun,
)

logger = logging.getLogger(__name__)

# The Celery task that carries out one step attempt (agents.tasks registers this name).
RUN_STEP_TASK = "agents.run_workflow_step"
# Advisory lock class of a step attempt's runner.
STEP_LOCK = 7_310
# How soon a step whose kind found Redis away is asked again.
REDIS_RETRY_SECONDS = 2.0
# Error texts kept on a row (the page shows them whole, the list their first line).
ERROR_CHARS = 4000


# --- creating a run ------------------------------------------------------------------------------


def create_run(
    definition: Definition,
    parameters: Mapping[str, Any],
    actor: Actor,
    *,
    subject_kind: str = "",
    subject: str = "",
    parent_step: StepRun | None = None,
) -> WorkflowRun:
    """Record a run with a pending row per step and queue its first steps (inside the caller's
    transaction; the tasks go to the workers when it commits)."""
    run = WorkflowRun.objects.create(
        **WorkflowRun.stamp(actor),
        definition=definition.name,
        version=definition.version,
        title=definition.title,
        parameters=dict(parameters),
        subject_kind=subject_kind,
        subject=subject[:200],
        max_parallel=definition.max_parallel,
        roll_back_on_failure=definition.roll_back_on_failure,
        total_steps=len(definition.steps),
        parent_step=parent_step,
    )
    StepRun.objects.bulk_create(
        StepRun(
            run=run,
            definition=definition.name,
            step_id=step.id,
            position=position,
            kind=step.kind,
            title=step.label,
        )
        for position, step in enumerate(definition.steps)
    )
    advance_now(run.pk)
    run.refresh_from_db()
    return run


# --- advancing -----------------------------------------------------------------------------------


def advance_now(run_id: int) -> None:
    """Lock the run, queue what is ready and settle its status (inside a transaction)."""
    with transaction.atomic():
        run = WorkflowRun.objects.select_for_update().get(pk=run_id)
        dispatch(advance(run))


def advance(run: WorkflowRun, rows: list[StepRun] | None = None) -> list[tuple[int, float]]:
    """With ``run`` locked: queue the steps whose dependencies are done (within the run's cap),
    finish the run when nothing is left, and answer the step rows to hand to workers with their
    delays. Nothing starts while the run is paused. ``rows``: the run's current rows, when the
    caller has them up to date already."""
    now = timezone.now()
    definition = definition_of(run)
    if run.status == RunStatus.PENDING:
        run.status = RunStatus.RUNNING
        run.started_at = now
        if definition is not None and definition.deadline_seconds:
            run.deadline_at = now + timedelta(seconds=definition.deadline_seconds)
            run.deadline_state = DeadlineState.ON_TIME
    if rows is None:
        rows = list(run.steps.filter(current=True))
    dispatches: list[tuple[int, float]] = []
    if definition is None:
        _finish(run, RunStatus.FAILED, f"Definition {run.definition} v{run.version} is gone.")
    elif run.status in (RunStatus.RUNNING, RunStatus.ROLLING_BACK):
        if run.phase == Role.FORWARD:
            dispatches = _advance_forward(run, definition, rows, now)
        else:
            dispatches = _advance_compensation(run, rows, now)
    _recount(run, rows)
    run.save()
    live.run_changed(run.pk)
    return dispatches


def _advance_forward(
    run: WorkflowRun, definition: Definition, rows: list[StepRun], now
) -> list[tuple[int, float]]:
    forward = {row.step_id: row for row in rows if row.role == Role.FORWARD}
    busy = [row for row in forward.values() if row.status in STEP_BUSY]
    failed = [row for row in forward.values() if row.status == StepStatus.FAILED]
    if failed:
        if busy:
            return []  # the branches still running finish first
        first = min(failed, key=lambda row: row.finished_at or now)
        message = f"{first.title} failed: {first.error.splitlines()[0] if first.error else ''}"
        if run.roll_back_on_failure and _has_compensation(definition, forward):
            return begin_rollback(run, rows, f"{message} Rolling back by itself.", now)
        _finish(run, RunStatus.FAILED, message)
        return []
    done = {StepStatus.SUCCEEDED, StepStatus.SKIPPED}
    ready = [
        row
        for row in sorted(forward.values(), key=lambda row: row.position)
        if row.status == StepStatus.PENDING
        and all(forward[d].status in done for d in definition.step(row.step_id).after)
    ]
    if not busy and not ready:
        if all(row.status in done for row in forward.values()):
            _finish(run, RunStatus.SUCCEEDED, "")
        else:  # cancelled rows of a run someone retried only in part: should not happen
            _finish(run, RunStatus.FAILED, "Some steps can never start; retry the run.")
        return []
    outputs = {step_id: row.output for step_id, row in forward.items()}
    dispatches = []
    for row in ready[: max(0, run.max_parallel - len(busy))]:
        step = definition.step(row.step_id)
        try:
            row.inputs = resolve_inputs(dict(step.inputs), run.parameters, outputs)
        except InputError as exc:
            _end_row(row, StepStatus.FAILED, now, error=str(exc))
            return _advance_forward(run, definition, rows, now)
        _queue(row, now)
        dispatches.append((row.pk, 0.0))
    return dispatches


def _has_compensation(definition: Definition, forward: dict[str, StepRun]) -> bool:
    return any(
        definition.step(step_id).compensation is not None and row.status == StepStatus.SUCCEEDED
        for step_id, row in forward.items()
    )


def _advance_compensation(run: WorkflowRun, rows: list[StepRun], now) -> list[tuple[int, float]]:
    compensations = sorted(
        (row for row in rows if row.role == Role.COMPENSATION), key=lambda row: row.position
    )
    if any(row.status in STEP_BUSY for row in compensations):
        return []
    failed = [row for row in compensations if row.status == StepStatus.FAILED]
    if failed:
        _finish(
            run, RunStatus.FAILED,
            f"Roll-back stopped: {failed[0].title} failed: {failed[0].error.splitlines()[0] if failed[0].error else ''} "
            "Retry the run to try the compensation again.",
        )  # fmt: skip
        return []
    pending = [row for row in compensations if row.status == StepStatus.PENDING]
    if not pending:
        _finish(run, RunStatus.ROLLED_BACK, run.error)
        return []
    row = pending[0]
    definition = definition_of(run)
    step = definition.step(row.step_id).compensation if definition else None
    outputs = {r.step_id: r.output for r in rows if r.role == Role.FORWARD}
    try:
        row.inputs = resolve_inputs(dict(step.inputs) if step else {}, run.parameters, outputs)
    except InputError as exc:
        _end_row(row, StepStatus.FAILED, now, error=str(exc))
        return _advance_compensation(run, rows, now)
    _queue(row, now)
    return [(row.pk, 0.0)]


def begin_rollback(
    run: WorkflowRun, rows: list[StepRun], reason: str, now
) -> list[tuple[int, float]]:
    """Switch the run to its compensations: one row per succeeded step that has one, newest
    first; steps still waiting are skipped and busy ones cancelled."""
    definition = definition_of(run)
    forward = [row for row in rows if row.role == Role.FORWARD]
    for row in forward:
        if row.status in STEP_BUSY:
            _cancel_row(run, row, now, "Cancelled: the run is rolling back.")
        elif row.status == StepStatus.PENDING:
            _end_row(row, StepStatus.SKIPPED, now, reason="Not started: the run rolled back.")
    done = [
        row
        for row in forward
        if row.status == StepStatus.SUCCEEDED
        and definition is not None
        and definition.step(row.step_id).compensation is not None
    ]
    done.sort(key=lambda row: (row.finished_at or now, row.position), reverse=True)
    # A run rolled back before (and retried since) gets fresh compensation rows.
    old = {r.step_id: r for r in rows if r.role == Role.COMPENSATION}
    StepRun.objects.filter(pk__in=[r.pk for r in old.values()]).update(current=False)
    rows[:] = [r for r in rows if r.role != Role.COMPENSATION]
    for position, row in enumerate(done):
        compensation = definition.step(row.step_id).compensation  # type: ignore[union-attr]
        assert compensation is not None  # only steps with one are in ``done``
        previous = old.get(row.step_id)
        rows.append(
            StepRun.objects.create(
                run=run, definition=run.definition, step_id=row.step_id,
                role=Role.COMPENSATION, position=position, kind=compensation.kind,
                title=compensation.title or f"Undo {row.title.lower()}",
                attempt=(previous.attempt + 1) if previous else 1,
                replaces=previous, reason=reason[:300],
            )
        )  # fmt: skip
    run.phase = Role.COMPENSATION
    run.status = RunStatus.ROLLING_BACK
    run.error = reason
    run.finished_at = None
    return _advance_compensation(run, rows, now)


def _queue(row: StepRun, now) -> None:
    row.status = StepStatus.QUEUED
    row.queued_at = now
    row.wake_at = now
    row.detail = "Waiting for a worker."
    row.save(update_fields=["status", "queued_at", "wake_at", "detail", "inputs"])


def _finish(run: WorkflowRun, status: str, error: str) -> None:
    run.status = status
    run.error = error[:ERROR_CHARS]
    run.finished_at = timezone.now()
    if run.deadline_at is not None and run.finished_at > run.deadline_at:
        run.deadline_state = DeadlineState.LATE
    run.predicted_finish_at = None


def _recount(run: WorkflowRun, rows: list[StepRun]) -> None:
    forward = [row for row in rows if row.role == Role.FORWARD and row.current]
    run.total_steps = len(forward)
    run.completed_steps = sum(
        row.status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED) for row in forward
    )
    run.failed_steps = sum(row.status == StepStatus.FAILED for row in forward)
    busy = [row for row in rows if row.current and row.status in STEP_BUSY]
    run.current_step = ", ".join(row.title for row in busy)[:200]


def _end_row(row: StepRun, status: str, now, *, error: str = "", reason: str = "") -> None:
    row.status = status
    row.finished_at = now
    row.wake_at = None
    row.detail = ""
    if error:
        row.error = error[:ERROR_CHARS]
    if reason:
        row.reason = reason[:300]
    row.save(update_fields=["status", "finished_at", "wake_at", "detail", "error", "reason"])


def _cancel_row(run: WorkflowRun, row: StepRun, now, reason: str) -> None:
    if row.status == StepStatus.RUNNING:
        try:
            said = kind(row.kind).cancel(_context(run, row))
        except Exception:
            logger.exception("could not ask step %s of run %s to stop", row.step_id, run.pk)
            said = ""
        if said:
            reason = f"{reason} {said}"
    _end_row(row, StepStatus.CANCELLED, now, reason=reason)


def dispatch(dispatches: list[tuple[int, float]]) -> None:
    """Hand step rows to workers once the transaction commits; a broker that does not answer
    leaves them queued for the sweep."""

    def send() -> None:
        for step_run_id, countdown in dispatches:
            try:
                work.send(RUN_STEP_TASK, step_run_id, countdown=countdown or None)
            except Exception as exc:  # the sweep hands it out once the broker is back
                logger.warning("could not queue workflow step %s: %s", step_run_id, exc)
                return

    if dispatches:
        transaction.on_commit(send)


def definition_of(run: WorkflowRun) -> Definition | None:
    try:
        return registry.get(run.definition, run.version)
    except registry.UnknownDefinition:
        return None


# --- carrying out a step -------------------------------------------------------------------------


def run_step(step_run_id: int) -> None:
    """Carry out a step attempt (the Celery task's body). Safe to call at any time and more
    than once: a second caller finds the lease taken (or waits for the run's lock), a finished
    row is left alone. When a step done makes a step of an inline kind ready, that one runs here
    too rather than waiting for another task."""
    next_id: int | None = step_run_id
    while next_id is not None:
        found = StepRun.objects.filter(pk=next_id).values_list("run_id", "kind").first()
        if found is None:
            return
        run_id, kind_name = found
        if _is_inline(kind_name):
            next_id = _run_inline(run_id, next_id)
            continue
        with work.try_lease(STEP_LOCK, next_id) as held:
            if not held:
                return
            next_id = _run_step_once(next_id)


def _is_inline(kind_name: str) -> bool:
    try:
        return kind(kind_name).inline
    except LookupError:
        return False


# A chain of inline steps is carried out in one transaction for at most this long, then
# committed (and shown), and carried on in the next.
INLINE_BATCH_SECONDS = 0.25


def _run_inline(run_id: int, step_run_id: int) -> int | None:
    """Carry out steps of inline kinds (answered at once, with no side effects outside the
    database) one after another under the run's lock, in one transaction: started, recorded
    and the next ones queued, with a handful of statements per step. Answers the next step to
    carry on with, if the batch ran out of time."""
    stop_at = time.monotonic() + INLINE_BATCH_SECONDS
    with transaction.atomic():
        run = WorkflowRun.objects.select_for_update().get(pk=run_id)
        if run.status not in (RunStatus.RUNNING, RunStatus.ROLLING_BACK):
            return None  # paused, cancelled or over: a queued step waits for the resume
        rows = list(run.steps.filter(current=True))
        next_id: int | None = step_run_id
        dispatches: list[tuple[int, float]] = []
        while next_id is not None and time.monotonic() < stop_at:
            row = next((r for r in rows if r.pk == next_id), None)
            if row is None or row.status != StepStatus.QUEUED:
                next_id = None
                break
            now = timezone.now()
            if row.wake_at is not None and row.wake_at > now + timedelta(milliseconds=50):
                dispatches.append((row.pk, (row.wake_at - now).total_seconds()))
                next_id = None
                break
            row.status = StepStatus.RUNNING
            row.started_at = now
            row.detail = ""
            step = _step_of(run, row)
            if step is not None and step.deadline_seconds:
                row.deadline_at = now + timedelta(seconds=step.deadline_seconds)
            result = _call_kind(run, row, True, now)
            found = _record(run, row, result)
            if not isinstance(result, Done):  # a new attempt may have been added
                rows = list(run.steps.filter(current=True))
            found += advance(run, rows)
            kinds = {r.pk: r.kind for r in rows}
            next_id = next(
                (pk for pk, wait in found if not wait and _is_inline(kinds.get(pk, ""))), None
            )
            dispatches += [d for d in found if d[0] != next_id]
        dispatch(dispatches)
    return next_id


def _run_step_once(step_run_id: int) -> int | None:
    now = timezone.now()
    with transaction.atomic():
        row = StepRun.objects.filter(pk=step_run_id).only("run_id").first()
        if row is None:
            return None
        run = WorkflowRun.objects.select_for_update().get(pk=row.run_id)
        row = StepRun.objects.select_for_update().get(pk=step_run_id)
        if not row.current or row.status not in STEP_BUSY:
            return None
        # A paused run lets running steps finish; a queued one starts when it is resumed.
        active = run.status in (RunStatus.RUNNING, RunStatus.ROLLING_BACK)
        paused_running = run.status == RunStatus.PAUSED and row.status == StepStatus.RUNNING
        if not active and not paused_running:
            return None
        if row.wake_at is not None and row.wake_at > now + timedelta(milliseconds=50):
            dispatch([(row.pk, (row.wake_at - now).total_seconds())])
            return None
        starting = row.status == StepStatus.QUEUED
        if starting:
            row.status = StepStatus.RUNNING
            row.started_at = now
            row.detail = ""
            step = _step_of(run, row)
            if step is not None and step.deadline_seconds:
                row.deadline_at = now + timedelta(seconds=step.deadline_seconds)
            row.save(update_fields=["status", "started_at", "detail", "deadline_at"])
            live.run_changed(run.pk)
    result = _call_kind(run, row, starting, now)
    with transaction.atomic():
        run = WorkflowRun.objects.select_for_update().get(pk=run.pk)
        row = StepRun.objects.select_for_update().get(pk=step_run_id)
        if not row.current or row.status != StepStatus.RUNNING:
            logger.info("step %s of run %s ended meanwhile; its answer is dropped", row.pk, run.pk)
            return None
        dispatches = _record(run, row, result)
        dispatches += advance(run)
        inline = _pick_inline(run, dispatches)
        dispatch([d for d in dispatches if d[0] != inline])
    return inline


def _step_of(run: WorkflowRun, row: StepRun) -> Step | None:
    definition = definition_of(run)
    if definition is None:
        return None
    step = definition.step(row.step_id)
    return step.compensation if row.role == Role.COMPENSATION else step


def _call_kind(run: WorkflowRun, row: StepRun, starting: bool, now) -> Result:
    step = _step_of(run, row)
    if step is None:
        return Failed("The run's definition is no longer registered.", retryable=False)
    ctx = _context(run, row)
    if (
        not starting
        and row.started_at
        and now - row.started_at > timedelta(seconds=step.timeout_seconds)
    ):
        said = ""
        try:
            said = kind(row.kind).cancel(ctx)
        except Exception:
            logger.exception("could not stop timed-out step %s", row.pk)
        return Failed(f"Timed out after {step.timeout_seconds} s. {said}".strip())
    try:
        the_kind = kind(row.kind)
        result = the_kind.start(ctx) if starting else the_kind.poll(ctx)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        # Not the step failing: Redis away for a moment (restarting). Asking again is safe
        # (what the kind did is in its state), and a new attempt would repeat what it did.
        logger.warning("step %s of run %s: Redis does not answer: %s", row.pk, run.pk, exc)
        return Wait(REDIS_RETRY_SECONDS, "Redis does not answer; trying again in a moment.")
    except Exception as exc:
        logger.exception("step %s (%s) of run %s raised", row.step_id, row.kind, run.pk)
        return Failed(f"{type(exc).__name__}: {exc}"[:ERROR_CHARS])
    if isinstance(result, Wait) and row.started_at:
        # Never wait past the timeout: the poll that finds it passed fails the attempt.
        left = step.timeout_seconds - (timezone.now() - row.started_at).total_seconds()
        result = Wait(max(0.05, min(result.seconds, left + 0.05)), result.detail)
    return result


def _context(run: WorkflowRun, row: StepRun) -> StepContext:
    def save_state(**values: Any) -> None:
        row.state = {**row.state, **values}
        StepRun.objects.filter(pk=row.pk).update(state=row.state)

    return StepContext(
        run=run, step=row, inputs=dict(row.inputs), actor=run.requested_by, save_state=save_state
    )


def _record(run: WorkflowRun, row: StepRun, result: Result) -> list[tuple[int, float]]:
    now = timezone.now()
    if isinstance(result, Wait):
        row.wake_at = now + timedelta(seconds=result.seconds)
        row.detail = result.detail[:300]
        row.save(update_fields=["wake_at", "detail"])
        return [(row.pk, result.seconds)]
    row.worker = (result.worker or row.worker)[:200]
    row.log = result.log[-4000:] if result.log else row.log
    row.output = dict(result.output)
    row.reply = dict(result.reply) or row.reply
    # started_at too: an inline step is started and recorded in one go.
    saved = ["worker", "log", "output", "reply", "started_at", "deadline_at"]
    if isinstance(result, Done):
        row.status = StepStatus.SUCCEEDED
        row.finished_at = now
        row.wake_at = None
        row.detail = ""
        row.save(update_fields=[*saved, "status", "finished_at", "wake_at", "detail"])
        return []
    row.save(update_fields=saved)
    step = _step_of(run, row)
    retry = step.retry if step is not None else None
    if result.retryable and retry is not None and row.attempt < retry.attempts:
        delay = retry.delay(row.attempt + 1)
        _end_row(row, StepStatus.FAILED, now, error=result.error)
        again = _new_attempt(
            row, f"Attempt {row.attempt + 1} of {retry.attempts}, {delay:g} s after: "
            f"{result.error.splitlines()[0] if result.error else 'failed'}", now,
        )  # fmt: skip
        again.status = StepStatus.QUEUED
        again.queued_at = now
        again.wake_at = now + timedelta(seconds=delay)
        again.detail = f"Retrying in {delay:g} s."
        again.save()
        return [(again.pk, delay)]
    _end_row(row, StepStatus.FAILED, now, error=result.error)
    return []


def _new_attempt(row: StepRun, reason: str, now) -> StepRun:
    """A new row for the next attempt of ``row``'s step, replacing it as the current one."""
    StepRun.objects.filter(pk=row.pk).update(current=False)
    row.current = False
    last = (
        StepRun.objects.filter(run_id=row.run_id, role=row.role, step_id=row.step_id)
        .order_by("-attempt")
        .values_list("attempt", flat=True)
        .first()
    )
    return StepRun(
        run_id=row.run_id, definition=row.definition, step_id=row.step_id, role=row.role,
        position=row.position, attempt=(last or row.attempt) + 1, kind=row.kind, title=row.title,
        inputs=row.inputs, replaces=row, reason=reason[:300],
    )  # fmt: skip


def _pick_inline(run: WorkflowRun, dispatches: list[tuple[int, float]]) -> int | None:
    """The one step of an inline kind to carry on with in this task, if any."""
    immediate = [pk for pk, countdown in dispatches if not countdown]
    if not immediate:
        return None
    kinds = dict(StepRun.objects.filter(pk__in=immediate).values_list("pk", "kind"))
    for pk in immediate:
        if kind(kinds[pk]).inline:
            return pk
    return None
