"""What the help desk's tickets register when the app is ready: the API routes, the Celery
task, and the sweep that sends (or sends again) the due outbox changes."""

from __future__ import annotations


def register() -> None:
    from helpdesk import tasks
    from helpdesk.tickets import api
    from helpdesk.tickets import tasks as ticket_tasks
    from portal import extensions

    extensions.add_api_router(api.router)
    if ticket_tasks.sweep not in tasks.SWEEPS:
        tasks.SWEEPS.append(ticket_tasks.sweep)
