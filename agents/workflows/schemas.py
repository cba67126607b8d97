"""What the workflow API answers, shared with ``manage.py workflows ... --json`` so a script reads
the same from both: runs (a list row, and a run's detail with every attempt of every step),
definitions, and the input the controls take. ``list_runs`` is the one reading of the list's
filters and keyset page for both doors.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Prefetch, QuerySet
from ninja import Field, Schema

from portal.refusals import BadFilter, BadRequest

from . import deadlines, registry, services
from .definitions import Definition, Step
from .models import Role, RunStatus, StepRun, WorkflowRun

API_ROOT = "/api/platform/orchestration"
LIMIT_DEFAULT, LIMIT_MAX = 50, 200
FILTER_CHARS = 200
# Fields a list row never shows; reading them for 200 runs x their steps is most of the work.
HEAVY_STEP_FIELDS = ("inputs", "output", "reply", "log", "state", "error")


# --- input -----------------------------------------------------------------------------------


class WorkflowStartIn(Schema):
    definition: str
    parameters: dict[str, Any] | None = None
    version: int | None = None


class WorkflowRetryIn(Schema):
    # Plain strings checked by the service (one sentence at every door); the enums tell the
    # OpenAPI document what the server accepts.
    mode: str = Field(default="failed", json_schema_extra={"enum": list(services.RETRY_MODES)})
    from_step: str = ""
    parameters: dict[str, Any] | None = None
    dry_run: bool = False


class WorkflowRollbackIn(Schema):
    reason: str = ""
    dry_run: bool = False


class WorkflowMarkIn(Schema):
    status: str = Field(json_schema_extra={"enum": [str(m) for m in services.MARKS]})
    reason: str


class WorkflowApproveIn(Schema):
    approved: bool = True
    note: str = ""


class WorkflowBulkIn(Schema):
    action: str = Field(json_schema_extra={"enum": list(services.BULK_ACTIONS)})
    ids: list[int | str]


# --- output ----------------------------------------------------------------------------------


class WorkflowTaskOut(Schema):
    task_id: str
    task_name: str
    role: str
    kind: str
    status: str
    attempt: int
    duration_ms: int | None
    started_at: datetime | None
    completed_at: datetime | None


class WorkflowRunOut(Schema):
    workflow_id: int
    workflow_name: str
    definition: str
    version: int
    customer_name: str | None
    subject_kind: str
    subject: str
    status: str
    progress: int
    total_tasks: int
    completed_tasks: int
    failed_tasks: int
    current_task: str
    started_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime | None
    deadline_state: str
    url: str
    tasks: list[WorkflowTaskOut]


class WorkflowAttemptOut(Schema):
    attempt: int
    status: str
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int | None
    error: str
    worker: str
    reason: str
    replaces: int | None


class WorkflowTaskDetailOut(WorkflowTaskOut):
    detail: str
    reason: str
    inputs: dict[str, Any]
    output: dict[str, Any]
    error: str
    reply: dict[str, Any]
    worker: str
    log: str
    queued_at: datetime | None
    deadline_at: datetime | None
    late: bool
    attempts: list[WorkflowAttemptOut]


class WorkflowRunDetailOut(WorkflowRunOut):
    parameters: dict[str, Any]
    error: str
    phase: str
    retries: int
    created_at: datetime
    created_by: str
    predicted_finish_at: datetime | None
    critical_path: list[str]
    tasks: list[WorkflowTaskDetailOut]  # type: ignore[assignment]


class WorkflowAccepted(Schema):
    workflow_id: int
    status: str
    url: str


class WorkflowBulkOutcome(Schema):
    workflow_id: int
    ok: bool
    detail: str


class WorkflowParameterOut(Schema):
    name: str
    type: str
    required: bool
    default: Any = None
    choices: list[str]
    help: str
    minimum: float | None
    maximum: float | None


class WorkflowRetryPolicyOut(Schema):
    attempts: int
    backoff_seconds: float
    factor: float
    max_backoff_seconds: float


class WorkflowCompensationOut(Schema):
    id: str
    title: str
    kind: str
    inputs: dict[str, Any]


class WorkflowStepOut(Schema):
    id: str
    title: str
    kind: str
    after: list[str]
    inputs: dict[str, Any]
    timeout_seconds: int
    retry: WorkflowRetryPolicyOut
    compensation: WorkflowCompensationOut | None
    deadline_seconds: int | None
    median_seconds: float | None


class WorkflowDefinitionOut(Schema):
    name: str
    version: int
    versions: list[int]
    title: str
    description: str
    category: str
    subject_kind: str
    deadline_seconds: int | None
    roll_back_on_failure: bool
    roll_back_on_deadline: bool
    max_parallel: int
    parameters: list[WorkflowParameterOut]
    steps: list[WorkflowStepOut]
    median_seconds: dict[str, float]


# --- reading the list ------------------------------------------------------------------------


def list_runs(
    *,
    status: str | None = None,
    definition: str | None = None,
    subject: str | None = None,
    before: object = None,
    limit: object = None,
) -> list[WorkflowRun]:
    """A page of runs, newest first, with their current steps (two queries); ``before`` is the
    last id of the page before (keyset). Bad filters are a ``BadFilter``/``BadRequest``."""
    runs: QuerySet[WorkflowRun] = WorkflowRun.objects.order_by("-id")
    if status:
        wanted = [s.strip() for s in str(status).split(",") if s.strip()]
        for value in wanted:
            if value not in RunStatus.values:
                raise BadFilter("status", value[:40], "run status", list(RunStatus.values))
        runs = runs.filter(status__in=wanted)
    if definition:
        if str(definition) not in {d.name for d in registry.definitions()}:
            names = sorted(d.name for d in registry.definitions())
            raise BadFilter("definition", str(definition)[:63], "workflow definition", names)
        runs = runs.filter(definition=str(definition))
    if subject:
        text = str(subject)
        if "\x00" in text or len(text) > FILTER_CHARS:
            raise BadRequest(
                f"subject is a name or slug of at most {FILTER_CHARS} characters.", "invalid"
            )
        runs = runs.filter(subject=text)
    if before not in (None, ""):
        runs = runs.filter(pk__lt=_whole_number("before", before, 1, 2**63 - 1))
    size = LIMIT_DEFAULT if limit in (None, "") else _whole_number("limit", limit, 1, LIMIT_MAX)
    steps = StepRun.objects.filter(current=True).defer(*HEAVY_STEP_FIELDS)
    return list(
        runs.prefetch_related(Prefetch("steps", queryset=steps, to_attr="current_steps"))[:size]
    )


def _whole_number(name: str, value: object, low: int, high: int) -> int:
    try:
        number = int(str(value).strip())
        if not low <= number <= high:
            raise ValueError
    except ValueError:
        raise BadRequest(
            f"{name}={str(value)[:40]!r}: use a whole number from {low} to {high}.", "invalid"
        ) from None
    return number


# --- runs ------------------------------------------------------------------------------------


def run_url(run: WorkflowRun) -> str:
    return f"{API_ROOT}/workflows/{run.pk}"


def _ms(row: StepRun) -> int | None:
    seconds = row.duration_seconds
    return None if seconds is None else round(seconds * 1000)


def _ordered(rows: list[StepRun]) -> list[StepRun]:
    """Steps in declared order, then the compensations in the order they run."""
    return sorted(rows, key=lambda r: (r.role != Role.FORWARD, r.position, r.attempt))


def task_out(row: StepRun) -> WorkflowTaskOut:
    return WorkflowTaskOut(
        task_id=row.step_id, task_name=row.title, role=row.role, kind=row.kind, status=row.status,
        attempt=row.attempt, duration_ms=_ms(row), started_at=row.started_at,
        completed_at=row.finished_at,
    )  # fmt: skip


def _run_fields(run: WorkflowRun) -> dict[str, Any]:
    return {
        "workflow_id": run.pk, "workflow_name": run.title, "definition": run.definition,
        "version": run.version,
        "customer_name": run.subject if run.subject_kind == "customer" else None,
        "subject_kind": run.subject_kind, "subject": run.subject, "status": run.status,
        "progress": run.progress, "total_tasks": run.total_steps,
        "completed_tasks": run.completed_steps, "failed_tasks": run.failed_steps,
        "current_task": run.current_step, "started_at": run.started_at,
        "finished_at": run.finished_at, "deadline_at": run.deadline_at,
        "deadline_state": run.deadline_state, "url": run_url(run),
    }  # fmt: skip


def run_out(run: WorkflowRun) -> WorkflowRunOut:
    """A list row; ``run.current_steps`` as ``list_runs`` prefetches it (read when absent)."""
    rows = getattr(run, "current_steps", None)
    if rows is None:
        rows = list(run.steps.filter(current=True).defer(*HEAVY_STEP_FIELDS))
    return WorkflowRunOut(**_run_fields(run), tasks=[task_out(r) for r in _ordered(rows)])


def run_detail_out(run: WorkflowRun) -> WorkflowRunDetailOut:
    """A run with its parameters, its predicted finish and every step's attempts."""
    rows = list(run.steps.all())
    history: dict[tuple[str, str], list[StepRun]] = {}
    for row in rows:
        history.setdefault((row.role, row.step_id), []).append(row)
    current = _ordered([r for r in rows if r.current])
    prediction = deadlines.predict(run, rows=current)
    tasks = [
        WorkflowTaskDetailOut(
            **task_out(row).dict(),
            detail=row.detail,
            reason=row.reason,
            inputs=row.inputs,
            output=row.output,
            error=row.error,
            reply=row.reply,
            worker=row.worker,
            log=row.log,
            queued_at=row.queued_at,
            deadline_at=row.deadline_at,
            late=row.late,
            attempts=[
                attempt_out(a)
                for a in sorted(history[(row.role, row.step_id)], key=lambda a: a.attempt)
            ],
        )  # fmt: skip
        for row in current
    ]
    return WorkflowRunDetailOut(
        **_run_fields(run), parameters=run.parameters, error=run.error, phase=run.phase,
        retries=run.retries, created_at=run.created_at, created_by=run.actor,
        predicted_finish_at=prediction.finish_at, critical_path=prediction.critical_path,
        tasks=tasks,
    )  # fmt: skip


