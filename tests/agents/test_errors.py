"""Errors an operator can act on, with real agents: fault injection on the local runtime (and on
Docker where an engine answers), what the portal records (class, rule, root cause, evidence), the
one-click recoveries verified afterwards, automatic recovery and its kill switch, grouping,
health, permissions and refusals."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from django.core.exceptions import PermissionDenied
from django.db import transaction

from agents import errors, services
from agents.errors.rules import RECOVERIES
from agents.models import (
    Agent,
    AgentError,
    AgentTransition,
    Health,
    Operation,
    RecoveryAttempt,
    RestartPolicy,
    State,
)
from agents.monitor import Monitor
from portal.actors import Actor
from portal.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)

COMMAND = Actor.command("test")
MEBIBYTE = 1024 * 1024


@pytest.fixture(autouse=True)
def fast(agent_root, settings):
    """Short waits: a start that is not ready in 5 s fails; a recovery counts once the agent has
    stayed healthy for 1 s, within 10 s."""
    settings.AGENT_READY_TIMEOUT_SECONDS = 5
    settings.AGENT_RECOVERY_VERIFY_SECONDS = 10
    settings.AGENT_RECOVERY_SETTLE_SECONDS = 1
    settings.AGENT_STOP_GRACE_SECONDS = 3
    settings.AGENT_RESTART_BACKOFF_SECONDS = 0.2


# --- helpers -------------------------------------------------------------------------------------


def wait_for(predicate, timeout: float = 15, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def fresh(agent: Agent) -> Agent:
    """The agent as stored now. (Not refresh_from_db: django-fsm lifts the state field's
    protection class-wide while refreshing, which races with the monitor's thread.)"""
    return Agent.objects.get(pk=agent.pk)


def state_of(agent: Agent) -> str:
    return Agent.objects.values_list("state", flat=True).get(pk=agent.pk)


def notice_crash(agent: Agent) -> Agent:
    """Let the monitor's reconciliation find the dead process, as its probe loop would."""
    monitor = Monitor()
    wait_for(lambda: monitor.reconcile() or state_of(agent) == State.ERRORED)
    agent = fresh(agent)
    return agent


def kill_agentd(agent: Agent) -> int:
    pid = agent.runtime_details["pids"][0]
    os.kill(pid, signal.SIGKILL)
    return pid


def patch_live_config(agent: Agent, change: dict) -> None:
    port = agent.runtime_details["ports"][0]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/config", data=json.dumps(change).encode(), method="PATCH",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=3):
        pass


def change_config(agent: Agent, config: dict) -> Agent:
    """An Admin's edit in the admin: the config is saved and the previous one kept."""
    agent = fresh(agent)
    agent.config = config
    return services.update_agent_settings(agent, ["config"], COMMAND)


def one_click(error: AgentError) -> list[str]:
    return [s["action"] for s in error.suggestions if s.get("action")]


def recover(error: AgentError, action: str, actor: Actor) -> RecoveryAttempt:
    attempt = errors.request_recovery(error, action, actor, enqueue=False)
    return errors.run_recovery(attempt.pk)


def assert_fixed(
    error: AgentError, attempt: RecoveryAttempt, actor: Actor, lifecycle: list[tuple[str, str]]
) -> Agent:
    """The recovery worked, was verified, resolved the error, and left its trail: the audit
    (requested and completed) and the lifecycle actions ``(slug, action)`` taken by ``actor``."""
    assert attempt.outcome == RecoveryAttempt.Outcome.FIXED, attempt.detail
    assert attempt.detail == "verified: RUNNING and healthy for 1 s"
    assert attempt.actor == actor.label and attempt.finished_at is not None
    error.refresh_from_db()
    assert error.status == AgentError.Status.RESOLVED
    assert error.resolved_by == actor.label and error.resolved_at is not None
    assert error.resolution == f"{RECOVERIES[attempt.action]}: {attempt.detail}"
    assert error.retry_count == 1
    agent = Agent.objects.get(pk=error.agent_id)
    assert agent.state == State.RUNNING and not agent.pending_action
    assert agent.health == Health.HEALTHY
    with urllib.request.urlopen(
        f"http://127.0.0.1:{agent.runtime_details['ports'][0]}/healthz", timeout=3
    ) as answer:
        assert answer.status == 200
    audit = AuditEntry.objects.filter(action="agent.recover", target=agent.slug, actor=actor.label)
    phases = {entry.detail.get("phase"): entry for entry in audit}
    assert set(phases) == {"requested", "completed"}
    assert phases["completed"].outcome == AuditEntry.Outcome.SUCCESS
    assert phases["completed"].detail["result"] == "fixed"
    taken = [
        (row.agent.slug, row.action)
        for row in AgentTransition.objects.filter(actor=actor.label, at__gte=error.occurred_at)
        .select_related("agent")
        .order_by("at", "id")
    ]
    assert taken == lifecycle
    return agent


# --- a. a crash: SIGKILL from outside ------------------------------------------------------------


def test_a_killed_agent_is_recorded_as_transient_with_its_log_lines(seeded, bring_up) -> None:
    cache = bring_up(seeded["wow-cache"])
    kill_agentd(cache)
    cache = notice_crash(cache)

    error = AgentError.objects.get(agent=cache)
    assert (error.source, error.classification, error.rule) == ("crash", "transient", "killed")
    assert error.summary == "process killed by SIGKILL (exit code 137)"
    assert error.root_cause.startswith("WowCache was killed by SIGKILL (exit code 137)")
    assert error.details["signal"] == signal.SIGKILL
    assert error.evidence and any('"slug": "wow-cache"' in line for line in error.evidence)
    assert one_click(error) == ["restart"]
    assert error.status == AgentError.Status.OPEN and error.occurrences == 1
    # A transient crash: the monitor plans an automatic restart.
    assert cache.next_restart_at is not None and not cache.restart_gave_up


def test_a_killed_agent_is_recovered_by_one_click_restart(seeded, bring_up, operator_actor) -> None:
    cache = bring_up(seeded["wow-cache"])
    old_pid = kill_agentd(cache)
    notice_crash(cache)
    error = AgentError.objects.get(agent=cache)

    attempt = recover(error, "restart", operator_actor)

    cache = assert_fixed(error, attempt, operator_actor, [("wow-cache", "restart")])
    assert cache.runtime_details["pids"][0] != old_pid
    # Running the finished recovery again does nothing.
    assert errors.run_recovery(attempt.pk).outcome == RecoveryAttempt.Outcome.FIXED
    assert AuditEntry.objects.filter(action="agent.recover").count() == 2


# --- b. a port conflict --------------------------------------------------------------------------


@contextlib.contextmanager
def holding(port: int) -> Iterator[socket.socket]:
    """Another program listening on ``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        yield holder


def stopped_cache(seeded, bring_up, act) -> tuple[Agent, int]:
    cache = bring_up(seeded["wow-cache"])
    assert act(cache, "stop").status == Operation.Status.SUCCEEDED
    return cache, cache.runtime_details["ports"][0]


def test_a_held_port_fails_the_start_as_a_resource_error_naming_port_and_holder(
    seeded, bring_up, act
) -> None:
    cache, port = stopped_cache(seeded, bring_up, act)
    with holding(port):
        operation = act(cache, "start")
    assert operation.status == Operation.Status.FAILED
    assert operation.error_reason == "port_in_use"

    error = AgentError.objects.get(agent=cache)
    assert (error.source, error.classification, error.rule) == ("action", "resource", "port_in_use")
    assert error.operation_id == operation.pk
    assert f"Port {port} is held by " in error.root_cause
    assert f"(pid {os.getpid()})" in error.root_cause  # this test's process holds it
    assert error.details["port"] == port and error.details["reason"] == "port_in_use"
    assert error.evidence  # the agent's log from before the failed start
    assert one_click(error) == ["pick_new_port", "restart"]
    assert error.pattern == f"port {port} in use"


def test_pick_new_port_moves_the_agent_to_a_free_port_and_leaves_the_holder_alone(
    seeded, bring_up, act, operator_actor
) -> None:
    cache, port = stopped_cache(seeded, bring_up, act)
    with holding(port) as holder:
        act(cache, "start")
        error = AgentError.objects.get(agent=cache)

        attempt = recover(error, "pick_new_port", operator_actor)

        cache = assert_fixed(error, attempt, operator_actor, [("wow-cache", "start")])
        new_port = cache.runtime_details["ports"][0]
        assert new_port != port
        assert holder.getsockname() == ("127.0.0.1", port)  # untouched, still listening
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    moved = AuditEntry.objects.get(action="agent.ports", target="wow-cache")
    assert moved.actor == operator_actor.label
    assert moved.detail["ports"] == [new_port] and moved.detail["replaced"] == [port]


def test_the_same_failure_twice_while_open_is_counted_on_one_error(seeded, bring_up, act) -> None:
    cache, port = stopped_cache(seeded, bring_up, act)
    with holding(port):
        first = act(cache, "start")
        second = act(cache, "start")
    error = AgentError.objects.get(agent=cache)
    assert error.occurrences == 2
    assert error.last_seen_at > error.occurred_at
    assert error.operation_id == second.pk != first.pk


# --- c. a dependency down ------------------------------------------------------------------------


def memory_with_cache_down(seeded, act) -> tuple[Agent, Agent]:
    """WowMemory running on WowCache and WowEvent; WowCache (restart policy never) killed,
    then WowMemory killed too."""
    cache, memory = seeded["wow-cache"], seeded["wow-memory"]
    Agent.objects.filter(pk=cache.pk).update(restart_policy=RestartPolicy.NEVER)
    for action, options in (
        ("provision", {}),
        ("deploy", {}),
        ("start", {"with_dependencies": True}),
    ):
        operation = act(memory, action, **options)
        assert operation.status == Operation.Status.SUCCEEDED, operation.error
    kill_agentd(fresh(cache))
    cache = notice_crash(cache)
    assert cache.next_restart_at is None  # policy never: it stays down
    kill_agentd(fresh(memory))
    memory = notice_crash(memory)
    return cache, memory


def test_a_crash_while_a_dependency_is_down_is_a_dependency_error(seeded, act) -> None:
    cache, memory = memory_with_cache_down(seeded, act)
    error = AgentError.objects.get(agent=memory)
    assert (error.classification, error.rule) == ("dependency", "dependency_down")
    assert error.root_cause == "WowMemory depends on WowCache (ERRORED), which is not running."
    assert error.details["signal"] == signal.SIGKILL
    assert error.evidence
    assert one_click(error) == ["start_dependencies", "restart_with_dependencies"]
    assert error.pattern == "dependency down: WowCache"
    # WowCache's own crash is its own error, a transient one.
    assert AgentError.objects.get(agent=cache).rule == "killed"


def test_start_dependencies_brings_the_dependency_up_and_the_agent_running(
    seeded, act, operator_actor
) -> None:
    cache, memory = memory_with_cache_down(seeded, act)
    error = AgentError.objects.get(agent=memory)

    attempt = recover(error, "start_dependencies", operator_actor)

    assert_fixed(
        error, attempt, operator_actor, [("wow-cache", "restart"), ("wow-memory", "restart")]
    )
    assert state_of(cache) == State.RUNNING
    assert state_of(seeded["wow-event"]) == State.RUNNING


def test_restart_with_dependencies_brings_the_dependency_up_and_restarts_the_agent(
    seeded, act, operator_actor
) -> None:
    cache, memory = memory_with_cache_down(seeded, act)
    error = AgentError.objects.get(agent=memory)

    attempt = recover(error, "restart_with_dependencies", operator_actor)

    assert_fixed(
        error, attempt, operator_actor, [("wow-cache", "restart"), ("wow-memory", "restart")]
    )
    assert state_of(cache) == State.RUNNING


# --- d. a bad config value -----------------------------------------------------------------------


def cache_with_bad_config(seeded, bring_up, act) -> tuple[Agent, Operation]:
    cache = bring_up(seeded["wow-cache"])
    change_config(cache, {"task_max_failures": -1})
    operation = act(cache, "restart")
    return cache, operation


def test_a_bad_config_value_fails_the_restart_as_a_configuration_error(
    seeded, bring_up, act
) -> None:
    cache, operation = cache_with_bad_config(seeded, bring_up, act)
    assert operation.status == Operation.Status.FAILED
    assert operation.error_reason == "bad_config"
    assert cache.state == State.ERRORED

    error = AgentError.objects.get(agent=cache)
    assert (error.source, error.classification, error.rule) == (
        "action",
        "configuration",
        "bad_config",
    )
    assert "task_max_failures must be an integer from 1 to 1000, got -1" in error.root_cause
    assert error.root_cause.endswith("Its config was changed less than a minute ago.")
    assert any(
        "agentd: bad configuration: task_max_failures must be an integer" in line
        for line in error.evidence
    ), error.evidence
    assert error.details["exit_code"] == 2
    assert one_click(error) == ["rollback_config"]


def test_the_bad_config_root_cause_says_what_agentd_said_once(seeded, bring_up, act) -> None:
    cache, _ = cache_with_bad_config(seeded, bring_up, act)
    error = AgentError.objects.get(agent=cache)
    assert error.root_cause.count("refused its configuration") == 1, error.root_cause
    assert "task_max_failures must be an integer from 1 to 1000, got -1" in error.root_cause
    assert "start it again" not in error.root_cause  # advice belongs in the suggestions


def test_roll_back_config_fixes_a_bad_config_value(seeded, bring_up, act, operator_actor) -> None:
    cache, _ = cache_with_bad_config(seeded, bring_up, act)
    error = AgentError.objects.get(agent=cache)

    attempt = recover(error, "rollback_config", operator_actor)

    cache = assert_fixed(error, attempt, operator_actor, [("wow-cache", "restart")])
    assert cache.config == {}
    assert cache.previous_config is None  # the bad config is not offered back
    rollback = AuditEntry.objects.get(action="agent.config.rollback", target="wow-cache")
    assert rollback.actor == operator_actor.label
    assert rollback.detail["replaced"] == {"task_max_failures": -1}


# --- verify after fix: a fix that lasts a moment -------------------------------------------------


def test_a_restart_that_crashes_again_a_moment_later_did_not_help(
    seeded, bring_up, operator_actor, settings
) -> None:
    settings.AGENT_RECOVERY_SETTLE_SECONDS = 3
    settings.AGENT_RECOVERY_VERIFY_SECONDS = 4
    cache = seeded["wow-cache"]
    Agent.objects.filter(pk=cache.pk).update(
        config={"faults": {"crash_after_seconds": 2, "crash_exit_code": 7}}
    )
    bring_up(fresh(cache))
    cache = notice_crash(cache)
    error = AgentError.objects.get(agent=cache)
    assert (error.rule, error.classification) == ("exited", "transient")

    attempt = recover(error, "restart", operator_actor)

    # Ready and healthy after the restart, and exited with code 7 two seconds later.
    assert attempt.outcome == RecoveryAttempt.Outcome.DID_NOT_HELP, attempt.detail
    assert attempt.detail.startswith("not RUNNING and healthy within 4 s: RUNNING but unhealthy")
    error.refresh_from_db()
    assert (error.status, error.retry_count) == (AgentError.Status.OPEN, 1)


# --- e. failing readiness after a config change --------------------------------------------------


def cache_refusing_readiness(seeded, bring_up, act, settings) -> tuple[Agent, Operation]:
    """Running, then its config changed to refuse readiness and restarted: not ready in 3 s."""
    cache = bring_up(seeded["wow-cache"])
    settings.AGENT_READY_TIMEOUT_SECONDS = 3
    change_config(cache, {"faults": {"refuse_readiness": True}})
    return cache, act(cache, "restart")


def test_not_ready_after_a_config_change_is_a_configuration_error(
    seeded, bring_up, act, settings
) -> None:
    cache, operation = cache_refusing_readiness(seeded, bring_up, act, settings)
    assert operation.status == Operation.Status.FAILED
    assert operation.error_reason == "not_ready"

    error = AgentError.objects.get(agent=cache)
    assert (error.classification, error.rule) == ("configuration", "not_ready_after_config_change")
    assert error.root_cause == (
        "WowCache does not become ready since its config changed: injected fault: "
        "faults.refuse_readiness. Its config was changed less than a minute ago."
    )
    assert error.evidence
    assert one_click(error) == ["rollback_config", "restart"]


def test_roll_back_config_fixes_an_agent_that_never_became_ready(
    seeded, bring_up, act, operator_actor, settings
) -> None:
    cache, _ = cache_refusing_readiness(seeded, bring_up, act, settings)
    error = AgentError.objects.get(agent=cache)

    attempt = recover(error, "rollback_config", operator_actor)

    cache = assert_fixed(error, attempt, operator_actor, [("wow-cache", "restart")])
    assert cache.config == {}


# --- verify after fix: a fix that cannot work ----------------------------------------------------


def test_restart_while_the_bad_config_is_still_there_does_not_help_and_reopens_the_error(
    seeded, bring_up, act, operator_actor, settings
) -> None:
    cache, _ = cache_refusing_readiness(seeded, bring_up, act, settings)
    error = AgentError.objects.get(agent=cache)
    assert "restart" in one_click(error)  # offered "if the config is right after all"; it is not

    attempt = recover(error, "restart", operator_actor)

    assert attempt.outcome in (RecoveryAttempt.Outcome.FAILED, RecoveryAttempt.Outcome.DID_NOT_HELP)
    assert "did not become ready" in attempt.detail
    error.refresh_from_db()
    assert error.status == AgentError.Status.OPEN
    assert error.retry_count == 1
    assert (error.resolved_by, error.resolved_at) == ("", None)
    assert state_of(cache) == State.ERRORED
    completed = AuditEntry.objects.get(action="agent.recover", detail__phase="completed")
    assert completed.outcome == AuditEntry.Outcome.FAILED
    assert completed.detail["result"] == attempt.outcome
    # The next fix offered still works: roll back, verified.
    attempt = recover(error, "rollback_config", operator_actor)
    assert attempt.outcome == RecoveryAttempt.Outcome.FIXED, attempt.detail
    error.refresh_from_db()
    assert (error.status, error.retry_count) == (AgentError.Status.RESOLVED, 2)


def test_a_failed_recovery_counts_its_own_failure_on_the_error_it_was_fixing(
    seeded, bring_up, act, operator_actor, settings
) -> None:
    cache, _ = cache_refusing_readiness(seeded, bring_up, act, settings)
    error = AgentError.objects.get(agent=cache)

    recover(error, "restart", operator_actor)

    # The same readiness refused again: one open error, seen twice, not a second error.
    assert AgentError.objects.filter(agent=cache).count() == 1
    error.refresh_from_db()
    assert error.occurrences == 2


def test_a_restart_that_succeeds_but_leaves_the_agent_unhealthy_did_not_help(
    seeded, bring_up, operator_actor, settings
) -> None:
    settings.AGENT_RECOVERY_VERIFY_SECONDS = 2
    cache = seeded["wow-cache"]
    Agent.objects.filter(pk=cache.pk).update(config={"faults": {"unhealthy": True}})
    cache = fresh(cache)
    bring_up(cache)
    Monitor().probe_all()
    error = AgentError.objects.get(agent=cache)
    assert (error.source, error.rule) == ("health", "unhealthy")

    attempt = recover(error, "restart", operator_actor)

    assert attempt.outcome == RecoveryAttempt.Outcome.DID_NOT_HELP
    assert attempt.detail.startswith("not RUNNING and healthy within 2 s: RUNNING but unhealthy")
    error.refresh_from_db()
    assert (error.status, error.retry_count) == (AgentError.Status.OPEN, 1)
    assert state_of(cache) == State.RUNNING  # the restart itself worked


# --- f. out of memory ----------------------------------------------------------------------------


def cache_killed_for_memory(
    seeded, bring_up, memory_mb: int = 128, allocate_mb: int = 150
) -> Agent:
    """Running with ``memory_mb``, then its config changed to hold ``allocate_mb``: killed by
    its supervisor for its memory, and the monitor (running) reads the OOM event.

    (On the local runtime the limit is checked every 0.25 s, so an allocation made at start
    can win the race against the readiness check: the running case is the reliable one.)"""
    cache = seeded["wow-cache"]
    Agent.objects.filter(pk=cache.pk).update(memory_mb=memory_mb)
    cache = fresh(cache)
    bring_up(cache)
    change_config(cache, {"faults": {"allocate_mb": allocate_mb}})
    patch_live_config(cache, {"faults": {"allocate_mb": allocate_mb}})
    wait_for(lambda: state_of(cache) == State.ERRORED)
    cache = fresh(cache)
    return cache


def test_an_oom_kill_is_out_of_memory_and_not_restarted_blindly(seeded, bring_up, monitor) -> None:
    cache = cache_killed_for_memory(seeded, bring_up)

    error = AgentError.objects.get(agent=cache)
    assert (error.source, error.classification, error.rule) == (
        "crash",
        "resource",
        "out_of_memory",
    )
    assert error.summary == "killed: out of memory"
    assert "more memory than its 128 MiB limit" in error.root_cause
    assert error.details["oom"] is True
    assert error.evidence
    assert one_click(error) == ["raise_memory", "rollback_config"]
    assert error.suggestions[0]["text"].startswith("Raise its limit to 256 MiB")
    time.sleep(1.5)  # long enough for a transient crash's restart (backoff 0.2 s)
    cache = fresh(cache)
    assert cache.state == State.ERRORED
    assert cache.next_restart_at is None and cache.restart_gave_up
    assert not cache.transitions.filter(action="restart").exists()
    assert not RecoveryAttempt.objects.exists()


def test_raise_memory_fixes_an_agent_killed_for_its_memory(
    seeded, bring_up, monitor, operator_actor
) -> None:
    cache = cache_killed_for_memory(seeded, bring_up)
    error = AgentError.objects.get(agent=cache)

    attempt = recover(error, "raise_memory", operator_actor)

    cache = assert_fixed(error, attempt, operator_actor, [("wow-cache", "restart")])
    assert cache.memory_mb == 256
    assert cache.config == {"faults": {"allocate_mb": 150}}  # it still holds 150 MiB, now allowed
    raised = AuditEntry.objects.get(action="agent.memory", target="wow-cache")
    assert (raised.detail["memory_mb"], raised.detail["was"]) == (256, 128)


def test_an_oom_kill_found_by_reconciliation_is_still_out_of_memory(seeded, bring_up) -> None:
    cache = seeded["wow-cache"]
    Agent.objects.filter(pk=cache.pk).update(memory_mb=128)
    cache = fresh(cache)
    bring_up(cache)
    patch_live_config(cache, {"faults": {"allocate_mb": 150}})
    exit_file = agent_exit_file(cache)
    wait_for(exit_file.exists)
    assert json.loads(exit_file.read_text())["oom"] is True  # the shim knows

    notice_crash(cache)  # no event read: the monitor was down when it happened

    error = AgentError.objects.get(agent=cache)
    assert (error.classification, error.rule) == ("resource", "out_of_memory")
    cache = fresh(cache)
    assert cache.next_restart_at is None


def agent_exit_file(agent: Agent):
    from django.conf import settings

    return settings.AGENT_ROOT / agent.slug / "replica-0" / "exit.json"


# --- f. out of memory on Docker ------------------------------------------------------------------


@pytest.fixture
def docker_cache(engine, settings, seeded) -> Iterator[Agent]:
    """WowCache on the Docker runtime under a slug of this test; its containers removed after."""
    import docker.errors

    from tests.agents.conftest import DOCKER_HOST

    settings.AGENT_RUNTIME = "docker"
    settings.DOCKER_HOST = DOCKER_HOST
    settings.AGENT_IMAGE = "waooaw/agentd"
    settings.AGENT_DOCKER_NETWORK = "host"
    settings.AGENT_READY_TIMEOUT_SECONDS = 15
    settings.AGENT_RECOVERY_VERIFY_SECONDS = 20
    slug = f"wow-cache-{uuid.uuid4().hex[:6]}"
    Agent.objects.filter(slug="wow-cache").update(slug=slug, runtime="docker", memory_mb=128)
    cache = Agent.objects.get(slug=slug)
    yield cache
    for container in engine.containers.list(all=True, filters={"label": f"waooaw.agent={slug}"}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    with contextlib.suppress(docker.errors.NotFound):
        engine.volumes.get(f"waooaw-{slug}-data").remove(force=True)


def docker_memory_limit(engine, agent: Agent) -> int:
    (container,) = engine.containers.list(all=True, filters={"label": f"waooaw.agent={agent.slug}"})
    return container.attrs["HostConfig"]["Memory"]


@pytest.mark.docker
def test_docker_oom_while_starting_is_fixed_by_raise_memory_recreating_the_container(
    docker_cache, engine, act, operator_actor
) -> None:
    cache = docker_cache
    Agent.objects.filter(pk=cache.pk).update(config={"faults": {"allocate_mb": 150}})
    cache = fresh(cache)
    for action in ("provision", "deploy"):
        assert act(cache, action).status == Operation.Status.SUCCEEDED
    operation = act(cache, "start")
    assert (operation.status, operation.error_reason) == (Operation.Status.FAILED, "oom")
    error = AgentError.objects.get(agent=cache)
    assert (error.classification, error.rule) == ("resource", "out_of_memory")
    assert "raise_memory" in one_click(error)
    assert error.details["oom"] is True and error.evidence

    attempt = recover(error, "raise_memory", operator_actor)

    # Never started: the container is made again in place (no lifecycle step), then started.
    assert_fixed(error, attempt, operator_actor, [(cache.slug, "start")])
    assert docker_memory_limit(engine, cache) == 256 * MEBIBYTE


@pytest.fixture
def docker_monitor(docker_cache) -> Iterator[Monitor]:
    instance = Monitor(probe_interval=600, runtimes=["docker"])  # events; no probes (bug 10)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    time.sleep(0.5)
    yield instance
    instance.stop()
    thread.join(timeout=10)


def oom_error(agent) -> AgentError:
    """The crash's error. The monitor's drift check may catch the exited container a moment
    before the exit is classified and record a drift error of its own; nothing else may."""
    error = AgentError.objects.get(agent=agent, source="crash")
    others = AgentError.objects.filter(agent=agent).exclude(pk=error.pk)
    assert all(other.rule == "drift" for other in others), list(others.values("rule", "message"))
    return error


@pytest.mark.docker
def test_docker_oom_while_running_is_fixed_by_raise_memory_recreating_the_container(
    docker_cache, docker_monitor, engine, bring_up, operator_actor
) -> None:
    cache = bring_up(docker_cache)
    assert docker_memory_limit(engine, cache) == 128 * MEBIBYTE
    change_config(cache, {"faults": {"allocate_mb": 150}})  # the new config: too much for 128
    patch_live_config(cache, {"faults": {"allocate_mb": 150}})
    wait_for(lambda: state_of(cache) == State.ERRORED, timeout=20)
    error = oom_error(cache)
    assert (error.source, error.classification, error.rule) == (
        "crash",
        "resource",
        "out_of_memory",
    )
    assert one_click(error) == ["raise_memory", "rollback_config"]
    cache = fresh(cache)
    assert cache.next_restart_at is None  # not restarted blindly

    attempt = recover(error, "raise_memory", operator_actor)

    assert_fixed(
        error,
        attempt,
        operator_actor,
        [(cache.slug, "stop"), (cache.slug, "deploy"), (cache.slug, "start")],
    )
    assert docker_memory_limit(engine, cache) == 256 * MEBIBYTE


@pytest.mark.docker
def test_docker_raise_memory_that_is_not_enough_does_not_help(
    docker_cache, docker_monitor, engine, bring_up, operator_actor
) -> None:
    # Docker enforces the limit at once (the local runtime checks every 0.25 s and can lose
    # the race against the readiness check), so this outcome is certain.
    cache = bring_up(docker_cache)
    change_config(cache, {"faults": {"allocate_mb": 400}})
    patch_live_config(cache, {"faults": {"allocate_mb": 400}})
    wait_for(lambda: state_of(cache) == State.ERRORED, timeout=20)
    error = oom_error(cache)
    assert error.rule == "out_of_memory"

    attempt = recover(error, "raise_memory", operator_actor)

    assert attempt.outcome in (RecoveryAttempt.Outcome.FAILED, RecoveryAttempt.Outcome.DID_NOT_HELP)
    assert "memory" in attempt.detail
    error.refresh_from_db()
    assert (error.status, error.retry_count) == (AgentError.Status.OPEN, 1)
    assert fresh(cache).memory_mb == 256  # raised, though not enough
    assert docker_memory_limit(engine, cache) == 256 * MEBIBYTE


# --- automatic recovery --------------------------------------------------------------------------


@pytest.fixture
def monitor(redis_client) -> Iterator[Monitor]:
    """The monitor in a thread, as ``manage.py monitor`` runs it: crash events and automatic
    restarts. Its health probes are left to the tests (``probe_all``): a probe landing between a
    kill and its exit event would add a health error beside the crash (see bug 10)."""
    instance = Monitor(probe_interval=600)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    time.sleep(0.3)
    yield instance
    instance.stop()
    thread.join(timeout=10)


def test_a_transient_crash_is_restarted_by_the_monitor_as_an_automatic_attempt(
    seeded, bring_up, monitor
) -> None:
    cache = bring_up(seeded["wow-cache"])
    kill_agentd(cache)

    attempt = wait_for(lambda: RecoveryAttempt.objects.filter(error__agent=cache).first())
    assert attempt.automatic and attempt.action == "restart"
    assert (attempt.actor_kind, attempt.actor) == ("system", "system:monitor")
    assert attempt.outcome == RecoveryAttempt.Outcome.FIXED
    error = attempt.error
    assert error.rule == "killed" and error.retry_count == 1
    assert state_of(cache) == State.RUNNING
    restart = cache.transitions.get(action="restart")
    assert restart.actor == "system:monitor"
    assert AuditEntry.objects.filter(
        action="agent.restart", actor="system:monitor", detail__phase="completed"
    ).exists()
    # Healthy again at the next probe: the error closes by itself.
    monitor.probe_all()
    error.refresh_from_db()
    assert error.status == AgentError.Status.RESOLVED
    assert (error.resolved_by, error.resolution) == ("system:monitor", "healthy again")


def test_a_bad_config_crash_is_not_restarted_automatically(seeded, bring_up) -> None:
    cache = seeded["wow-cache"]
    Agent.objects.filter(pk=cache.pk).update(
        config={"faults": {"crash_after_seconds": 1, "crash_exit_code": 2}}
    )
    cache = fresh(cache)
    bring_up(cache)

    cache = notice_crash(cache)
    error = AgentError.objects.get(agent=cache)
    assert (error.classification, error.rule) == ("configuration", "bad_config")
    assert cache.next_restart_at is None and cache.restart_gave_up
    # The agent page says why nothing restarts it.
    assert (
        cache.health_detail
        == (
            "process exited with code 2; no automatic restart: a configuration error is not "
            f"restarted blindly ({error.root_cause}); choose a fix"
        )[:300]
    )
    assert cache not in services.due_restarts()
    assert not RecoveryAttempt.objects.exists()


def test_with_the_kill_switch_off_a_transient_crash_is_not_restarted(
    seeded, bring_up, monitor
) -> None:
    errors.set_automatic_recovery(False, COMMAND)
    cache = bring_up(seeded["wow-cache"])
    kill_agentd(cache)

    wait_for(lambda: state_of(cache) == State.ERRORED)
    error = AgentError.objects.get(agent=cache)
    assert error.classification == "transient"
    time.sleep(1.5)
    cache = fresh(cache)
    assert cache.state == State.ERRORED
    assert cache.next_restart_at is None
    assert not cache.restart_gave_up  # a person may restart it; nothing says it cannot work
    assert not cache.transitions.filter(action="restart").exists()
    assert not RecoveryAttempt.objects.exists()
    switched = AuditEntry.objects.get(action="errors.automatic_recovery")
    assert switched.detail == {"on": False} and switched.outcome == AuditEntry.Outcome.SUCCESS


def test_the_agent_says_automatic_recovery_is_switched_off(seeded, bring_up) -> None:
    errors.set_automatic_recovery(False, COMMAND)
    cache = bring_up(seeded["wow-cache"])
    kill_agentd(cache)
    cache = notice_crash(cache)
    assert cache.next_restart_at is None
    assert cache.health_detail == (
        "process killed by SIGKILL (exit code 137); no automatic restart: automatic recovery is "
        "switched off"
    )


def test_a_restart_planned_before_the_switch_went_off_is_not_carried_out(seeded, bring_up) -> None:
    cache = bring_up(seeded["wow-cache"])
    kill_agentd(cache)
    cache = notice_crash(cache)
    assert cache.next_restart_at is not None
    errors.set_automatic_recovery(False, COMMAND)

    assert services.auto_restart(cache) is None
    assert state_of(cache) == State.ERRORED
    assert not RecoveryAttempt.objects.exists()


def test_the_kill_switch_follows_the_setting_until_someone_sets_it(settings, db) -> None:
    settings.AGENT_AUTO_RECOVERY = False
    assert errors.automatic_recovery_on() is False
    assert errors.allows_automatic_restart(None) == (False, "automatic recovery is switched off")
    errors.set_automatic_recovery(True, COMMAND)
    assert errors.automatic_recovery_on() is True
    assert errors.allows_automatic_restart(None) == (True, "")


# --- grouping and patterns -----------------------------------------------------------------------


def record(agent: Agent, message: str, details: dict) -> AgentError:
    """A crash as the monitor records it (inside the change's transaction)."""
    with transaction.atomic():
        return errors.record_error(agent, "crash", message, details)


def test_patterns_group_one_signature_across_agents(seeded) -> None:
    killed = {"signal": int(signal.SIGKILL), "exit_code": None}
    cache, event = seeded["wow-cache"], seeded["wow-event"]
    first = record(cache, "process killed by SIGKILL (exit code 137)", killed)
    again = record(cache, "process killed by SIGKILL (exit code 137)", killed)
    record(event, "process killed by SIGKILL (exit code 137)", killed)
    record(event, "process exited with code 7", {"exit_code": 7})
    assert again.pk == first.pk
    assert AgentError.objects.get(pk=first.pk).occurrences == 2

    rows = {row["signature"]: row for row in errors.patterns()}
    killed_row = rows["killed:killed by SIGKILL"]
    assert (killed_row["times"], killed_row["agents"], killed_row["open"]) == (3, 2, 2)
    assert killed_row["pattern"] == "killed by SIGKILL"
    assert killed_row["classification"] == "transient"
    assert rows["exited:exited (exit code 7)"]["agents"] == 1
    assert list(rows)[0] == "killed:killed by SIGKILL"  # the most frequent first
    only_cache = errors.patterns(agent=cache)
    assert [(row["signature"], row["times"]) for row in only_cache] == [
        ("killed:killed by SIGKILL", 2)
    ]

    rate = errors.error_rate()
    assert (rate["last_hour"], rate["open"]) == (4, 3)
    counts = {
        (row["agent__slug"], row["classification"]): row["times"]
        for row in errors.counts_by_agent_and_class()
    }
    assert counts == {("wow-cache", "transient"): 2, ("wow-event", "transient"): 2}


def test_a_resolved_error_is_not_counted_again_a_new_one_is_opened(seeded) -> None:
    cache = seeded["wow-cache"]
    details = {"exit_code": 7}
    first = record(cache, "process exited with code 7", details)
    assert errors.resolve_by_itself(cache, "healthy again") == 1
    second = record(cache, "process exited with code 7", details)
    assert second.pk != first.pk and second.occurrences == 1
    assert errors.patterns()[0]["times"] == 2 and errors.patterns()[0]["open"] == 1


# --- health --------------------------------------------------------------------------------------


def test_failing_health_checks_open_an_error_and_healthy_again_resolves_it_by_itself(
    seeded, bring_up
) -> None:
    cache = bring_up(seeded["wow-cache"])
    monitor = Monitor()
    monitor.probe_all()
    assert not AgentError.objects.exists()

    patch_live_config(cache, {"faults": {"unhealthy": True}})
    monitor.probe_all()
    error = AgentError.objects.get(agent=cache)
    assert (error.source, error.classification, error.rule) == ("health", "transient", "unhealthy")
    assert error.root_cause == "WowCache fails its health checks: replica 0 not answering /healthz."
    assert error.evidence
    monitor.probe_all()  # the same answer again changes nothing
    assert AgentError.objects.get().occurrences == 1

    patch_live_config(cache, {"faults": {"unhealthy": False}})
    monitor.probe_all()
    error.refresh_from_db()
    assert error.status == AgentError.Status.RESOLVED
    assert (error.resolved_by, error.resolution) == ("system:monitor", "healthy again")


def test_not_ready_while_running_is_a_readiness_error(seeded, bring_up) -> None:
    cache = bring_up(seeded["wow-cache"])
    patch_live_config(cache, {"faults": {"refuse_readiness": True}})
    Monitor().probe_all()
    error = AgentError.objects.get(agent=cache)
    assert (error.source, error.classification, error.rule) == ("health", "transient", "not_ready")
    assert error.root_cause == "WowCache is alive but not ready for work: replica 0 not ready."


# --- permissions and refusals --------------------------------------------------------------------


@pytest.fixture
def killed_error(seeded) -> AgentError:
    """An open transient error (no processes needed to refuse a recovery)."""
    return record(
        seeded["wow-cache"], "process killed by SIGKILL (exit code 137)",
        {"signal": int(signal.SIGKILL)},
    )  # fmt: skip


def refused_audit(actor: Actor) -> AuditEntry:
    return AuditEntry.objects.get(action="agent.recover", actor=actor.label)


def test_a_viewer_cannot_recover_and_the_refusal_is_audited(killed_error, viewer_actor) -> None:
    with pytest.raises(PermissionDenied, match="Operator"):
        errors.request_recovery(killed_error, "restart", viewer_actor, enqueue=False)
    killed_error.refresh_from_db()
    assert (killed_error.status, killed_error.retry_count) == (AgentError.Status.OPEN, 0)
    assert not RecoveryAttempt.objects.exists()
    entry = refused_audit(viewer_actor)
    assert entry.outcome == AuditEntry.Outcome.REFUSED and entry.target == "wow-cache"


@pytest.mark.parametrize("who", ["viewer_actor", "operator_actor"])
def test_only_an_admin_may_switch_automatic_recovery(who, request, db) -> None:
    actor = request.getfixturevalue(who)
    with pytest.raises(PermissionDenied, match="Admin"):
        errors.set_automatic_recovery(False, actor)
    assert errors.automatic_recovery_on() is True


@pytest.mark.parametrize("who", ["viewer_actor", "operator_actor"])
def test_a_refused_kill_switch_change_is_audited(who, request, db) -> None:
    actor = request.getfixturevalue(who)
    with pytest.raises(PermissionDenied):
        errors.set_automatic_recovery(False, actor)
    entry = AuditEntry.objects.get(action="errors.automatic_recovery", actor=actor.label)
    assert entry.outcome == AuditEntry.Outcome.REFUSED


def test_an_admin_switches_automatic_recovery_off_and_on(admin, db) -> None:
    actor = Actor(kind="user", user=admin, source="127.0.0.1")
    errors.set_automatic_recovery(False, actor)
    assert errors.automatic_recovery_on() is False
    errors.set_automatic_recovery(True, actor)
    assert errors.automatic_recovery_on() is True
    assert [e.detail["on"] for e in AuditEntry.objects.filter(actor="user:ada").order_by("at")] == [
        False,
        True,
    ]


@pytest.mark.parametrize(
    ("action", "code"),
    [("rollback_config", "not_offered"), ("reboot", "unknown")],
)
def test_a_recovery_not_offered_or_unknown_is_refused_and_audited(
    killed_error, operator_actor, action, code
) -> None:
    with pytest.raises(errors.RecoveryRefused) as refused:
        errors.request_recovery(killed_error, action, operator_actor, enqueue=False)
    assert refused.value.code == code
    if code == "not_offered":
        assert refused.value.message == (
            "Roll back the config is not a fix for this error; offered: Restart."
        )
    killed_error.refresh_from_db()
    assert (killed_error.status, killed_error.retry_count) == (AgentError.Status.OPEN, 0)
    assert not RecoveryAttempt.objects.exists()
    entry = refused_audit(operator_actor)
    assert entry.outcome == AuditEntry.Outcome.REFUSED
    assert entry.detail["reason"] == refused.value.message


def test_a_second_recovery_while_one_runs_is_refused(killed_error, operator_actor) -> None:
    first = errors.request_recovery(killed_error, "restart", operator_actor, enqueue=False)
    killed_error.refresh_from_db()
    assert (killed_error.status, killed_error.retry_count) == (AgentError.Status.RECOVERING, 1)
    assert first.outcome == RecoveryAttempt.Outcome.RUNNING

    with pytest.raises(errors.RecoveryRefused) as refused:
        errors.request_recovery(killed_error, "restart", operator_actor, enqueue=False)
    assert refused.value.code == "busy"
    assert RecoveryAttempt.objects.count() == 1


def test_a_resolved_error_cannot_be_recovered(killed_error, operator_actor) -> None:
    errors.resolve_by_itself(killed_error.agent, "healthy again")
    with pytest.raises(errors.RecoveryRefused) as refused:
        errors.request_recovery(killed_error, "restart", operator_actor, enqueue=False)
    assert refused.value.code == "closed"


# --- drift: reconcile ----------------------------------------------------------------------------


@pytest.mark.docker
def test_a_container_removed_outside_the_portal_is_drift_fixed_by_reconcile(
    docker_cache, engine, bring_up, act, operator_actor
) -> None:
    import docker.errors

    cache = bring_up(docker_cache)
    assert act(cache, "stop", confirm=True).status == "succeeded"
    (container,) = engine.containers.list(all=True, filters={"label": f"waooaw.agent={cache.slug}"})
    container.remove(force=True)  # by hand, outside the portal

    services.check_drift("docker")

    error = AgentError.objects.get(agent=cache, rule="drift")
    assert (error.classification, error.source) == ("configuration", "runtime")
    assert "is missing" in error.root_cause and container.name in error.root_cause
    assert one_click(error) == ["reconcile"]

    attempt = recover(error, "reconcile", operator_actor)

    assert attempt.outcome == RecoveryAttempt.Outcome.FIXED, attempt.detail
    assert attempt.detail == "verified: the runtime matches the portal (STOPPED)"
    error.refresh_from_db()
    assert (error.status, error.resolved_by) == (AgentError.Status.RESOLVED, operator_actor.label)
    (recreated,) = engine.containers.list(all=True, filters={"label": f"waooaw.agent={cache.slug}"})
    assert recreated.status != "running"  # STOPPED in the portal: back, not started
    assert fresh(cache).drift == []
    assert AuditEntry.objects.filter(action="agent.reconcile", target=cache.slug).exists()
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(container.id)


# --- repeated task failures ----------------------------------------------------------------------


def test_tasks_that_keep_failing_are_an_error_with_the_dead_letters_as_evidence(
    seeded, bring_up, redis_url
) -> None:
    import redis

    cache = seeded["wow-cache"]
    Agent.objects.filter(pk=cache.pk).update(config={"task_max_failures": 1, "task_retry_ms": 100})
    cache = bring_up(fresh(cache))
    queue = redis.Redis.from_url(redis_url, decode_responses=True)
    monitor = Monitor(probe_interval=600, runtimes=["local"])
    monitor.probe_all()  # the first look takes the count: nothing failed yet
    assert not AgentError.objects.filter(agent=cache).exists()

    for _ in range(2):
        queue.xadd(f"agents:{cache.slug}:tasks", {"job": "report", "fail": "1"})
    wait_for(lambda: queue.xlen(f"agents:{cache.slug}:dlq") == 2)
    monitor.probe_all()

    error = AgentError.objects.get(agent=cache)
    assert (error.source, error.rule, error.classification) == (
        "tasks",
        "task_failures",
        "permanent",
    )
    assert "2 were given up on after every retry" in error.root_cause
    assert "the task asked to fail (fail=1)" in error.root_cause
    assert len(error.evidence) == 2 and all("failed 1 times" in line for line in error.evidence)
    assert [s["label"] for s in error.suggestions] == ["Look at the failed tasks", "Restart"]
    monitor.probe_all()  # nothing new failed: nothing new recorded
    assert AgentError.objects.get(agent=cache).occurrences == 1
