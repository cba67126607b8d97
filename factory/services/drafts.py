"""Drafts: a new agent's configuration as it goes through the wizard, saved field by field so
it can be left and resumed, and expired when abandoned.

What a draft will become is worked out here too: the agentd config, the objects creation makes
and the cost, so the review step, the API and the command all show the same thing.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.agentd import contract
from agents.models import Tier
from factory.models import Draft, Template
from factory.services import pricing, validation
from factory.services.refusals import FactoryRefused
from portal import roles
from portal.actors import Actor
from portal.services import audits_refusals, record_audit

STEPS = (
    (1, "template", "Choose a template"),
    (2, "configure", "Configure"),
    (3, "resources", "Resources"),
    (4, "sandbox", "Test in sandbox"),
    (5, "review", "Review"),
    (6, "create", "Create and monitor"),
)
STEP_NAMES = {name: number for number, name, _ in STEPS}


def expiry() -> Any:
    return timezone.now() + timedelta(hours=settings.FACTORY_DRAFT_TTL_HOURS)


@audits_refusals("factory.draft.create", target="template")
def create_draft(
    template: Template, actor: Actor, values: Mapping[str, Any] | None = None
) -> Draft:
    """Start a new agent from ``template``; ``values`` (already parsed) fill in fields."""
    actor.require(roles.OPERATE, "create agents")
    if not template.active:
        raise FactoryRefused(f"The {template.name} template is retired; pick another.", "conflict")
    initial = validation.defaults(template)
    initial.update(values or {})
    with transaction.atomic():
        draft = Draft.objects.create(
            **Draft.stamp(actor), template=template, values=initial, expires_at=expiry()
        )
        record_audit(
            actor, "factory.draft.create", target=f"draft:{draft.pk}", template=template.label
        )
    return draft


def get_draft(draft_id: object, actor: Actor) -> Draft:
    actor.require(roles.VIEW, "see drafts")
    try:
        key = uuid.UUID(str(draft_id)[:40])
    except ValueError:
        raise FactoryRefused(f"{str(draft_id)[:40]!r} is not a draft id.", "invalid") from None
    draft = Draft.objects.select_related("template", "run").filter(pk=key).first()
    if draft is None:
        raise FactoryRefused("There is no such draft; it may have expired.", "not_found")
    return draft


def open_drafts(actor: Actor) -> list[Draft]:
    actor.require(roles.VIEW, "see drafts")
    return list(
        Draft.objects.select_related("template")
        .filter(status__in=[Draft.Status.EDITING, Draft.Status.CREATING, Draft.Status.FAILED])
        .filter(expires_at__gt=timezone.now())[:50]
    )


def _require_editable(draft: Draft) -> None:
    if draft.status != Draft.Status.EDITING:
        raise FactoryRefused(
            f"This draft is {draft.get_status_display().lower()}; it can no longer be changed.",
            "conflict",
        )
    if draft.expires_at <= timezone.now():
        raise FactoryRefused("This draft has expired; start a new one.", "gone")


def set_fields(draft: Draft, raw: Mapping[str, Any], actor: Actor) -> list[validation.FieldError]:
    """Save what the user typed into ``raw``'s fields (even if it does not check out yet, so it
    is there when they come back) and answer the errors of those fields and of the fields that
    depend on them. A value a field can never take is not saved."""
    actor.require(roles.OPERATE, "create agents")
    with transaction.atomic():
        locked = Draft.objects.select_for_update().select_related("template").get(pk=draft.pk)
        _require_editable(locked)
        errors: list[validation.FieldError] = []
        values = dict(locked.values)
        secrets = dict(locked.secrets)
        for field, value in raw.items():
            try:
                parsed = validation.parse_field(locked.template, field, value)
            except validation.BadValue as bad:
                errors.append(
                    validation.FieldError(bad.field, f"{_label(bad.field)} {bad.message}.")
                )
                continue
            if field == "secrets":
                # Blank values keep what is stored; names left out are removed.
                secrets = {name: text or secrets.get(name, "") for name, text in parsed.items()}
            else:
                validation.apply_field(values, field, parsed)
        locked.values, locked.secrets = values, secrets
        locked.expires_at = expiry()
        locked.save(update_fields=["values", "secrets", "expires_at", "updated_at"])
    draft.values, draft.secrets, draft.expires_at = locked.values, locked.secrets, locked.expires_at
    bad_fields = {error.field for error in errors}
    related = set(raw)
    related |= _dependent_fields(related)
    errors += [
        error
        for error in validation.validate(locked.template, values, secrets, fields=related)
        if error.field not in bad_fields
    ]
    return errors


def _dependent_fields(fields: set[str]) -> set[str]:
    """Fields whose errors change when one of ``fields`` changes."""
    more = set()
    if "slug" in fields:
        more |= {"dependencies", "settings"}
    if "tier" in fields:
        more.add("owner")
    if "secrets" in fields or "environment" in fields:
        more |= {"settings", "environment", "secrets"}
    if "dependencies" in fields:
        more.add("settings")
    if any(field.startswith("settings") for field in fields):
        more.add("dependencies")
    if any(field.startswith("resources.") for field in fields):
        more |= {f"resources.{key}" for key in validation.LIMITS}
    return more


def _label(field: str) -> str:
    return field.rsplit(".", 1)[-1].replace("_", " ").capitalize()


def errors_of(draft: Draft, fields: tuple[str, ...] | None = None) -> list[validation.FieldError]:
    return validation.validate(draft.template, draft.values, draft.secrets, fields=fields)


def move_to(draft: Draft, step: int, actor: Actor) -> list[validation.FieldError]:
    """Go on to ``step`` if every step before it checks out; answers the errors stopping it."""
    actor.require(roles.OPERATE, "create agents")
    _require_editable(draft)
    needed: tuple[str, ...] = ()
    if step > 2:
        needed += validation.CONFIGURE_FIELDS
    if step > 3:
        needed += validation.RESOURCE_FIELDS
    errors = errors_of(draft, needed) if needed else []
    if not errors and step > draft.step:
        Draft.objects.filter(pk=draft.pk).update(step=step, expires_at=expiry())
        draft.step = step
    return errors


def agent_config(template: Template, values: Mapping[str, Any]) -> dict[str, Any]:
    """agentd's config for the new agent: its template's handler and settings."""
    return {"template": template.handler, "settings": dict(values.get("settings") or {})}


def dependencies_of(template: Template, values: Mapping[str, Any]) -> list[str]:
    """The agents the new one depends on: those chosen, and an orchestrator's targets."""
    wanted = list(values.get("dependencies") or [])
    if template.handler == "orchestration":
        wanted += list((values.get("settings") or {}).get("targets") or [])
    return list(dict.fromkeys(wanted))


