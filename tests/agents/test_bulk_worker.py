"""A bulk operation survives its Celery worker being killed: another worker picks it up where
it stopped, finishes it, and nothing is done twice. Real worker processes, real agents."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from agents import bulk
from agents.models import Agent, AgentTransition, BulkItem, BulkOperation, Operation, State
from portal.actors import Actor

SLUGS = [
    "wow-event",
    "wow-cache",
    "wow-security",
    "wow-communication",
    "wow-memory",
    "wow-notification",
    "wow-integration",
]

pytestmark = pytest.mark.django_db(transaction=True)


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_killed_worker_leaves_the_job_to_the_next_one_which_finishes_it_once(
    seeded, agent_root, test_database_url, redis_url, tmp_path, start_celery_worker
) -> None:
    from portal.celery import app

    app.control.purge()
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url,
        "REDIS_URL": redis_url,
        "AGENT_REDIS_URL": redis_url,
        "AGENT_ROOT": str(agent_root),
        "LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "workers.log"
    first = start_celery_worker(env, f"bulk-first-{os.getpid()}", log)
    second = None
    try:
        operation = bulk.create_bulk_operation(
            "deploy_and_start", Actor.command("test"), targets=SLUGS, parallelism=2
        )
        items = operation.items.all()
        # Kill it in the middle: some agents up, some not begun.
        _wait(
            lambda: items.filter(status=BulkItem.Status.SUCCEEDED).count() >= 2,
            60,
            "two agents to come up",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        operation.refresh_from_db()
        assert operation.status == BulkOperation.Status.RUNNING
        unfinished = items.filter(status__in=BulkItem.ACTIVE).count()
        assert unfinished >= 1, "the worker finished everything before it was killed"

        second = start_celery_worker(env, f"bulk-second-{os.getpid()}", log)
        _wait(
            lambda: BulkOperation.objects.get(pk=operation.pk).is_finished,
            90,
            f"the second worker to finish it:\n{log.read_text()[-3000:]}",
        )
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=15)
        app.control.purge()

    operation.refresh_from_db()
    assert operation.status == BulkOperation.Status.SUCCEEDED, bulk.bulk_summary(operation)
    assert operation.runs == 2
    assert Agent.objects.filter(slug__in=SLUGS, state=State.RUNNING).count() == len(SLUGS)
    # No step was carried out twice, and none was left half done.
    for slug in SLUGS:
        history = [
            t.action for t in AgentTransition.objects.filter(agent__slug=slug).order_by("at", "id")
        ]
        assert history == ["provision", "deploy", "start"], (slug, history)
    assert not Operation.objects.filter(
        status__in=[Operation.Status.PENDING, Operation.Status.RUNNING]
    ).exists()
    assert Operation.objects.count() == 3 * len(SLUGS)
    # One agentd per agent: the interrupted start did not launch a second one.
    agentd = [
        process.info["cmdline"]
        for process in psutil.process_iter(["cmdline"])
        if "agents.agentd" in (process.info["cmdline"] or [])
        and any(str(agent_root) in part for part in process.info["cmdline"])
    ]
    slugs = sorted(argv[argv.index("--slug") + 1] for argv in agentd)
    assert slugs == sorted(SLUGS)
