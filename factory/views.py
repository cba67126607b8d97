"""The Factory pages: the six-step wizard, with a URL per draft.

1 choose a template (the index) → 2 configure → 3 resources → 4 sandbox → 5 review → 6 create
and monitor. Fields are saved and checked as the user types (``field``: the changed field in,
every error of the step out, swapped out of band beside its field); "Next" checks the whole step
on the server again. Views read the request, call ``factory.services`` and render.
"""

from __future__ import annotations

import json

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from agents.models import Agent, State, Tier
from agents.services import require_viewer
from agents.workflows import live as workflow_live
from agents.workflows.models import ACTIVE, StepRun
from factory.creation import passed_sandbox, sandbox_matches
from factory.models import Draft
from factory.services import creation, drafts, pricing, sandbox, templates, validation
from portal import roles
from portal.actors import Actor
from portal.htmx import answers_refusals, htmx_partial, toast

STEP_TEMPLATES = {
    "configure": "factory/step_configure.html",
    "resources": "factory/step_resources.html",
    "sandbox": "factory/step_sandbox.html",
    "review": "factory/step_review.html",
    "create": "factory/step_create.html",
}
SLIDERS = (
    ("cpu_millicores", "CPU", "millicores", 50, 50),
    ("memory_mb", "Memory", "MiB", 64, 64),
    ("storage_mb", "Storage", "MiB", 0, 128),
    ("replicas", "Replicas", "", 1, 1),
)


def _actor(request: HttpRequest) -> Actor:
    actor = Actor.from_request(request)
    require_viewer(actor)
    return actor


def _draft(request: HttpRequest, draft_id) -> tuple[Actor, Draft]:
    actor = _actor(request)
    draft = drafts.get_draft(draft_id, actor)
    if draft.run_id is not None:
        creation.sync(draft)
    return actor, draft


def _index_url(*args, **kwargs) -> str:
    return reverse("factory:index")


# --- step 1: templates ---------------------------------------------------------------------------


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    actor = _actor(request)
    cards = []
    for template in templates.current_templates():
        defaults = validation.defaults(template)
        cards.append(
            {
                "template": template,
                "estimate": pricing.estimate(defaults["resources"], defaults["tasks_per_month"]),
                "resources": defaults["resources"],
            }
        )
    return render(
        request,
        "factory/index.html",
        {
            "active_section": "factory",
            "cards": cards,
            "drafts": drafts.open_drafts(actor),
            "can_operate": actor.has(roles.OPERATE),
            "steps": drafts.STEPS,
            "step_number": 1,
        },
    )


@require_POST
@answers_refusals(_index_url)
def new_draft(request: HttpRequest) -> HttpResponse:
    actor = _actor(request)
    template = templates.get_template(request.POST.get("template", "")[:40])
    draft = drafts.create_draft(template, actor)
    url = reverse("factory:step", args=[draft.pk, "configure"])
    return HttpResponseClientRedirect(url) if htmx_partial(request) else redirect(url)


# --- the draft's steps -----------------------------------------------------------------------------


@require_GET
@answers_refusals(_index_url)
def draft_home(request: HttpRequest, draft_id) -> HttpResponse:
    _, draft = _draft(request, draft_id)
    name = drafts.STEPS[max(1, min(draft.step, 6)) - 1][1]
    if draft.status != Draft.Status.EDITING and draft.run_id:
        name = "create"
    return redirect("factory:step", draft.pk, name if name != "template" else "configure")


@require_http_methods(["GET", "POST"])
@answers_refusals(_index_url)
def step(request: HttpRequest, draft_id, name: str) -> HttpResponse:
    actor, draft = _draft(request, draft_id)
    if name not in STEP_TEMPLATES:
        raise Http404(f"The wizard has no step {name[:40]!r}.")
    number = drafts.STEP_NAMES[name]
    if draft.status != Draft.Status.EDITING and name != "create":
        return redirect("factory:step", draft.pk, "create")
    if request.method == "POST":
        return _next(request, actor, draft, name, number)
    if number > draft.step:
        # Not reached yet: the furthest step the draft may show (checked again on "Next").
        return redirect("factory:step", draft.pk, drafts.STEPS[draft.step - 1][1])
    return _render_step(request, actor, draft, name)


