"""The agent registry, its lifecycle state machine, the transition history and operations.

State changes only through the django-fsm transitions on ``Agent`` (the field is protected);
the transitions hold the pure rules and nothing else. Everything with side effects (runtimes,
permission checks, audit, events) lives in ``agents.services``.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

from agents.choices import ErrorClass, Health, RestartPolicy, RuntimeKind, Tier  # noqa: F401

# The lifecycle's words live in one table; they are re-exported here for the code that reads
# them with the models.
from agents.lifecycle import (  # noqa: F401
    ACTION_LABELS,
    ACTIONS,
    LIVE_STATES,
    NOT_REVOKED,
    State,
)
from agents.queries import AgentErrorQuerySet, AgentQuerySet, TransitionQuerySet
from portal.models import ActorKind, ActorStamped


class Agent(ConcurrentTransitionMixin, models.Model):
    """One agent of the fleet: what it is, where it runs, and where it is in its lifecycle."""

    slug = models.SlugField(max_length=63, unique=True, help_text="DNS-safe name, e.g. wow-cache.")
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    tier = models.CharField(max_length=20, choices=Tier.choices, default=Tier.PLATFORM)
    capabilities = models.JSONField(default=list, blank=True)
    specializations = models.JSONField(default=list, blank=True)
    owner_team = models.CharField(max_length=100, blank=True)
    dependencies = models.ManyToManyField(
        "self", symmetrical=False, related_name="dependents", blank=True
    )
    version = models.CharField(max_length=50, default="1.0.0")
    cpu_millicores = models.PositiveIntegerField(
        default=250, help_text="CPU request in millicores."
    )
    memory_mb = models.PositiveIntegerField(default=256, help_text="Memory limit in MiB.")
    storage_mb = models.PositiveIntegerField(
        default=0, help_text="Data volume size in MiB (0: no quota asked for)."
    )
    runtime = models.CharField(
        max_length=20, choices=RuntimeKind.choices, default=RuntimeKind.LOCAL
    )
    replicas = models.PositiveSmallIntegerField(default=1)
    config = models.JSONField(default=dict, blank=True, help_text="agentd configuration (JSON).")
    environment = models.JSONField(
        default=dict, blank=True, help_text="Environment variables (not secret) the agent gets."
    )
    template = models.CharField(
        max_length=80, blank=True, help_text="The factory template it was made from (name@version)."
    )
    restart_policy = models.CharField(
        max_length=20, choices=RestartPolicy.choices, default=RestartPolicy.ON_FAILURE
    )
    # Changed only through agents.probes.services.set_probes (validated, audited): not editable
    # in model forms, shown read-only by the admin.
    probes = models.JSONField(
        default=dict,
        blank=True,
        editable=False,
        help_text="Liveness and readiness probes ({}: the defaults); see agents.probes.schema.",
    )

    state = FSMField(default=State.DRAFT, choices=State.choices, protected=True, db_index=True)
    state_changed_at = models.DateTimeField(default=timezone.now)
    health = models.CharField(max_length=10, choices=Health.choices, default=Health.UNKNOWN)
    health_detail = models.CharField(max_length=300, blank=True)
    health_checked_at = models.DateTimeField(null=True, blank=True)
    last_healthy_at = models.DateTimeField(null=True, blank=True)

    pending_action = models.CharField(max_length=20, blank=True)
    pending_since = models.DateTimeField(null=True, blank=True)
    runtime_details = models.JSONField(default=dict, blank=True, help_text="Ports, pids, ids.")
    last_exit = models.JSONField(default=dict, blank=True)
    drift = models.JSONField(
        default=list,
        blank=True,
        help_text="Differences the monitor found between runtime and portal.",
    )
    drift_checked_at = models.DateTimeField(null=True, blank=True)
    previous_config = models.JSONField(
        null=True, blank=True, help_text="The config before the last change, for a roll-back."
    )
    config_changed_at = models.DateTimeField(null=True, blank=True)

    # Auto-restart bookkeeping, kept by the monitor.
    restart_attempts = models.PositiveIntegerField(default=0)
    next_restart_at = models.DateTimeField(null=True, blank=True)
    restart_gave_up = models.BooleanField(default=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AgentQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(replicas__gte=1), name="agent_replicas_at_least_one"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    # --- lifecycle (pure rules; services do the rest) ------------------------------------

    @transition(field=state, source=State.DRAFT, target=State.PROVISIONED)
    def provision(self) -> None:
        """Reserve name, ports, volume, queue and config."""

    @transition(field=state, source=[State.PROVISIONED, State.STOPPED], target=State.DEPLOYED)
    def deploy(self) -> None:
        """Create the process, container or Deployment, not started."""

    @transition(field=state, source=[State.DEPLOYED, State.STOPPED], target=State.RUNNING)
    def start(self) -> None:
        """Start, readiness-gated."""

    @transition(
        field=state, source=[State.RUNNING, State.SUSPENDED, State.ERRORED], target=State.STOPPED
    )
    def stop(self) -> None:
        """Stop gracefully."""

    @transition(field=state, source=State.RUNNING, target=State.SUSPENDED)
    def suspend(self) -> None:
        """Pause without stopping."""

    @transition(field=state, source=State.SUSPENDED, target=State.RUNNING)
    def resume(self) -> None:
        """Unpause."""

    @transition(field=state, source=[State.RUNNING, State.ERRORED], target=State.RUNNING)
    def restart(self) -> None:
        """Stop and start again, readiness-gated."""

    @transition(field=state, source=NOT_REVOKED, target=State.REVOKED)
    def revoke(self) -> None:
        """Tear everything down; terminal."""

    @transition(field=state, source=LIVE_STATES, target=State.ERRORED)
    def fail(self) -> None:
        """Recorded by the system when the runtime reports a failure."""

    # --- small properties --------------------------------------------------------------

    @property
    def is_pending(self) -> bool:
        return bool(self.pending_action)

    @property
    def pending_label(self) -> str:
        return ACTION_LABELS.get(self.pending_action, ("", self.pending_action))[1]

    @property
    def is_revoked(self) -> bool:
        return self.state == State.REVOKED

    def legal_actions(self) -> list[str]:
        """The actions the state machine allows now (permissions and dependencies aside)."""
        # get_available_state_transitions is added by django-fsm's FSMField at class creation.
        transitions = self.get_available_state_transitions()  # type: ignore[attr-defined]
        available = {t.name for t in transitions}
        return [action for action in ACTIONS if action in available]


class AgentTransition(ActorStamped):
    """One row per lifecycle transition: the append-only audit trail of an agent's state."""

    ActorKind = ActorKind

    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="transitions")
    at = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=20, db_index=True)
    from_state = models.CharField(max_length=20, choices=State.choices)
    to_state = models.CharField(max_length=20, choices=State.choices)
    reason = models.CharField(max_length=500, blank=True)
    details = models.JSONField(default=dict, blank=True)
    operation = models.ForeignKey(
        "Operation", on_delete=models.SET_NULL, null=True, blank=True, related_name="transitions"
    )

    objects = TransitionQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["agent", "-at"])]

    def __str__(self) -> str:
        return f"{self.agent.slug}: {self.from_state} → {self.to_state} ({self.action}) by {self.actor}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise ValueError("Agent history is append-only; a transition row cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Agent history is append-only; a transition row cannot be deleted.")


