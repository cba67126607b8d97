"""Admin for agents (lifecycle actions through the services), history (read-only), operations,
bulk operations and workflow runs with their step attempts (read-only)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied

from agents import services
from agents.models import (
    ACTION_LABELS,
    ACTIONS,
    Agent,
    AgentSecret,
    AgentTransition,
    BulkItem,
    BulkOperation,
    Operation,
)
from agents.workflows.models import StepRun, WorkflowRun
from portal.actors import Actor
from portal.admin_site import ReadOnlyModelAdmin


def _lifecycle_action(action: str):
    def admin_action(modeladmin, request, queryset):
        actor = Actor.from_request(request)
        accepted, refused = 0, []
        for agent in services.in_action_order(action, queryset.prefetch_related("dependencies")):
            try:
                services.request_action(agent, action, actor, reason="admin action", confirm=True)
                accepted += 1
            except PermissionDenied as denied:
                modeladmin.message_user(request, str(denied), messages.ERROR)
                return
            except services.ActionRefused as exc:
                refused.append(exc.message)
        if accepted:
            modeladmin.message_user(
                request, f"{ACTION_LABELS[action][0]} requested for {accepted} agent(s)."
            )
        for message in refused:
            modeladmin.message_user(request, message, messages.WARNING)

    admin_action.__name__ = f"{action}_agents"
    admin_action.short_description = f"{ACTION_LABELS[action][0]} selected agents"
    return admin_action


class TransitionInline(admin.TabularInline):
    model = AgentTransition
    fields = ("at", "action", "from_state", "to_state", "actor", "reason")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ("-at",)
    show_change_link = True


RESERVED_SLUGS = {"bulk", "errors"}


class AgentForm(forms.ModelForm):
    """The admin's agent form (the admin supplies model and fields), refusing dependency cycles."""

    def clean_slug(self):
        """Refuse slugs that are page addresses under /agents/ (the bulk operations pages)."""
        slug = self.cleaned_data["slug"]
        if slug in RESERVED_SLUGS:
            raise forms.ValidationError(
                f"{slug!r} is the address of a portal page under /agents/; choose another slug."
            )
        return slug

    def clean_dependencies(self):
        """Refuse a dependency cycle: every page, command and start order needs the graph acyclic."""
        chosen = self.cleaned_data["dependencies"]
        services.check_dependencies_acyclic(self.instance, chosen)
        return chosen


class SecretInline(admin.TabularInline):
    """A secret's name only: its value is never shown by any door."""

    model = AgentSecret
    fields = ("name", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = "secret environment variable (value hidden)"

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    form = AgentForm
    list_display = (
        "name",
        "slug",
        "state",
        "health",
        "pending_action",
        "runtime",
        "version",
        "tier",
    )
    list_filter = ("state", "health", "tier", "runtime")
    search_fields = ("name", "slug", "description")
    filter_horizontal = ("dependencies",)
    readonly_fields = (
        "state", "state_changed_at", "health", "health_detail", "health_checked_at", "last_healthy_at",
        "pending_action", "pending_since", "runtime_details", "last_exit", "restart_attempts",
        "next_restart_at", "restart_gave_up", "created_at", "updated_at", "template",
        "probes",  # changed through the agent page, the API or `manage.py probes` (validated)
    )  # fmt: skip
    actions = [_lifecycle_action(action) for action in ACTIONS]
    inlines = [SecretInline, TransitionInline]

    def has_delete_permission(self, request, obj=None) -> bool:
        # Revoke instead: the agent and its history stay for the record.
        return False

    def save_model(self, request, obj, form, change) -> None:
        # The service saves and audits in save_related, once the dependencies are set too, so
        # the audit records the new ones. The admin's transaction undoes all of it on refusal.
        if obj.pk is None:
            obj.save()  # a new agent needs its id before its dependencies can be set

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        services.update_agent_settings(
            form.instance, list(form.changed_data), Actor.from_request(request)
        )


@admin.register(AgentTransition)
class AgentTransitionAdmin(ReadOnlyModelAdmin):
    list_display = ("at", "agent", "action", "from_state", "to_state", "actor", "reason")
    list_filter = ("action", "to_state", "actor_kind")
    search_fields = ("agent__name", "agent__slug", "actor", "reason")
    date_hierarchy = "at"


@admin.register(Operation)
class OperationAdmin(ReadOnlyModelAdmin):
    list_display = ("requested_at", "agent", "action", "status", "actor", "error")
    list_filter = ("status", "action")
    search_fields = ("agent__name", "agent__slug", "actor", "error")
    date_hierarchy = "requested_at"
    actions = ["undo_operations"]

    @admin.action(description="Undo selected actions (stop, start, suspend, resume; recent only)")
    def undo_operations(self, request, queryset) -> None:
        actor = Actor.from_request(request)
        for operation in queryset.select_related("agent").order_by("requested_at"):
            try:
                undone = services.undo_operation(operation, actor)
            except PermissionDenied as denied:
                self.message_user(request, str(denied), messages.ERROR)
                return
            except services.ActionRefused as refused:
                self.message_user(request, refused.message, messages.WARNING)
            else:
                self.message_user(request, undone.message)


class BulkItemInline(admin.TabularInline):
    model = BulkItem
    fields = ("position", "agent", "status", "steps", "steps_done", "from_state", "to_state",
              "code", "message", "started_at", "finished_at")  # fmt: skip
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ("position",)


@admin.register(BulkOperation)
class BulkOperationAdmin(ReadOnlyModelAdmin):
    """Bulk operations are run from the agents page, the API or ``agents bulk``; here, read."""

    list_display = ("id", "requested_at", "action", "kind", "status", "actor", "total",
                    "succeeded", "failed", "skipped")  # fmt: skip
    list_filter = ("status", "action", "kind")
    search_fields = ("actor",)
    date_hierarchy = "requested_at"
    inlines = [BulkItemInline]


class StepRunInline(admin.TabularInline):
    """Every attempt of every step, compensations after the steps; read here, acted on through
    the run's page, the API or ``manage.py workflows``."""

    model = StepRun
    fields = ("role", "position", "step_id", "title", "kind", "attempt", "current", "status",
              "queued_at", "started_at", "finished_at", "worker", "error", "reason")  # fmt: skip
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ("role", "position", "attempt")


@admin.register(WorkflowRun)
class WorkflowRunAdmin(ReadOnlyModelAdmin):
    """Workflow runs are started and controlled from the Workflows page, the API or
    ``manage.py workflows``; here, read."""

    list_display = ("id", "title", "status", "subject", "progress_display", "started_at",
                    "finished_at")  # fmt: skip
    list_filter = ("status", "definition")
    search_fields = ("subject", "title", "actor")
    date_hierarchy = "created_at"
    inlines = [StepRunInline]

    @admin.display(description="Progress")
    def progress_display(self, run: WorkflowRun) -> str:
        return f"{run.completed_steps}/{run.total_steps} ({run.progress}%)"
