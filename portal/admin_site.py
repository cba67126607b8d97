"""The Django admin, open to the Admin role only."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig

from portal import roles


class PortalAdminSite(admin.AdminSite):
    site_header = "WAOOAW Platform Portal administration"
    site_title = "WAOOAW admin"
    index_title = "Administration"
    site_url = "/"

    def has_permission(self, request) -> bool:
        return roles.role_of(request.user) == roles.ADMIN


class PortalAdminConfig(AdminConfig):
    default_site = "portal.admin_site.PortalAdminSite"


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """For append-only records (audit trail, history, operations): viewable, never edited."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
