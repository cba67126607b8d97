"""The help desk's records: customers and their contacts, the agents they own, the tasks those
agents did for them (interactions), tickets kept in step with Zendesk and Jira, diagnoses made by
the Issue Detective, playbooks and their runs, and temporary access grants.

A customer's ``key`` (``acme-corp``) is what tasks carry in their ``customer`` field and what the
API calls ``customer_id``. Everything that changes these rows goes through ``helpdesk.services``
(and its packages), which checks the role and writes the audit entry.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone

from portal.models import ActorStamped

KEY_MAX = 63


def search_indexes(model: str, field: str) -> list:
    """The two indexes search uses on a field: ``lower(field)`` in pattern order (exact and
    prefix matches, in order, by an index scan) and a GIN trigram index (substring and fuzzy
    matches; GiST would order by distance, but answers ILIKE ten times slower)."""
    return [
        models.Index(
            OpClass(Lower(field), name="text_pattern_ops"), name=f"{model}_{field}_prefix"[:30]
        ),
        GinIndex(fields=[field], opclasses=["gin_trgm_ops"], name=f"{model}_{field}_trgm"[:30]),
    ]


class Plan(models.TextChoices):
    TRIAL = "trial", "Trial"
    STARTER = "starter", "Starter"
    PRO = "pro", "Pro"
    ENTERPRISE = "enterprise", "Enterprise"


class SubscriptionStatus(models.TextChoices):
    TRIALING = "trialing", "Trialing"
    ACTIVE = "active", "Active"
    PAST_DUE = "past_due", "Past due"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Trial expired"


class Customer(models.Model):
    """A company that uses the platform: its plan, subscription and trial, its contacts, its
    agents (``links``), its interactions and tickets."""

    key = models.SlugField(
        max_length=KEY_MAX, unique=True, help_text="The id tasks carry (acme-corp)."
    )
    company_name = models.CharField(max_length=200)
    domain = models.CharField(max_length=200, blank=True)
    email = models.EmailField(max_length=254, blank=True, help_text="The billing contact.")
    plan = models.CharField(max_length=20, choices=Plan.choices, default=Plan.TRIAL)
    status = models.CharField(
        max_length=20, choices=SubscriptionStatus.choices, default=SubscriptionStatus.TRIALING
    )
    seats = models.PositiveIntegerField(default=1)
    monthly_amount_cents = models.PositiveIntegerField(default=0)
    trial_started_at = models.DateTimeField(null=True, blank=True)
    trial_ends_at = models.DateTimeField(null=True, blank=True)
    trial_resets = models.PositiveSmallIntegerField(
        default=0, help_text="How often an operator extended the trial."
    )
    last_payment_failed_at = models.DateTimeField(null=True, blank=True)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["company_name"]
        # Search (helpdesk.customers): a prefix index and a trigram index per field searched.
        indexes = [
            *search_indexes("customer", "company_name"),
            *search_indexes("customer", "domain"),
            *search_indexes("customer", "email"),
        ]

    def __str__(self) -> str:
        return self.company_name

    @property
    def customer_id(self) -> str:
        return self.key

    @property
    def monthly_amount(self) -> str:
        """What the customer pays a month, in dollars: "2,499.00"."""
        return f"{self.monthly_amount_cents / 100:,.2f}"

    @property
    def on_trial(self) -> bool:
        return self.status == SubscriptionStatus.TRIALING


class Contact(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="contacts")
    name = models.CharField(max_length=200)
    email = models.EmailField(max_length=254)
    title = models.CharField(max_length=100, blank=True)
    primary = models.BooleanField(default=False)

    class Meta:
        ordering = ["-primary", "name"]
        constraints = [
            models.UniqueConstraint(fields=["customer", "email"], name="contact_unique_email")
        ]
        indexes = [*search_indexes("contact", "name"), *search_indexes("contact", "email")]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


class CustomerAgent(models.Model):
    """A Customer-tier agent and the customer it belongs to (one customer per agent)."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="links")
    agent = models.OneToOneField(
        "agents.Agent", on_delete=models.CASCADE, related_name="customer_link"
    )
    linked_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.agent_id} of {self.customer_id}"


class Outcome(models.TextChoices):
    SUCCEEDED = "succeeded", "Succeeded"
    DEAD_LETTERED = "dead_lettered", "Failed (dead-lettered)"


