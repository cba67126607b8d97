"""Admin for releases: listed and shown, published through ``services.publish`` (its refusal is
the form's error), marked bad, pinned and unpinned by admin actions that ask for a reason and go
through the same services (audited). Never deleted: agents may run them. Maintenance windows:
created, changed and deleted through ``servicing.windows``. Only Admins get into the admin at
all (``portal.admin_site``)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse

from agents.choices import Tier
from portal.actors import Actor
from servicing import services, windows
from servicing.models import MaintenanceWindow, Release


class ReleaseForm(forms.ModelForm):
    """A new release's fields, published by ``services.publish``, asked here (the admin calls
    ``is_valid()`` before it saves) so that its refusal is the form's error and nothing is
    written."""

    class Meta:
        model = Release
        fields = ("version", "artifact", "changelog", "config_changes", "agent", "template")

    actor: Actor | None = None  # set by ReleaseAdmin.get_form
    saved: Release | None = None

    def is_valid(self) -> bool:
        if not super().is_valid():
            return False
        if self.saved is not None:
            return True
        data = self.cleaned_data
        try:
            assert self.actor is not None
            self.saved = services.publish(
                self.actor, data["version"], data["artifact"], changelog=data["changelog"],
                config_changes=data["config_changes"], agent=data["agent"],
                template=data["template"],
            )  # fmt: skip
        except (services.ServicingRefused, PermissionDenied) as refused:
            self.add_error(None, f"Not published: {refused}")
            return False
        return True


def _reason_action(name: str, service, label: str, done: str):
    """An admin action that asks for a reason, then calls ``service(actor, release, reason)``
    for each release selected."""

    def admin_action(modeladmin, request, queryset) -> Any:
        releases = list(queryset.select_related("agent"))
        if request.POST.get("apply") != "yes":
            return TemplateResponse(
                request,
                "servicing/admin/reason.html",
                {
                    **modeladmin.admin_site.each_context(request),
                    "title": f"{label} {len(releases)} release(s)",
                    "releases": releases,
                    "action": name,
                    "opts": modeladmin.model._meta,
                },
            )
        actor = Actor.from_request(request)
        changed, refused = 0, []
        for release in releases:
            try:
                service(actor, release, request.POST.get("reason", ""))
                changed += 1
            except PermissionDenied as denied:
                modeladmin.message_user(request, str(denied), messages.ERROR)
                return None
            except services.ServicingRefused as refusal:
                refused.append(refusal.message)
        if changed:
            modeladmin.message_user(request, f"{changed} release(s) {done}.")
        for message in refused:
            modeladmin.message_user(request, message, messages.WARNING)
        return None

    admin_action.__name__ = name
    admin_action.short_description = f"{label} selected releases"  # type: ignore[attr-defined]
    return admin_action


@admin.register(Release)
class ReleaseAdmin(admin.ModelAdmin):
    """Releases of agentd for the fleet, a template or an agent. Published here or by the API
    and ``manage.py servicing publish``; once published a release is not edited (its version
    is what agents report), only marked bad, pinned or unpinned."""

    form = ReleaseForm
    list_display = ("version", "scope", "artifact", "published_by", "published_at", "bad",
                    "pinned", "pinned_reason")  # fmt: skip
    list_filter = ("bad", "pinned", "template")
    list_select_related = ("agent",)
    search_fields = ("version", "artifact", "changelog", "agent__slug", "template")
    date_hierarchy = "published_at"
    readonly_fields = ("published_by", "published_at", "bad", "bad_reason", "pinned",
                       "pinned_reason", "pinned_by", "pinned_at")  # fmt: skip
    actions = [
        _reason_action("mark_bad", services.mark_bad, "Mark bad (and pin)", "marked bad"),
        _reason_action("pin", services.pin, "Pin", "pinned"),
        _reason_action("unpin", services.unpin, "Unpin", "unpinned"),
    ]

    @admin.display(description="Scope")
    def scope(self, release: Release) -> str:
        return release.scope_label

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # shown, never edited: bad, pin and unpin are the actions

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"actor": Actor.from_request(request)})

    def save_model(self, request, obj, form, change) -> None:
        # Published (and audited) by the service in form.is_valid; the admin answers that row.
        saved = form.saved
        assert saved is not None  # the form is valid only once the service published it
        obj.pk, obj.published_at, obj.published_by = (
            saved.pk,
            saved.published_at,
            saved.published_by,
        )


WINDOW_FIELDS = ("name", "kind", "cron", "duration_minutes", "timezone", "tier", "agent",
                 "enabled", "reason")  # fmt: skip


class MaintenanceWindowForm(forms.ModelForm):
    """A window's fields, created or changed by ``servicing.windows`` (validated and audited)
    when the admin asks ``is_valid()``, so a refusal is the named field's error and nothing is
    written."""

    tier = forms.ChoiceField(choices=[("", "(any)"), *Tier.choices], required=False)

    class Meta:
        model = MaintenanceWindow
        fields = WINDOW_FIELDS

    actor: Actor | None = None  # set by MaintenanceWindowAdmin.get_form
    saved: MaintenanceWindow | None = None

    def is_valid(self) -> bool:
        if not super().is_valid():
            return False
        if self.saved is not None:
            return True
        names = WINDOW_FIELDS if self.instance.pk is None else self.changed_data
        values = {name: self.cleaned_data[name] for name in names}
        if "agent" in values:  # the service takes the agent's slug, as the API and CLI give it
            values["agent"] = values["agent"].slug if values["agent"] is not None else ""
        try:
            assert self.actor is not None
            if self.instance.pk is None:
                self.saved = windows.create_window(self.actor, **values)
            else:
                self.saved = windows.update_window(self.actor, self.instance, **values)
        except (services.ServicingRefused, PermissionDenied) as refused:
            field, _, rest = str(refused).partition(": ")
            if field in self.fields and rest:
                self.add_error(field, rest)
            else:
                self.add_error(None, f"Not saved: {refused}")
            return False
        return True


@admin.register(MaintenanceWindow)
class MaintenanceWindowAdmin(admin.ModelAdmin):
    """Maintenance windows: created, changed and deleted through ``servicing.windows`` (Admin,
    validated, audited), as by the API and ``manage.py servicing windows``."""

    form = MaintenanceWindowForm
    list_display = ("name", "kind", "cron", "timezone", "duration_minutes", "scope", "enabled",
                    "created_by")  # fmt: skip
    list_filter = ("kind", "enabled", "tier")
    list_select_related = ("agent",)
    search_fields = ("name", "cron", "reason", "agent__slug")
    readonly_fields = ("created_by", "created_at")

    @admin.display(description="Scope")
    def scope(self, window: MaintenanceWindow) -> str:
        return window.scope_label

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"actor": Actor.from_request(request)})

    def save_model(self, request, obj, form, change) -> None:
        # Saved (and audited) by the service in form.is_valid; the admin answers that row.
        saved = form.saved
        assert saved is not None  # the form is valid only once the service saved it
        for field in MaintenanceWindow._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))

    def delete_model(self, request, obj) -> None:
        windows.delete_window(Actor.from_request(request), obj, "deleted in the admin")

    def delete_queryset(self, request, queryset) -> None:
        actor = Actor.from_request(request)
        for window in queryset:
            windows.delete_window(actor, window, "deleted in the admin")
