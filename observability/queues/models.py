"""What the portal keeps about queues: figures over time, per-queue health thresholds, and the
redrive jobs that send dead letters back (or delete them). Imported by ``observability.models``,
so Django sees them as the observability app's models."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from portal.models import ActorStamped


class QueueSample(models.Model):
    """One queue's figures at one time. ``step`` is how many seconds the sample stands for: a
    look (raw, 0) or a 5-minute bucket whose values are averages, as for agent metrics."""

    RAW = 0
    ROLLUP = 300

    id = models.BigAutoField(primary_key=True)
    queue_name = models.CharField(max_length=200)
    ts = models.DateTimeField()
    step = models.PositiveIntegerField(default=RAW)
    pending = models.FloatField(help_text="Messages waiting to be delivered (the backlog).")
    in_flight = models.FloatField(default=0, help_text="Delivered, not yet acknowledged.")
    in_rate = models.FloatField(null=True, blank=True, help_text="Messages in per second.")
    out_rate = models.FloatField(null=True, blank=True, help_text="Messages done per second.")
    lag_seconds = models.FloatField(
        null=True, blank=True, help_text="Age of the oldest message not yet delivered."
    )
    oldest_age_seconds = models.FloatField(null=True, blank=True)
    error_rate = models.FloatField(null=True, blank=True, help_text="Failed attempts, percent.")
    dead_letters = models.FloatField(default=0)
    dlq_inflow = models.FloatField(null=True, blank=True, help_text="Dead letters per minute.")
    consumers = models.JSONField(
        default=dict, blank=True, help_text="Pending entries per consumer (or worker)."
    )
    producers = models.JSONField(
        default=dict,
        blank=True,
        help_text="Tasks taken so far per producer (agentd's lifetime counts), for the flow.",
    )
    samples = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["queue_name", "step", "ts"], name="queue_sample_unique"
            ),
        ]
        indexes = [models.Index(fields=["step", "ts"], name="queue_sample_step_ts")]

    def __str__(self) -> str:
        return f"{self.queue_name} at {self.ts:%Y-%m-%d %H:%M:%S} (step {self.step} s)"


class QueueThreshold(models.Model):
    """A queue's own health thresholds; an empty field takes the default from settings."""

    queue_name = models.CharField(max_length=200, unique=True)
    backlog_degraded = models.PositiveIntegerField(null=True, blank=True)
    backlog_critical = models.PositiveIntegerField(null=True, blank=True)
    age_degraded_seconds = models.PositiveIntegerField(null=True, blank=True)
    age_critical_seconds = models.PositiveIntegerField(null=True, blank=True)
    error_rate_degraded = models.FloatField(null=True, blank=True)
    error_rate_critical = models.FloatField(null=True, blank=True)
    dlq_inflow_degraded = models.FloatField(
        null=True, blank=True, help_text="Dead letters per minute."
    )
    dlq_inflow_critical = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"thresholds of {self.queue_name}"


class RedriveJob(ActorStamped):
    """Sending dead letters back to their stream, or deleting them, as one tracked job.

    What it touches is fixed when the operator confirms: the ids listed, or (for a group or
    "all") every dead letter whose id is at most ``upto_id``, the newest id at that moment.
    Stream ids only grow, so a message that arrives later is never in the job."""

    class Action(models.TextChoices):
        REDRIVE = "redrive", "Retry"
        DELETE = "delete", "Delete"

    class Scope(models.TextChoices):
        SELECTED = "selected", "Selected messages"
        GROUP = "group", "An error group"
        ALL = "all", "All messages"

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    id = models.BigAutoField(primary_key=True)
    queue_name = models.CharField(max_length=200)
    action = models.CharField(max_length=10, choices=Action.choices)
    scope = models.CharField(max_length=10, choices=Scope.choices)
    message_ids = models.JSONField(default=list, blank=True)
    fingerprint = models.CharField(max_length=40, blank=True)
    upto_id = models.CharField(max_length=40, blank=True)
    rate_limit = models.FloatField(
        null=True, blank=True, help_text="Messages per second; empty: as fast as possible."
    )
    force = models.BooleanField(default=False, help_text="Redrive messages redriven too often.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    total = models.PositiveIntegerField(default=0, help_text="Messages in the snapshot.")
    done = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0, help_text="Already gone when reached.")
    held_back = models.PositiveIntegerField(
        default=0, help_text="Redriven too often already, and not forced."
    )
    cursor = models.CharField(max_length=40, blank=True, help_text="The last id worked on.")
    message = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    cancelled_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["queue_name", "-id"], name="redrive_queue_id")]
        constraints = [
            models.CheckConstraint(
                condition=Q(rate_limit__isnull=True) | Q(rate_limit__gt=0),
                name="redrive_rate_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} job {self.pk} on {self.queue_name}"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def worked(self) -> int:
        return self.done + self.skipped + self.held_back

    @property
    def percent(self) -> int:
        return 100 if not self.total else min(100, round(100 * self.worked / self.total))
