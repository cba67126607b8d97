"""Fixtures for the workflow engine: test step kinds (registered like any app's) and ``drive``,
which does what the Celery workers do (``engine.run_step`` for every busy step that is due)
in this process, so a test sees every step of a run happen in order."""

from __future__ import annotations

import threading
import time

import pytest
from django.utils import timezone

from agents.workflows import engine, registry
from agents.workflows.definitions import Definition
from agents.workflows.kinds import Done, Failed, Result, StepContext, StepKind, Wait, register_kind
from agents.workflows.models import ACTIVE, STEP_BUSY, StepRun, WorkflowRun
from portal.actors import Actor

# What the test kinds did, in order: (kind, step id, role, attempt).
CALLS: list[tuple[str, str, str, int]] = []
_CALLS_LOCK = threading.Lock()


def _called(ctx: StepContext, name: str) -> None:
    with _CALLS_LOCK:
        CALLS.append((name, ctx.step.step_id, ctx.step.role, ctx.step.attempt))


class Echo(StepKind):
    """Succeeds at once with its inputs; ``fail: true`` fails instead."""

    name = "test_echo"
    side_effects = "echoes again"
    inline = True

    def start(self, ctx: StepContext) -> Result:
        _called(ctx, self.name)
        if ctx.inputs.get("fail"):
            return Failed(f"{ctx.step.step_id} was told to fail")
        return Done({**ctx.inputs, "step": ctx.step.step_id})


class Flaky(StepKind):
    """Fails its first ``failures`` attempts, then succeeds."""

    name = "test_flaky"
    side_effects = "calls the flaky service again"

    def start(self, ctx: StepContext) -> Result:
        _called(ctx, self.name)
        if ctx.step.attempt <= int(ctx.inputs.get("failures", 1)):
            return Failed(f"attempt {ctx.step.attempt} failed")
        return Done({"attempt": ctx.step.attempt})


class Slow(StepKind):
    """Answers after ``seconds`` (polled), or never when ``seconds`` is absent."""

    name = "test_slow"
    side_effects = "waits again"

    def start(self, ctx: StepContext) -> Result:
        _called(ctx, self.name)
        ctx.save_state(until=time.time() + float(ctx.inputs.get("seconds", 10**6)))
        return self.poll(ctx)

    def poll(self, ctx: StepContext) -> Result:
        left = float(ctx.state["until"]) - time.time()
        if left <= 0:
            return Done({"slept": ctx.inputs.get("seconds")})
        return Wait(min(left, 0.1), "sleeping")


for kind in (Echo(), Flaky(), Slow()):
    register_kind(kind)


@pytest.fixture(autouse=True)
def _fresh_calls():
    CALLS.clear()
    yield


COMMAND = Actor.command("test")


def define(definition: Definition) -> Definition:
    """Register a test definition (names start with ``t-``)."""
    return registry.register(definition)


def drive(run: WorkflowRun, timeout: float = 15.0, *, until=None) -> WorkflowRun:
    """Carry out due steps here until the run is no longer active (or ``until(run)``)."""
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
        if not due:
            time.sleep(0.02)
    run.refresh_from_db()
    raise AssertionError(f"run {run.pk} still {run.status} after {timeout} s")


def current(run: WorkflowRun) -> dict[str, StepRun]:
    return {r.step_id: r for r in StepRun.objects.filter(run=run, current=True, role="forward")}


def statuses(run: WorkflowRun, role: str = "forward") -> dict[str, str]:
    return {r.step_id: r.status for r in StepRun.objects.filter(run=run, current=True, role=role)}


@pytest.fixture
def wf():
    """The helpers above, for the tests (``wf.drive(run)``, ``wf.define(...)``...)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        drive=drive, define=define, current=current, statuses=statuses, calls=CALLS,
        command=COMMAND,
    )  # fmt: skip


@pytest.fixture
def client_for():
    """A test client signed in as the given user."""
    from django.test import Client

    def make(user):
        client = Client()
        client.force_login(user)
        return client

    return make
