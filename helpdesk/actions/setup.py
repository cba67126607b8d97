"""What the help desk's actions register when the app is ready: the API router, the
``scoped_role`` lookup agents asks for temporary access, and the sweep that ends expired
grants; called from ``HelpdeskConfig.ready``."""

from __future__ import annotations


def register() -> None:
    from helpdesk import tasks
    from helpdesk.actions import api, grants
    from portal import extensions

    extensions.add_api_router(api.router)
    extensions.add_lookup("scoped_role", grants.scoped_role)
    if grants.revoke_expired_grants not in tasks.SWEEPS:
        tasks.SWEEPS.append(grants.revoke_expired_grants)
