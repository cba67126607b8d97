from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_roles(sender, **kwargs) -> None:
    # In the handler: an AppConfig module must not import models (roles does) at load.
    from portal.roles import ensure_roles

    ensure_roles()


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal"

    def ready(self) -> None:
        # After every migrate (tests included) the three role groups exist with their permissions.
        post_migrate.connect(_ensure_roles, sender=self, dispatch_uid="portal.ensure_roles")
        from django.contrib.auth.signals import user_logged_in, user_logged_out

        from portal.api import add_router
        from portal.audit.api import router as audit_router
        from portal.profile import sessions
        from portal.profile.api import router as profile_router

        add_router(audit_router)
        add_router(profile_router)
        # A row beside each browser session, so a person's sessions can be listed and ended.
        user_logged_in.connect(sessions.on_user_logged_in, dispatch_uid="portal.session_in")
        user_logged_out.connect(sessions.on_user_logged_out, dispatch_uid="portal.session_out")
