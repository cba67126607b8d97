"""The factory's Celery tasks: a sandbox run, and expiring abandoned drafts."""

from __future__ import annotations

from celery import shared_task

from factory.services import drafts, sandbox


@shared_task(name=sandbox.RUN_TASK)
def run_sandbox(sandbox_id: int) -> str:
    run = sandbox.run_sandbox(sandbox_id)
    return run.status if run is not None else "taken by another worker"


@shared_task(name="factory.expire_drafts")
def expire_drafts() -> int:
    return drafts.expire_drafts()
