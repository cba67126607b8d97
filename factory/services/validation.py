"""Checking a new agent's configuration, field by field, before anything is created.

Every door reads values the same way: ``parse_field`` turns what a form field or a JSON body
gave into the typed value (a form sends text, the API sends JSON), and ``validate`` checks the
whole configuration against the registry, the template's JSON Schema, the fleet's capacity and
the rules that tie fields together. Each error names the field it belongs to, so a page shows it
beside that field as the user types and the API answers ``{"field", "message"}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from agents.models import Agent, State, Tier
from agents.workflows.models import FINISHED
from factory.models import Draft, Template

SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,99}$")
WORD_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,49}$")
# Names the runtimes set themselves: an agent may not override them.
RESERVED_ENV = {"REDIS_URL", "PYTHONPATH", "PYTHONUNBUFFERED", "PATH", "HOME"}
RESERVED_PREFIXES = ("AGENT_",)
MAX_TEXT = 2000
MAX_LIST = 32
MAX_ENV = 50
LIMITS = {
    "cpu_millicores": (50, 4000),
    "memory_mb": (64, 8192),
    "storage_mb": (0, 102400),
    "replicas": (1, 10),
}
MAX_TASKS_PER_MONTH = 100_000_000

FIELDS = (
    "name", "slug", "description", "tier", "owner", "capabilities", "specializations",
    "environment", "secrets", "dependencies", "settings",
    "resources.cpu_millicores", "resources.memory_mb", "resources.storage_mb",
    "resources.replicas", "tasks_per_month",
)  # fmt: skip
CONFIGURE_FIELDS = FIELDS[:11]
RESOURCE_FIELDS = FIELDS[11:]


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class BadValue(ValueError):
    """A value a field cannot take at all (text where a number belongs); names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# --- reading values --------------------------------------------------------------------------


def defaults(template: Template) -> dict[str, Any]:
    """A new draft's values: the template's defaults, nothing named yet."""
    resources = {key: int(template.resources.get(key, low)) for key, (low, _) in LIMITS.items()}
    resources["replicas"] = max(1, resources["replicas"])
    return {
        "name": "",
        "slug": "",
        "description": "",
        "tier": Tier.CUSTOMER,
        "owner": "",
        "capabilities": list(template.capabilities),
        "specializations": [],
        "environment": {},
        "dependencies": list(template.dependencies),
        "settings": json.loads(json.dumps(template.settings)),
        "resources": resources,
        "tasks_per_month": int(template.cost_profile.get("tasks_per_month", 10000)),
    }


def parse_field(template: Template, field: str, raw: Any) -> Any:
    """The typed value of ``field`` from a form's text or a JSON value; ``BadValue`` if it can
    never be one."""
    if isinstance(raw, str) and "\x00" in raw:
        raise BadValue(field, "contains a NUL character; remove it")
    if field in ("name", "slug", "description", "owner", "tier"):
        if not isinstance(raw, str):
            raise BadValue(field, "must be text")
        text = raw.strip()
        if len(text) > MAX_TEXT:
            raise BadValue(field, f"is {len(text)} characters long; at most {MAX_TEXT}")
        return text.lower() if field in ("slug", "tier") else text
    if field in ("capabilities", "specializations", "dependencies"):
        return _words(field, raw)
    if field == "environment":
        return _pairs(field, raw, keep_blank=False)
    if field == "secrets":
        return _pairs(field, raw, keep_blank=True)
    if field == "settings":
        if isinstance(raw, str):
            try:
                raw = json.loads(raw or "{}")
            except ValueError as exc:
                raise BadValue(field, f"is not valid JSON: {exc}") from None
        if not isinstance(raw, Mapping):
            raise BadValue(field, "must be an object of the template's settings")
        return dict(raw)
    if field.startswith("settings."):
        return _setting(template, field, raw)
    if field.startswith("resources.") or field == "tasks_per_month":
        return _whole_number(field, raw)
    raise BadValue(field, f"is not a field of a new agent; fields: {', '.join(FIELDS)}")


def apply_field(values: dict[str, Any], field: str, value: Any) -> None:
    """Put a parsed value where it belongs in ``values`` (``settings.x`` and ``resources.x`` go
    inside their objects)."""
    if field.startswith(("settings.", "resources.")):
        group, _, key = field.partition(".")
        values.setdefault(group, {})
        if value is None:
            values[group].pop(key, None)
        else:
            values[group][key] = value
    elif field != "secrets":
        values[field] = value


