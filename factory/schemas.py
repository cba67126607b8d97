"""What the factory's API answers, shared with ``manage.py factory ... --json`` so a script reads
the same from both: templates with their default cost, a configuration's field errors, sandbox
runs, drafts and creations, and the input each endpoint takes.

Secrets never appear in any of them: a draft and a sandbox run say their secrets' names only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.urls import reverse
from ninja import Schema

from factory.models import Draft, SandboxRun, Template
from factory.services import drafts, pricing, validation

API_ROOT = "/api/platform/factory"


# --- input -----------------------------------------------------------------------------------


class FactoryValidateIn(Schema):
    template_id: str
    agent_name: str | None = None
    config: dict[str, Any] | None = None


class FactorySandboxIn(Schema):
    # Optional when draft_id names a draft: the draft's template is used.
    template_id: str | None = None
    config: dict[str, Any] | None = None
    draft_id: str | None = None


class FactoryCreateIn(Schema):
    agent_name: str
    template_id: str
    config: dict[str, Any] | None = None
    keep_on_failure: bool = False
    # Answer what would be made and its cost (200), making nothing.
    dry_run: bool = False


class FactoryDraftIn(Schema):
    template_id: str


class FactoryDraftCreateIn(Schema):
    keep_on_failure: bool = False


# --- output ----------------------------------------------------------------------------------


class FactoryFieldError(Schema):
    field: str
    message: str


class FactoryValidation(Schema):
    valid: bool
    errors: list[FactoryFieldError]


class FactoryCostLine(Schema):
    item: str
    basis: str
    monthly: str


class FactoryCost(Schema):
    currency: str
    monthly_total: str
    budget: str
    within_budget: bool
    breakdown: list[FactoryCostLine]


class FactoryCostEstimate(FactoryCost):
    template_id: str
    template_version: int
    inputs: dict[str, int]


class FactoryTestTask(Schema):
    name: str
    payload: dict[str, Any]


class FactoryTemplateOut(Schema):
    template_id: str
    version: int
    name: str
    description: str
    category: str
    complexity: str
    capabilities: list[str]
    resources: dict[str, Any]
    config_schema: dict[str, Any]
    test_tasks: list[FactoryTestTask]
    monthly_cost: FactoryCost


class FactoryTemplates(Schema):
    templates: list[FactoryTemplateOut]


class FactorySandboxAccepted(Schema):
    sandbox_id: int
    status: str
    url: str


class FactorySandboxResult(Schema):
    name: str
    payload: dict[str, Any]
    expect: dict[str, Any]
    passed: bool
    output: Any = None
    status: str
    error: str
    mismatch: list[str]
    latency_ms: float | None
    duration_ms: int | None


class FactoryLogLine(Schema):
    ts: str
    text: str


class FactorySandboxOut(Schema):
    sandbox_id: int
    name: str
    status: str
    template_id: str
    template_version: int
    draft_id: str | None
    # The agentd config tried, its plain environment, its secrets' names and its resources.
    config: dict[str, Any]
    passed: int
    tests: int
    results: list[FactorySandboxResult]
    logs: list[FactoryLogLine]
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    peak_memory_mb: float | None
    error: str
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    torn_down_at: datetime | None
    url: str


class FactoryCreationAccepted(Schema):
    agent_id: str
    status: str
    workflow_id: int
    workflow_url: str
    draft_id: str


class FactoryPlannedObject(Schema):
    kind: str
    name: str


class FactoryPreview(Schema):
    template_id: str
    template_version: int
    values: dict[str, Any]
    secret_names: list[str]
    objects: list[FactoryPlannedObject]
    cost: FactoryCost


class FactoryDraftRun(Schema):
    workflow_id: int
    status: str
    workflow_url: str


class FactoryDraftOut(Schema):
    draft_id: str
    template_id: str
    template_version: int
    status: str
    step: int
    values: dict[str, Any]
    secret_names: list[str]
    errors: list[FactoryFieldError]
    agent_id: str
    run: FactoryDraftRun | None
    sandbox_id: int | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    url: str


class FactoryDraftErrors(Schema):
    errors: list[FactoryFieldError]


# --- serializers ------------------------------------------------------------------------------


def cost_out(estimate: pricing.Estimate) -> FactoryCost:
    return FactoryCost(**estimate.as_dict())


def template_out(template: Template) -> FactoryTemplateOut:
    defaults = validation.defaults(template)
    cost = pricing.estimate(defaults["resources"], defaults["tasks_per_month"])
    return FactoryTemplateOut(
        template_id=template.key, version=template.version, name=template.name,
        description=template.description, category=template.category,
        complexity=template.complexity, capabilities=list(template.capabilities),
        resources=dict(template.resources), config_schema=dict(template.config_schema),
        test_tasks=[
            FactoryTestTask(name=str(test.get("name") or "test"), payload=test.get("payload") or {})
            for test in template.test_tasks
        ],
        monthly_cost=cost_out(cost),
    )  # fmt: skip


def field_errors(errors: list[validation.FieldError] | list[dict]) -> list[FactoryFieldError]:
    return [
        FactoryFieldError(**(error if isinstance(error, dict) else error.as_dict()))
        for error in errors
    ]


def sandbox_url(run: SandboxRun) -> str:
    return f"{API_ROOT}/sandboxes/{run.pk}"


def sandbox_accepted(run: SandboxRun) -> FactorySandboxAccepted:
    return FactorySandboxAccepted(sandbox_id=run.pk, status=run.status, url=sandbox_url(run))


def sandbox_out(run: SandboxRun) -> FactorySandboxOut:
    """A sandbox run; its secrets (and the digest of them) are never part of it."""
    config = {key: value for key, value in (run.config or {}).items() if key != "secrets_digest"}
    return FactorySandboxOut(
        sandbox_id=run.pk, name=run.name, status=run.status, template_id=run.template.key,
        template_version=run.template.version,
        draft_id=str(run.draft_id) if run.draft_id else None, config=config,
        passed=run.passed_count, tests=len(run.results),
        results=[FactorySandboxResult(**result) for result in run.results],
        logs=[FactoryLogLine(**line) for line in run.logs], latency_p50_ms=run.latency_p50_ms,
        latency_p95_ms=run.latency_p95_ms, peak_memory_mb=run.peak_memory_mb, error=run.error,
        created_by=run.actor, created_at=run.created_at, started_at=run.started_at,
        finished_at=run.finished_at, torn_down_at=run.torn_down_at, url=sandbox_url(run),
    )  # fmt: skip


def workflow_url(run_id: int) -> str:
    return reverse("workflows:run", args=[run_id])


def creation_accepted(draft: Draft) -> FactoryCreationAccepted:
    assert draft.run_id is not None  # a draft being created has its run
    return FactoryCreationAccepted(
        agent_id=draft.agent_slug, status="provisioning", workflow_id=draft.run_id,
        workflow_url=workflow_url(draft.run_id), draft_id=str(draft.pk),
    )  # fmt: skip


def draft_url(draft: Draft) -> str:
    return f"{API_ROOT}/drafts/{draft.pk}"


def draft_out(draft: Draft) -> FactoryDraftOut:
    """A draft with its values, its secrets' names (never their values) and its errors now."""
    run = draft.run
    latest = draft.sandboxes.order_by("-created_at").values_list("pk", flat=True).first()
    return FactoryDraftOut(
        draft_id=str(draft.pk), template_id=draft.template.key,
        template_version=draft.template.version, status=draft.status, step=draft.step,
        values=draft.values, secret_names=sorted(draft.secrets),
        # A draft on its way (or made) has no errors to fix: its slug is taken by itself.
        errors=field_errors(drafts.errors_of(draft)) if draft.is_editable else [],
        agent_id=draft.agent_slug,
        run=None if run is None else FactoryDraftRun(
            workflow_id=run.pk, status=run.status, workflow_url=workflow_url(run.pk)
        ),
        sandbox_id=latest, created_by=draft.actor, created_at=draft.created_at,
        updated_at=draft.updated_at, expires_at=draft.expires_at, url=draft_url(draft),
    )  # fmt: skip


def estimate_out(
    template: Template, estimate: pricing.Estimate, inputs: dict[str, int]
) -> FactoryCostEstimate:
    return FactoryCostEstimate(
        **estimate.as_dict(), template_id=template.key, template_version=template.version,
        inputs=inputs,
    )  # fmt: skip
