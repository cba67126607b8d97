"""The agents API's schemas, and one serializer per object.

Each ``*_out`` function turns one object (an agent, an operation, a bulk operation, an error...)
into its schema. The API answers with it and the ``agents`` command's ``--json`` prints it
(``portal.cli.dumps``), so a script gets the same shape from either door. Load rows as each
serializer's docstring says, so a list costs a fixed number of queries.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from ninja import Field, Schema

from agents import bulk, errors
from agents.errors.rules import RECOVERIES
from agents.models import (
    Agent,
    AgentError,
    AgentTransition,
    BulkOperation,
    Operation,
    RecoveryAttempt,
    RecoverySwitch,
)
from portal.schemas import Problem

API_ROOT = "/api/platform"

# --- agents, their history and operations ---------------------------------------------------


class AgentOut(Schema):
    slug: str
    name: str
    description: str
    tier: str
    capabilities: list[str]
    owner_team: str
    dependencies: list[str]
    version: str
    runtime: str
    replicas: int
    cpu_millicores: int
    memory_mb: int
    state: str
    health: str
    health_detail: str
    pending_action: str
    restart_attempts: int
    next_restart_at: datetime | None
    state_changed_at: datetime
    created_at: datetime
    updated_at: datetime


class ConfigPatchIn(Schema):
    config: dict[str, Any]


class ReplicaConfigOut(Schema):
    replica: int | None
    applied: bool
    detail: str


class ConfigOut(Schema):
    """An agent's config after a hot patch or roll-back, and what each running replica said."""

    agent: str
    config: dict[str, Any]
    previous_config: dict[str, Any] | None
    config_changed_at: datetime | None
    replicas: list[ReplicaConfigOut]
    all_applied: bool


def config_out(applied) -> dict:
    agent = applied.agent
    return {
        "agent": agent.slug,
        "config": agent.config,
        "previous_config": agent.previous_config,
        "config_changed_at": agent.config_changed_at,
        "replicas": [
            {key: replica[key] for key in ("replica", "applied", "detail")}
            for replica in applied.replicas
        ],
        "all_applied": applied.all_applied,
    }


class TransitionOut(Schema):
    at: datetime
    action: str
    from_state: str
    to_state: str
    actor_kind: str
    actor: str
    reason: str
    details: dict
    operation: UUID | None


class OperationOut(Schema):
    id: UUID
    agent: str
    action: str
    status: str
    actor: str
    reason: str
    from_state: str
    error: str
    error_reason: str
    result: dict
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ActionIn(Schema):
    reason: str = ""
    with_dependencies: bool = False
    confirm: bool = False


class Accepted(Schema):
    id: UUID
    agent: str
    action: str
    status: str
    url: str


class UndoOut(Schema):
    detail: str
    undone: UUID
    # The inverse action asked for (poll it like any operation); null when the action was
    # withdrawn before a worker began it.
    operation: Accepted | None = None


class FleetMetrics(Schema):
    """The base of ``GET /metrics`` (``Agent.objects.fleet_counts()``, which counts more)."""

    total: int
    by_state: dict[str, int]
    by_health: dict[str, int]
    pending: int


def agent_out(agent: Agent) -> AgentOut:
    """An agent; load it with ``prefetch_related("dependencies")``."""
    fields = {
        name: getattr(agent, name) for name in AgentOut.model_fields if name != "dependencies"
    }
    return AgentOut(**fields, dependencies=sorted(dep.slug for dep in agent.dependencies.all()))


def transition_out(row: AgentTransition) -> TransitionOut:
    fields = {
        name: getattr(row, name) for name in TransitionOut.model_fields if name != "operation"
    }
    return TransitionOut(**fields, operation=row.operation_id)


def operation_url(operation: Operation) -> str:
    return f"{API_ROOT}/operations/{operation.pk}"


def operation_out(operation: Operation) -> OperationOut:
    """An operation; load it with ``select_related("agent")``."""
    fields = {
        name: getattr(operation, name)
        for name in OperationOut.model_fields
        if name not in ("id", "agent")
    }
    return OperationOut(**fields, id=operation.pk, agent=operation.agent.slug)


def accepted_out(operation: Operation) -> Accepted:
    """The answer to a request that a worker carries out: poll ``url`` for the outcome."""
    return Accepted(
        id=operation.pk,
        agent=operation.agent.slug,
        action=operation.action,
        status=operation.status,
        url=operation_url(operation),
    )


