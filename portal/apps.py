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
        from portal.api import add_router
        from portal.audit.api import router as audit_router

        add_router(audit_router)