class Operation(ActorStamped):
    """A lifecycle action someone asked for, tracked from request to outcome (like NetBox's Job).

    The request records it and returns; a Celery task (or the monitor, for automatic restarts)
    carries it out. Running it twice does nothing the second time.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    IN_FLIGHT = (Status.PENDING, Status.RUNNING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="operations")
    action = models.CharField(max_length=20)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    reason = models.CharField(max_length=500, blank=True)
    options = models.JSONField(default=dict, blank=True)
    from_state = models.CharField(max_length=20, choices=State.choices)
    error = models.TextField(blank=True)
    error_reason = models.CharField(max_length=40, blank=True)
    result = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    requested_at = models.DateTimeField(default=timezone.now, db_index=True)
    # When it was last handed to a worker (by the request or by the sweep).
    sent_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at"]

    def __str__(self) -> str:
        return f"{self.action} {self.agent.slug} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class BulkOperation(ActorStamped):
    """One action taken on many agents at once: a plan of items run by a Celery job with
    bounded parallelism, in dependency order. Retries and roll-backs are bulk operations too,
    pointing at the one they follow up."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        PARTIAL = "partial", "Partly failed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Kind(models.TextChoices):
        RUN = "run", "Run"
        RETRY = "retry", "Retry of failed items"
        ROLLBACK = "rollback", "Roll-back"

    FINISHED = (Status.SUCCEEDED, Status.PARTIAL, Status.FAILED, Status.CANCELLED)

    action = models.CharField(max_length=20)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.RUN)
    follows = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="follow_ups"
    )
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    targets = models.JSONField(default=list, help_text="Slugs asked for, in the order given.")
    filter = models.JSONField(default=dict, blank=True, help_text="The filter that chose them.")
    parallelism = models.PositiveSmallIntegerField(default=5)
    options = models.JSONField(default=dict, blank=True)
    total = models.PositiveSmallIntegerField(default=0)
    succeeded = models.PositiveSmallIntegerField(default=0)
    failed = models.PositiveSmallIntegerField(default=0)
    skipped = models.PositiveSmallIntegerField(default=0)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.CharField(max_length=200, blank=True)
    requested_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    runs = models.PositiveSmallIntegerField(default=0, help_text="Times a worker picked it up.")

    class Meta:
        ordering = ["-requested_at", "-id"]

    def __str__(self) -> str:
        return f"bulk #{self.pk} {self.action} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def pending(self) -> int:
        return max(0, self.total - self.succeeded - self.failed - self.skipped)

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.skipped

    @property
    def percent(self) -> int:
        return 100 if not self.total else round(100 * self.done / self.total)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()