def _next(request: HttpRequest, actor: Actor, draft: Draft, name: str, number: int):
    """ "Next": save the step's fields, check every step so far, go on or say what stops it."""
    errors = []
    if name in ("configure", "resources"):
        errors = drafts.set_fields(draft, _posted_fields(request, draft, name), actor)
    if not errors:
        errors = drafts.move_to(draft, number + 1, actor)
    if name == "sandbox" and not errors and passed_sandbox(draft) is None:
        return _render_step(
            request, actor, draft, name, status=409,
            problem="Run the sandbox and let its tests pass with this configuration before going on.",
        )  # fmt: skip
    if errors:
        return _render_step(request, actor, draft, name, errors=errors, status=400)
    following = drafts.STEPS[number][1]
    url = reverse("factory:step", args=[draft.pk, following])
    return HttpResponseClientRedirect(url) if htmx_partial(request) else redirect(url)


def _posted_fields(request: HttpRequest, draft: Draft, name: str) -> dict:
    if name == "resources":
        wanted = list(validation.RESOURCE_FIELDS)
    else:
        wanted = list(validation.CONFIGURE_FIELDS)
        wanted.remove("settings")
        wanted += [f"settings.{key}" for key in _setting_keys(draft)]
    return {field: request.POST.get(field, "") for field in wanted if field in request.POST}


def _setting_keys(draft: Draft) -> list[str]:
    return list(draft.template.config_schema.get("properties", {}))


@require_POST
@answers_refusals(_index_url)
def field(request: HttpRequest, draft_id) -> HttpResponse:
    """One field changed (htmx, debounced): save it, answer the step's errors out of band."""
    actor, draft = _draft(request, draft_id)
    name = request.POST.get("_step", "configure")
    fields = {key: value for key, value in request.POST.items() if not key.startswith("_")}
    fields.pop("csrfmiddlewaretoken", None)
    if not fields:
        return toast(request, "Nothing to check: no field was sent.", "error", status=400)
    allowed = set(validation.FIELDS) | {f"settings.{key}" for key in _setting_keys(draft)}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        return toast(
            request, f"{unknown[0][:40]} is not a field of this draft.", "error", status=400
        )
    errors = drafts.set_fields(draft, fields, actor)
    # Every error of the step, so a field that depends on the changed one updates too.
    step_fields = validation.RESOURCE_FIELDS if name == "resources" else validation.CONFIGURE_FIELDS
    unique = {(e.field, e.message): e for e in [*errors, *drafts.errors_of(draft, step_fields)]}
    # A field left empty and not touched yet is not scolded while the user types elsewhere.
    # htmx sends the whole form and names the field typed in; a client that names none is
    # answered about every field it sent (a bad value was not stored, so it looks blank).
    trigger = request.headers.get("HX-Trigger-Name", "")
    sent = {_slot(trigger)} if trigger else {_slot(key) for key in fields}
    shown = [e for e in unique.values() if _slot(e.field) in sent or not _blank(draft, e.field)]
    context = _step_context(request, actor, draft, name, errors=shown)
    context["error_slots"] = _error_slots(draft, name, shown)
    return render(request, "factory/field_errors.html", context)


def _blank(draft: Draft, field_name: str) -> bool:
    slot = _slot(field_name)
    if slot.startswith("settings."):
        value = (draft.values.get("settings") or {}).get(slot.partition(".")[2])
    elif slot.startswith("resources.") or slot == "tasks_per_month":
        return False
    elif slot == "secrets":
        return not draft.secrets
    else:
        value = draft.values.get(slot)
    return value in (None, "", [], {})


def _error_slots(draft: Draft, name: str, errors) -> list[tuple[str, list[str]]]:
    by_field: dict[str, list[str]] = {}
    for error in errors:
        by_field.setdefault(_slot(error.field), []).append(error.message)
    if name == "resources":
        slots = list(validation.RESOURCE_FIELDS)
    else:
        slots = [f for f in validation.CONFIGURE_FIELDS if f != "settings"]
        slots += ["settings"] + [f"settings.{key}" for key in _setting_keys(draft)]
    return [(slot, by_field.get(slot, [])) for slot in slots]


def _slot(field_name: str) -> str:
    """The error slot a field's error shows in (``settings.targets[1]`` → ``settings.targets``)."""
    if field_name.startswith("settings."):
        return "settings." + field_name.split(".")[1].split("[")[0]
    return field_name