def cost_of(draft: Draft) -> pricing.Estimate | None:
    values = draft.values
    if validation.validate(
        draft.template, values, fields=validation.RESOURCE_FIELDS, capacity=False
    ):
        return None
    return pricing.estimate(values["resources"], values["tasks_per_month"])


def planned_objects(draft: Draft) -> list[tuple[str, str]]:
    """What creation will make, as (kind, name) pairs, for the review step."""
    values = draft.values
    slug = values.get("slug") or "<slug>"
    resources = values.get("resources") or {}
    runtime = settings.AGENT_RUNTIME
    objects = [
        ("Agent", f"{values.get('name') or '<name>'} ({slug}), "
                  f"{Tier(values.get('tier', Tier.CUSTOMER)).label} tier"),
        ("Task stream", contract.task_stream(slug)),
        ("Consumer group", f"{contract.CONSUMER_GROUP} on {contract.task_stream(slug)}"),
        ("Dead-letter stream", contract.dead_letters(slug)),
    ]  # fmt: skip
    if resources.get("storage_mb"):
        volume = f"waooaw-{slug}-data" if runtime == "docker" else f"{slug}/replica-*/data"
        objects.append(("Data volume", f"{volume} ({resources['storage_mb']} MiB)"))
    for rule in draft.template.alert_rules:
        objects.append(("Alert rule", rule_name(values.get("name") or slug, rule)))
    replicas = resources.get("replicas", 1)
    kind = {"docker": "Container", "kubernetes": "Deployment and Service"}.get(runtime, "Process")
    objects.append((kind, f"{replicas} replica(s) of {slug} on the {runtime} runtime"))
    if draft.secrets:
        objects.append(("Secrets", ", ".join(sorted(draft.secrets))))
    return objects


def rule_name(agent_name: str, rule: Mapping[str, Any]) -> str:
    return f"{agent_name}: {rule.get('title') or rule.get('metric')}"[:100]


def expire_drafts(now=None) -> int:
    """Mark drafts nobody touched for ``FACTORY_DRAFT_TTL_HOURS`` expired and drop their
    secrets; answers how many."""
    now = now or timezone.now()
    return Draft.objects.filter(status=Draft.Status.EDITING, expires_at__lte=now).update(
        status=Draft.Status.EXPIRED, secrets={}
    )


@audits_refusals("factory.draft.abandon", target="draft")
def abandon(draft: Draft, actor: Actor) -> Draft:
    actor.require(roles.OPERATE, "create agents")
    with transaction.atomic():
        locked = Draft.objects.select_for_update().get(pk=draft.pk)
        _require_editable(locked)
        locked.status, locked.secrets = Draft.Status.CANCELLED, {}
        locked.save(update_fields=["status", "secrets", "updated_at"])
        record_audit(actor, "factory.draft.abandon", target=f"draft:{draft.pk}")
    return locked


COST_INPUTS = ("cpu_millicores", "memory_mb", "storage_mb", "replicas", "tasks_per_month")


def estimate_config(
    template: Template, inputs: Mapping[str, object]
) -> tuple[pricing.Estimate, dict[str, int]]:
    """The monthly cost of an agent of ``template`` at its default resources and usage, with
    ``inputs`` (any of ``COST_INPUTS``, as text or numbers; ``None`` keeps the default) in their
    place; and the inputs used. Refused (400) naming the first input that is not a whole number
    in its range."""
    values = validation.defaults(template)
    for name, raw in inputs.items():
        if raw is None:
            continue
        if name not in COST_INPUTS:
            raise FactoryRefused(
                f"{str(name)[:40]} is not a cost input; inputs: {', '.join(COST_INPUTS)}.",
                "invalid",
            )
        field = name if name == "tasks_per_month" else f"resources.{name}"
        try:
            validation.apply_field(values, field, validation.parse_field(template, field, raw))
        except validation.BadValue as bad:
            raise FactoryRefused(
                f"{name}={str(raw)[:40]!r}: {bad.message}.", "invalid", details={"parameter": name}
            ) from None
    errors = validation.validate(
        template, values, fields=validation.RESOURCE_FIELDS, capacity=False
    )
    if errors:
        name = errors[0].field.removeprefix("resources.")
        given = inputs.get(name)
        raise FactoryRefused(
            f"{name}={str(given)[:40]!r}: {errors[0].message}",
            "invalid",
            details={"parameter": name, "errors": [error.as_dict() for error in errors]},
        )
    used = {**values["resources"], "tasks_per_month": values["tasks_per_month"]}
    return pricing.estimate(values["resources"], values["tasks_per_month"]), used
