"""A real Celery worker SIGKILLed in the middle of an upgrade, under a load of tasks: a second
worker, handed the orphaned step by the sweep, carries the upgrade on from where it was. In the
end one version serves (never two left by accident), the routing is gone, and every task sent
was answered exactly once."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
from django.conf import settings

from agents.models import Agent
from agents.workflows.models import StepRun, WorkflowRun
from portal import work
from servicing.models import Upgrade, UpgradeStatus
from servicing.upgrades import requests, traffic
from tests.servicing.upgrade_kit import versions_running

pytestmark = pytest.mark.django_db(transaction=True)


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("strategy", "killed_at"),
    [("canary", "cutover"), ("rolling", "cutover"), ("blue-green", "verify")],
)
def test_a_worker_killed_mid_upgrade_leaves_one_version_serving_and_loses_no_task(
    strategy, killed_at, running, publish, load, operator_actor, test_database_url,
    redis_url, tmp_path, start_celery_worker,
) -> None:  # fmt: skip
    from portal.celery import app

    cache = running("wow-cache", replicas=2)
    publish("1.1.0")
    tasks = load(cache, f"kill-{strategy}", rate=80)
    app.control.purge()
    env = {
        **os.environ, "DATABASE_URL": test_database_url, "REDIS_URL": redis_url,
        "AGENT_REDIS_URL": settings.AGENT_REDIS_URL, "AGENT_ROOT": str(settings.AGENT_ROOT),
        "SERVICING_BACKUP_ROOT": str(settings.SERVICING_BACKUP_ROOT), "LOG_LEVEL": "WARNING",
    }  # fmt: skip
    first = start_celery_worker(env, f"sv-dur-a-{os.getpid()}", tmp_path / "a.log")
    gates = {"min_tasks": 150, "min_step_seconds": 2, "verify_seconds": 4}
    upgrade = requests.request_upgrade(
        operator_actor, cache, "1.1.0", strategy, steps=[50, 100], gate_settings=gates
    )
    _wait(
        lambda: StepRun.objects.filter(
            run_id=upgrade.run_id, step_id=killed_at, status="running"
        ).exists(),
        60,
        f"the {killed_at} step runs",
    )
    time.sleep(0.5)  # well inside the step: traffic is moving
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    second = start_celery_worker(env, f"sv-dur-b-{os.getpid()}", tmp_path / "b.log")
    try:
        _wait(lambda: bool(work.sweep(timedelta(0)).get("workflow steps"))
              or WorkflowRun.objects.get(pk=upgrade.run_id).is_finished,
              30, "the sweep hands the step out")  # fmt: skip
        _wait(lambda: WorkflowRun.objects.get(pk=upgrade.run_id).is_finished, 120,
              "the upgrade's run finishes")  # fmt: skip
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=15)
        app.control.purge()
    upgrade = requests.sync(Upgrade.objects.get(pk=upgrade.pk))
    answers = tasks.settle()

    cache = Agent.objects.get(pk=cache.pk)
    serving = set(versions_running(cache).values())
    assert len(serving) == 1, f"two versions left serving: {versions_running(cache)}"
    assert traffic.current_route(cache) is None
    assert not cache.pending_action
    if upgrade.status == UpgradeStatus.SUCCEEDED:
        assert serving == {"1.1.0"} and cache.version == "1.1.0"
    else:  # rolled back by itself: the old version serves
        assert upgrade.status == UpgradeStatus.ROLLED_BACK, upgrade.outcome
        assert serving == {"1.0.0"} and cache.version == "1.0.0"
    assert sorted(versions_running(cache)) == [0, 1]
    tasks.check_exactly_once(answers)
    assert all(a["status"] == "succeeded" for a in answers)
