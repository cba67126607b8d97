"""The monitor with real agent processes: crash detection, automatic restart with backoff,
reconciliation of vanished processes, health probes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request

import pytest
from django.db import connection

from agents import services
from agents.models import Agent, Health, State
from agents.monitor import Monitor
from agents.runtimes import RuntimeEvent
from portal.actors import Actor


def wait_for(predicate, timeout: float = 15, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def state_of(slug: str) -> str:
    return Agent.objects.values_list("state", flat=True).get(slug=slug)


@pytest.fixture
def monitor(redis_client):
    """A monitor running in a thread, as ``manage.py monitor`` runs it."""
    instance = Monitor(probe_interval=1)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    time.sleep(0.3)  # its event reader is listening
    yield instance
    instance.stop()
    thread.join(timeout=10)


@pytest.fixture
def cache(transactional_db, bring_up):
    services.seed_platform_agents(Actor.command("test"))
    return bring_up(Agent.objects.get(slug="wow-cache"))


def patch_config(agent: Agent, change: dict) -> None:
    port = agent.runtime_details["ports"][0]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/config", data=json.dumps(change).encode(), method="PATCH",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=3) as response:
        assert response.status == 200


def test_restart_delay_is_exponential_and_capped(settings) -> None:
    settings.AGENT_RESTART_BACKOFF_SECONDS = 0.5
    settings.AGENT_RESTART_BACKOFF_MAX_SECONDS = 5
    assert [services.restart_delay(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 5, 5]


def test_sigkill_makes_agent_errored_with_exit_details_then_running_again(cache, monitor) -> None:
    old_pid = cache.runtime_details["pids"][0]
    os.kill(old_pid, signal.SIGKILL)

    failed = wait_for(lambda: cache.transitions.filter(action="fail").first())
    assert failed.from_state == State.RUNNING and failed.to_state == State.ERRORED
    assert failed.details["signal"] == signal.SIGKILL
    assert failed.actor == "system:monitor"
    assert failed.reason == "process killed by SIGKILL (exit code 137)"

    wait_for(
        lambda: (
            state_of("wow-cache") == State.RUNNING
            and cache.transitions.filter(action="restart").exists()
        )
    )
    cache.refresh_from_db()
    restart = cache.transitions.get(action="restart")
    assert (
        restart.actor == "system:monitor"
        and restart.reason == "automatic restart #1 (policy on-failure)"
    )
    new_pid = cache.runtime_details["pids"][0]
    assert new_pid != old_pid
    with urllib.request.urlopen(
        f"http://127.0.0.1:{cache.runtime_details['ports'][0]}/healthz", timeout=3
    ) as r:
        assert r.status == 200
    assert cache.restart_attempts == 1


def test_a_stop_the_portal_asked_for_is_not_a_crash(cache, monitor, act) -> None:
    assert act(cache, "stop").status == "succeeded"
    time.sleep(1.0)  # the exit event has been read by now
    cache.refresh_from_db()
    assert cache.state == State.STOPPED
    assert not cache.transitions.filter(action="fail").exists()


def test_automatic_restart_gives_up_after_the_limit_and_stays_errored(
    transactional_db, bring_up, monitor, settings
) -> None:
    settings.AGENT_RESTART_MAX_ATTEMPTS = 2
    settings.AGENT_RESTART_BACKOFF_SECONDS = 0.2
    services.seed_platform_agents(Actor.command("test"))
    cache = Agent.objects.get(slug="wow-cache")
    cache.config = {"faults": {"crash_after_seconds": 1, "crash_exit_code": 7}}
    cache.save()
    bring_up(cache)

    wait_for(lambda: Agent.objects.get(slug="wow-cache").restart_gave_up, timeout=30)
    cache.refresh_from_db()
    assert cache.state == State.ERRORED
    assert cache.next_restart_at is None
    fails = list(cache.transitions.filter(action="fail").values_list("reason", flat=True))
    assert fails and all(reason == "process exited with code 7" for reason in fails)
    assert cache.transitions.filter(action="restart", actor="system:monitor").count() == 2


def test_manual_restart_resets_the_automatic_restart_count(
    transactional_db, bring_up, act, settings
) -> None:
    services.seed_platform_agents(Actor.command("test"))
    cache = bring_up(Agent.objects.get(slug="wow-cache"))
    os.kill(cache.runtime_details["pids"][0], signal.SIGKILL)
    wait_for(lambda: Monitor().reconcile() or state_of("wow-cache") == State.ERRORED)
    cache.refresh_from_db()
    assert cache.restart_attempts == 1 and cache.next_restart_at is not None
    assert act(cache, "restart").status == "succeeded"
    assert (cache.restart_attempts, cache.next_restart_at) == (0, None)


def test_reconciliation_notices_a_process_that_vanished_without_an_event(cache) -> None:
    shim_pid = cache.runtime_details["replicas"][0]["shim_pid"]
    os.kill(shim_pid, signal.SIGKILL)  # no shim, no exit event
    os.kill(cache.runtime_details["pids"][0], signal.SIGKILL)
    wait_for(lambda: Monitor().reconcile() or state_of("wow-cache") == State.ERRORED)
    row = cache.transitions.get(action="fail")
    assert row.actor == "system:reconciliation"
    assert row.details["found_by"] == "reconciliation"


def test_late_exit_of_an_old_process_does_not_fail_the_new_one(cache) -> None:
    stale = RuntimeEvent(kind="exited", slug="wow-cache", replica=0, at=time.time(), exit_code=0,
                         details={"pid": 1})  # fmt: skip
    Monitor().handle_event(stale)
    assert state_of("wow-cache") == State.RUNNING


def test_health_probes_report_healthy_degraded_and_unhealthy(cache) -> None:
    monitor = Monitor()
    monitor.probe_all()
    cache.refresh_from_db()
    assert cache.health == Health.HEALTHY and cache.last_healthy_at is not None

    patch_config(cache, {"faults": {"refuse_readiness": True}})
    monitor.probe_all()
    cache.refresh_from_db()
    assert cache.health == Health.DEGRADED
    assert cache.health_detail == "replica 0 not ready"

    patch_config(cache, {"faults": {"refuse_readiness": False, "unhealthy": True}})
    monitor.probe_all()
    cache.refresh_from_db()
    assert cache.health == Health.UNHEALTHY
    assert cache.health_detail == "replica 0 not answering /healthz"


def test_monitor_command_once_probes_and_reconciles(cache) -> None:
    from django.core.management import call_command

    call_command("monitor", "--once")
    assert Agent.objects.get(slug="wow-cache").health == Health.HEALTHY
    connection.close()
