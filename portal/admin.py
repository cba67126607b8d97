"""Admin for users (with role actions), API tokens (created and revoked through the services),
the read-only audit trail and the read-only list of signed-in sessions."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied

from portal import roles, services
from portal.actors import Actor
from portal.admin_site import ReadOnlyModelAdmin
from portal.models import ApiToken, AuditEntry, UserSession

User = get_user_model()


def _role_action(role: str):
    def action(modeladmin, request, queryset):
        actor = Actor.from_request(request)
        try:
            for user in queryset:
                services.assign_role(user, role, actor)
        except PermissionDenied as exc:
            modeladmin.message_user(request, str(exc), messages.ERROR)
            return
        modeladmin.message_user(request, f"{queryset.count()} user(s) are now {role}.")

    action.__name__ = f"make_{role.lower()}"
    action.short_description = f"Set role: {role}"
    return action


admin.site.unregister(User)


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    list_display = ("username", "email", "role", "is_active", "last_login")
    list_filter = ("is_active", "groups")
    actions = [_role_action(role) for role in roles.ROLES]

    @admin.display(description="Role")
    def role(self, obj) -> str:
        return roles.role_of(obj) or "—"


class ApiTokenCreateForm(forms.ModelForm):
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, help_text="Leave empty for a token that does not expire."
    )

    class Meta:
        model = ApiToken
        fields = ("user", "name")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = (
        "prefix",
        "user",
        "name",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "name", "user__username", "user__email")
    actions = ["revoke"]
    readonly_fields = (
        "prefix",
        "created_at",
        "created_by",
        "last_used_at",
        "revoked_at",
        "expires_at",
    )

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenCreateForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("user", "name", "expires_in_days")
        return ("user", "name", *self.readonly_fields)

    def get_readonly_fields(self, request, obj=None):
        return ("user", *self.readonly_fields) if obj is not None else ()

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["name"])
            return
        token, text = services.create_api_token(
            form.cleaned_data["user"],
            Actor.from_request(request),
            name=form.cleaned_data["name"],
            expires_in_days=form.cleaned_data.get("expires_in_days"),
        )
        obj.pk, obj.prefix, obj.created_at = token.pk, token.prefix, token.created_at
        self.message_user(
            request,
            f"Token created. Copy it now, it is not shown again: {text}",
            messages.WARNING,
        )

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        actor = Actor.from_request(request)
        revoked = sum(services.revoke_api_token(token, actor) for token in queryset)
        self.message_user(request, f"{revoked} token(s) revoked.")

    def has_delete_permission(self, request, obj=None) -> bool:
        # Revoke instead: the record stays for the audit trail.
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyModelAdmin):
    list_display = ("at", "actor", "door", "action", "target", "outcome", "source")
    list_filter = ("outcome", "door", "app")
    search_fields = ("actor", "action", "target")
    date_hierarchy = "at"


@admin.register(UserSession)
class UserSessionAdmin(ReadOnlyModelAdmin):
    """Who is signed in where; a person signs their sessions out on their profile page."""

    list_display = ("user", "ip", "user_agent", "signed_in_with", "created_at", "last_seen_at")
    list_filter = ("signed_in_with",)
    search_fields = ("user__username", "user__email", "ip")
    date_hierarchy = "last_seen_at"
    # The session key is the cookie's secret: not shown, even to Admins.
    exclude = ("session_key",)
    list_select_related = ("user",)
