"""What the help desk's detective registers when the app is ready: its API routes; called from
``HelpdeskConfig.ready``."""

from __future__ import annotations


def register() -> None:
    from helpdesk.detective import api
    from portal import extensions

    extensions.add_api_router(api.router)