def undo_out(operation: Operation, message: str, inverse: Operation | None) -> UndoOut:
    return UndoOut(
        detail=message,
        undone=operation.pk,
        operation=accepted_out(inverse) if inverse is not None else None,
    )


# --- bulk operations -------------------------------------------------------------------------


class BulkIn(Schema):
    # A missing action is answered like a wrong one: 400 with the choices. The schema lists them,
    # so the OpenAPI document says what the server accepts.
    action: str = Field("", json_schema_extra={"enum": list(bulk.BULK_ACTIONS)})
    targets: list[str] | None = None
    filter: dict[str, Any] | None = None
    # Checked by the service (a whole number from 1 to BULK_MAX_PARALLELISM), so a bad value is
    # answered with the same sentence from every door.
    parallelism: Any = None
    dry_run: bool = False
    confirm: str = ""
    reason: str = ""


class BulkRetryIn(Schema):
    parallelism: Any = None


class BulkRollbackIn(Schema):
    parallelism: Any = None
    dry_run: bool = False


class PlannedItemOut(Schema):
    agent: str
    name: str
    state: str
    will_change: bool
    steps: list[str]
    to_state: str | None
    skip_code: str | None
    skip_reason: str | None
    affected_dependents: list[str]


class BulkPlanOut(Schema):
    action: str
    parallelism: int
    will_change: int
    skipped: int
    confirmation_required: bool
    confirmation_phrase: str | None
    affected_dependents: list[str]
    items: list[PlannedItemOut]


class BulkAccepted(Schema):
    id: int
    action: str
    kind: str
    status: str
    url: str


class BulkCounts(Schema):
    total: int
    succeeded: int
    failed: int
    skipped: int
    pending: int


class BulkItemOut(Schema):
    agent: str
    name: str
    status: str
    steps: list[str]
    steps_done: int
    from_state: str
    to_state: str | None
    code: str | None
    message: str | None
    operations: list[str]
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None


class BulkRowOut(Schema):
    id: int
    action: str
    kind: str
    follows: int | None
    status: str
    actor: str
    parallelism: int
    # How many agents, as in ``counts``; at the top too because ``agents bulk list --json``
    # printed it there before it printed this shape.
    total: int
    counts: BulkCounts
    cancel_requested: bool
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    url: str


class BulkOut(Schema):
    id: int
    action: str
    kind: str
    follows: int | None
    status: str
    actor: str
    parallelism: int
    targets: list[str]
    filter: dict[str, Any]
    counts: BulkCounts
    cancel_requested: bool
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    estimate_seconds_left: float | None
    items: list[BulkItemOut]


class BulkProblem(Problem):
    confirmation_phrase: str | None = None
    plan: BulkPlanOut | None = None


def bulk_url(operation: BulkOperation) -> str:
    return f"{API_ROOT}/bulk/{operation.pk}"


def plan_out(plan: bulk.BulkPlan) -> BulkPlanOut:
    """A preview: what each agent would go through, nothing changed."""
    return BulkPlanOut.model_validate(plan.as_dict())


def bulk_accepted_out(operation: BulkOperation) -> BulkAccepted:
    return BulkAccepted(
        id=operation.pk,
        action=operation.action,
        kind=operation.kind,
        status=operation.status,
        url=bulk_url(operation),
    )


def bulk_row_out(operation: BulkOperation) -> BulkRowOut:
    """A bulk operation without its items, for lists (no query per row)."""
    return BulkRowOut(
        id=operation.pk,
        action=operation.action,
        kind=operation.kind,
        follows=operation.follows_id,
        status=operation.status,
        actor=operation.actor,
        parallelism=operation.parallelism,
        total=operation.total,
        counts=BulkCounts(
            total=operation.total,
            succeeded=operation.succeeded,
            failed=operation.failed,
            skipped=operation.skipped,
            pending=operation.pending,
        ),
        cancel_requested=operation.cancel_requested_at is not None,
        requested_at=operation.requested_at,
        started_at=operation.started_at,
        finished_at=operation.finished_at,
        duration_seconds=operation.duration_seconds,
        url=bulk_url(operation),
    )


def bulk_out(operation: BulkOperation) -> BulkOut:
    """A bulk operation with every agent's item and the time left (two queries)."""
    return BulkOut.model_validate(
        {
            **bulk.bulk_summary(operation),
            "estimate_seconds_left": bulk.estimate_seconds_left(operation),
        }
    )