def _words(field: str, raw: Any) -> list[str]:
    items = raw.replace("\n", ",").split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise BadValue(field, "must be a list of names (or text with commas between them)")
    words = [item.strip().lower() for item in items if item.strip()]
    if len(words) > MAX_LIST:
        raise BadValue(field, f"has {len(words)} entries; at most {MAX_LIST}")
    return list(dict.fromkeys(words))


def _pairs(field: str, raw: Any, *, keep_blank: bool) -> dict[str, str]:
    """``NAME=value`` lines (or an object); a blank secret value means "keep the stored one"."""
    if isinstance(raw, str):
        pairs: dict[str, Any] = {}
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            name, equals, value = line.partition("=")
            if not equals:
                raise BadValue(field, f"line {number} has no '=': write NAME=value")
            pairs[name.strip()] = value.strip()
        raw = pairs
    if not isinstance(raw, Mapping):
        raise BadValue(field, "must be an object of NAME: value (or NAME=value lines)")
    if len(raw) > MAX_ENV:
        raise BadValue(field, f"has {len(raw)} variables; at most {MAX_ENV}")
    result = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise BadValue(field, f"{name}: the value must be text")
        text = str(value)
        if "\x00" in text or "\x00" in str(name):
            raise BadValue(field, f"{name}: contains a NUL character")
        if len(text) > 4000:
            raise BadValue(field, f"{name}: the value is longer than 4000 characters")
        if text or keep_blank:
            result[str(name)] = text
    return result