def _render_step(request, actor, draft, name, *, errors=(), status=200, problem=""):
    context = _step_context(request, actor, draft, name, errors=list(errors))
    context["problem"] = problem
    return render(request, STEP_TEMPLATES[name], context, status=status)


def _step_context(request, actor, draft, name, *, errors=()) -> dict:
    values = draft.values
    errors_by_slot: dict[str, list[str]] = {}
    for error in errors:
        errors_by_slot.setdefault(_slot(error.field), []).append(error.message)
    context = {
        "active_section": "factory",
        "draft": draft,
        "template": draft.template,
        "values": values,
        "steps": drafts.STEPS,
        "step_name": name,
        "step_number": drafts.STEP_NAMES[name],
        "can_operate": actor.has(roles.OPERATE),
        "errors": errors_by_slot,
        "error_count": len(errors),
    }
    if name == "configure":
        context.update(_configure_context(draft))
        for setting in context["setting_fields"]:
            setting["errors"] = errors_by_slot.get(setting["name"], [])
    if name in ("resources", "review"):
        context.update(_resources_context(draft))
        for slider in context["sliders"]:
            slider["errors"] = errors_by_slot.get(slider["name"], [])
    if name == "sandbox":
        context.update(_sandbox_context(draft))
    if name == "review":
        context.update(
            objects=drafts.planned_objects(draft),
            plan=_plan(),
            sandbox=passed_sandbox(draft),
            all_errors=drafts.errors_of(draft),
        )
    if name == "create":
        context.update(_monitor_context(draft))
    return context


def _configure_context(draft: Draft) -> dict:
    values = draft.values
    schema = draft.template.config_schema
    settings_values = values.get("settings") or {}
    required = set(schema.get("required", []))
    setting_fields = []
    for key, prop in schema.get("properties", {}).items():
        value = settings_values.get(key)
        kind = prop.get("type")
        if "enum" in prop:
            widget = "select"
        elif kind in ("integer", "number"):
            widget = "number"
        elif kind == "boolean":
            widget = "checkbox"
        elif (
            kind == "array"
            and prop.get("items", {}).get("type") != "object"
            and "enum" not in prop.get("items", {})
        ):
            widget = "list"
        elif kind in ("array", "object"):
            widget = "json"
        else:
            widget = "text"
        if widget == "list" and isinstance(value, list):
            shown = ", ".join(str(item) for item in value)
        elif widget == "json":
            shown = json.dumps(value, indent=2) if value is not None else ""
        else:
            shown = "" if value is None else value
        setting_fields.append({
            "key": key, "name": f"settings.{key}", "prop": prop, "widget": widget,
            "value": shown, "required": key in required,
            "label": prop.get("title") or key.replace("_", " ").capitalize(),
        })  # fmt: skip
    agents = list(Agent.objects.exclude(state=State.REVOKED).order_by("name").only("slug", "name"))
    return {
        "setting_fields": setting_fields,
        "tiers": Tier.choices,
        "environment_text": "\n".join(f"{k}={v}" for k, v in (values.get("environment") or {}).items()),
        "secret_names": sorted(draft.secrets),
        "secrets_text": "\n".join(f"{name}=" for name in sorted(draft.secrets)),
        "agent_choices": agents,
        "list_text": {key: ", ".join(values.get(key) or []) for key in ("capabilities", "specializations", "dependencies")},
    }  # fmt: skip


def _resources_context(draft: Draft) -> dict:
    values = draft.values
    resources = values.get("resources") or {}
    left = pricing.capacity_left()
    total = pricing.capacity()
    sliders = []
    for key, label, unit, low, step_size in SLIDERS:
        high = validation.LIMITS[key][1]
        sliders.append({
            "key": key, "name": f"resources.{key}", "label": label, "unit": unit, "min": low,
            "max": high, "step": step_size, "value": resources.get(key, low),
            "left": left.get(key), "total": total.get(key),
        })  # fmt: skip
    return {"sliders": sliders, "estimate": drafts.cost_of(draft), "capacity_left": left}


def _sandbox_context(draft: Draft) -> dict:
    latest = draft.sandboxes.order_by("-created_at").first()
    return {
        "sandbox": latest,
        "sandbox_current": latest is not None and sandbox_matches(latest, draft),
        "tests": draft.template.test_tasks,
    }


