"""Playbooks in the admin (Admins edit them): an edit is saved by
``helpdesk.playbooks.services.save_version`` as a NEW version (the runs keep the version they
ran), its steps checked when the form is validated, so a bad step is the steps field's error
and nothing is written. Runs are shown read-only."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied

from helpdesk.models import Playbook, PlaybookRun
from helpdesk.playbooks import catalog, services
from helpdesk.refusals import HelpdeskRefused
from portal.actors import Actor

FORM_FIELDS = ("slug", "title", "description", "category", "steps")


class PlaybookForm(forms.ModelForm):
    steps = forms.JSONField(
        help_text="A list of steps: {id, kind: check|action, title, check + expect, or action + "
        "params + approval + target|when}. Saving makes a new version.",
        widget=forms.Textarea(attrs={"rows": 24, "cols": 100}),
    )

    class Meta:
        model = Playbook
        fields = FORM_FIELDS

    actor: Actor | None = None  # set by PlaybookAdmin.get_form
    saved: Playbook | None = None

    def clean_steps(self):
        steps = self.cleaned_data["steps"]
        try:
            catalog.check_steps(steps)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return steps

    def is_valid(self) -> bool:
        if not super().is_valid():
            return False
        if self.saved is not None:
            return True
        data = {name: self.cleaned_data[name] for name in FORM_FIELDS if name != "slug"}
        slug = self.instance.slug if self.instance.pk else self.cleaned_data["slug"]
        try:
            assert self.actor is not None
            self.saved = services.save_version(self.actor, slug, data)
        except (HelpdeskRefused, PermissionDenied) as refused:
            self.add_error(None, f"Not saved: {refused}")
            return False
        return True

    def validate_unique(self) -> None:
        """A save is a new version: (slug, version) is unique by construction."""


@admin.register(Playbook)
class PlaybookAdmin(admin.ModelAdmin):
    form = PlaybookForm
    list_display = ("slug", "version", "title", "category", "active", "created_by", "created_at")
    list_filter = ("active", "category")
    search_fields = ("slug", "title", "description")
    ordering = ("slug", "-version")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"actor": Actor.from_request(request)})

    def get_readonly_fields(self, request, obj=None):
        return ("slug",) if obj is not None else ()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # runs keep the version they ran

    def save_model(self, request, obj, form, change) -> None:
        # Saved (and audited) as a new version by the service in form.is_valid; the admin then
        # answers that row instead of the one it showed.
        saved = form.saved
        assert saved is not None
        obj.pk, obj.version, obj.slug = saved.pk, saved.version, saved.slug
        obj._state.adding = False


@admin.register(PlaybookRun)
class PlaybookRunAdmin(admin.ModelAdmin):
    list_display = ("id", "playbook", "customer", "dry_run", "workflow_run", "actor", "created_at")
    list_filter = ("dry_run",)
    list_select_related = ("playbook", "customer", "workflow_run")
    search_fields = ("customer__key", "playbook__slug", "actor")
    readonly_fields = [f.name for f in PlaybookRun._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
