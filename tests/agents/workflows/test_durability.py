"""A worker SIGKILLed in the middle of a run loses no step and runs none twice: a real Celery
worker runs a chain of tasks to a real agentd (each task taking a second), is killed while a
step waits for its agent's reply, and a second worker, handed the step by the sweep, finishes
the run. Counted from agentd's own counters and its record of the task ids it answered.

The worker loads this module's definition through WORKFLOW_DEFINITION_MODULES, as an app's
definitions are loaded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from kombu.exceptions import OperationalError

from agents.agentd import contract
from agents.models import Agent
from agents.workflows import registry, services
from agents.workflows.definitions import Definition, Step
from agents.workflows.models import StepRun, WorkflowRun
from portal import work
from portal.actors import Actor

pytestmark = pytest.mark.django_db(transaction=True)

CHAIN = registry.register(
    Definition(
        name="t-durable-chain", version=1, title="Durable chain",
        steps=tuple(
            Step(f"task-{n}", "agent_task", after=(f"task-{n - 1}",) if n > 1 else (),
                 inputs={"agent": "wow-cache", "payload": {"n": n}}, timeout_seconds=60)
            for n in range(1, 5)
        ),
    )
)  # fmt: skip


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_worker_killed_mid_run_loses_no_step_and_runs_none_twice(
    seeded, bring_up, test_database_url, redis_url, tmp_path, start_celery_worker
) -> None:
    from portal.celery import app

    cache = seeded["wow-cache"]
    Agent.objects.filter(pk=cache.pk).update(config={"faults": {"latency_ms": 1000}})
    cache.refresh_from_db()
    bring_up(cache)
    agents = redis.Redis.from_url(settings.AGENT_REDIS_URL, decode_responses=True)
    processed_before = int(agents.hget(contract.counters("wow-cache"), "processed") or 0)
    app.control.purge()
    env = {
        **os.environ, "DATABASE_URL": test_database_url, "REDIS_URL": redis_url,
        "AGENT_REDIS_URL": settings.AGENT_REDIS_URL, "LOG_LEVEL": "WARNING",
        "WORKFLOW_DEFINITION_MODULES": __name__,
    }  # fmt: skip
    first = start_celery_worker(env, f"wf-dur-a-{os.getpid()}", tmp_path / "a.log")
    run = services.start(Actor.command("test"), "t-durable-chain")
    # Killed while the second task is with the agent and the step waits for the reply.
    _wait(lambda: StepRun.objects.filter(run=run, step_id="task-2", status="running").exists(),
          30, "the second step runs")  # fmt: skip
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    second = start_celery_worker(env, f"wf-dur-b-{os.getpid()}", tmp_path / "b.log")
    try:
        # The sweep (beat's, here called at once) hands the orphaned step to the new worker.
        _wait(lambda: bool(work.sweep(timedelta(0)).get("workflow steps")) or
              WorkflowRun.objects.get(pk=run.pk).is_finished, 30, "the sweep hands it out")  # fmt: skip
        _wait(lambda: WorkflowRun.objects.get(pk=run.pk).is_finished, 60, "the run finishes")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=15)
        app.control.purge()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    rows = list(StepRun.objects.filter(run=run).order_by("position", "attempt"))
    assert [(r.step_id, r.attempt, r.status) for r in rows] == [
        (f"task-{n}", 1, "succeeded") for n in range(1, 5)
    ]
    assert [r.output for r in rows] == [{"n": n} for n in range(1, 5)]  # each its own reply
    # agentd processed each task once and answered each id once.
    processed = int(agents.hget(contract.counters("wow-cache"), "processed") or 0)
    assert processed - processed_before == 4
    for n in range(1, 5):
        assert agents.zscore(contract.answered("wow-cache"), f"wf{run.pk}-task-{n}-a1") is not None


def test_redis_restarted_mid_run_loses_no_step_and_runs_none_twice(
    seeded, bring_up, settings, test_database_url, tmp_path
) -> None:
    """The run's broker and the agents' Redis are one private Redis (with its append-only file),
    SIGKILLed while a step waits for its reply and started again on the same port."""
    from portal import embedded

    root = tmp_path / "redis-root"
    root.mkdir()
    url = embedded.start_redis(root, persistent=True)
    settings.AGENT_REDIS_URL = url  # the agent started here talks to it too
    try:
        cache = seeded["wow-cache"]
        Agent.objects.filter(pk=cache.pk).update(config={"faults": {"latency_ms": 1000}})
        cache.refresh_from_db()
        bring_up(cache)
        env = {
            **os.environ, "DATABASE_URL": test_database_url, "REDIS_URL": url,
            "AGENT_REDIS_URL": url, "LOG_LEVEL": "WARNING", "WORKFLOW_DEFINITION_MODULES": __name__,
            "WORK_SWEEP_SECONDS": "2", "WORK_STALLED_AFTER_SECONDS": "2",
        }  # fmt: skip
        worker = _worker_on(url, env, f"wf-dur-r-{os.getpid()}", tmp_path / "r.log")
        # Beat, as the portal runs it: the sweep hands out what the restart dropped.
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "beat", "--schedule",
             str(tmp_path / "beat-schedule"), "--loglevel", "WARNING"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            started = subprocess.run(
                [sys.executable, "manage.py", "workflows", "start", "t-durable-chain", "--json"],
                env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert started.returncode == 0, started.stderr
            run = WorkflowRun.objects.get(definition="t-durable-chain")
            _wait(lambda: StepRun.objects.filter(run=run, step_id="task-2", status="running")
                  .exists(), 30, "the second step runs")  # fmt: skip
            pid = int((embedded.redis_dir(root) / "redis.pid").read_text())
            os.kill(pid, signal.SIGKILL)
            time.sleep(1.5)
            embedded.start_redis(root, persistent=True)  # same port, same data
            # A worker that lost its broker may exit (kombu gives up restoring what it held);
            # the portal's supervisor (``manage.py up``) starts it again, as here.
            deadline = time.monotonic() + 90
            while not WorkflowRun.objects.get(pk=run.pk).is_finished:
                assert time.monotonic() < deadline, "the run finishes"
                if worker.poll() is not None:
                    worker = _worker_on(url, env, f"wf-dur-r2-{os.getpid()}", tmp_path / "r2.log")
                time.sleep(0.2)
        finally:
            for process in (beat, worker):
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=20)
        run.refresh_from_db()
        assert run.status == "succeeded", run.error
        rows = list(StepRun.objects.filter(run=run).order_by("position", "attempt"))
        assert [(r.step_id, r.attempt, r.status) for r in rows] == [
            (f"task-{n}", 1, "succeeded") for n in range(1, 5)
        ]
        agents = redis.Redis.from_url(url, decode_responses=True)
        assert int(agents.hget(contract.counters("wow-cache"), "processed") or 0) == 4
    finally:
        embedded.stop_redis(root)


def _worker_on(url: str, env: dict, name: str, log) -> subprocess.Popen:
    """A solo Celery worker on the broker at ``url``, once it answers a ping there."""
    from celery import Celery

    handle = open(log, "a")  # noqa: SIM115 (closed when the worker ends)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool", "solo",
         "--without-mingle", "--without-gossip", "--hostname", f"{name}@%h"],
        env=env, stdout=handle, stderr=subprocess.STDOUT,
    )  # fmt: skip
    probe = Celery(broker=url, set_as_current=False)  # the tests keep their own app
    deadline = time.monotonic() + 30

    def answers() -> bool:
        try:
            return bool(probe.control.ping(destination=[f"{name}@{os.uname().nodename}"],
                                           timeout=0.5))  # fmt: skip
        except (redis.exceptions.ConnectionError, OperationalError, OSError):  # Redis restarting
            return False

    while not answers():
        if time.monotonic() > deadline or worker.poll() is not None:
            worker.kill()
            pytest.fail(f"worker {name} did not come up:\n{Path(log).read_text()[-3000:]}")
    probe.close()
    return worker
