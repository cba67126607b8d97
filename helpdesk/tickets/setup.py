"""What the help desk's tickets register when the app is ready: the API routes, the Celery
task, and the sweep that sends (or sends again) the due outbox changes."""

from __future__ import annotations


def register() -> None:
    from helpdesk import tasks
    from helpdesk.tickets import api, outbox
    from helpdesk.tickets import tasks as ticket_tasks  # noqa: F401 (registers the task)
    from portal import extensions

    extensions.add_api_router(api.router)
    if outbox.sweep not in tasks.SWEEPS:
        tasks.SWEEPS.append(outbox.sweep)
