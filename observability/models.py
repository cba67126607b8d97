"""What the portal keeps about the fleet's behaviour over time: log lines, events, metric
samples, alert rules and the alerts they fire, and each user's chosen agent context."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import Q
from django.utils import timezone

from agents.models import Agent


class Level(models.IntegerChoices):
    """agentd's log levels, as numbers so that "warning and above" is one comparison."""

    DEBUG = 10, "debug"
    INFO = 20, "info"
    WARNING = 30, "warning"
    ERROR = 40, "error"
    CRITICAL = 50, "critical"

    @classmethod
    def parse(cls, text: str) -> Level | None:
        """The level named ``text`` (any case, ``warn`` and ``fatal`` accepted), or None."""
        name = (text or "").strip().lower()
        name = {"warn": "warning", "fatal": "critical", "err": "error"}.get(name, name)
        for level in cls:
            if level.label == name:
                return level
        return None


class LogEntry(models.Model):
    """One line an agent wrote (agentd writes JSON lines), collected from its runtime.

    Lines are kept after the process that wrote them is gone, so the run before a crash can be
    read next to the one after it. Indexed for the Logs page's questions: one agent's newest
    lines, at or above a level, containing some text (a trigram index answers substrings)."""

    id = models.BigAutoField(primary_key=True)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+", db_index=False)
    replica = models.PositiveSmallIntegerField(default=0)
    ts = models.DateTimeField()
    level = models.PositiveSmallIntegerField(choices=Level.choices, default=Level.INFO)
    event = models.CharField(max_length=100, blank=True)
    message = models.TextField()
    fields = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name_plural = "log entries"
        indexes = [
            models.Index(fields=["agent", "-ts", "-id"], name="log_agent_ts"),
            models.Index(fields=["agent", "level", "-ts", "-id"], name="log_agent_level_ts"),
            models.Index(fields=["-ts", "-id"], name="log_ts"),
            GinIndex(fields=["message"], opclasses=["gin_trgm_ops"], name="log_message_trgm"),
            # Warning-and-above lines only: "at least warning + text" is then answered from a
            # small index even when the text is common at lower levels (bench_logs.py).
            GinIndex(
                fields=["message"],
                opclasses=["gin_trgm_ops"],
                condition=Q(level__gte=Level.WARNING),
                name="log_message_trgm_warn",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.ts:%Y-%m-%d %H:%M:%S} {self.get_level_display()} {self.message[:80]}"


class LogCursor(models.Model):
    """How far the collector has read one replica's log: the timestamp of the last line stored
    and how many lines with exactly that timestamp were stored, so a collector that restarts
    reads on from there without losing or repeating a line."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    replica = models.PositiveSmallIntegerField(default=0)
    last_ts = models.CharField(max_length=40, blank=True)
    lines_at_last_ts = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "replica"], name="log_cursor_unique"),
        ]

    def __str__(self) -> str:
        return f"agent {self.agent_id} replica {self.replica} at {self.last_ts or 'start'}"


class Severity(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class Event(models.Model):
    """Something that happened to an agent or the fleet: a lifecycle transition, a health
    change, drift, a configuration change, an error, an alert. Written in the same transaction
    as the change it describes."""

    class Kind(models.TextChoices):
        TRANSITION = "transition", "Lifecycle"
        HEALTH = "health", "Health"
        DRIFT = "drift", "Drift"
        CONFIG = "config", "Configuration"
        ERROR = "error", "Error"
        ALERT = "alert", "Alert"

    id = models.BigAutoField(primary_key=True)
    ts = models.DateTimeField(default=timezone.now)
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.INFO)
    summary = models.CharField(max_length=300)
    actor = models.CharField(max_length=200, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["agent", "-ts"], name="event_agent_ts"),
            models.Index(fields=["-ts"], name="event_ts"),
            models.Index(fields=["kind", "-ts"], name="event_kind_ts"),
        ]

    def __str__(self) -> str:
        return self.summary


class MetricSample(models.Model):
    """One agent's measurements at one time. ``step`` is how many seconds the sample stands
    for: a scrape (raw) or a downsampled bucket whose values are averages (``up`` becomes the
    share of the bucket the agent was up)."""

    RAW = 0
    ROLLUP = 300

    id = models.BigAutoField(primary_key=True)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+", db_index=False)
    ts = models.DateTimeField()
    step = models.PositiveIntegerField(default=RAW)
    up = models.FloatField(help_text="1 when the agent was running and answered, else 0.")
    cpu_percent = models.FloatField(null=True, blank=True)
    memory_bytes = models.FloatField(null=True, blank=True)
    memory_limit_bytes = models.FloatField(null=True, blank=True)
    throughput = models.FloatField(null=True, blank=True, help_text="Tasks processed per second.")
    failures = models.FloatField(null=True, blank=True, help_text="Failed attempts per second.")
    error_rate = models.FloatField(null=True, blank=True, help_text="Failed share, percent.")
    latency_p50_ms = models.FloatField(null=True, blank=True)
    latency_p95_ms = models.FloatField(null=True, blank=True)
    latency_p99_ms = models.FloatField(null=True, blank=True)
    queue_depth = models.FloatField(null=True, blank=True)
    dead_letters = models.FloatField(null=True, blank=True)
    samples = models.PositiveIntegerField(
        default=1, help_text="How many scrapes a downsampled bucket averages (1 for a raw one)."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "step", "ts"], name="metric_sample_unique"),
        ]
        indexes = [models.Index(fields=["step", "ts"], name="metric_step_ts")]

    def __str__(self) -> str:
        return f"agent {self.agent_id} at {self.ts:%Y-%m-%d %H:%M:%S} (step {self.step} s)"

    @property
    def memory_percent(self) -> float | None:
        if self.memory_bytes is None or not self.memory_limit_bytes:
            return None
        return 100.0 * self.memory_bytes / self.memory_limit_bytes


class AlertRule(models.Model):
    """A condition that, while it holds for ``for_seconds``, fires one alert per agent."""

    class Kind(models.TextChoices):
        METRIC = "metric", "Metric threshold"
        STATE = "state", "Agent state"
        HEARTBEAT = "heartbeat", "No heartbeat"
        WORKFLOW = "workflow", "Workflow deadline"
        SLO = "slo", "SLO burn rate"

    class Metric(models.TextChoices):
        ERROR_RATE = "error_rate", "Error rate (%)"
        MEMORY_PERCENT = "memory_percent", "Memory (% of limit)"
        CPU_PERCENT = "cpu_percent", "CPU (%)"
        LATENCY_P95 = "latency_p95_ms", "Latency p95 (ms)"
        QUEUE_DEPTH = "queue_depth", "Queue depth"
        DEAD_LETTERS = "dead_letters", "Dead letters"
        # Of the agent's task queue (sampled into QueueSample, observability.queues).
        QUEUE_BACKLOG = "queue_backlog", "Queue backlog (messages)"
        QUEUE_LAG = "queue_lag_seconds", "Queue lag (s)"
        QUEUE_OLDEST = "queue_oldest_seconds", "Oldest queued message (s)"
        DLQ_INFLOW = "dlq_inflow", "Dead-letter inflow (/min)"

    class Operator(models.TextChoices):
        ABOVE = "gt", ">"
        BELOW = "lt", "<"

    name = models.CharField(max_length=100, unique=True)
    description = models.CharField(max_length=300, blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    metric = models.CharField(max_length=20, choices=Metric.choices, blank=True)
    operator = models.CharField(
        max_length=2, choices=Operator.choices, default=Operator.ABOVE, blank=True
    )
    threshold = models.FloatField(null=True, blank=True)
    state = models.CharField(max_length=20, blank=True, help_text="For agent-state rules.")
    for_seconds = models.PositiveIntegerField(
        default=0, help_text="How long the condition must hold before the alert fires."
    )
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    agent = models.ForeignKey(
        Agent,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Only this agent; empty for every agent.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(kind="metric") | (~Q(metric="") & Q(threshold__isnull=False)),
                name="alert_rule_metric_complete",
            ),
            models.CheckConstraint(
                condition=~Q(kind="state") | ~Q(state=""), name="alert_rule_state_complete"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def condition(self) -> str:
        """The rule in words: "error rate (%) > 5 for 5 min"."""
        if self.kind == self.Kind.STATE:
            text = f"agent is {self.state}"
        elif self.kind == self.Kind.HEARTBEAT:
            text = "no heartbeat"
        elif self.kind == self.Kind.WORKFLOW:
            text = "a workflow run is at risk of missing its deadline or late"
        elif self.kind == self.Kind.SLO:
            text = "the error budget burns 14.4× too fast over 1 h and 5 min, or 6× over 6 h and 30 min"
        else:
            metric = self.Metric(self.metric).label.lower()
            text = f"{metric} {self.get_operator_display()} {self.threshold:g}"
        return text + (f" for {_duration(self.for_seconds)}" if self.for_seconds else "")


class Alert(models.Model):
    """One firing of a rule for one agent, from the moment the condition held long enough to its
    resolution (by the condition clearing or by a person). Re-evaluation while it is open does
    not fire again: the database allows one open alert per rule, agent and subject (a workflow
    deadline rule fires one per run)."""

    class Status(models.TextChoices):
        FIRING = "firing", "Firing"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        RESOLVED = "resolved", "Resolved"

    OPEN = (Status.FIRING, Status.ACKNOWLEDGED)

    id = models.BigAutoField(primary_key=True)
    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    severity = models.CharField(max_length=10, choices=Severity.choices)
    status = models.CharField(max_length=15, choices=Status.choices, default=Status.FIRING)
    summary = models.CharField(max_length=300)
    value = models.FloatField(null=True, blank=True)
    fired_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=200, blank=True)
    silenced_until = models.DateTimeField(null=True, blank=True)
    silenced_by = models.CharField(max_length=200, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(
        max_length=200, blank=True, help_text="Empty when the condition cleared by itself."
    )
    resolution = models.CharField(max_length=300, blank=True)
    cleared_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the condition was first seen clear after the alert fired; a person's "
        "resolve while it still holds keeps the rule quiet for this agent until then.",
    )
    # What else than the agent the alert is about ("workflow:<id>" for a workflow deadline
    # rule: one alert per run, on the agent the run waits for).
    subject = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        ordering = ["-fired_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "agent", "subject"],
                condition=Q(status__in=["firing", "acknowledged"]),
                name="alert_one_open_per_rule_agent_subject",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "-fired_at"], name="alert_status_fired"),
            models.Index(fields=["agent", "-fired_at"], name="alert_agent_fired"),
        ]

    def __str__(self) -> str:
        return self.summary

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN

    def is_silenced(self, now=None) -> bool:
        return self.silenced_until is not None and self.silenced_until > (now or timezone.now())


class AgentContext(models.Model):
    """The agent a user chose in the header's context switcher; kept across sessions."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_context"
    )
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"user {self.user_id}: agent {self.agent_id or 'all'}"


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


# The queue models live beside the queue services; imported here so Django finds them.
from observability.queues.models import QueueSample, QueueThreshold, RedriveJob  # noqa: E402

__all__ = [
    "AgentContext",
    "Alert",
    "AlertRule",
    "Event",
    "Level",
    "LogCursor",
    "LogEntry",
    "MetricSample",
    "QueueSample",
    "QueueThreshold",
    "RedriveJob",
    "Severity",
]


class ServiceLevelObjective(models.Model):
    """An agent's availability objective over 30 days (WowVision Prime and WowEvent have
    ``SLO_DEFAULT_OBJECTIVES`` without a row); ``observability.slo`` measures it from the
    uptime samples and alerts on the burn rate of its error budget."""

    agent = models.OneToOneField(Agent, on_delete=models.CASCADE, related_name="slo")
    objective = models.FloatField(help_text="Percent of the time up, e.g. 99.9.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "service level objective"

    def __str__(self) -> str:
        return f"{self.agent} {self.objective} %"