def attempt_out(row: StepRun) -> WorkflowAttemptOut:
    return WorkflowAttemptOut(
        attempt=row.attempt, status=row.status, started_at=row.started_at,
        completed_at=row.finished_at, duration_ms=_ms(row), error=row.error, worker=row.worker,
        reason=row.reason, replaces=row.replaces_id,
    )  # fmt: skip


def accepted_out(run: WorkflowRun) -> WorkflowAccepted:
    return WorkflowAccepted(workflow_id=run.pk, status=run.status, url=run_url(run))


# --- definitions -----------------------------------------------------------------------------


def _step_out(step: Step, medians: dict[str, float]) -> WorkflowStepOut:
    retry = step.retry
    compensation = step.compensation
    return WorkflowStepOut(
        id=step.id, title=step.label, kind=step.kind, after=list(step.after),
        inputs=dict(step.inputs), timeout_seconds=step.timeout_seconds,
        retry=WorkflowRetryPolicyOut(attempts=retry.attempts, backoff_seconds=retry.backoff_seconds,
                             factor=retry.factor, max_backoff_seconds=retry.max_backoff_seconds),
        compensation=None if compensation is None else WorkflowCompensationOut(
            id=compensation.id, title=compensation.title or f"Undo {step.label.lower()}",
            kind=compensation.kind, inputs=dict(compensation.inputs),
        ),
        deadline_seconds=step.deadline_seconds, median_seconds=medians.get(step.id),
    )  # fmt: skip


def definition_out(definition: Definition) -> WorkflowDefinitionOut:
    medians = deadlines.medians(definition.name)
    return WorkflowDefinitionOut(
        name=definition.name, version=definition.version,
        versions=[d.version for d in registry.versions(definition.name)],
        title=definition.title, description=definition.description,
        category=definition.category, subject_kind=definition.subject_kind,
        deadline_seconds=definition.deadline_seconds,
        roll_back_on_failure=definition.roll_back_on_failure,
        roll_back_on_deadline=definition.roll_back_on_deadline,
        max_parallel=definition.max_parallel,
        parameters=[
            WorkflowParameterOut(
                name=p.name, type=p.type, required=p.required, default=p.default,
                choices=list(p.choices), help=p.help, minimum=p.minimum, maximum=p.maximum,
            )
            for p in definition.parameters
        ],
        steps=[_step_out(step, medians) for step in definition.steps],
        median_seconds={s.id: medians[s.id] for s in definition.steps if s.id in medians},
    )  # fmt: skip