class Interaction(models.Model):
    """One task an agent finished for a customer, as agentd reported it: its outcome, latency
    and error. Written by the ingester from agentd's interaction stream, once per task."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="interactions")
    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.SET_NULL, null=True, related_name="+"
    )
    agent_slug = models.CharField(max_length=63)
    message_id = models.CharField(max_length=40, help_text="The task's id on the agent's stream.")
    kind = models.CharField(max_length=60, blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    latency_ms = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)
    attempts = models.PositiveSmallIntegerField(default=1)
    version = models.CharField(max_length=50, blank=True)
    replica = models.CharField(max_length=100, blank=True)
    producer = models.CharField(max_length=120, blank=True)
    at = models.DateTimeField(db_index=False)

    class Meta:
        ordering = ["-at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent_slug", "message_id"], name="interaction_once_per_task"
            )
        ]
        indexes = [
            models.Index(fields=["customer", "-at", "-id"], name="interaction_customer_at"),
            models.Index(
                fields=["customer", "-at", "-id"],
                name="interaction_customer_failed",
                condition=~Q(outcome="succeeded"),
            ),
            models.Index(fields=["agent", "-at"], name="interaction_agent_at"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_slug} {self.message_id} {self.outcome}"

    @property
    def failed(self) -> bool:
        return self.outcome != Outcome.SUCCEEDED


class InteractionDay(models.Model):
    """A customer's interactions counted per day (UTC), kept by the ingester in the transaction
    that stores them: the overview's activity chart reads 30 rows, not a month of tasks."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["customer", "day"]
        constraints = [
            models.UniqueConstraint(fields=["customer", "day"], name="interaction_day_once")
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.day}: {self.succeeded} ok, {self.failed} failed"


class TicketSystem(models.TextChoices):
    ZENDESK = "zendesk", "Zendesk"
    JIRA = "jira", "Jira"


class SyncState(models.TextChoices):
    IN_SYNC = "in_sync", "In sync"
    PENDING = "pending", "Sending"
    CONFLICT = "conflict", "Conflict"
    FAILED = "failed", "Failed"


