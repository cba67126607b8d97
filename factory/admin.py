"""Admin for the factory: templates (each saved change is a new version, through
``templates.save_template``; the old row is kept for the drafts started from it), the price table
(changed through ``pricing.update_prices``, audited), and drafts and sandbox runs, read-only and
never showing a secret. Only Admins get into the admin at all (``portal.admin_site``)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.urls import reverse

from factory.models import Draft, PriceTable, SandboxRun, Template
from factory.services import pricing, templates
from portal.actors import Actor
from portal.admin_site import ReadOnlyModelAdmin

JSON_FIELDS = (
    "capabilities", "resources", "dependencies", "settings", "config_schema", "alert_rules",
    "cost_profile", "test_tasks",
)  # fmt: skip
# Set on the admin's object by save_model: the version a new one was saved from (None: no change).
SAVED_FROM = "_factory_saved_from"


class PrettyJSONField(forms.JSONField):
    """JSON shown indented, so a schema or a list of tests can be read and edited."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False, cls=self.encoder)


def _json_field(name: str) -> PrettyJSONField:
    lines = 20 if name in ("config_schema", "test_tasks", "alert_rules") else 6
    return PrettyJSONField(
        required=False,
        widget=forms.Textarea(
            attrs={"rows": lines, "cols": 100, "style": "font-family: monospace"}
        ),
        help_text=getattr(Template._meta.get_field(name), "help_text", ""),
    )


# --- templates --------------------------------------------------------------------------------


class TemplateForm(forms.ModelForm):
    """A template's fields; its changes are saved as the next version by
    ``templates.save_template``, asked here (the admin calls ``is_valid()`` once, before it
    saves) so that its refusal is the form's error and nothing is written."""

    class Meta:
        model = Template
        fields = templates.EDITABLE

    actor: Actor | None = None  # set by TemplateAdmin.get_form
    saved: Template | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in JSON_FIELDS:
            self.fields[name] = _json_field(name)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for name in JSON_FIELDS:
            if data.get(name) is None and name not in self.errors:
                data[name] = [] if name in ("capabilities", "dependencies", "alert_rules") else {}
        return data

    def is_valid(self) -> bool:
        if not super().is_valid():
            return False
        if getattr(self, "_applied", False) or not self.changed_data:
            return True
        self._applied = True
        changes = {name: self.cleaned_data[name] for name in self.changed_data}
        original = Template.objects.get(pk=self.instance.pk)
        try:
            assert self.actor is not None
            self.saved = templates.save_template(original, changes, self.actor)
        except (ValueError, PermissionDenied) as refused:
            self.add_error(None, f"Not saved: {refused}.")
            return False
        return True


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    """Templates are data: an Admin edits one here and gets a new version; the rows of older
    versions stay as they were, so the drafts started from them keep them. Retire a template by
    unticking ``active`` (a new version that the wizard no longer offers); never delete one."""

    form = TemplateForm
    list_display = ("key", "version", "name", "category", "complexity", "active", "created_at")
    list_filter = ("active", "category", "complexity", "key")
    search_fields = ("key", "name", "description")
    readonly_fields = ("key", "version", "created_at", "created_by")
    fieldsets = (
        (None, {"fields": ("key", "version", "name", "description", "category", "complexity",
                           "handler", "active", "created_at", "created_by")}),
        ("Defaults", {"fields": ("capabilities", "dependencies", "resources", "cost_profile")}),
        ("Settings", {"fields": ("settings", "config_schema")}),
        ("Tests and monitoring", {"fields": ("test_tasks", "alert_rules")}),
    )  # fmt: skip
    save_as = False

    def has_add_permission(self, request) -> bool:
        # New templates come with a handler in agentd (the catalog); here, new versions.
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"actor": Actor.from_request(request)})

    def save_model(self, request, obj, form, change) -> None:
        # The service saved the new version (form.is_valid); the admin's own save would
        # overwrite the old row. From here on the admin logs and answers the new one.
        saved = form.saved
        setattr(obj, SAVED_FROM, obj.version if saved is not None else None)
        if saved is not None:
            obj.pk, obj.version, obj.created_at = saved.pk, saved.version, saved.created_at
            obj.created_by = saved.created_by

    def response_change(self, request, obj):
        old = getattr(obj, SAVED_FROM, None)
        if old is None:
            self.message_user(request, f"Nothing changed: {obj} is kept as it was.")
        else:
            self.message_user(
                request,
                f"Saved {obj.name} as version {obj.version} ({obj.label}) from version {old}; "
                f"version {old} is unchanged, and drafts started from it keep it.",
                messages.SUCCESS,
            )
        if "_continue" in request.POST:
            return HttpResponseRedirect(reverse("admin:factory_template_change", args=[obj.pk]))
        return HttpResponseRedirect(reverse("admin:factory_template_changelist"))