# --- errors and their recoveries ---------------------------------------------------------------


class SuggestionOut(Schema):
    label: str
    text: str
    action: str  # a recovery for POST .../recover, or "" for a step a person takes


class AttemptOut(Schema):
    id: int
    action: str
    label: str
    automatic: bool
    actor: str
    outcome: str  # running, fixed, did_not_help, failed
    detail: str
    started_at: datetime
    finished_at: datetime | None


class ErrorOut(Schema):
    id: int
    agent: str
    agent_name: str
    occurred_at: datetime
    last_seen_at: datetime
    occurrences: int
    source: str
    summary: str
    details: dict[str, Any]
    evidence: list[str]
    classification: str
    rule: str
    root_cause: str
    suggestions: list[SuggestionOut]
    signature: str
    pattern: str
    retry_count: int
    status: str
    operation: UUID | None
    resolved_at: datetime | None
    resolved_by: str
    resolution: str
    attempts: list[AttemptOut]
    url: str


class RecoverIn(Schema):
    action: str = ""  # a missing action is answered like a wrong one: 400 with the choices


class IgnoreIn(Schema):
    reason: str = ""


class RecoveryAccepted(Schema):
    id: int
    error: int
    agent: str
    action: str
    label: str
    outcome: str
    url: str


class RecoveryProblem(Problem):
    # The error's one-click recoveries, when the one asked for is not among them.
    offered: list[str] | None = None


class PatternOut(Schema):
    signature: str
    pattern: str
    classification: str
    times: int
    agents: int
    open: int
    first: datetime
    last: datetime


class AgentClassCount(Schema):
    agent: str
    name: str
    classification: str
    times: int


class ErrorStatsOut(Schema):
    last_hour: int
    per_hour_24h: float
    open: int
    by_agent_and_class: list[AgentClassCount]


class AutomaticRecoveryIn(Schema):
    on: bool | None = None


class AutomaticRecoveryOut(Schema):
    on: bool
    changed_by: str
    changed_at: datetime | None


def error_url(error_id: int) -> str:
    return f"{API_ROOT}/errors/{error_id}"


def errors_with_attempts():
    """Errors loaded for ``error_out``: a list costs two queries."""
    return AgentError.objects.select_related("agent").prefetch_related("attempts")


def attempt_out(attempt: RecoveryAttempt) -> AttemptOut:
    fields = {name: getattr(attempt, name) for name in AttemptOut.model_fields if name != "label"}
    return AttemptOut(**fields, label=RECOVERIES.get(attempt.action, attempt.action))


def error_out(error: AgentError) -> ErrorOut:
    """An error with its attempts; load it with ``errors_with_attempts()``."""
    special = {"agent", "agent_name", "operation", "attempts", "url"}
    fields = {name: getattr(error, name) for name in ErrorOut.model_fields if name not in special}
    return ErrorOut(
        **fields,
        agent=error.agent.slug,
        agent_name=error.agent.name,
        operation=error.operation_id,
        attempts=[attempt_out(attempt) for attempt in error.attempts.all()],
        url=error_url(error.pk),
    )


def recovery_accepted_out(attempt: RecoveryAttempt, error: AgentError) -> RecoveryAccepted:
    return RecoveryAccepted(
        id=attempt.pk,
        error=error.pk,
        agent=error.agent.slug,
        action=attempt.action,
        label=RECOVERIES[attempt.action],
        outcome=attempt.outcome,
        url=error_url(error.pk),
    )


def pattern_out(row: dict) -> PatternOut:
    """One row of ``errors.patterns()``."""
    return PatternOut.model_validate(row)


def error_stats_out(rate: dict, counts: list[dict]) -> ErrorStatsOut:
    """``errors.error_rate()`` with ``errors.counts_by_agent_and_class()``."""
    return ErrorStatsOut(
        **rate,
        by_agent_and_class=[
            AgentClassCount(
                agent=row["agent__slug"],
                name=row["agent__name"],
                classification=row["classification"],
                times=row["times"],
            )
            for row in counts
        ],
    )


def automatic_recovery_out() -> AutomaticRecoveryOut:
    """The global switch, and who last turned it."""
    switch = RecoverySwitch.objects.filter(pk=1).first()
    return AutomaticRecoveryOut(
        on=errors.automatic_recovery_on(),
        changed_by=switch.changed_by if switch is not None else "",
        changed_at=switch.changed_at if switch is not None else None,
    )