class Ticket(models.Model):
    """A Zendesk ticket or a Jira issue linked to a customer, mirrored here: created from a
    diagnosis or linked by its number, and kept in step both ways."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="tickets")
    system = models.CharField(max_length=10, choices=TicketSystem.choices)
    external_id = models.CharField(max_length=64, help_text="Zendesk id or Jira issue key.")
    number = models.CharField(max_length=64, help_text="As people say it: ZD-4312, SUP-17.")
    subject = models.CharField(max_length=300)
    status = models.CharField(max_length=40, blank=True)
    priority = models.CharField(max_length=40, blank=True)
    assignee = models.CharField(max_length=200, blank=True)
    url = models.URLField(max_length=500, blank=True)
    diagnosis = models.ForeignKey(
        "Diagnosis", on_delete=models.SET_NULL, null=True, blank=True, related_name="tickets"
    )
    remote_version = models.CharField(
        max_length=64, blank=True, help_text="Zendesk updated_stamp / Jira updated, last seen."
    )
    sync_state = models.CharField(
        max_length=10, choices=SyncState.choices, default=SyncState.IN_SYNC
    )
    sync_problem = models.CharField(max_length=500, blank=True)
    conflict = models.JSONField(default=dict, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["system", "external_id"], name="ticket_once")
        ]
        indexes = [
            *search_indexes("ticket", "number"),
            # Similar past issues (the Issue Detective) compare symptoms with tickets' subjects.
            GinIndex(name="ticket_subject_trgm", fields=["subject"], opclasses=["gin_trgm_ops"]),
        ]

    def __str__(self) -> str:
        return f"{self.number} {self.subject}"

    @property
    def open(self) -> bool:
        return self.status.lower() not in CLOSED_STATUSES


CLOSED_STATUSES = {"solved", "closed", "done", "resolved", "cancelled"}


class TicketComment(models.Model):
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="comments")
    external_id = models.CharField(max_length=64, blank=True)
    author = models.CharField(max_length=200)
    body = models.TextField()
    from_portal = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["ticket", "external_id"],
                name="ticket_comment_once",
                condition=~Q(external_id=""),
            )
        ]

    def __str__(self) -> str:
        return f"{self.author} on {self.ticket_id}"


class OutboxStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    CONFLICT = "conflict", "Conflict"
    FAILED = "failed", "Failed"


class TicketChange(models.Model):
    """A change the portal sends to Zendesk or Jira (the outbox): sent by a worker with its
    idempotency key, again after a 429's Retry-After, never twice."""

    ticket = models.ForeignKey(
        Ticket, on_delete=models.CASCADE, null=True, blank=True, related_name="changes"
    )
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    system = models.CharField(max_length=10, choices=TicketSystem.choices)
    kind = models.CharField(max_length=20, help_text="create, update, comment.")
    payload = models.JSONField(default=dict)
    idempotency_key = models.CharField(max_length=64, unique=True)
    status = models.CharField(
        max_length=10, choices=OutboxStatus.choices, default=OutboxStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="ticket_change_due",
                condition=Q(status="pending"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.system} {self.idempotency_key}"


class WebhookDelivery(models.Model):
    """Every webhook call Zendesk or Jira made, kept so a doubled delivery is ignored and a
    refused one (bad signature) can be seen."""

    class Result(models.TextChoices):
        APPLIED = "applied", "Applied"
        DUPLICATE = "duplicate", "Duplicate (ignored)"
        ECHO = "echo", "Our own change (ignored)"
        STALE = "stale", "Older than what we have (ignored)"
        UNKNOWN = "unknown", "No linked ticket (ignored)"
        REFUSED = "refused", "Refused"

    system = models.CharField(max_length=10, choices=TicketSystem.choices)
    delivery_id = models.CharField(max_length=128)
    result = models.CharField(max_length=10, choices=Result.choices)
    detail = models.CharField(max_length=500, blank=True)
    source = models.CharField(max_length=100, blank=True)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["system", "delivery_id"],
                name="webhook_delivery_once",
                condition=~Q(result="refused"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.system} {self.delivery_id} {self.result}"


class Verdict(models.TextChoices):
    OPEN = "open", "No verdict yet"
    RIGHT = "right", "Right cause"
    WRONG = "wrong", "Wrong cause"


class Diagnosis(ActorStamped):
    """One run of the Issue Detective for a customer: the symptom, the ranked causes with their
    confidence, evidence and fix, and later the operator's verdict and the fix applied."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="diagnoses")
    symptom = models.CharField(max_length=1000)
    category = models.CharField(max_length=40, blank=True)
    causes = models.JSONField(default=list)
    top_cause = models.CharField(max_length=40, blank=True)
    confidence = models.FloatField(default=0.0)
    signals = models.JSONField(default=dict, blank=True)
    elapsed_ms = models.PositiveIntegerField(default=0)
    verdict = models.CharField(max_length=10, choices=Verdict.choices, default=Verdict.OPEN)
    actual_cause = models.CharField(max_length=40, blank=True)
    verdict_by = models.CharField(max_length=200, blank=True)
    applied_fix = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            GinIndex(name="diagnosis_symptom_trgm", fields=["symptom"], opclasses=["gin_trgm_ops"]),
            models.Index(fields=["customer", "-created_at"], name="diagnosis_customer_at"),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id}: {self.symptom[:60]}"


class Playbook(models.Model):
    """A runbook as data, versioned: its steps (checks and actions, in order), which need an
    approval, and what each check expects. A new version is a new row; runs keep theirs."""

    slug = models.SlugField(max_length=63)
    version = models.PositiveIntegerField(default=1)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=40, blank=True, help_text="The symptom it answers.")
    steps = models.JSONField(default=list)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["slug", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["slug", "version"], name="playbook_version_once")
        ]

    def __str__(self) -> str:
        return f"{self.title} (v{self.version})"


class PlaybookRun(ActorStamped):
    """A playbook run against a customer: a dry run (what each step would do) or a real run on
    the workflow engine (``workflow_run``)."""

    playbook = models.ForeignKey(Playbook, on_delete=models.PROTECT, related_name="runs")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="playbook_runs")
    dry_run = models.BooleanField(default=False)
    plan = models.JSONField(default=list, help_text="What each step would do (or did).")
    workflow_run = models.ForeignKey(
        "agents.WorkflowRun", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    diagnosis = models.ForeignKey(
        Diagnosis, on_delete=models.SET_NULL, null=True, blank=True, related_name="playbook_runs"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]


class AccessGrant(ActorStamped):
    """A named user given a role on one customer's agents until a time; revoked by the sweep
    when it passes, or earlier by an operator."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="grants")
    grantee = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="helpdesk_grants"
    )
    role = models.CharField(max_length=20, default="Operator")
    reason = models.CharField(max_length=300, blank=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["expires_at"], name="grant_active", condition=Q(revoked_at__isnull=True)
            )
        ]

    @property
    def active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()
