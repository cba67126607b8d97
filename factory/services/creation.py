"""Creating the agent a draft describes (a workflow run), cancelling it, and the draft's status
as its run goes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from agents.workflows import services as workflows
from agents.workflows.models import RunStatus
from factory.models import Draft, SandboxRun, Template
from factory.services import drafts, pricing, sandbox, validation
from factory.services.refusals import FactoryRefused
from portal import roles, work
from portal.actors import Actor
from portal.services import audits_refusals, record_audit

# The advisory-lock kind creations of one slug take turns on (see portal.work).
SLUG_LOCK = 7_411

RUN_TO_DRAFT = {
    RunStatus.SUCCEEDED: Draft.Status.CREATED,
    RunStatus.FAILED: Draft.Status.FAILED,
    RunStatus.CANCELLED: Draft.Status.CANCELLED,
    RunStatus.ROLLED_BACK: Draft.Status.CANCELLED,
}


def refuse_errors(errors: list[validation.FieldError]) -> None:
    if errors:
        raise FactoryRefused(
            "The configuration does not check out: "
            + "; ".join(f"{e.field}: {e.message}" for e in errors[:3]),
            "invalid",
            details={"errors": [e.as_dict() for e in errors]},
        )


@audits_refusals("factory.create", target="draft")
def create(draft: Draft, actor: Actor, *, keep_on_failure: bool = False) -> Draft:
    """Start creating the draft's agent. Everything is checked first (nothing is made for a
    configuration with an error); the run's first step is the sandbox, reused when it passed
    with this configuration."""
    actor.require(roles.OPERATE, "create agents")
    with transaction.atomic():
        locked = Draft.objects.select_for_update().select_related("template").get(pk=draft.pk)
        # One creation per slug at a time: a second waits here for the first to commit, then
        # the slug check below sees it under way and refuses.
        work.lock_until_commit(SLUG_LOCK, str(locked.values.get("slug") or ""))
        if locked.status != Draft.Status.EDITING:
            raise FactoryRefused(
                f"This draft is {locked.get_status_display().lower()}; it cannot be created again.",
                "conflict",
            )
        refuse_errors(validation.validate(locked.template, locked.values, locked.secrets))
        run = workflows.start(
            actor,
            "factory-create-agent",
            {"draft": str(locked.pk), "slug": locked.values["slug"],
             "keep_on_failure": keep_on_failure},
        )  # fmt: skip
        if keep_on_failure:
            type(run).objects.filter(pk=run.pk).update(roll_back_on_failure=False)
        locked.status, locked.run, locked.step = Draft.Status.CREATING, run, 6
        locked.agent_slug = locked.values["slug"]
        locked.save(update_fields=["status", "run", "step", "agent_slug", "updated_at"])
        record_audit(
            actor, "factory.create", target=f"agent:{locked.agent_slug}", draft=str(locked.pk),
            template=locked.template.label, workflow=run.pk, keep_on_failure=keep_on_failure,
        )  # fmt: skip
    return locked


@audits_refusals("factory.create", target="agent_name")
def create_from_config(
    actor: Actor,
    template: Template,
    agent_name: object,
    config: Mapping[str, Any] | None,
    *,
    keep_on_failure: bool = False,
) -> Draft:
    """The API's and the command's one-shot creation: a draft from ``config`` (the wizard's
    fields: slug, description, tier, owner, capabilities, environment, secrets, dependencies,
    settings, resources, tasks_per_month), checked whole, then created."""
    actor.require(roles.OPERATE, "create agents")
    if config is not None and not isinstance(config, Mapping):
        raise FactoryRefused("config must be an object of fields.", "invalid")
    raw = dict(config or {})
    raw["name"] = agent_name if agent_name is not None else raw.get("name", "")
    values, secrets = parse_all(template, raw)
    with transaction.atomic():
        draft = drafts.create_draft(template, actor, values)
        draft.secrets = secrets
        draft.save(update_fields=["secrets"])
        return create(draft, actor, keep_on_failure=keep_on_failure)


def parse_all(template: Template, raw: Mapping[str, Any]) -> tuple[dict, dict]:
    """Values and secrets from a whole configuration (defaults for what it leaves out);
    refused with every field error when any does not check out."""
    if not raw.get("slug") and isinstance(raw.get("name"), str):
        raw = {**raw, "slug": slugify_name(raw["name"])}
    values, secrets, errors = read_config(template, raw)
    unreadable = {error.field for error in errors}
    errors += [
        error
        for error in validation.validate(template, values, secrets)
        if error.field not in unreadable
    ]
    refuse_errors(errors)
    return values, secrets


def slugify_name(name: str) -> str:
    from django.utils.text import slugify

    return slugify(name)[:63].strip("-")


@audits_refusals("factory.cancel", target="draft")
def cancel(draft: Draft, actor: Actor) -> Draft:
    """Stop a creation and undo what it made (its compensations, newest first)."""
    actor.require(roles.OPERATE, "cancel agent creation")
    if draft.run is None:
        raise FactoryRefused("This draft has no creation running.", "conflict")
    run = draft.run
    plan = workflows.plan_rollback(run) if run.status in workflows.ROLLBACKABLE else None
    if plan and plan["compensations"]:
        workflows.rollback(run, actor, "creation cancelled")
    elif run.status in workflows.CANCELLABLE:
        workflows.cancel(run, actor)
    else:
        raise FactoryRefused(f"The creation has {run.get_status_display().lower()}; nothing to cancel.", "conflict")  # fmt: skip
    record_audit(actor, "factory.cancel", target=f"draft:{draft.pk}", workflow=run.pk)
    return sync(draft)


def sync(draft: Draft) -> Draft:
    """Bring the draft's status up to its run's (created, failed, cancelled); the draft's
    secrets are dropped once the agent holds them or the creation is over."""
    run = draft.run
    if run is None:
        return draft
    run.refresh_from_db()
    status = RUN_TO_DRAFT.get(RunStatus(run.status))
    if status and draft.status != status:
        # A failed creation keeps them: a retry of its first steps needs them again.
        secrets = draft.secrets if status == Draft.Status.FAILED else {}
        Draft.objects.filter(pk=draft.pk).update(status=status, secrets=secrets)
        draft.status, draft.secrets = status, secrets
    return draft


def retry(draft: Draft, actor: Actor, from_step: str | None = None) -> Draft:
    """Retry a failed creation from its failed step (or ``from_step``); the draft is creating
    again."""
    if draft.run is None:
        raise FactoryRefused("This draft has no creation to retry.", "conflict")
    if from_step:
        workflows.retry(draft.run, actor, "from", from_step)
    else:
        workflows.retry(draft.run, actor)
    Draft.objects.filter(pk=draft.pk).update(status=Draft.Status.CREATING)
    draft.status = Draft.Status.CREATING
    return draft


# --- a configuration read without creating anything: sandboxes and previews -----------------


def read_config(
    template: Template,
    raw: Mapping[str, Any],
    *,
    values: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
) -> tuple[dict, dict, list[validation.FieldError]]:
    """Values and secrets from ``raw``'s fields laid over ``values`` and ``secrets`` (the
    template's defaults and none when not given), with an error for each field that cannot be
    read. Unlike ``parse_all`` nothing is checked against the registry: a sandbox needs no name."""
    result = json.loads(json.dumps(values)) if values is not None else validation.defaults(template)
    kept = dict(secrets or {})
    errors: list[validation.FieldError] = []
    for field, value in raw.items():
        if field == "resources" and isinstance(value, Mapping):
            for key, number in value.items():
                sub = f"resources.{key}"
                if key not in validation.LIMITS:
                    errors.append(validation.FieldError(sub, f"{key} is not a resource; resources: {', '.join(validation.LIMITS)}."))  # fmt: skip
                    continue
                try:
                    validation.apply_field(
                        result, sub, validation.parse_field(template, sub, number)
                    )
                except validation.BadValue as bad:
                    errors.append(validation.FieldError(bad.field, bad.message))
            continue
        try:
            parsed = validation.parse_field(template, field, value)
        except validation.BadValue as bad:
            errors.append(validation.FieldError(bad.field, bad.message))
            continue
        if field == "secrets":
            kept = parsed
        elif field == "settings":
            result["settings"] = {**template.settings, **parsed}
        else:
            validation.apply_field(result, field, parsed)
    return result, kept, errors


@audits_refusals("factory.sandbox", target="template")
def sandbox_config(
    actor: Actor,
    template: Template | None,
    config: Mapping[str, Any] | None,
    *,
    draft: Draft | None = None,
) -> SandboxRun:
    """The API's and the command's sandbox: ``config``'s fields laid over the template's defaults
    (or over ``draft``'s configuration and secrets, the run then belonging to the draft), queued
    as a sandbox run. Refused (400, with the field errors) when a field cannot be read or the
    settings do not check out."""
    actor.require(roles.OPERATE, "run sandboxes")
    if config is not None and not isinstance(config, Mapping):
        raise FactoryRefused("config must be an object of fields.", "invalid")
    if draft is not None:
        if template is not None and template.key != draft.template.key:
            raise FactoryRefused(
                f"The draft is a {draft.template.name} agent, not {template.name}; leave "
                "template_id out or name its template.",
                "invalid",
            )
        template = draft.template
    if template is None:
        raise FactoryRefused("Name the template to run (template_id) or a draft.", "invalid")
    values, secrets, errors = read_config(
        template,
        config or {},
        values=draft.values if draft is not None else None,
        secrets=draft.secrets if draft is not None else None,
    )
    refuse_errors(errors)
    return sandbox.start_sandbox(template, values, secrets, actor, draft=draft)


def preview(template: Template, agent_name: object, config: Mapping[str, Any] | None) -> dict:
    """What creating ``config`` would make and cost a month, making nothing: the values, the
    secrets' names, the objects (as the review step lists them) and the estimate. Refused with
    every field error when the configuration does not check out."""
    if config is not None and not isinstance(config, Mapping):
        raise FactoryRefused("config must be an object of fields.", "invalid")
    raw = dict(config or {})
    raw["name"] = agent_name if agent_name is not None else raw.get("name", "")
    values, secrets = parse_all(template, raw)
    unsaved = Draft(template=template, values=values, secrets=secrets)
    cost = pricing.estimate(values["resources"], values["tasks_per_month"])
    return {
        "template_id": template.key,
        "template_version": template.version,
        "values": values,
        "secret_names": sorted(secrets),
        "objects": [{"kind": kind, "name": name} for kind, name in drafts.planned_objects(unsaved)],
        "cost": cost.as_dict(),
    }
