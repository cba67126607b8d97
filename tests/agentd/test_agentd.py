"""agentd, the program every agent runs, driven as a real process against a real Redis."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.agentd.conftest import dead_letters, pending_count, queue_task, wait_until

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
MIB = 1024 * 1024


# Health and readiness


def test_healthz_reports_identity_and_uptime(start_agentd):
    agent = start_agentd(replica=2, args=["--version", "1.4.2", "--name", "WowCache"])

    first = agent.get("/healthz")
    time.sleep(0.05)
    second = agent.get("/healthz").json()

    assert first.status == 200
    assert first.headers["Content-Type"] == "application/json"
    body = first.json()
    assert body["status"] == "ok"
    assert body["slug"] == agent.slug
    assert body["name"] == "WowCache"
    assert body["version"] == "1.4.2"
    assert body["replica"] == 2
    assert second["uptime_seconds"] > body["uptime_seconds"] >= 0


def test_readyz_is_ready_when_redis_and_every_dependency_answer(start_agentd, listening_port):
    agent = start_agentd({"dependencies": [f"127.0.0.1:{listening_port}"]})

    response = agent.get("/readyz")

    assert response.status == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"redis": "ok", f"127.0.0.1:{listening_port}": "ok"}
    assert body["unreachable"] == []


def test_readyz_names_an_unreachable_dependency(start_agentd, listening_port, unused_port):
    up, down = f"127.0.0.1:{listening_port}", f"127.0.0.1:{unused_port}"
    agent = start_agentd({"dependencies": [up, down]})

    response = agent.get("/readyz")

    assert response.status == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["unreachable"] == [down]
    assert body["checks"]["redis"] == "ok"
    assert body["checks"][up] == "ok"
    assert down in body["reason"]


def test_agent_without_redis_stays_alive_and_is_not_ready(start_agentd, unused_port):
    agent = start_agentd(redis_url_override=f"redis://127.0.0.1:{unused_port}/0", wait_ready=False)

    agent.wait_for_log("redis_unavailable")
    readiness = agent.get("/readyz")
    exposition = agent.metrics()

    assert agent.get("/healthz").status == 200
    assert readiness.status == 503
    assert readiness.json()["unreachable"] == ["redis"]
    assert exposition.value("agentd_up") == 1
    assert "agentd_queue_depth" not in exposition.names()
    assert agent.process.poll() is None


def test_agent_started_before_redis_works_once_redis_comes_up(start_agentd, private_redis):
    agent = start_agentd(redis_url_override=private_redis.url, wait_ready=False)
    agent.wait_for_log("redis_unavailable")

    private_redis.start()
    agent.wait_for_log("ready", timeout=10)
    task_id = queue_task(private_redis.client(), agent)

    agent.wait_for_log("task_processed", task_id=task_id)
    assert agent.get("/readyz").status == 200


def test_agent_survives_a_redis_restart_and_resumes_work(start_agentd, private_redis):
    private_redis.start()
    agent = start_agentd(redis_url_override=private_redis.url)
    before = queue_task(private_redis.client(), agent)
    agent.wait_for_log("task_processed", task_id=before)

    private_redis.stop()
    agent.wait_for_log("redis_unavailable")
    readiness_while_down = agent.get("/readyz")
    private_redis.start()  # empty: the stream and the consumer group are gone
    agent.wait_for_log("redis_reconnected", timeout=10)
    after = queue_task(private_redis.client(), agent)

    agent.wait_for_log("task_processed", task_id=after)
    assert readiness_while_down.status == 503
    assert readiness_while_down.json()["unreachable"] == ["redis"]
    assert agent.process.poll() is None
    assert agent.get("/readyz").status == 200


# Metrics


def test_metrics_exposition_has_help_type_and_agent_labels(start_agentd):
    agent = start_agentd()

    response = agent.get("/metrics")
    exposition = agent.metrics()

    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    expected_types = {
        "agentd_up": "gauge",
        "agentd_tasks_processed_total": "counter",
        "agentd_tasks_failed_total": "counter",
        "agentd_tasks_dead_lettered_total": "counter",
        "agentd_task_latency_seconds": "histogram",
        "agentd_queue_depth": "gauge",
        "agentd_process_cpu_seconds_total": "counter",
        "agentd_process_resident_memory_bytes": "gauge",
    }
    for name, kind in expected_types.items():
        assert exposition.types[name] == kind
        assert exposition.help[name]
    for sample in exposition.samples:
        assert sample.labels["slug"] == agent.slug
        assert sample.labels["replica"] == "0"
    assert exposition.value("agentd_up") == 1
    assert exposition.value("agentd_process_cpu_seconds_total") > 0
    assert exposition.value("agentd_process_resident_memory_bytes") > 1 * MIB
    buckets = [s for s in exposition.samples if s.name == "agentd_task_latency_seconds_bucket"]
    assert buckets[-1].labels["le"] == "+Inf"
    assert exposition.value("agentd_task_latency_seconds_count") == 0


def test_metrics_move_as_tasks_are_processed(start_agentd, queue_redis):
    agent = start_agentd({"faults": {"latency_ms": 150}})
    before = agent.metrics()

    task_ids = [queue_task(queue_redis, agent) for _ in range(3)]
    while_queued = agent.metrics()
    for task_id in task_ids:
        agent.wait_for_log("task_processed", task_id=task_id)
    after = agent.metrics()

    assert before.value("agentd_tasks_processed_total") == 0
    assert before.value("agentd_queue_depth") == 0
    assert while_queued.value("agentd_queue_depth") >= 2
    assert after.value("agentd_tasks_processed_total") == 3
    assert after.value("agentd_tasks_failed_total") == 0
    assert after.value("agentd_queue_depth") == 0
    assert after.value("agentd_queue_pending") == 0
    assert after.value("agentd_task_latency_seconds_count") == 3
    assert after.value("agentd_task_latency_seconds_sum") >= 0.45
    assert after.value("agentd_task_latency_seconds_bucket", le="+Inf") == 3
    buckets = [s.value for s in after.samples if s.name == "agentd_task_latency_seconds_bucket"]
    assert buckets == sorted(buckets), "histogram buckets must be cumulative"


# Tasks


def test_task_is_processed_acked_and_removed_from_the_stream(start_agentd, queue_redis):
    agent = start_agentd()

    task_id = queue_task(queue_redis, agent, job="resize", size="42")
    record = agent.wait_for_log("task_processed", task_id=task_id)

    assert record["level"] == "debug"
    assert pending_count(queue_redis, agent) == 0
    assert queue_redis.xlen(f"agents:{agent.slug}:tasks") == 0
    assert not queue_redis.hexists(f"agents:{agent.slug}:failures", task_id)
    assert dead_letters(queue_redis, agent) == []
    groups = queue_redis.xinfo_groups(f"agents:{agent.slug}:tasks")
    assert [group["name"] for group in groups] == ["agentd"]
    consumers = queue_redis.xinfo_consumers(f"agents:{agent.slug}:tasks", "agentd")
    assert [consumer["name"] for consumer in consumers] == [f"{agent.slug}-0"]


def test_failing_task_is_dead_lettered_after_max_failures(start_agentd, queue_redis):
    agent = start_agentd({"task_max_failures": 3, "task_retry_ms": 50})

    task_id = queue_task(queue_redis, agent, fail="1", job="charge", customer="c-7")
    record = agent.wait_for_log("task_dead_lettered", task_id=task_id)

    assert record["level"] == "warning"
    assert [r["failures"] for r in agent.events("task_failed")] == [1, 2]
    [(_, letter)] = dead_letters(queue_redis, agent)
    assert letter["job"] == "charge"
    assert letter["customer"] == "c-7"
    assert letter["fail"] == "1"
    assert letter["failures"] == "3"
    assert letter["original_id"] == task_id
    assert "fail=1" in letter["error"]
    assert pending_count(queue_redis, agent) == 0
    assert queue_redis.xlen(f"agents:{agent.slug}:tasks") == 0
    assert not queue_redis.exists(f"agents:{agent.slug}:failures")
    exposition = agent.metrics()
    assert exposition.value("agentd_tasks_failed_total") == 3
    assert exposition.value("agentd_tasks_dead_lettered_total") == 1
    assert exposition.value("agentd_tasks_processed_total") == 0
    assert exposition.value("agentd_dead_letter_depth") == 1


def test_task_abandoned_by_a_dead_replica_is_claimed_and_processed(start_agentd, queue_redis):
    slug = f"test-orphan-{time.monotonic_ns()}"
    stream = f"agents:{slug}:tasks"
    queue_redis.xgroup_create(stream, "agentd", id="0", mkstream=True)
    task_id = queue_redis.xadd(stream, {"job": "orphaned"})
    # A replica that read the task and died before acknowledging it.
    queue_redis.xreadgroup("agentd", f"{slug}-9", {stream: ">"}, count=1)

    agent = start_agentd({"task_retry_ms": 100}, slug=slug)
    agent.wait_for_log("task_processed", task_id=task_id)

    assert pending_count(queue_redis, agent) == 0


def test_fail_rate_one_fails_every_task_and_zero_fails_none(start_agentd, queue_redis):
    agent = start_agentd({"task_max_failures": 1, "faults": {"fail_rate": 1}})

    doomed = [queue_task(queue_redis, agent) for _ in range(3)]
    wait_until(lambda: len(dead_letters(queue_redis, agent)) == 3)
    agent.patch_config({"faults": {"fail_rate": 0}})
    spared = [queue_task(queue_redis, agent) for _ in range(3)]
    for task_id in spared:
        agent.wait_for_log("task_processed", task_id=task_id)

    letters = dead_letters(queue_redis, agent)
    assert sorted(letter["original_id"] for _, letter in letters) == sorted(doomed)
    assert all("fail_rate" in letter["error"] for _, letter in letters)
    assert agent.metrics().value("agentd_tasks_processed_total") == 3


def test_latency_fault_delays_every_task(start_agentd, queue_redis):
    agent = start_agentd({"faults": {"latency_ms": 300}})

    task_id = queue_task(queue_redis, agent)
    record = agent.wait_for_log("task_processed", task_id=task_id)
    exposition = agent.metrics()

    assert record["duration_seconds"] >= 0.3
    assert exposition.value("agentd_task_latency_seconds_bucket", le="0.25") == 0
    assert exposition.value("agentd_task_latency_seconds_bucket", le="0.5") == 1


# Faults


def test_refuse_readiness_fault_answers_503_until_patched_off(start_agentd):
    agent = start_agentd({"faults": {"refuse_readiness": True}})

    refused = agent.get("/readyz")
    agent.patch_config({"faults": {"refuse_readiness": False}})
    accepted = agent.get("/readyz")

    assert refused.status == 503
    assert "refuse_readiness" in refused.json()["reason"]
    assert agent.get("/healthz").status == 200
    assert accepted.status == 200


def test_unhealthy_fault_answers_503_on_healthz(start_agentd):
    agent = start_agentd({"faults": {"unhealthy": True}})

    unhealthy = agent.get("/healthz")
    agent.patch_config({"faults": {"unhealthy": False}})
    healthy = agent.get("/healthz")

    assert unhealthy.status == 503
    assert unhealthy.json()["status"] == "unhealthy"
    assert healthy.status == 200
    assert healthy.json()["status"] == "ok"


def test_crash_after_seconds_exits_with_the_configured_code(start_agentd):
    agent = start_agentd({"faults": {"crash_after_seconds": 0.5, "crash_exit_code": 7}})

    assert agent.wait_exit(timeout=5) == 7
    crash = agent.events("crash")
    assert len(crash) == 1
    assert crash[0]["level"] == "error"
    assert crash[0]["exit_code"] == 7
    assert agent.events("shutdown") == []


def test_crash_can_be_scheduled_live_by_a_config_patch(start_agentd):
    agent = start_agentd()

    agent.patch_config({"faults": {"crash_after_seconds": 0.2}})

    assert agent.wait_exit(timeout=5) == 1
    assert agent.events("crash")[0]["exit_code"] == 1


def test_allocate_mb_holds_that_much_resident_memory(start_agentd):
    agent = start_agentd({"faults": {"allocate_mb": 64}})

    holding = agent.metrics().value("agentd_process_resident_memory_bytes")
    agent.patch_config({"faults": {"allocate_mb": 0}})
    released = agent.metrics().value("agentd_process_resident_memory_bytes")

    assert holding >= 64 * MIB
    assert holding - released >= 60 * MIB


# Live config


def test_config_get_answers_the_effective_config_with_defaults(start_agentd):
    agent = start_agentd({"task_max_failures": 5, "model": "small", "faults": {"latency_ms": 5}})

    response = agent.get("/config")

    assert response.status == 200
    assert response.json() == {
        "model": "small",
        "task_max_failures": 5,
        "task_block_ms": 1000,
        "task_retry_ms": 2000,
        "dependencies": [],
        "forward": [],
        "faults": {
            "crash_after_seconds": None,
            "crash_exit_code": 1,
            "fail_rate": 0.0,
            "latency_ms": 5,
            "refuse_readiness": False,
            "allocate_mb": 0,
            "unhealthy": False,
        },
    }


def test_config_patch_merges_faults_key_by_key_and_applies_live(start_agentd, queue_redis):
    agent = start_agentd({"faults": {"latency_ms": 10}})

    response = agent.patch_config({"task_max_failures": 1, "faults": {"fail_rate": 1}})
    task_id = queue_task(queue_redis, agent)
    agent.wait_for_log("task_dead_lettered", task_id=task_id)
    reset = agent.patch_config({"faults": {"fail_rate": None}})

    assert response.status == 200
    patched = response.json()
    assert patched["task_max_failures"] == 1
    assert patched["faults"]["fail_rate"] == 1
    assert patched["faults"]["latency_ms"] == 10
    assert agent.wait_for_log("config_changed")["changed"] == [
        "faults.fail_rate",
        "task_max_failures",
    ]
    assert reset.json()["faults"] == {**patched["faults"], "fail_rate": 0}
    assert agent.get("/config").json() == reset.json()


def test_invalid_config_patch_is_refused_and_changes_nothing(start_agentd):
    agent = start_agentd({"task_max_failures": 4})
    before = agent.get("/config").json()
    refused = {
        "faults.fail_rate": {"task_max_failures": 9, "faults": {"fail_rate": 2}},
        "task_max_failures": {"task_max_failures": 0},
        "unknown fault": {"faults": {"latency": 5}},
        "faults.unhealthy": {"faults": {"unhealthy": "yes"}},
        "dependency": {"dependencies": ["no-port-here"]},
        "JSON object": [1, 2],
    }

    for expected_message, patch in refused.items():
        response = agent.patch_config(patch)
        assert response.status == 400, patch
        assert expected_message in response.json()["error"]

    assert agent.get("/config").json() == before
    assert agent.events("config_changed") == []


def test_config_patch_with_malformed_json_is_refused(start_agentd):
    agent = start_agentd()

    response = agent.request("PATCH", "/config", raw=b"{not json")

    assert response.status == 400
    assert "not valid JSON" in response.json()["error"]


def test_config_is_read_from_file_and_environment_with_flags_winning(start_agentd, tmp_path):
    config_file = tmp_path / "agent.json"
    config_file.write_text(json.dumps({"task_max_failures": 4, "faults": {"latency_ms": 5}}))
    env = {
        "AGENT_CONFIG_FILE": str(config_file),
        "AGENT_CONFIG": json.dumps({"faults": {"fail_rate": 0.25}}),
        "AGENT_NAME": "Wow Memory",
        "AGENT_VERSION": "9.9.9",
    }

    agent = start_agentd(env=env, args=["--version", "2.0.0"])
    config = agent.get("/config").json()
    health = agent.get("/healthz").json()

    assert config["task_max_failures"] == 4
    assert config["faults"]["latency_ms"] == 5
    assert config["faults"]["fail_rate"] == 0.25
    assert health["name"] == "Wow Memory"
    assert health["version"] == "2.0.0"


# HTTP


def test_unknown_path_is_404_and_wrong_method_is_405_in_json(start_agentd):
    agent = start_agentd()

    missing = agent.get("/nope")
    post_health = agent.request("POST", "/healthz", {})
    delete_config = agent.request("DELETE", "/config")

    assert missing.status == 404
    assert "/nope" in missing.json()["error"]
    assert post_health.status == 405
    assert post_health.headers["Allow"] == "GET"
    assert "POST" in post_health.json()["error"]
    assert delete_config.status == 405
    assert delete_config.headers["Allow"] == "GET, PATCH"


# Process life


def test_port_in_use_exits_3_with_bind_failed_log(run_agentd, listening_port, redis_url):
    result = run_agentd(
        ["--slug", "taken", "--port", str(listening_port), "--redis-url", redis_url]
    )

    assert result.returncode == 3
    [record] = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["event"] == "bind_failed"
    assert record["level"] == "error"
    assert record["port"] == listening_port
    assert record["port_in_use"] is True
    assert str(listening_port) in record["message"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_exits_0_within_the_grace_period_with_shutdown_log(start_agentd, signum):
    agent = start_agentd(args=["--grace", "3"])

    started = time.monotonic()
    agent.send_signal(signum)
    code = agent.wait_exit(timeout=5)
    elapsed = time.monotonic() - started

    assert code == 0
    assert elapsed < 3
    shutdown = agent.events("shutdown")
    assert len(shutdown) == 1
    assert shutdown[0]["signal"] == signum.name
    assert shutdown[0]["drained"] is True


def test_sigterm_finishes_the_task_in_hand_before_exiting(start_agentd, queue_redis):
    agent = start_agentd({"faults": {"latency_ms": 700}})
    task_id = queue_task(queue_redis, agent)
    agent.wait_for_log("task_started", task_id=task_id)

    agent.send_signal(signal.SIGTERM)

    assert agent.wait_exit(timeout=5) == 0
    events = [record["event"] for record in agent.logs]
    assert events.index("stopping") < events.index("task_processed") < events.index("shutdown")
    assert pending_count(queue_redis, agent) == 0
    assert queue_redis.xlen(f"agents:{agent.slug}:tasks") == 0


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], {}, "slug is required"),
        (["--slug", "bad slug!"], {}, "invalid slug"),
        (["--slug", "x", "--port", "70000"], {}, "invalid port"),
        (["--slug", "x"], {"AGENT_PORT": "http"}, "invalid port"),
        (["--slug", "x", "--replica", "-1"], {}, "invalid replica"),
        (["--slug", "x"], {"AGENT_CONFIG": "{oops"}, "not valid JSON"),
        (["--slug", "x", "--config", '{"faults": {"fail_rate": 2}}'], {}, "faults.fail_rate"),
        (["--slug", "x", "--config", '{"faults": {"explode": true}}'], {}, "unknown fault"),
        (
            ["--slug", "x", "--config", '{"forward": [{"to": "x", "share": 1}]}'],
            {},
            "forward[0].to names this agent (x)",
        ),
        (["--slug", "x", "--config-file", "/nonexistent/agent.json"], {}, "cannot read config"),
        (["--slug", "x", "--grace", "0"], {}, "invalid grace"),
        (["--slug", "x", "--colour", "red"], {}, "unrecognized arguments"),
    ],
)
def test_bad_configuration_exits_2_with_a_one_line_message(run_agentd, args, env, expected):
    result = run_agentd(args, env)

    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("agentd: bad configuration: ")
    assert expected in line


def test_log_lines_are_json_with_the_required_fields(start_agentd, queue_redis):
    agent = start_agentd()
    task_id = queue_task(queue_redis, agent)
    agent.wait_for_log("task_processed", task_id=task_id)
    agent.patch_config({"faults": {"latency_ms": 1}})
    agent.send_signal(signal.SIGTERM)
    agent.wait_exit()

    records = [json.loads(line) for line in agent.stdout_lines]

    for record in records:
        assert TIMESTAMP.match(record["ts"]), record
        assert record["level"] in {"debug", "info", "warning", "error"}
        assert record["slug"] == agent.slug
        assert record["replica"] == 0
        assert isinstance(record["event"], str)
        assert isinstance(record["message"], str)
    events = [record["event"] for record in records]
    for event in ("started", "ready", "task_processed", "config_changed", "shutdown"):
        assert event in events
    assert agent.stderr_lines == []


def test_agentd_imports_no_django():
    code = (
        "import sys, agents.agentd.app, agents.agentd.__main__\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'agents')))"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )

    modules = json.loads(result.stdout.replace("'", '"'))
    assert not [m for m in modules if m.startswith("django")]
    assert all(m in ("agents", "agents.agentd") or m.startswith("agents.agentd.") for m in modules)