class BulkItem(models.Model):
    """One agent of a bulk operation: what will be (or was) done to it and how it went."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    ACTIVE = (Status.PENDING, Status.RUNNING)

    bulk = models.ForeignKey(BulkOperation, on_delete=models.CASCADE, related_name="items")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="bulk_items")
    position = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    steps = models.JSONField(default=list, help_text="Lifecycle actions, in order.")
    steps_done = models.PositiveSmallIntegerField(default=0)
    from_state = models.CharField(max_length=20, choices=State.choices)
    to_state = models.CharField(max_length=20, choices=State.choices, blank=True)
    code = models.CharField(max_length=30, blank=True, help_text="Why skipped or failed.")
    message = models.TextField(blank=True)
    # The operation of every step begun, in order; one more than steps_done while one runs.
    operation_ids = models.JSONField(default=list, blank=True)
    operation = models.ForeignKey(
        Operation, on_delete=models.SET_NULL, null=True, blank=True, related_name="bulk_items"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["bulk", "agent"], name="bulk_item_agent_once"),
            # One bulk operation at a time per agent, whatever races the requests run.
            models.UniqueConstraint(
                fields=["agent"],
                condition=Q(status__in=["pending", "running"]),
                name="bulk_item_one_active_per_agent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent.slug} in bulk #{self.bulk_id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status not in self.ACTIVE

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class AgentError(models.Model):
    """One failure the portal saw, with what it makes of it: classification, root cause,
    evidence and the ranked ways out. The same failure seen again while this one is open is
    counted here (``occurrences``) rather than recorded twice."""

    class Source(models.TextChoices):
        ACTION = "action", "Failed lifecycle action"
        CRASH = "crash", "Crash"
        HEALTH = "health", "Failing health check"
        RUNTIME = "runtime", "Runtime error"
        TASKS = "tasks", "Repeated task failures"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        RECOVERING = "recovering", "Recovering"
        RESOLVED = "resolved", "Resolved"
        IGNORED = "ignored", "Ignored"

    OPEN_STATUSES = (Status.OPEN, Status.RECOVERING)

    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="errors")
    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    last_seen_at = models.DateTimeField(default=timezone.now)
    occurrences = models.PositiveIntegerField(default=1)
    source = models.CharField(max_length=10, choices=Source.choices)
    summary = models.CharField(max_length=500, help_text="What happened, in one sentence.")
    details = models.JSONField(default=dict, blank=True, help_text="The raw signals.")
    evidence = models.JSONField(default=list, blank=True, help_text="Last log lines before it.")
    classification = models.CharField(max_length=15, choices=ErrorClass.choices)
    rule = models.CharField(max_length=40, help_text="The classification rule that matched.")
    root_cause = models.TextField()
    suggestions = models.JSONField(default=list, blank=True)
    signature = models.CharField(max_length=200, db_index=True)
    pattern = models.CharField(max_length=200, help_text="The signature in words.")
    retry_count = models.PositiveIntegerField(default=0)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.OPEN, db_index=True
    )
    operation = models.ForeignKey(
        Operation, on_delete=models.SET_NULL, null=True, blank=True, related_name="errors"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=200, blank=True)
    resolution = models.CharField(max_length=300, blank=True)

    objects = AgentErrorQuerySet.as_manager()

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [models.Index(fields=["agent", "status", "-occurred_at"])]

    def __str__(self) -> str:
        return f"{self.agent.slug}: {self.summary} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES

    @property
    def one_click(self) -> list[dict]:
        return [s for s in self.suggestions if s.get("action")]


class RecoveryAttempt(ActorStamped):
    """One try at fixing an error, by a person (one click) or by the automatic policy."""

    class Outcome(models.TextChoices):
        RUNNING = "running", "Running"
        FIXED = "fixed", "Fixed"
        DID_NOT_HELP = "did_not_help", "Did not help"
        FAILED = "failed", "Failed"

    error = models.ForeignKey(AgentError, on_delete=models.CASCADE, related_name="attempts")
    action = models.CharField(max_length=30)
    automatic = models.BooleanField(default=False)
    outcome = models.CharField(max_length=15, choices=Outcome.choices, default=Outcome.RUNNING)
    detail = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    # When it was last handed to a worker (by the request or by the sweep).
    sent_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} for error #{self.error_id} ({self.outcome})"


class RecoverySwitch(models.Model):
    """The global kill switch of automatic recovery (one row). Off: the portal records and
    classifies errors but fixes nothing by itself."""

    automatic = models.BooleanField(default=True)
    changed_by = models.CharField(max_length=200, blank=True)
    changed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"automatic recovery {'on' if self.automatic else 'off'}"


# The workflow engine's rows live with the engine (``agents/workflows``) and belong to this app.
from agents.workflows.models import StepRun, WorkflowRun  # noqa: E402, F401


class AgentSecret(models.Model):
    """An environment variable whose value is secret: given to the agent's processes, never
    rendered, logged or answered by any door (its name is shown, its value never)."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="secrets")
    name = models.CharField(max_length=100)
    value = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "name"], name="agent_secret_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.agent.slug}: {self.name}"
