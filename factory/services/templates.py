"""Templates: the six seeded ones, the newest version of each, and new versions saved by Admins."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.db.models import Max
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from factory.catalog import TEMPLATES
from factory.models import Template
from factory.services.refusals import FactoryRefused
from portal import roles
from portal.actors import Actor
from portal.services import audits_refusals, record_audit

HANDLERS = ("blank", "memory", "orchestration", "api", "data", "monitoring")
EDITABLE = (
    "name", "description", "category", "complexity", "handler", "capabilities", "resources",
    "dependencies", "settings", "config_schema", "alert_rules", "cost_profile", "test_tasks",
    "active",
)  # fmt: skip


@audits_refusals("factory.seed")
def seed_templates(actor: Actor) -> int:
    """Load the catalog's templates as version 1 where a key has none yet; answers how many."""
    actor.require(roles.MANAGE, "seed the factory's templates")
    created = 0
    with transaction.atomic():
        for data in TEMPLATES:
            _, was_created = Template.objects.get_or_create(
                key=data["key"],
                version=1,
                defaults={
                    **{name: data[name] for name in EDITABLE if name in data},
                    "created_by": actor.label,
                },
            )
            created += was_created
        if created:
            record_audit(actor, "factory.seed", target="templates", created=created)
    return created


def seed_step(actor: Actor, out) -> None:
    """``manage.py setup`` step: make sure the factory has its six templates."""
    created = seed_templates(actor)
    if created:
        out.write(f"Loaded {created} factory template(s).")


def current_templates(*, include_inactive: bool = False) -> list[Template]:
    """The newest version of every template, in the catalog's order (then by key)."""
    newest = Template.objects.values("key").annotate(latest=Max("version"))
    pairs = {(row["key"], row["latest"]) for row in newest}
    rows = [t for t in Template.objects.all() if (t.key, t.version) in pairs]
    if not include_inactive:
        rows = [t for t in rows if t.active]
    order = {data["key"]: position for position, data in enumerate(TEMPLATES)}
    return sorted(rows, key=lambda t: (order.get(t.key, len(order)), t.key))


def get_template(key: object, version: object = None) -> Template:
    """A template by key (its newest version unless ``version`` is given); ``NotFound`` names
    the keys there are."""
    rows = Template.objects.filter(key=str(key)[:40])
    if version not in (None, ""):
        try:
            rows = rows.filter(version=int(str(version)))
        except ValueError:
            raise FactoryRefused(
                f"Template version {str(version)[:20]!r} is not a number.", "invalid"
            ) from None
    template = rows.order_by("-version").first()
    if template is None:
        keys = ", ".join(t.key for t in current_templates(include_inactive=True))
        raise FactoryRefused(f"No template {str(key)[:40]!r}; templates: {keys}.", "not_found")
    return template


def check_template(data: Mapping[str, Any]) -> list[str]:
    """What is wrong with a template's data (empty when nothing)."""
    problems = []
    if data.get("handler") not in HANDLERS:
        problems.append(f"handler must be one of {', '.join(HANDLERS)}")
    try:
        Draft202012Validator.check_schema(data.get("config_schema") or {})
    except SchemaError as exc:
        problems.append(f"config_schema is not a valid JSON Schema: {exc.message}")
    else:
        validator = Draft202012Validator(data.get("config_schema") or {})
        for error in list(validator.iter_errors(data.get("settings") or {}))[:1]:
            problems.append(f"the default settings break the schema: {error.message}")
    tests = data.get("test_tasks")
    if not isinstance(tests, list) or not tests:
        problems.append("test_tasks needs at least one test: {name, payload, expect}")
    else:
        for index, test in enumerate(tests):
            if not isinstance(test, dict) or not isinstance(test.get("payload"), dict):
                problems.append(f"test_tasks[{index}] needs a payload object")
            elif not isinstance(test.get("expect", {}), dict):
                problems.append(f"test_tasks[{index}].expect must be an object")
    resources = data.get("resources")
    if not isinstance(resources, dict):
        problems.append("resources must be an object")
    return problems


@audits_refusals("factory.template.save", target="template")
def save_template(template: Template, changes: Mapping[str, Any], actor: Actor) -> Template:
    """Admin: save ``changes`` to ``template`` as its next version (drafts started from the old
    version keep it). Refuses data that does not check out."""
    actor.require(roles.MANAGE, "change factory templates")
    data = {name: getattr(template, name) for name in EDITABLE}
    data.update({name: value for name, value in changes.items() if name in EDITABLE})
    problems = check_template(data)
    if problems:
        raise ValueError("; ".join(problems))
    with transaction.atomic():
        latest = (
            Template.objects.select_for_update()
            .filter(key=template.key)
            .order_by("-version")
            .first()
        )
        version = (latest.version if latest else 0) + 1
        saved = Template.objects.create(
            key=template.key, version=version, created_by=actor.label, **data
        )
        record_audit(
            actor, "factory.template.save", target=f"template:{saved.label}",
            changed=sorted(name for name in changes if name in EDITABLE),
        )  # fmt: skip
    return saved


def template_by_id(key: object) -> Template:
    """``get_template`` for a key typed by someone (a URL, a JSON body, a command's option):
    text that can never be a key is refused (400) before the database sees it."""
    text = key if isinstance(key, str) else ""
    if not text.strip() or "\x00" in text or len(text) > 40:
        keys = ", ".join(t.key for t in current_templates(include_inactive=True))
        if key is None:
            raise FactoryRefused(f"Name a template; templates: {keys}.", "invalid")
        shown = repr(str(key)[:40].replace("\x00", ""))
        raise FactoryRefused(f"{shown} is not a template id; templates: {keys}.", "invalid")
    return get_template(text.strip())
