"""Workflow runs and their step runs, as rows.

A run is one execution of a definition (name and version) with its parameters. Each attempt of
each step is a ``StepRun`` row: an automatic retry, a retry asked for by a person and a
compensation during a roll-back all add rows, and a new attempt names the row it replaces, so
the history of a run (its lineage) is the rows themselves. For each step and role exactly one
row is ``current``: the one the engine acts on and the pages show first.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from portal.models import ActorStamped


class RunStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    ROLLING_BACK = "rolling_back", "Rolling back"
    ROLLED_BACK = "rolled_back", "Rolled back"


# A run in one of these has a worker (or a person) still to act on it.
ACTIVE = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.ROLLING_BACK)
FINISHED = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
    RunStatus.ROLLED_BACK,
)


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # waits for the steps it comes after
    QUEUED = "queued", "Queued"  # ready; a worker will start it (at wake_at)
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


STEP_FINISHED = (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED)
STEP_BUSY = (StepStatus.QUEUED, StepStatus.RUNNING)


class Role(models.TextChoices):
    FORWARD = "forward", "Step"
    COMPENSATION = "compensation", "Compensation"


class DeadlineState(models.TextChoices):
    NONE = "", "No deadline"
    ON_TIME = "on_time", "On time"
    AT_RISK = "at_risk", "At risk"
    LATE = "late", "Late"


class WorkflowRun(ActorStamped):
    id = models.BigAutoField(primary_key=True)
    definition = models.CharField(max_length=63)
    version = models.PositiveIntegerField()
    title = models.CharField(max_length=200)
    parameters = models.JSONField(default=dict, blank=True)
    # What the run is about: an agent (slug) or a customer (name), for the list and filters.
    subject_kind = models.CharField(max_length=10, blank=True)
    subject = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=15, choices=RunStatus.choices, default=RunStatus.PENDING)
    # "forward" while running the steps; "compensation" from the moment a roll-back begins.
    phase = models.CharField(max_length=15, choices=Role.choices, default=Role.FORWARD)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    predicted_finish_at = models.DateTimeField(null=True, blank=True)
    deadline_state = models.CharField(
        max_length=10, choices=DeadlineState.choices, default=DeadlineState.NONE, blank=True
    )
    deadline_alerted_at = models.DateTimeField(null=True, blank=True)
    max_parallel = models.PositiveIntegerField(default=4)
    roll_back_on_failure = models.BooleanField(default=False)
    # Counts of the current forward steps, kept with every change for the list's progress bars.
    total_steps = models.PositiveIntegerField(default=0)
    completed_steps = models.PositiveIntegerField(default=0)
    failed_steps = models.PositiveIntegerField(default=0)
    current_step = models.CharField(max_length=200, blank=True)
    retries = models.PositiveIntegerField(default=0)
    parent_step = models.OneToOneField(
        "agents.StepRun",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="child_run",
        help_text="The sub-workflow step that started this run.",
    )

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["status", "-id"], name="wfrun_status_id"),
            models.Index(fields=["definition", "-id"], name="wfrun_definition_id"),
            models.Index(fields=["subject", "-id"], name="wfrun_subject_id"),
        ]

    def __str__(self) -> str:
        return f"{self.title} #{self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def progress(self) -> int:
        """Per cent of the forward steps done (succeeded or skipped)."""
        if not self.total_steps:
            return 0
        return round(100 * self.completed_steps / self.total_steps)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()


class StepRun(models.Model):
    id = models.BigAutoField(primary_key=True)
    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="steps")
    definition = models.CharField(max_length=63, help_text="The run's, for predictions.")
    step_id = models.CharField(max_length=63)
    role = models.CharField(max_length=15, choices=Role.choices, default=Role.FORWARD)
    position = models.PositiveIntegerField(
        help_text="Declared order for steps; the order compensations run in, for compensations."
    )
    attempt = models.PositiveIntegerField(default=1)
    current = models.BooleanField(default=True)
    kind = models.CharField(max_length=63)
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=StepStatus.choices, default=StepStatus.PENDING)
    detail = models.CharField(max_length=300, blank=True, help_text="What it waits for now.")
    inputs = models.JSONField(default=dict, blank=True)
    output = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    reply = models.JSONField(default=dict, blank=True, help_text="The agent's reply, if any.")
    log = models.TextField(blank=True, help_text="The last lines the step wrote.")
    worker = models.CharField(max_length=200, blank=True, help_text="Replica or worker.")
    state = models.JSONField(default=dict, blank=True, help_text="The kind's own bookkeeping.")
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    wake_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    late = models.BooleanField(default=False)
    replaces = models.OneToOneField(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="replaced_by"
    )
    reason = models.CharField(
        max_length=300, blank=True, help_text="Why this attempt exists or ended as it did."
    )

    class Meta:
        ordering = ["run", "role", "position", "attempt"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "role", "step_id"],
                condition=Q(current=True),
                name="steprun_one_current",
            ),
            models.UniqueConstraint(
                fields=["run", "role", "step_id", "attempt"], name="steprun_attempt_once"
            ),
        ]
        indexes = [
            models.Index(
                fields=["status", "wake_at"],
                name="steprun_busy_wake",
                condition=Q(status__in=["queued", "running"]),
            ),
            models.Index(
                fields=["definition", "step_id", "-finished_at"],
                name="steprun_succeeded",
                condition=Q(status="succeeded", role="forward"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.title} (run {self.run_id}, attempt {self.attempt})"

    @property
    def is_finished(self) -> bool:
        return self.status in STEP_FINISHED

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()
