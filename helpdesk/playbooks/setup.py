"""What the help desk's playbooks register when the app is ready: their workflow step kinds,
the start-up step that seeds the shipped playbooks, the API router, the admin, and the Celery
hook that registers a playbook's workflow definition before a worker runs one of its steps;
called from ``HelpdeskConfig.ready``."""

from __future__ import annotations


def register() -> None:
    from celery.signals import task_prerun

    from helpdesk.playbooks import admin, api, services, workflow  # noqa: F401 (admin registers)
    from portal import extensions
    from portal.startup import STARTUP_STEPS

    workflow.register_all()
    extensions.add_api_router(api.router)
    if services.seed_step not in STARTUP_STEPS:
        STARTUP_STEPS.append(services.seed_step)
    task_prerun.connect(workflow.before_task, weak=False, dispatch_uid="helpdesk-playbooks")