def _whole_number(field: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise BadValue(field, "must be a whole number")
    if isinstance(raw, str):
        try:
            raw = int(raw.strip())
        except ValueError:
            raise BadValue(field, f"must be a whole number, got {raw.strip()[:40]!r}") from None
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if not isinstance(raw, int):
        raise BadValue(field, "must be a whole number")
    low, high = LIMITS.get(field.partition(".")[2], (0, MAX_TASKS_PER_MONTH))
    if abs(raw) > 10**12:
        raise BadValue(field, f"is far too large; pick a whole number from {low:,} to {high:,}")
    return raw


def _setting(template: Template, field: str, raw: Any) -> Any:
    """One of the template's settings from its form field, typed by the schema."""
    key = field.partition(".")[2]
    prop = template.config_schema.get("properties", {}).get(key)
    if prop is None:
        raise BadValue(field, f"{template.name} has no setting {key!r}")
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if text == "":
        return None  # the setting is left to its default
    kind = prop.get("type")
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            number = float(text)
            return int(number) if number.is_integer() else number
        if kind == "boolean":
            return text.lower() in ("true", "on", "yes", "1")
        if kind == "array" and prop.get("items", {}).get("type") != "object":
            return [item.strip() for item in text.replace("\n", ",").split(",") if item.strip()]
        if kind in ("array", "object"):
            return json.loads(text)
    except ValueError:
        what = {"integer": "a whole number", "number": "a number"}.get(kind, "valid JSON")
        raise BadValue(field, f"must be {what}, got {text[:40]!r}") from None
    return text


# --- checking ----------------------------------------------------------------------------------


def validate(
    template: Template,
    values: Mapping[str, Any],
    secret_names: Iterable[str] = (),
    *,
    fields: Iterable[str] | None = None,
    capacity: bool = True,
    creating: Draft | None = None,
) -> list[FieldError]:
    """Every problem with ``values`` (only those of ``fields`` when given), each naming its
    field. An empty list means the configuration can be created as it is. ``creating``: the
    draft whose creation asks (its own run does not count against its slug)."""
    wanted = set(fields) if fields is not None else None
    errors: list[FieldError] = []
    secret_names = set(secret_names)

    def check(field: str) -> bool:
        return wanted is None or field in wanted or any(w.startswith(field + ".") for w in wanted)

    if check("name"):
        errors += _check_name(values.get("name"))
    if check("slug"):
        errors += _check_slug(values.get("slug"), creating)
    if check("description") and len(str(values.get("description") or "")) > MAX_TEXT:
        errors.append(FieldError("description", f"at most {MAX_TEXT} characters"))
    if check("tier") or check("owner"):
        errors += _check_tier(values.get("tier"), values.get("owner"))
    for field in ("capabilities", "specializations"):
        if check(field):
            errors += [
                FieldError(field, f"{word!r}: use lower-case letters, digits and '-'")
                for word in values.get(field) or []
                if not WORD_RE.match(word)
            ][:1]
    if check("environment") or check("secrets"):
        errors += _check_environment(values.get("environment") or {}, secret_names)
    if check("dependencies") or check("settings"):
        errors += _check_dependencies(template, values)
    if check("settings"):
        errors += _check_settings(template, values.get("settings") or {}, secret_names)
    if check("resources") or check("tasks_per_month"):
        errors += _check_resources(values, capacity=capacity)
    if wanted is not None:
        errors = [e for e in errors if e.field in wanted or check(e.field.split(".")[0])]
    return errors


def _check_name(name: Any) -> list[FieldError]:
    name = str(name or "").strip()
    if not name:
        return [FieldError("name", "Give the agent a name, e.g. Acme Memory.")]
    if len(name) > 100:
        return [FieldError("name", f"The name is {len(name)} characters; at most 100.")]
    taken = Agent.objects.filter(name__iexact=name).exclude(state=State.REVOKED).first()
    if taken is not None:
        return [FieldError("name", f"{taken.name} is taken by the agent {taken.slug}; pick another name.")]  # fmt: skip
    return []


def _check_slug(slug: Any, creating: Draft | None = None) -> list[FieldError]:
    slug = str(slug or "")
    if not slug:
        return [FieldError("slug", "Give the agent a slug, e.g. acme-memory.")]
    if not SLUG_RE.match(slug):
        return [
            FieldError(
                "slug",
                "Use 1 to 63 lower-case letters, digits and '-', starting and ending with a "
                "letter or digit.",
            )
        ]
    if slug.startswith("sbx-"):
        return [FieldError("slug", "Slugs starting with sbx- are kept for sandboxes.")]
    taken = Agent.objects.filter(slug=slug).first()
    if taken is not None:
        return [FieldError("slug", f"{slug} is taken by {taken.name} ({taken.state}); pick another slug.")]  # fmt: skip
    underway = creation_under_way(slug)
    if underway is not None and underway != creating:
        return [FieldError("slug", f"{slug} is being created already (workflow #{underway.run_id}); pick another slug, or wait for that creation to end.")]  # fmt: skip
    return []


def creation_under_way(slug: str) -> Draft | None:
    """The draft whose creation of ``slug`` is still under way (its run not over), if any: the
    slug is spoken for until that run ends or is rolled back."""
    return (
        Draft.objects.filter(agent_slug=slug, status=Draft.Status.CREATING)
        .exclude(run__status__in=FINISHED)
        .first()
    )


def _check_tier(tier: Any, owner: Any) -> list[FieldError]:
    if tier not in Tier.values:
        return [FieldError("tier", f"Pick a tier: {', '.join(Tier.values)}.")]
    if tier == Tier.CUSTOMER and not str(owner or "").strip():
        return [FieldError("owner", "A Customer-tier agent needs its owner: the customer's company.")]  # fmt: skip
    if len(str(owner or "")) > 100:
        return [FieldError("owner", "At most 100 characters.")]
    return []


def _check_environment(environment: Mapping[str, str], secret_names: set[str]) -> list[FieldError]:
    errors = []
    for field, names in (("environment", list(environment)), ("secrets", sorted(secret_names))):
        for name in names:
            if not ENV_NAME_RE.match(name):
                errors.append(FieldError(field, f"{name!r}: names are upper-case letters, digits and '_', not starting with a digit."))  # fmt: skip
            elif name in RESERVED_ENV or name.startswith(RESERVED_PREFIXES):
                errors.append(FieldError(field, f"{name} is set by the runtime itself; pick another name."))  # fmt: skip
    for name in sorted(set(environment) & secret_names):
        errors.append(FieldError("secrets", f"{name} is both a secret and a plain variable; keep one."))  # fmt: skip
    return errors[:3]


def _check_dependencies(template: Template, values: Mapping[str, Any]) -> list[FieldError]:
    slug = str(values.get("slug") or "")
    wanted = list(values.get("dependencies") or [])
    targets = []
    if template.handler == "orchestration":
        targets = list((values.get("settings") or {}).get("targets") or [])
    errors = []
    if slug and slug in wanted:
        errors.append(FieldError("dependencies", f"{slug} cannot depend on itself: that is a cycle."))  # fmt: skip
    if slug and slug in targets:
        errors.append(FieldError("settings.targets", f"{slug} cannot send tasks to itself."))
    names = set(wanted) | set(targets)
    found = {
        agent.slug: agent
        for agent in Agent.objects.filter(slug__in=names).prefetch_related("dependencies")
    }
    for name in wanted:
        agent = found.get(name)
        if name == slug:
            continue
        if agent is None or agent.state == State.REVOKED:
            errors.append(FieldError("dependencies", f"No agent {name} in the registry; pick an existing agent."))  # fmt: skip
    for name in targets:
        agent = found.get(name)
        if name != slug and (agent is None or agent.state == State.REVOKED):
            errors.append(FieldError("settings.targets", f"No agent {name} in the registry to send tasks to."))  # fmt: skip
    if slug:
        # An agent the new one needs, directly or through others, that already names the new
        # slug as a dependency (say a REVOKED agent's leftover link) would close a cycle.
        from agents.services import DependencyGraph

        graph = DependencyGraph.load()
        for name in wanted:
            agent = found.get(name)
            if agent is None:
                continue
            chain = [agent, *graph.transitive(agent.pk)]
            if any(link.slug == slug for link in chain):
                errors.append(FieldError("dependencies", f"{name} already depends on {slug}; depending on it back would make a cycle."))  # fmt: skip
    return errors


def _check_settings(
    template: Template, settings_value: Mapping[str, Any], secret_names: set[str]
) -> list[FieldError]:
    try:
        validator = Draft202012Validator(template.config_schema)
    except SchemaError as exc:  # an Admin saved a bad schema; say so rather than crash
        return [FieldError("settings", f"The template's schema is broken: {exc.message}")]
    errors = []
    for error in sorted(validator.iter_errors(dict(settings_value)), key=lambda e: list(e.path)):
        path = [str(part) for part in error.path]
        if error.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", error.message)
            path = path + missing[:1]
        if error.validator == "additionalProperties" and not path:
            extra = re.findall(r"'([^']+)'", error.message)
            path = extra[:1]
        field = "settings." + path[0] if path else "settings"
        where = "".join(f"[{p}]" if p.isdecimal() else f".{p}" for p in path[1:])
        errors.append(FieldError(field, f"{_schema_title(template, path)}{where}: {error.message}"))
    auth_secret = settings_value.get("auth_secret")
    if template.handler == "api" and auth_secret and auth_secret not in secret_names:
        errors.append(
            FieldError(
                "settings.auth_secret",
                f"No secret named {auth_secret}: add it under Secrets (NAME=value) or clear this.",
            )
        )
    return errors


def _schema_title(template: Template, path: list[str]) -> str:
    if not path:
        return "Settings"
    prop = template.config_schema.get("properties", {}).get(path[0], {})
    return str(prop.get("title") or path[0])


def _check_resources(values: Mapping[str, Any], *, capacity: bool) -> list[FieldError]:
    from factory.services.pricing import capacity_left

    resources = values.get("resources") or {}
    errors = []
    for key, (low, high) in LIMITS.items():
        value = resources.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            errors.append(FieldError(f"resources.{key}", f"Pick a whole number from {low} to {high}."))  # fmt: skip
    tasks = values.get("tasks_per_month")
    if not isinstance(tasks, int) or not 0 <= tasks <= MAX_TASKS_PER_MONTH:
        errors.append(FieldError("tasks_per_month", f"Pick a whole number of tasks from 0 to {MAX_TASKS_PER_MONTH:,}."))  # fmt: skip
    if errors or not capacity:
        return errors
    left = capacity_left()
    replicas = resources["replicas"]
    for key, unit in (("cpu_millicores", "millicores"), ("memory_mb", "MiB")):
        need = resources[key] * replicas
        if need > left[key]:
            errors.append(FieldError(f"resources.{key}", f"{need:,} {unit} for {replicas} replica(s) is more than the fleet has left ({left[key]:,} {unit})."))  # fmt: skip
    if resources["storage_mb"] > left["storage_mb"]:
        errors.append(FieldError("resources.storage_mb", f"{resources['storage_mb']:,} MiB is more than the fleet has left ({left['storage_mb']:,} MiB)."))  # fmt: skip
    return errors
