"""The factory's API under /api/platform/factory: templates, checking a configuration, sandbox
runs, cost estimates, drafts, and creating agents.

Reading needs a role (Viewers read templates, drafts, sandbox runs and estimates, and may check
a configuration: ``validate`` changes nothing). Everything that changes something calls one
function of ``factory.services``, which checks the role (Operator), writes the audit entry and
refuses with a sentence. A refusal answers its status with ``{"detail", "code", ...details}``
through ``portal.api``'s one handler: 400 bad input (a configuration that does not check out adds
``errors``: ``[{"field", "message"}]``; a cost input adds ``parameter``), 403 role, 404 no such
template, draft or sandbox run (an unknown template's sentence lists the templates), 409 not in
the draft's status, 410 an expired draft. A body field of the wrong type is ninja's 422 naming
the field. No answer holds a secret's value: drafts and sandbox runs name their secrets only.
Schemas and serializers: ``factory.schemas``.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Body, Router
from ninja.responses import Status

from factory.schemas import (
    FactoryCostEstimate,
    FactoryCreateIn,
    FactoryCreationAccepted,
    FactoryDraftCreateIn,
    FactoryDraftErrors,
    FactoryDraftIn,
    FactoryDraftOut,
    FactoryPreview,
    FactorySandboxAccepted,
    FactorySandboxIn,
    FactorySandboxOut,
    FactoryTemplates,
    FactoryValidateIn,
    FactoryValidation,
    creation_accepted,
    draft_out,
    estimate_out,
    field_errors,
    sandbox_accepted,
    sandbox_out,
    template_out,
)
from factory.services import creation, drafts, sandbox, templates
from factory.services.refusals import FactoryRefused
from portal.actors import Actor
from portal.schemas import Problem

router = Router(tags=["factory"])

ROOT = "/factory"
READ = {400: Problem, 404: Problem}
ACT = {400: Problem, 403: Problem, 404: Problem, 409: Problem, 410: Problem}


@router.get(
    f"{ROOT}/templates",
    response=FactoryTemplates,
    summary="The templates offered, with their schema, tests and cost at their defaults",
)
def list_templates(request: HttpRequest):
    return FactoryTemplates(templates=[template_out(t) for t in templates.current_templates()])


@router.post(
    f"{ROOT}/validate",
    response={200: FactoryValidation, **READ},
    summary="Check a configuration field by field (changes nothing; any role)",
)
def validate_config(request: HttpRequest, payload: FactoryValidateIn):
    template = templates.template_by_id(payload.template_id)
    try:
        creation.preview(template, payload.agent_name, payload.config)
    except FactoryRefused as refused:
        if refused.code != "invalid":
            raise
        return FactoryValidation(valid=False, errors=field_errors(refused.errors))
    return FactoryValidation(valid=True, errors=[])


@router.get(
    f"{ROOT}/cost-estimate",
    response={200: FactoryCostEstimate, **READ},
    summary="The monthly cost of a template at its defaults, or with the resources given",
)
def cost_estimate(
    request: HttpRequest,
    template_id: str | None = None,
    cpu_millicores: str | None = None,
    memory_mb: str | None = None,
    storage_mb: str | None = None,
    replicas: str | None = None,
    tasks_per_month: str | None = None,
):
    # Numbers arrive as text so a bad one is the service's 400 naming it, not ninja's 422.
    try:
        template = templates.template_by_id(template_id)
    except FactoryRefused as unknown:
        if unknown.code != "not_found":
            raise
        # A query parameter naming no template is bad input (400), as a filter's would be.
        raise FactoryRefused(f"template_id: {unknown.message}", "invalid") from None
    inputs = {
        "cpu_millicores": cpu_millicores, "memory_mb": memory_mb, "storage_mb": storage_mb,
        "replicas": replicas, "tasks_per_month": tasks_per_month,
    }  # fmt: skip
    estimate, used = drafts.estimate_config(template, inputs)
    return estimate_out(template, estimate, used)


# --- sandbox runs -------------------------------------------------------------------------------


@router.post(
    f"{ROOT}/test-sandbox",
    response={202: FactorySandboxAccepted, **ACT},
    summary="Run a configuration's template tests in a sandbox (a draft's, with draft_id)",
)
def test_sandbox(request: HttpRequest, payload: FactorySandboxIn):
    actor = Actor.from_request(request)
    draft = drafts.get_draft(payload.draft_id, actor) if payload.draft_id is not None else None
    template = (
        None if payload.template_id is None else templates.template_by_id(payload.template_id)
    )
    run = creation.sandbox_config(actor, template, payload.config, draft=draft)
    return Status(202, sandbox_accepted(run))


@router.get(
    f"{ROOT}/sandboxes/{{sandbox_id}}",
    response={200: FactorySandboxOut, **READ},
    summary="A sandbox run: status, each test's result, logs, latency and memory",
)
def get_sandbox(request: HttpRequest, sandbox_id: str):
    return sandbox_out(sandbox.get_sandbox(sandbox_id, Actor.from_request(request)))


# --- creating agents ------------------------------------------------------------------------


@router.post(
    f"{ROOT}/agents",
    response={200: FactoryPreview, 202: FactoryCreationAccepted, **ACT},
    summary="Create an agent from a configuration (a workflow); dry_run: what would be made",
)
def create_agent(request: HttpRequest, payload: FactoryCreateIn):
    template = templates.template_by_id(payload.template_id)
    if payload.dry_run:
        return Status(200, creation.preview(template, payload.agent_name, payload.config))
    draft = creation.create_from_config(
        Actor.from_request(request), template, payload.agent_name, payload.config,
        keep_on_failure=payload.keep_on_failure,
    )  # fmt: skip
    return Status(202, creation_accepted(draft))


# --- drafts -----------------------------------------------------------------------------------


@router.post(
    f"{ROOT}/drafts",
    response={201: FactoryDraftOut, **ACT},
    summary="Start a draft of a new agent from a template",
)
def start_draft(request: HttpRequest, payload: FactoryDraftIn):
    template = templates.template_by_id(payload.template_id)
    draft = drafts.create_draft(template, Actor.from_request(request))
    return Status(201, draft_out(draft))


@router.get(
    f"{ROOT}/drafts/{{draft_id}}",
    response={200: FactoryDraftOut, **READ},
    summary="A draft: its values, its secrets' names, its step, status, errors and run",
)
def get_draft(request: HttpRequest, draft_id: str):
    draft = drafts.get_draft(draft_id, Actor.from_request(request))
    return draft_out(creation.sync(draft))


@router.patch(
    f"{ROOT}/drafts/{{draft_id}}",
    response={200: FactoryDraftErrors, **ACT},
    summary="Save fields of a draft ({field: value}); answers the errors of those fields",
)
def update_draft(request: HttpRequest, draft_id: str, payload: dict[str, Any] = Body(...)):  # noqa: B008 - ninja's way to take a free-form object
    actor = Actor.from_request(request)
    errors = drafts.set_fields(drafts.get_draft(draft_id, actor), payload, actor)
    return FactoryDraftErrors(errors=field_errors(errors))


@router.post(
    f"{ROOT}/drafts/{{draft_id}}/create",
    response={202: FactoryCreationAccepted, **ACT},
    summary="Create the draft's agent (a workflow)",
)
def create_draft_agent(
    request: HttpRequest, draft_id: str, payload: FactoryDraftCreateIn | None = None
):
    actor = Actor.from_request(request)
    payload = payload or FactoryDraftCreateIn()
    draft = creation.create(
        drafts.get_draft(draft_id, actor), actor, keep_on_failure=payload.keep_on_failure
    )
    return Status(202, creation_accepted(draft))


@router.post(
    f"{ROOT}/drafts/{{draft_id}}/cancel",
    response={202: FactoryDraftOut, **ACT},
    summary="Stop the draft's creation and undo what it made",
)
def cancel_draft(request: HttpRequest, draft_id: str):
    actor = Actor.from_request(request)
    draft = creation.cancel(drafts.get_draft(draft_id, actor), actor)
    return Status(202, draft_out(draft))