def _plan() -> list[str]:
    from factory.creation import definition

    return [step.label for step in definition().steps]


def _monitor_context(draft: Draft) -> dict:
    run = draft.run
    if run is None:
        return {"run": None}
    rows = list(StepRun.objects.filter(run=run, current=True).order_by("role", "position", "pk"))
    forward = [row for row in rows if row.role == "forward"]
    compensations = [row for row in rows if row.role == "compensation"]
    agent = Agent.objects.filter(slug=draft.agent_slug).first()
    return {
        "run": run,
        "rows": forward,
        "compensations": compensations,
        "active": run.status in ACTIVE,
        "failed_step": next((r for r in forward if r.status == "failed"), None),
        "agent": agent,
        "topic": f"{workflow_live.RUN_KIND}:{run.pk}",
        "beat_id": workflow_live.run_beat_id(run.pk),
    }


@require_GET
@answers_refusals(_index_url)
def monitor(request: HttpRequest, draft_id) -> HttpResponse:
    """The create step's live region (fetched again on the run's beats)."""
    actor, draft = _draft(request, draft_id)
    context = _step_context(request, actor, draft, "create")
    return render(request, "factory/step_create.html#monitor", context)


# --- actions ---------------------------------------------------------------------------------------


@require_POST
@answers_refusals(_index_url)
def run_sandbox(request: HttpRequest, draft_id) -> HttpResponse:
    actor, draft = _draft(request, draft_id)
    errors = drafts.move_to(draft, 4, actor)
    if errors:
        return _render_step(request, actor, draft, "sandbox", errors=errors, status=400,
                            problem="Fix the configuration first: " + errors[0].message)  # fmt: skip
    sandbox.start_sandbox(draft.template, draft.values, draft.secrets, actor, draft=draft)
    url = reverse("factory:step", args=[draft.pk, "sandbox"])
    return HttpResponseClientRedirect(url) if htmx_partial(request) else redirect(url)


@require_GET
@answers_refusals(_index_url)
def sandbox_region(request: HttpRequest, draft_id) -> HttpResponse:
    actor, draft = _draft(request, draft_id)
    context = _step_context(request, actor, draft, "sandbox")
    return render(request, "factory/step_sandbox.html#sandbox-region", context)


@require_POST
@answers_refusals(_index_url)
def create(request: HttpRequest, draft_id) -> HttpResponse:
    actor, draft = _draft(request, draft_id)
    if passed_sandbox(draft) is None:
        return toast(request, "Run the sandbox and let its tests pass with this configuration first.", "error", status=409)  # fmt: skip
    creation.create(draft, actor, keep_on_failure=request.POST.get("keep_on_failure") == "on")
    url = reverse("factory:step", args=[draft.pk, "create"])
    return HttpResponseClientRedirect(url) if htmx_partial(request) else redirect(url)


@require_POST
@answers_refusals(_index_url)
def cancel(request: HttpRequest, draft_id) -> HttpResponse:
    actor, draft = _draft(request, draft_id)
    if draft.status == Draft.Status.EDITING:
        drafts.abandon(draft, actor)
        message, url = "Draft abandoned.", reverse("factory:index")
    else:
        creation.cancel(draft, actor)
        message, url = "Creation cancelled: what it made is being undone.", reverse("factory:step", args=[draft.pk, "create"])  # fmt: skip
    if htmx_partial(request):
        response = HttpResponseClientRedirect(url)
        return response
    from django.contrib import messages

    messages.success(request, message)
    return redirect(url)


@require_POST
@answers_refusals(_index_url)
def retry(request: HttpRequest, draft_id) -> HttpResponse:
    actor, draft = _draft(request, draft_id)
    creation.retry(draft, actor, request.POST.get("from_step", "")[:40] or None)
    url = reverse("factory:step", args=[draft.pk, "create"])
    return HttpResponseClientRedirect(url) if htmx_partial(request) else redirect(url)


@require_GET
def sandbox_detail(request: HttpRequest, pk: int) -> HttpResponse:
    actor = _actor(request)
    run = sandbox.get_sandbox(pk, actor)
    return render(
        request,
        "factory/sandbox.html",
        {"active_section": "factory", "sandbox": run, "draft": run.draft},
    )
