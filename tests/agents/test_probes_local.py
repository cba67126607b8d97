"""Probes on the local runtime, against real agentd processes and the real monitor: TCP, HTTP and
exec probes, their thresholds, their intervals, and the counts kept in Redis."""

from __future__ import annotations

import socket
import time

import pytest

from agents import services
from agents.models import Agent, AgentError, Health
from agents.monitor import Monitor
from agents.placement import probe
from agents.probes import engine
from agents.probes.schema import effective_probes
from agents.probes.services import set_probes
from observability.models import Event
from portal.actors import Actor

pytestmark = pytest.mark.django_db(transaction=True)

TIMING = {"interval_seconds": 5, "timeout_seconds": 1}


@pytest.fixture
def probe_counts(redis_url):
    """No counts of an earlier test's agent of the same slug."""
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter("monitor:probes:*"))
    if keys:
        client.delete(*keys)
    yield client
    client.close()


@pytest.fixture
def cache(transactional_db, bring_up, probe_counts):
    services.seed_platform_agents(Actor.command("test"))
    return bring_up(Agent.objects.get(slug="wow-cache"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health_of(agent: Agent) -> tuple[str, str]:
    agent.refresh_from_db()
    return agent.health, agent.health_detail


def set_liveness(agent: Agent, **liveness) -> Agent:
    return set_probes(agent, {"liveness": {**TIMING, **liveness}}, Actor.command("test"))


def health_events(agent: Agent) -> list[str]:
    return list(
        Event.objects.filter(agent_id=agent.pk, kind=Event.Kind.HEALTH)
        .order_by("ts", "id")
        .values_list("summary", flat=True)
    )


def test_a_tcp_probe_on_a_closed_port_turns_the_agent_unhealthy_after_the_failure_threshold_and_healthy_after_the_success_threshold(
    cache,
) -> None:
    port = free_port()  # nobody listens on it
    set_liveness(cache, kind="tcp", port=port, failure_threshold=3, success_threshold=2)
    monitor = Monitor()

    for tick in (1, 2):
        monitor.probe_all()
        assert health_of(cache) == (Health.HEALTHY, ""), f"unhealthy after {tick} failure(s)"
    monitor.probe_all()
    health, detail = health_of(cache)
    assert health == Health.UNHEALTHY
    assert detail == (
        f"replica 0 failing its liveness probe (TCP port {port}): "
        f"port {port} refused the connection"
    )
    assert health_events(cache)[-1] == f"WowCache is unhealthy: {detail}"
    error = AgentError.objects.get(agent=cache, source="health", status="open")
    assert str(port) in error.summary

    with socket.socket() as listener:  # the port opens: the probe passes from now on
        listener.bind(("127.0.0.1", port))
        listener.listen()
        monitor.probe_all()
        assert health_of(cache)[0] == Health.UNHEALTHY  # one pass of the two it takes
        monitor.probe_all()
        assert health_of(cache) == (Health.HEALTHY, "")
    assert health_events(cache)[-1] == "WowCache is healthy"
    error.refresh_from_db()
    assert error.status == "resolved"


def test_a_tcp_probe_of_the_replicas_own_port_passes(cache) -> None:
    set_liveness(cache, kind="tcp", failure_threshold=1)
    Monitor().probe_all()
    assert health_of(cache) == (Health.HEALTHY, "")


def test_an_http_probe_expecting_another_status_fails_and_one_expecting_the_answer_passes(
    cache,
) -> None:
    set_liveness(cache, kind="http", path="/healthz", status=204)
    monitor = Monitor()
    monitor.probe_all()
    assert health_of(cache) == (
        Health.UNHEALTHY,
        "replica 0 failing its liveness probe (GET /healthz → 204): answered 200, expecting 204",
    )

    # agentd answers 404 for a path it does not serve: a probe expecting 404 passes.
    set_liveness(cache, kind="http", path="/no-such-endpoint", status=404, success_threshold=1)
    monitor.probe_all()
    assert health_of(cache) == (Health.HEALTHY, "")


def test_a_failing_readiness_probe_makes_the_agent_degraded_not_unhealthy(cache) -> None:
    readiness = {**TIMING, "kind": "http", "path": "/readyz", "status": 503}
    set_probes(cache, {"readiness": readiness}, Actor.command("test"))
    Monitor().probe_all()
    health, detail = health_of(cache)
    assert health == Health.DEGRADED
    assert detail == "replica 0 not ready (GET /readyz → 503): answered 200, expecting 503"


def test_exec_probes_pass_on_status_zero_fail_otherwise_and_see_the_agents_environment(
    transactional_db, bring_up, probe_counts
) -> None:
    services.seed_platform_agents(Actor.command("test"))
    cache = Agent.objects.get(slug="wow-cache")
    cache.environment = {"PROBE_MARK": "set-for-wow-cache"}
    cache.save()
    bring_up(cache)
    monitor = Monitor()

    set_liveness(cache, kind="exec", command=["false"])
    monitor.probe_all()
    assert health_of(cache) == (
        Health.UNHEALTHY,
        "replica 0 failing its liveness probe (exec false): exited with status 1",
    )

    set_liveness(cache, kind="exec", command=["true"])
    monitor.probe_all()
    assert health_of(cache) == (Health.HEALTHY, "")

    # The agent's environment and working directory (its data directory), not the monitor's.
    sees_the_agent = 'test "$PROBE_MARK" = set-for-wow-cache && test "$(pwd -P)" = "$(cd "$AGENT_DATA_DIR" && pwd -P)"'
    set_liveness(cache, kind="exec", command=["sh", "-c", sees_the_agent])
    monitor.probe_all()
    assert health_of(cache) == (Health.HEALTHY, "")
    set_liveness(cache, kind="exec", command=["sh", "-c", 'test "$PROBE_MARK" = something-else'])
    monitor.probe_all()
    assert health_of(cache)[0] == Health.UNHEALTHY


def test_an_exec_probe_that_outlives_its_timeout_fails(cache) -> None:
    set_liveness(cache, kind="exec", command=["sleep", "5"], interval_seconds=5, timeout_seconds=1)
    began = time.monotonic()
    Monitor().probe_all()
    assert time.monotonic() - began < 4
    assert health_of(cache) == (
        Health.UNHEALTHY,
        "replica 0 failing its liveness probe (exec sleep 5): did not finish within 1 s",
    )


def test_probes_run_at_their_own_interval(cache) -> None:
    port = free_port()
    set_liveness(cache, kind="tcp", port=port, interval_seconds=30, failure_threshold=2)
    monitor = Monitor(probe_interval=1)
    start = time.time()
    monitor.probe_due(now=start)
    monitor.probe_due(now=start + 10)  # not due: nothing counted
    assert health_of(cache)[0] == Health.HEALTHY
    monitor.probe_due(now=start + 30)
    assert health_of(cache)[0] == Health.UNHEALTHY
    # The loop wakes as often as the shortest interval asks, at most once a second.
    assert monitor._wake_seconds == 1


def test_the_counts_live_in_redis_and_carry_over_to_another_monitor(cache, probe_counts) -> None:
    set_liveness(cache, kind="tcp", port=free_port(), failure_threshold=2)
    Monitor().probe_all()
    assert health_of(cache)[0] == Health.HEALTHY
    assert probe_counts.exists("monitor:probes:wow-cache")
    Monitor().probe_all()  # a monitor that restarted counts on
    assert health_of(cache)[0] == Health.UNHEALTHY


def test_new_settings_start_the_counts_again(cache) -> None:
    port = free_port()
    set_liveness(cache, kind="tcp", port=port, failure_threshold=2)
    monitor = Monitor()
    monitor.probe_all()
    set_liveness(cache, kind="tcp", port=port, failure_threshold=3)
    monitor.probe_all()
    monitor.probe_all()
    assert health_of(cache)[0] == Health.HEALTHY  # two failures since the change, of three
    monitor.probe_all()
    assert health_of(cache)[0] == Health.UNHEALTHY


def test_the_defaults_behave_as_before_with_the_same_words(cache) -> None:
    assert cache.probes == {}
    monitor = Monitor()
    monitor.probe_all()
    assert health_of(cache) == (Health.HEALTHY, "")
    assert probe(cache) == (Health.HEALTHY, "")


def test_a_round_of_probes_makes_no_database_query(cache, django_assert_num_queries) -> None:
    set_liveness(cache, kind="tcp", failure_threshold=3)
    cache.refresh_from_db()
    runtime = services.runtime_for(cache)
    target = engine.Target(cache, runtime, effective_probes(cache.probes, 5), True, 5.0)
    prober = engine.Prober(Monitor()._redis)
    with django_assert_num_queries(0):
        outcomes = prober.run([target] * 1)
    assert [(o.health, o.detail) for o in outcomes] == [(Health.HEALTHY, "")]
