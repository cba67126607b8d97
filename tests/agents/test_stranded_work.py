"""Accepted work is never stranded (issue 13, items 2 and 3).

- A task queue that cannot take the task: the request answers 503 and nothing stays pending
  (before, the operation and the agent's pending marker were committed and every later request
  answered 409 "already restarting" for good).
- A task that dies on a database error, or a worker SIGKILLed in the middle of a single action:
  the sweep (beat, and a worker starting) hands the operation out again and it finishes, once,
  within seconds (before, it hung until Redis redelivered it after 16 minutes, or for good).

Real Daphne, real Celery workers, real Redis and PostgreSQL, real agent processes.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
import requests
from django.db import connection, connections

from agents import bulk, services
from agents.models import (
    Agent,
    AgentError,
    AgentTransition,
    BulkOperation,
    Operation,
    RecoveryAttempt,
    State,
)
from portal import embedded, work
from portal import services as portal_services
from portal.actors import Actor
from portal.models import AuditEntry

ROOT = Path(__file__).resolve().parents[2]
RESOLVED_WITHIN = 30.0

pytestmark = pytest.mark.django_db(transaction=True)


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


# --- the task queue cannot take the task ---------------------------------------------------------


def test_an_action_the_queue_cannot_take_answers_503_and_leaves_nothing_pending(
    portal_on_own_redis, operator
) -> None:
    with portal_on_own_redis() as (base, redis_root):
        _refused_while_redis_is_down_then_accepted(base, redis_root, operator)


def _refused_while_redis_is_down_then_accepted(base: str, redis_root, operator) -> None:
    services.seed_platform_agents(Actor.command("test"))
    _, token = portal_services.create_api_token(operator, Actor.command("test"), name="t")
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{base}/api/platform/agents/wow-cache/provision"

    embedded.stop_redis(redis_root)
    for _ in range(2):  # the second answer is the same: nothing was left "provisioning"
        response = requests.post(url, headers=headers, json={"reason": "try"}, timeout=60)
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["code"] == "unavailable"
        assert "task queue" in body["detail"] and "nothing was changed" in body["detail"]
        agent = Agent.objects.get(slug="wow-cache")
        assert agent.pending_action == ""
        assert agent.state == State.DRAFT

    operations = Operation.objects.filter(agent__slug="wow-cache")
    assert [(o.status, o.error_reason) for o in operations] == [("failed", "unavailable")] * 2
    refused = AuditEntry.objects.filter(
        action="agent.provision", target="wow-cache", outcome=AuditEntry.Outcome.REFUSED
    )
    assert refused.count() == 2

    # A bulk job the queue cannot take: 503, the job cancelled, its agents free again.
    response = requests.post(
        f"{base}/api/platform/bulk",
        headers=headers,
        json={"action": "deploy_and_start", "targets": ["wow-cache", "wow-event"]},
        timeout=60,
    )
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "unavailable"
    job = BulkOperation.objects.get()
    assert job.status == BulkOperation.Status.CANCELLED
    assert {item.status for item in job.items.all()} == {"skipped"}

    # A one-click recovery the queue cannot take: 503, the error open again, not "recovering".
    error = AgentError.objects.create(
        agent=Agent.objects.get(slug="wow-event"), source=AgentError.Source.ACTION,
        summary="provision failed", classification="transient", rule="test", root_cause="test",
        suggestions=[{"action": "restart", "label": "Restart"}], signature="test",
    )  # fmt: skip
    response = requests.post(
        f"{base}/api/platform/errors/{error.pk}/recover",
        headers=headers,
        json={"action": "restart"},
        timeout=60,
    )
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "unavailable"
    error.refresh_from_db()
    assert error.status == AgentError.Status.OPEN
    attempt = RecoveryAttempt.objects.get(error=error)
    assert attempt.outcome == RecoveryAttempt.Outcome.FAILED and "task queue" in attempt.detail

    # With Redis back the same requests are accepted.
    embedded.start_redis(redis_root, persistent=False)
    response = requests.post(url, headers=headers, json={}, timeout=60)
    assert response.status_code == 202, response.text
    response = requests.post(
        f"{base}/api/platform/bulk",
        headers=headers,
        json={"action": "deploy_and_start", "targets": ["wow-event"]},
        timeout=60,
    )
    assert response.status_code == 202, response.text


# --- workers that die -----------------------------------------------------------------------------


def _worker_env(test_database_url, redis_url, agent_root) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": test_database_url,
        "REDIS_URL": redis_url,
        "AGENT_REDIS_URL": redis_url,
        "AGENT_ROOT": str(agent_root),
        "AGENT_READY_TIMEOUT_SECONDS": "15",
        "LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def workers(test_database_url, redis_url, agent_root, tmp_path, start_celery_worker):
    """Starts real Celery workers on the test database; stops them and empties the queue after."""
    from portal.celery import app

    app.control.purge()
    started: list[subprocess.Popen] = []
    log = tmp_path / "workers.log"
    env = _worker_env(test_database_url, redis_url, agent_root)

    def start(name: str) -> subprocess.Popen:
        worker = start_celery_worker(env, f"{name}-{os.getpid()}", log)
        started.append(worker)
        return worker

    start.log = log
    yield start
    for worker in started:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=15)
    app.control.purge()


def _agentd_slugs(agent_root) -> list[str]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        argv = process.info["cmdline"] or []
        if "agents.agentd" in argv and any(str(agent_root) in part for part in argv):
            found.append(argv[argv.index("--slug") + 1])
    return sorted(found)


def test_a_worker_killed_during_a_restart_leaves_it_to_the_sweep_which_finishes_it(
    seeded, bring_up, workers, agent_root
) -> None:
    agent = bring_up(seeded["wow-event"])
    first = workers("single-first")
    operation = services.request_action(agent, "restart", Actor.command("test"))

    _wait(
        lambda: Operation.objects.get(pk=operation.pk).status == Operation.Status.RUNNING,
        30,
        "the worker to begin the restart",
    )
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    killed_at = time.monotonic()
    operation.refresh_from_db()
    assert operation.status == Operation.Status.RUNNING  # stranded, as a real kill leaves it

    # A worker coming up (as `manage.py up` restarts a dead one) sweeps at once.
    workers("single-second")
    _wait(
        lambda: Operation.objects.get(pk=operation.pk).is_finished,
        RESOLVED_WITHIN,
        f"the sweep to finish the restart:\n{workers.log.read_text()[-3000:]}",
    )
    assert time.monotonic() - killed_at < RESOLVED_WITHIN
    operation.refresh_from_db()
    assert operation.status == Operation.Status.SUCCEEDED, operation.error
    assert operation.attempts == 2
    agent.refresh_from_db()
    assert (agent.state, agent.pending_action) == (State.RUNNING, "")
    # Restarted once, by one agentd process.
    restarts = AgentTransition.objects.filter(agent=agent, action="restart")
    assert restarts.count() == 1
    assert _agentd_slugs(agent_root) == ["wow-event"]


FAIL_ON_SUCCESS = """
CREATE FUNCTION test_refuse_success() RETURNS trigger AS $$
BEGIN
    IF NEW.status = 'succeeded' THEN
        RAISE EXCEPTION 'simulated outage: the database refused the write';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER test_refuse_success BEFORE UPDATE ON agents_operation
    FOR EACH ROW EXECUTE FUNCTION test_refuse_success();
