"""The factory's records: templates (versioned data), the price table, drafts of new agents and
their sandbox runs.

A template row is never changed once a draft uses it: editing one in the admin saves a new
version (``services.save_template``), so a draft keeps the template it was started from.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone

from portal.models import ActorStamped


class Template(models.Model):
    """What an agent of one kind is: its agentd handler, defaults, schema, tests and costs."""

    class Complexity(models.TextChoices):
        LOW = "low", "Low"
        MEDIUM = "medium", "Medium"
        HIGH = "high", "High"

    key = models.SlugField(max_length=40, help_text="The template id, e.g. memory.")
    version = models.PositiveIntegerField(default=1)
    name = models.CharField(max_length=100)
    description = models.TextField()
    category = models.CharField(max_length=40)
    complexity = models.CharField(max_length=10, choices=Complexity.choices, default=Complexity.LOW)
    handler = models.CharField(
        max_length=20, help_text="The agentd handler: blank, memory, orchestration, api, data..."
    )
    capabilities = models.JSONField(default=list, blank=True)
    resources = models.JSONField(
        default=dict, help_text="cpu_millicores, memory_mb, storage_mb and replicas."
    )
    dependencies = models.JSONField(default=list, blank=True, help_text="Agent slugs.")
    settings = models.JSONField(default=dict, blank=True, help_text="The handler's settings.")
    config_schema = models.JSONField(
        default=dict, help_text="JSON Schema (2020-12) of the handler's settings."
    )
    alert_rules = models.JSONField(
        default=list, blank=True, help_text="The alert rules an agent of this template gets."
    )
    cost_profile = models.JSONField(
        default=dict, blank=True, help_text="tasks_per_month: the usage a new agent expects."
    )
    test_tasks = models.JSONField(
        default=list, help_text="Sandbox tests: name, payload, expect (and optionally status)."
    )
    active = models.BooleanField(default=True, help_text="Offered in the wizard.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["key", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["key", "version"], name="template_key_version")
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def label(self) -> str:
        return f"{self.key}@{self.version}"


def default_price(name: str) -> Decimal:
    return Decimal(str(settings.FACTORY_PRICES[name]))


class PriceTable(models.Model):
    """What the fleet's resources cost (one row; settings give its first values)."""

    currency = models.CharField(max_length=3, default="USD")
    vcpu_hour = models.DecimalField(max_digits=10, decimal_places=6)
    memory_gb_hour = models.DecimalField(max_digits=10, decimal_places=6)
    storage_gb_month = models.DecimalField(max_digits=10, decimal_places=6)
    per_thousand_tasks = models.DecimalField(max_digits=10, decimal_places=6)
    budget_per_agent = models.DecimalField(
        max_digits=10, decimal_places=2, help_text="The monthly budget one agent should meet."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "price table"

    def __str__(self) -> str:
        return f"Prices ({self.currency})"


class Draft(ActorStamped):
    """A new agent on its way through the wizard: a URL of its own, resumable, expiring."""

    class Status(models.TextChoices):
        EDITING = "editing", "Editing"
        CREATING = "creating", "Creating"
        CREATED = "created", "Created"
        FAILED = "failed", "Creation failed"
        CANCELLED = "cancelled", "Cancelled"
        EXPIRED = "expired", "Expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    template = models.ForeignKey(Template, on_delete=models.PROTECT, related_name="drafts")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.EDITING)
    step = models.PositiveSmallIntegerField(default=2, help_text="The furthest step reached.")
    values = models.JSONField(default=dict, blank=True)
    # Secret environment variables: name -> value; never rendered back, dropped once created.
    secrets = models.JSONField(default=dict, blank=True)
    run = models.ForeignKey(
        "agents.WorkflowRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    agent_slug = models.SlugField(max_length=63, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["status", "expires_at"], name="draft_status_expiry")]

    def __str__(self) -> str:
        return f"Draft {self.values.get('name') or self.pk}"

    @property
    def title(self) -> str:
        return str(self.values.get("name") or f"New {self.template.name} agent")

    @property
    def is_editable(self) -> bool:
        return self.status == self.Status.EDITING and self.expires_at > timezone.now()


class SandboxRun(ActorStamped):
    """One run of a configuration's test tasks in an isolated agent, torn down afterwards."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        PASSED = "passed", "Passed"
        FAILED = "failed", "Failed"
        ERROR = "error", "Could not run"

    FINISHED = (Status.PASSED, Status.FAILED, Status.ERROR)

    draft = models.ForeignKey(
        Draft, null=True, blank=True, on_delete=models.CASCADE, related_name="sandboxes"
    )
    template = models.ForeignKey(Template, on_delete=models.PROTECT, related_name="+")
    name = models.SlugField(max_length=63, help_text="The sandbox agent's slug.")
    config = models.JSONField(help_text="The configuration tried (secret values left out).")
    # Secret environment variables for the run; emptied when it is torn down.
    secrets = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    results = models.JSONField(default=list, blank=True)
    logs = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    latency_p50_ms = models.FloatField(null=True, blank=True)
    latency_p95_ms = models.FloatField(null=True, blank=True)
    peak_memory_mb = models.FloatField(null=True, blank=True)
    # What is running, so a sweep can tear it down when the worker died.
    resources = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    torn_down_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Sandbox #{self.pk} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def passed_count(self) -> int:
        return sum(1 for result in self.results if result.get("passed"))

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None
