"""Fixtures for factory tests: private agent and sandbox roots (whatever was started under them
is killed afterwards), the seeded registry and templates, and a worker's hand for workflows."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from agents import services
from agents.models import Agent
from factory.services import templates
from portal.actors import Actor


def _kill_processes_under(root) -> None:
    marker = str(root)
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in process.info["cmdline"] or []):
                os.kill(process.pid, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass


@pytest.fixture(autouse=True)
def roots(tmp_path_factory, settings):
    agents_root = tmp_path_factory.mktemp("agents")
    sandbox_root = tmp_path_factory.mktemp("sandboxes")
    settings.AGENT_ROOT = agents_root
    settings.FACTORY_SANDBOX_ROOT = sandbox_root
    settings.AGENT_READY_TIMEOUT_SECONDS = 15
    settings.AGENT_STOP_GRACE_SECONDS = 5
    yield agents_root, sandbox_root
    _kill_processes_under(agents_root)
    _kill_processes_under(sandbox_root)


@pytest.fixture
def catalog(db):
    """The six templates, and the 14 Platform agents in DRAFT."""
    actor = Actor.command("test")
    templates.seed_templates(actor)
    services.seed_platform_agents(actor)
    return {t.key: t for t in templates.current_templates()}


@pytest.fixture
def agents_by_slug(catalog):
    return {agent.slug: agent for agent in Agent.objects.all()}


def drive(run, timeout: float = 60.0, *, until=None):
    """Carry out the run's due steps here, as a worker would, until it is no longer active; a
    sandbox run a step asked for is carried out here too (the tests run no Celery worker, and
    the request's task would only be sent when its transaction commits)."""
    import time

    from django.utils import timezone

    from agents.workflows import engine
    from agents.workflows.models import ACTIVE, STEP_BUSY, StepRun
    from factory.models import SandboxRun
    from factory.services import sandbox

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if until is not None and until(run):
            return run
        if run.status not in ACTIVE:
            return run
        due = [
            row.pk
            for row in StepRun.objects.filter(run=run, current=True, status__in=STEP_BUSY)
            if row.wake_at is None or row.wake_at <= timezone.now()
        ]
        for pk in due:
            engine.run_step(pk)
        pending = list(SandboxRun.objects.filter(status="pending").values_list("pk", flat=True))
        for pk in pending:
            sandbox.run_sandbox(pk)
        if not due and not pending:
            time.sleep(0.05)
    run.refresh_from_db()
    raise AssertionError(f"run {run.pk} still {run.status} after {timeout} s")