# --- prices -----------------------------------------------------------------------------------


class PriceTableForm(forms.ModelForm):
    """The prices, saved by ``pricing.update_prices`` (amounts from 0 to 999999, audited), asked
    in ``is_valid`` so that its refusal is the form's error."""

    class Meta:
        model = PriceTable
        fields = pricing.PRICE_FIELDS

    actor: Actor | None = None  # set by PriceTableAdmin.get_form
    saved: PriceTable | None = None

    def is_valid(self) -> bool:
        if not super().is_valid():
            return False
        if getattr(self, "_applied", False):
            return True
        self._applied = True
        changes = {name: self.cleaned_data[name] for name in pricing.PRICE_FIELDS}
        try:
            assert self.actor is not None
            self.saved = pricing.update_prices(changes, self.actor)
        except (ValueError, PermissionDenied) as refused:
            self.add_error(None, f"Not saved: {refused}.")
            return False
        return True


@admin.register(PriceTable)
class PriceTableAdmin(admin.ModelAdmin):
    """The one price table every cost estimate reads."""

    form = PriceTableForm
    list_display = ("__str__", *pricing.PRICE_FIELDS, "updated_at")
    readonly_fields = ("currency", "updated_at")

    def has_add_permission(self, request) -> bool:
        return not PriceTable.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"actor": Actor.from_request(request)})

    def save_model(self, request, obj, form, change) -> None:
        # Saved and audited by the service (form.is_valid); the admin answers that row.
        saved = form.saved
        assert saved is not None  # the form is valid only once the service saved it
        obj.pk, obj.currency, obj.updated_at = saved.pk, saved.currency, saved.updated_at


# --- drafts and sandbox runs, read-only ----------------------------------------------------


@admin.register(Draft)
class DraftAdmin(ReadOnlyModelAdmin):
    """Drafts are made and changed in the wizard, the API and ``manage.py factory``; here,
    read. Their secrets are never shown (the field is left out)."""

    list_display = ("title", "template", "status", "step", "agent_slug", "actor", "updated_at",
                    "expires_at")  # fmt: skip
    list_filter = ("status", "template__key")
    list_select_related = ("template",)
    search_fields = ("agent_slug", "actor", "id")
    date_hierarchy = "created_at"
    fields = ("id", "template", "status", "step", "values", "secret_names", "run", "agent_slug",
              "actor", "created_at", "updated_at", "expires_at")  # fmt: skip
    readonly_fields = fields

    @admin.display(description="Secrets (names only)")
    def secret_names(self, draft: Draft) -> str:
        return ", ".join(sorted(draft.secrets)) or "-"


@admin.register(SandboxRun)
class SandboxRunAdmin(ReadOnlyModelAdmin):
    """Sandbox runs, read: their tests, logs and figures. Never their secrets (nor the digest
    of them kept in the configuration)."""

    list_display = ("id", "name", "template", "status", "tests_passed", "latency_p95_ms",
                    "peak_memory_mb", "actor", "created_at", "torn_down_at")  # fmt: skip
    list_filter = ("status", "template__key")
    list_select_related = ("template",)
    search_fields = ("name", "actor")
    date_hierarchy = "created_at"
    fields = ("name", "template", "draft", "status", "configuration", "results", "logs", "error",
              "latency_p50_ms", "latency_p95_ms", "peak_memory_mb", "actor", "created_at",
              "started_at", "finished_at", "torn_down_at")  # fmt: skip
    readonly_fields = fields

    @admin.display(description="Tests passed")
    def tests_passed(self, run: SandboxRun) -> str:
        return f"{run.passed_count}/{len(run.results)}"

    @admin.display(description="Configuration")
    def configuration(self, run: SandboxRun) -> str:
        shown = {k: v for k, v in (run.config or {}).items() if k != "secrets_digest"}
        return json.dumps(shown, indent=2)
