"""Authentication backend that grants Admins every model permission.

Admins "manage users, templates, versions, settings and the admin site" (DESIGN.md): rather
than copying every model permission into the Admin group, an active Admin holds them all.
"""

from __future__ import annotations

from django.contrib.auth.backends import ModelBackend

from portal import roles


class RoleBackend(ModelBackend):
    def has_perm(self, user_obj, perm, obj=None) -> bool:
        if roles.role_of(user_obj) == roles.ADMIN:
            return True
        return super().has_perm(user_obj, perm, obj)

    def has_module_perms(self, user_obj, app_label) -> bool:
        if roles.role_of(user_obj) == roles.ADMIN:
            return True
        return super().has_module_perms(user_obj, app_label)

    def authenticate(self, request, username=None, password=None, **kwargs):
        """Username and password, where the username may also be the user's email address."""
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None and username and "@" in username:
            from django.contrib.auth import get_user_model

            matches = list(get_user_model()._default_manager.filter(email__iexact=username)[:2])
            if len(matches) == 1:
                user = super().authenticate(
                    request, username=matches[0].get_username(), password=password, **kwargs
                )
        return user
