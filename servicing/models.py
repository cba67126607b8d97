"""Releases: the versions of agentd that agents can run, for the whole fleet, one factory
template, or one agent.

A release names its artifact (the image on Docker and Kubernetes, ``local`` for the local
runtime's own agentd build), its changelog and the config keys it changes by default. A release
marked bad is pinned; a pinned release is one no upgrade or bulk deploy may take an agent to,
until an Admin unpins it. Everything that changes a release goes through ``servicing.services``.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from servicing import versions


class ReleaseQuerySet(models.QuerySet):
    def fleet_wide(self) -> ReleaseQuerySet:
        return self.filter(agent__isnull=True, template="")

    def for_agent(self, agent) -> ReleaseQuerySet:
        """The releases that apply to ``agent``: the fleet's, its template's and its own."""
        scope = Q(agent__isnull=True, template="") | Q(agent=agent)
        key = template_key(agent.template)
        if key:
            scope |= Q(agent__isnull=True, template=key)
        return self.filter(scope)

    def in_scope(self, agent=None, template: str = "") -> ReleaseQuerySet:
        """The releases of exactly this scope (an agent, a template key, or the fleet)."""
        if agent is not None:
            return self.filter(agent=agent)
        if template:
            return self.filter(agent__isnull=True, template=template)
        return self.fleet_wide()


def template_key(template: str) -> str:
    """The factory template key of an agent's ``template`` ("memory@2" -> "memory")."""
    return (template or "").partition("@")[0].strip()


class Release(models.Model):
    """One version of agentd, published for a scope: the fleet (no agent, no template), one
    factory template (``template``, its key) or one agent."""

    version = models.CharField(max_length=versions.MAX_LENGTH, help_text="MAJOR.MINOR.PATCH")
    artifact = models.CharField(
        max_length=300,
        help_text="The image each container runtime runs (waooaw/agentd:1.1.0); "
        "'local' for the local runtime's own agentd build.",
    )
    changelog = models.TextField(blank=True)
    config_changes = models.JSONField(
        default=dict, blank=True, help_text="agentd config keys this release changes by default."
    )
    agent = models.ForeignKey(
        "agents.Agent",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="releases",
        help_text="Only this agent (empty: the fleet, or a template).",
    )
    template = models.CharField(
        max_length=80, blank=True, help_text="Only agents of this factory template (its key)."
    )
    published_by = models.CharField(max_length=200)
    published_at = models.DateTimeField(auto_now_add=True)
    bad = models.BooleanField(default=False)
    bad_reason = models.TextField(blank=True)
    pinned = models.BooleanField(
        default=False, help_text="No upgrade or bulk deploy may take an agent to it."
    )
    pinned_reason = models.TextField(blank=True)
    pinned_by = models.CharField(max_length=200, blank=True)
    pinned_at = models.DateTimeField(null=True, blank=True)

    objects = ReleaseQuerySet.as_manager()

    class Meta:
        ordering = ["-published_at", "-pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(agent__isnull=True) | Q(template=""),
                name="release_one_scope",
                violation_error_message="A release is for one agent or one template, not both.",
            ),
            models.UniqueConstraint(
                fields=["version"],
                condition=Q(agent__isnull=True, template=""),
                name="release_unique_fleet_version",
            ),
            models.UniqueConstraint(
                fields=["template", "version"],
                condition=Q(agent__isnull=True) & ~Q(template=""),
                name="release_unique_template_version",
            ),
            models.UniqueConstraint(
                fields=["agent", "version"],
                condition=Q(agent__isnull=False),
                name="release_unique_agent_version",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.version} ({self.scope_label})"

    @property
    def scope_label(self) -> str:
        if self.agent is not None:
            return f"agent {self.agent.slug}"
        if self.template:
            return f"template {self.template}"
        return "fleet"

    @property
    def parsed_version(self) -> versions.Version:
        return versions.parse(self.version)


class Strategy(models.TextChoices):
    ROLLING = "rolling", "Rolling"
    BLUE_GREEN = "blue-green", "Blue-green"
    CANARY = "canary", "Canary"


class UpgradeStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Waiting for its window"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    SUCCEEDED = "succeeded", "Succeeded"
    ROLLED_BACK = "rolled_back", "Rolled back"
    FAILED = "failed", "Failed"
    ABORTED = "aborted", "Aborted"


ACTIVE_UPGRADE = (UpgradeStatus.SCHEDULED, UpgradeStatus.RUNNING, UpgradeStatus.PAUSED)


class Upgrade(models.Model):
    """One agent taken from one version to another by a strategy, run as a workflow; the row
    is what the servicing pages show: where it is, the measurements at each step, the outcome."""

    agent = models.ForeignKey("agents.Agent", on_delete=models.PROTECT, related_name="upgrades")
    from_version = models.CharField(max_length=versions.MAX_LENGTH)
    to_version = models.CharField(max_length=versions.MAX_LENGTH)
    release = models.ForeignKey(Release, on_delete=models.PROTECT, null=True, blank=True)
    strategy = models.CharField(max_length=20, choices=Strategy.choices)
    # The canary's traffic shares, in percent, ending at 100.
    steps = models.JSONField(default=list, blank=True)
    gates = models.JSONField(default=dict, blank=True)
    config = models.JSONField(
        default=dict, blank=True, help_text="The agentd config the new version runs with."
    )
    replicas = models.PositiveIntegerField(default=1)
    restore_data = models.BooleanField(default=False)
    downgrade = models.BooleanField(default=False)
    not_before = models.DateTimeField(null=True, blank=True)
    window_note = models.CharField(max_length=300, blank=True)
    status = models.CharField(
        max_length=20, choices=UpgradeStatus.choices, default=UpgradeStatus.SCHEDULED
    )
    phase = models.CharField(max_length=200, blank=True)
    weight = models.PositiveSmallIntegerField(default=0, help_text="The new version's share now.")
    # One row per measured step: both versions' figures (the A/B table) and the gates' verdicts.
    measurements = models.JSONField(default=list, blank=True)
    backup = models.JSONField(default=dict, blank=True)
    outcome = models.TextField(blank=True)
    # What a person asked of the running upgrade ("promote", "pause", "resume", "abort",
    # "rollback"); its steps read it at their next look, so every door acts the same way.
    command = models.CharField(max_length=20, blank=True)
    command_reason = models.CharField(max_length=300, blank=True)
    command_by = models.CharField(max_length=200, blank=True)
    run = models.ForeignKey(
        "agents.WorkflowRun", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    requested_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent"],
                condition=Q(status__in=["scheduled", "running", "paused"]),
                name="upgrade_one_active_per_agent",
                violation_error_message="This agent already has an upgrade under way.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.agent} {self.from_version} → {self.to_version} ({self.strategy})"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_UPGRADE


class WindowKind(models.TextChoices):
    ALLOW = "allow", "Allow"
    DENY = "deny", "Deny"


class MaintenanceWindow(models.Model):
    """When upgrades may run (allow) or must not (deny): a cron expression for when the window
    opens, how long it stays open, in a time zone; for the fleet, one tier or one agent. A deny
    window wins over an allow window; an agent with no allow window may be upgraded any time a
    deny window does not cover. Changed only through ``servicing.windows`` (Admin, audited)."""

    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=WindowKind.choices, default=WindowKind.ALLOW)
    cron = models.CharField(
        max_length=100, help_text="When it opens: minute hour day month weekday"
    )
    duration_minutes = models.PositiveIntegerField(help_text="How long it stays open (1-10080).")
    timezone = models.CharField(max_length=64, default="UTC", help_text="IANA name: Europe/Paris")
    tier = models.CharField(max_length=20, blank=True, help_text="Only agents of this tier.")
    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.PROTECT, null=True, blank=True,
        related_name="maintenance_windows", help_text="Only this agent.",
    )  # fmt: skip
    enabled = models.BooleanField(default=True)
    reason = models.TextField(blank=True)
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["kind", "name", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(agent__isnull=True) | Q(tier=""),
                name="window_one_scope",
                violation_error_message="A window is for one agent or one tier, not both.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.name}"

    @property
    def scope_label(self) -> str:
        if self.agent is not None:
            return f"agent {self.agent.slug}"
        return f"tier {self.tier}" if self.tier else "fleet"