"""
NO_TRIGGER = """
DROP TRIGGER IF EXISTS test_refuse_success ON agents_operation;
DROP FUNCTION IF EXISTS test_refuse_success();
"""


def test_a_task_that_dies_on_a_database_error_is_handed_out_again_and_finishes_once(
    seeded, workers, agent_root
) -> None:
    agent = seeded["wow-cache"]
    worker = workers("db-error")
    with connection.cursor() as cursor:
        cursor.execute(FAIL_ON_SUCCESS)
    try:
        operation = services.request_action(agent, "provision", Actor.command("test"))
        # The worker carries it out, then PostgreSQL refuses to record the outcome: the task
        # ends with an exception and the operation is left running with nobody behind it.
        _wait(
            lambda: (
                Operation.objects.get(pk=operation.pk).status == Operation.Status.RUNNING
                and not work.has_runner(services.OPERATION_LEASE, str(operation.pk))
            ),
            30,
            f"the task to die on the database error:\n{workers.log.read_text()[-3000:]}",
        )
        operation.refresh_from_db()
        assert operation.attempts == 1
        assert Agent.objects.get(pk=agent.pk).pending_action == "provision"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(NO_TRIGGER)

    # The database is well again; beat's next sweep hands it out (called here as beat would).
    started = time.monotonic()
    assert work.sweep() == {"operations": [str(operation.pk)]}
    _wait(
        lambda: Operation.objects.get(pk=operation.pk).is_finished,
        RESOLVED_WITHIN,
        f"the worker to finish it:\n{workers.log.read_text()[-3000:]}",
    )
    assert time.monotonic() - started < RESOLVED_WITHIN
    operation.refresh_from_db()
    assert (operation.status, operation.attempts) == (Operation.Status.SUCCEEDED, 2)
    agent.refresh_from_db()
    assert (agent.state, agent.pending_action) == (State.PROVISIONED, "")
    assert AgentTransition.objects.filter(agent=agent, action="provision").count() == 1
    assert worker.poll() is None


# --- the sweep's rules ---------------------------------------------------------------------------


def _hold_lease(kind: int, key: object, taken: threading.Event, release: threading.Event) -> None:
    try:
        with work.lease(kind, key):
            taken.set()
            release.wait(30)
    finally:
        connections.close_all()


def test_the_sweep_leaves_alone_what_a_live_runner_holds_and_what_was_sent_a_moment_ago(
    seeded,
) -> None:
    from portal.celery import app

    app.control.purge()
    actor = Actor.command("test")
    waiting = services.request_action(seeded["wow-cache"], "provision", actor, enqueue=False)
    held = services.request_action(seeded["wow-event"], "provision", actor, enqueue=False)

    # Just sent (its task may be queued behind others): not yet.
    assert work.sweep(timedelta(seconds=60)) == {}

    taken, release = threading.Event(), threading.Event()
    runner = threading.Thread(
        target=_hold_lease, args=(services.OPERATION_LEASE, str(held.pk), taken, release)
    )
    runner.start()
    try:
        assert taken.wait(10)
        Operation.objects.filter(pk=held.pk).update(status=Operation.Status.RUNNING)
        # The running one has a live runner (it holds the lease): left alone.
        assert work.sweep(timedelta(0)) == {"operations": [str(waiting.pk)]}
    finally:
        release.set()
        runner.join(10)
    # Its runner gone, it is handed out at once, whatever its age; the other was sent just now.
    assert work.sweep(timedelta(seconds=60)) == {"operations": [str(held.pk)]}
    app.control.purge()


def test_an_operation_whose_worker_died_three_times_fails_with_the_reason(seeded) -> None:
    operation = services.request_action(
        seeded["wow-cache"], "provision", Actor.command("test"), enqueue=False
    )
    Operation.objects.filter(pk=operation.pk).update(
        status=Operation.Status.RUNNING, attempts=services.MAX_ATTEMPTS
    )
    operation = services.run_operation(str(operation.pk))
    assert operation.status == Operation.Status.FAILED
    assert operation.error_reason == "worker_lost"
    assert "stopped 3 times" in operation.error
    agent = Agent.objects.get(slug="wow-cache")
    assert (agent.state, agent.pending_action) == (State.DRAFT, "")


def test_bulk_jobs_are_swept_with_the_rest(seeded) -> None:
    from portal.celery import app

    app.control.purge()
    job = bulk.create_bulk_operation(
        "deploy_and_start", Actor.command("test"), targets=["wow-cache"], enqueue=False
    )
    BulkOperation.objects.filter(pk=job.pk).update(requested_at=job.requested_at - timedelta(60))
    assert work.sweep() == {"bulk operations": [job.pk]}
    app.control.purge()


def test_the_sweep_command_says_what_it_handed_out_and_audits_it(seeded) -> None:
    from django.core.management import CommandError, call_command

    from portal.celery import app

    app.control.purge()
    out = io.StringIO()
    call_command("sweep", stdout=out)
    assert out.getvalue().startswith("Nothing stranded")

    operation = services.request_action(
        seeded["wow-cache"], "provision", Actor.command("test"), enqueue=False
    )
    out = io.StringIO()
    call_command("sweep", "--older-than", "0", stdout=out)
    assert out.getvalue() == f"operations: handed 1 out again: {operation.pk}\n"
    entry = AuditEntry.objects.get(action="work.sweep")
    assert entry.detail["operations"] == [str(operation.pk)]
    with pytest.raises(CommandError, match="out of range"):
        call_command("sweep", "--older-than", "-5")
    app.control.purge()
