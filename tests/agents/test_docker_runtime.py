"""The Docker runtime against a real Docker engine, real agent containers and the test
session's real Redis.

The engine is the one at DOCKER_HOST (default unix:///var/run/docker.sock). When none answers
these tests fail in CI (CI=true, where .ci/run starts one) and skip elsewhere. The agent image is
built from the current sources on the Debian-built base image (scripts/build-agent-base-image.sh,
which .ci/run runs); an unchanged image builds from the engine's cache in well under a second.

Every test works on agents with slugs of its own; teardown deletes every container and volume
labelled with them, so nothing outlives a test.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator

import docker
import docker.errors
import pytest
import redis

from agents.runtimes import AgentSpec, RuntimeEvent, RuntimeFailure, get_runtime
from agents.runtimes.docker import DockerRuntime, HealthCheck

pytestmark = pytest.mark.docker

DOCKER_HOST = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
# The base image agents are built on (as `manage.py agents build-image` reads it); no registry
# here, so the default is the one built from Debian packages.
BASE_IMAGE = os.environ.get("AGENT_BASE_IMAGE") or "waooaw/agentd-base:bookworm"
REPOSITORY = "waooaw/agentd"
VERSION = "1.0.0"
MEBIBYTE = 1024 * 1024
# Health checks every second in tests, so that "healthy" and "unhealthy" come quickly.
FAST_HEALTH = HealthCheck(interval=1, timeout=2, retries=2, start_period=1)


@pytest.fixture
def runtime(engine, redis_url: str) -> DockerRuntime:
    return DockerRuntime(DOCKER_HOST, REPOSITORY, redis_url, health=FAST_HEALTH)


@pytest.fixture
def make_spec(engine, redis_url: str) -> Iterator[Callable[..., AgentSpec]]:
    """An AgentSpec with a slug of its own; its containers, volume and Redis keys are deleted
    at teardown."""
    slugs: list[str] = []

    def make(**fields: object) -> AgentSpec:
        slug = str(fields.pop("slug", f"dt-{uuid.uuid4().hex[:10]}"))
        slugs.append(slug)
        values: dict = {
            "slug": slug,
            "name": f"Agent {slug}",
            "version": VERSION,
            "redis_url": redis_url,
            "memory_mb": 128,
            "cpu_millicores": 250,
            "grace_seconds": 3,
            "ready_timeout": 15,
            **fields,
        }
        return AgentSpec(**values)

    yield make
    for slug in slugs:
        remove_everything_of(engine, slug)
    client = redis.Redis.from_url(redis_url)
    for slug in slugs:
        keys = list(client.scan_iter(f"agents:{slug}:*"))
        if keys:
            client.delete(*keys)
    client.close()


def remove_everything_of(engine: docker.DockerClient, slug: str) -> None:
    for container in engine.containers.list(all=True, filters={"label": f"waooaw.agent={slug}"}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    with contextlib.suppress(docker.errors.NotFound):
        engine.volumes.get(f"waooaw-{slug}-data").remove(force=True)


@pytest.fixture
def deployed(runtime: DockerRuntime, make_spec) -> Callable[..., AgentSpec]:
    """Provision and deploy a spec; answers it with its ports filled in."""

    def deploy(**fields: object) -> AgentSpec:
        spec = make_spec(**fields)
        ports = runtime.provision(spec)["ports"]
        spec = AgentSpec.from_dict({**spec.to_dict(), "ports": ports})
        runtime.deploy(spec)
        return spec

    return deploy


@pytest.fixture
def started(runtime: DockerRuntime, deployed) -> Callable[..., tuple[AgentSpec, dict]]:
    def start(**fields: object) -> tuple[AgentSpec, dict]:
        spec = deployed(**fields)
        return spec, runtime.start(spec)

    return start


def http(port: int, path: str = "/healthz", method: str = "GET", body: object = None):
    """(status, decoded body) of an agent's endpoint; (None, error) when nothing answers."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=2) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
    except OSError as error:
        return None, str(error)


def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.1)


def inspect(engine: docker.DockerClient, name: str) -> dict:
    return engine.api.inspect_container(name)


class EventCollector:
    """Reads runtime.events() in a thread until stopped; the events it saw, in order."""

    def __init__(self, runtime: DockerRuntime, since_id: str | None = None) -> None:
        self.events: list[RuntimeEvent] = []
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(runtime, since_id), daemon=True)
        self._thread.start()
        time.sleep(0.3)  # subscribed

    def _read(self, runtime: DockerRuntime, since_id: str | None) -> None:
        for event in runtime.events(since_id, self.stop):
            self.events.append(event)

    def of(self, slug: str, kind: str | None = None) -> list[RuntimeEvent]:
        return [e for e in self.events if e.slug == slug and (kind is None or e.kind == kind)]

    def wait_for(self, slug: str, kind: str, count: int = 1, timeout: float = 15) -> list:
        return wait_until(
            lambda: len(self.of(slug, kind)) >= count and self.of(slug, kind),
            timeout,
            f"{count} {kind} event(s) of {slug}",
        )

    def close(self) -> float:
        """Stop reading; answers how long the reader took to return."""
        began = time.monotonic()
        self.stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()
        return time.monotonic() - began


@pytest.fixture
def collector(runtime: DockerRuntime) -> Iterator[Callable[..., EventCollector]]:
    made: list[EventCollector] = []

    def make(since_id: str | None = None) -> EventCollector:
        made.append(EventCollector(runtime, since_id))
        return made[-1]

    yield make
    for each in made:
        each.stop.set()


# --- provision and deploy --------------------------------------------------------------------


def test_the_registry_builds_the_docker_runtime(engine, redis_url):
    runtime = get_runtime("docker", base_url=DOCKER_HOST, image=REPOSITORY, redis_url=redis_url)
    assert isinstance(runtime, DockerRuntime) and runtime.name == "docker"
    assert runtime.network == "host"
    assert runtime.probe(AgentSpec("x", "X", "1", redis_url), {}) is None


def test_provision_reserves_free_ports_on_a_labelled_volume_and_answers_the_same_again(
    runtime, make_spec, engine
):
    spec = make_spec(replicas=3)
    first = runtime.provision(spec)
    ports = first["ports"]
    assert len(ports) == 3 and len(set(ports)) == 3
    for port in ports:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # free right now
    volume = engine.volumes.get(f"waooaw-{spec.slug}-data")
    assert volume.attrs["Labels"] == {
        "waooaw.managed": "true",
        "waooaw.agent": spec.slug,
        "waooaw.ports": ",".join(map(str, ports)),
    }
    assert runtime.provision(spec)["ports"] == ports
    assert first["queue"] == f"agents:{spec.slug}:tasks"
    other = runtime.provision(make_spec(replicas=3))["ports"]
    assert not set(other) & set(ports)


def test_deploy_creates_one_labelled_container_per_replica_with_limits_health_and_volume(
    runtime, deployed, engine, redis_url
):
    spec = deployed(replicas=2, memory_mb=96, cpu_millicores=300, config={"task_block_ms": 100})
    for replica in range(2):
        found = inspect(engine, f"waooaw-{spec.slug}-{replica}")
        assert found["State"]["Status"] == "created"  # deployed, not started
        labels = found["Config"]["Labels"]
        assert labels["waooaw.agent"] == spec.slug
        assert labels["waooaw.replica"] == str(replica)
        assert labels["waooaw.managed"] == "true"
        assert labels["waooaw.version"] == VERSION
        assert labels["waooaw.port"] == str(spec.ports[replica])
        assert found["Config"]["Image"] == f"{REPOSITORY}:{VERSION}"
        host = found["HostConfig"]
        assert host["Memory"] == 96 * MEBIBYTE and host["MemorySwap"] == 96 * MEBIBYTE
        assert host["NanoCpus"] == 300_000_000
        assert host["RestartPolicy"]["Name"] == "no"
        assert host["NetworkMode"] == "host"
        health = found["Config"]["Healthcheck"]
        assert health["Interval"] == 1_000_000_000 and health["Retries"] == 2
        assert "/healthz" in " ".join(health["Test"])
        assert [(m["Type"], m["Name"], m["Destination"]) for m in found["Mounts"]] == [
            ("volume", f"waooaw-{spec.slug}-data", "/data")
        ]
        env = dict(item.split("=", 1) for item in found["Config"]["Env"])
        assert env["AGENT_SLUG"] == spec.slug and env["AGENT_REPLICA"] == str(replica)
        assert env["AGENT_PORT"] == str(spec.ports[replica]) and env["AGENT_HOST"] == "127.0.0.1"
        assert env["REDIS_URL"] == redis_url and env["AGENT_VERSION"] == VERSION
        assert json.loads(env["AGENT_CONFIG"]) == {"task_block_ms": 100}
        assert found["Config"]["User"] == "agentd"  # the image runs agentd as non-root
    assert [r.state for r in runtime.status(spec).replicas] == ["created", "created"]


def test_deploy_keeps_an_identical_container_and_replaces_one_from_an_older_spec(
    runtime, deployed, engine
):
    spec = deployed()
    first = inspect(engine, f"waooaw-{spec.slug}-0")["Id"]
    again = runtime.deploy(spec)
    assert again["containers"][0]["action"] == "kept"
    assert again["container_ids"] == [first]
    changed = AgentSpec.from_dict({**spec.to_dict(), "config": {"task_block_ms": 200}})
    replaced = runtime.deploy(changed)
    assert replaced["containers"][0]["action"] == "recreated"
    assert replaced["container_ids"] != [first]
    with pytest.raises(docker.errors.NotFound):
        engine.api.inspect_container(first)


def test_start_without_provision_is_refused_as_not_found(runtime, make_spec):
    with pytest.raises(RuntimeFailure) as failure:
        runtime.start(make_spec())
    assert failure.value.reason == "not_found"
    assert "provision" in failure.value.message


def test_status_of_an_unknown_agent_is_missing(runtime, make_spec):
    assert [r.state for r in runtime.status(make_spec()).replicas] == ["missing"]


# --- start, stop, suspend, resume, restart, remove -----------------------------------------


def test_start_returns_once_every_replica_is_ready_with_container_ids_and_ports(
    runtime, started, engine
):
    spec, details = started(replicas=2)
    assert details["ports"] == list(spec.ports)
    assert len(details["container_ids"]) == 2
    for replica, port in enumerate(spec.ports):
        status, body = http(port, "/readyz")
        assert status == 200 and body["slug"] == spec.slug and body["replica"] == replica
        found = inspect(engine, f"waooaw-{spec.slug}-{replica}")
        assert found["Id"] == details["container_ids"][replica]
        assert found["State"]["Running"]
    status = runtime.status(spec)
    assert status.all_running
    assert [r.container_id for r in status.replicas] == details["container_ids"]
    assert [r.port for r in status.replicas] == list(spec.ports)
    # The engine's own health check (every second here) agrees.
    wait_until(
        lambda: all(r.health == "healthy" for r in runtime.status(spec).replicas),
        what="the engine to report the containers healthy",
    )


def test_start_of_a_running_agent_starts_nothing_new(runtime, started):
    spec, details = started()
    again = runtime.start(spec)
    assert again["container_ids"] == details["container_ids"]
    assert again["replicas"][0]["already_running"] is True


def test_stop_is_graceful_and_stopping_again_is_not_an_error(runtime, started, engine):
    spec, details = started()
    stopped = runtime.stop(spec)
    assert stopped["stopped"] == 1
    assert stopped["replicas"][0]["exit_code"] == 0  # agentd's clean exit on SIGTERM
    assert stopped["replicas"][0]["killed_after_grace"] is False
    logs = engine.containers.get(details["container_ids"][0]).logs().decode()
    assert "stopped cleanly" in logs
    assert [r.state for r in runtime.status(spec).replicas] == ["exited"]
    assert runtime.stop(spec)["stopped"] == 0


def test_suspend_pauses_and_resume_unpauses(runtime, started):
    spec, _ = started()
    runtime.suspend(spec)
    assert [r.state for r in runtime.status(spec).replicas] == ["paused"]
    assert http(spec.ports[0])[0] is None  # frozen: it cannot answer
    runtime.resume(spec)
    assert [r.state for r in runtime.status(spec).replicas] == ["running"]
    assert http(spec.ports[0])[0] == 200


def test_suspend_of_an_agent_with_nothing_running_is_refused(runtime, deployed):
    with pytest.raises(RuntimeFailure) as failure:
        runtime.suspend(deployed())
    assert failure.value.reason == "not_found"


def test_stop_of_a_suspended_agent_still_lets_it_exit_cleanly(runtime, started):
    spec, _ = started()
    runtime.suspend(spec)
    stopped = runtime.stop(spec)
    assert stopped["replicas"][0]["exit_code"] == 0


def test_restart_stops_and_starts_again_readiness_gated(runtime, started):
    spec, details = started()
    before = http(spec.ports[0])[1]["uptime_seconds"]
    time.sleep(0.5)
    restarted = runtime.restart(spec)
    assert restarted["previous_container_ids"] == details["container_ids"]
    assert restarted["stop"]["replicas"][0]["exit_code"] == 0
    status, body = http(spec.ports[0])
    assert status == 200 and body["uptime_seconds"] < before + 0.5


def test_start_recreates_a_stopped_container_whose_spec_changed(runtime, started, engine):
    spec, details = started()
    runtime.stop(spec)
    changed = AgentSpec.from_dict({**spec.to_dict(), "config": {"task_block_ms": 250}})
    again = runtime.start(changed)
    assert again["container_ids"] != details["container_ids"]
    assert http(spec.ports[0], "/config")[1]["task_block_ms"] == 250


def test_remove_keeps_the_volume_and_purge_deletes_it(runtime, started, engine):
    spec, _ = started()
    removed = runtime.remove(spec)
    assert removed["removed_containers"] == [f"waooaw-{spec.slug}-0"]
    assert engine.containers.list(all=True, filters={"label": f"waooaw.agent={spec.slug}"}) == []
    assert engine.volumes.get(f"waooaw-{spec.slug}-data")
    purged = runtime.remove(spec, purge=True)
    assert purged["volume_removed"] is True
    with pytest.raises(docker.errors.NotFound):
        engine.volumes.get(f"waooaw-{spec.slug}-data")
    assert [r.state for r in runtime.status(spec).replicas] == ["missing"]


def test_the_data_volume_is_writable_by_agentd_and_survives_a_new_container(
    runtime, started, engine
):
    spec, details = started()
    container = engine.containers.get(details["container_ids"][0])
    assert container.exec_run(["sh", "-c", "echo kept > /data/marker"]).exit_code == 0
    runtime.remove(spec)  # containers only
    runtime.deploy(spec)
    again = runtime.start(spec)
    container = engine.containers.get(again["container_ids"][0])
    assert container.exec_run(["cat", "/data/marker"]).output.strip() == b"kept"


# --- logs and stats ----------------------------------------------------------------------


def test_logs_carry_timestamps_and_honour_tail_and_since(runtime, started):
    spec, _ = started()
    lines = list(runtime.logs(spec, tail=None))
    assert any('"event": "started"' in line.text for line in lines)
    assert all(line.ts.endswith("Z") and len(line.ts) == 24 for line in lines)
    assert [line.ts for line in lines] == sorted(line.ts for line in lines)
    assert len(list(runtime.logs(spec, tail=2))) == 2
    assert list(runtime.logs(spec, since=time.time() + 60)) == []


def test_logs_follow_new_lines_until_stopped(runtime, started):
    spec, _ = started()
    stop = threading.Event()
    seen: list[str] = []

    def follow() -> None:
        for line in runtime.logs(spec, tail=0, follow=True, stop=stop):
            seen.append(line.text)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    time.sleep(0.5)
    http(spec.ports[0], "/config", "PATCH", {"task_retry_ms": 1234})
    wait_until(lambda: any("config_changed" in text for text in seen), what="the new log line")
    stop.set()
    reader.join(timeout=5)
    assert not reader.is_alive()


def test_stats_report_cpu_and_memory_of_running_replicas(runtime, started):
    spec, _ = started(replicas=2)
    stats = runtime.stats(spec)
    assert [s.replica for s in stats] == [0, 1]
    for replica in stats:
        assert 0 <= replica.cpu_percent < 200
        assert 5 * MEBIBYTE < replica.memory_bytes < 128 * MEBIBYTE


# --- errors -------------------------------------------------------------------------------


def test_an_unreachable_engine_is_a_clear_engine_unreachable_failure(tmp_path, make_spec):
    dead = f"unix://{tmp_path}/no-engine.sock"
    runtime = DockerRuntime(dead, REPOSITORY, "redis://127.0.0.1:1/0")  # constructing is fine
    spec = make_spec()
    for action in (runtime.provision, runtime.start, runtime.status):
        with pytest.raises(RuntimeFailure) as failure:
            action(spec)
        assert failure.value.reason == "engine_unreachable"
        assert dead in failure.value.message and "DOCKER_HOST" in failure.value.message
    with pytest.raises(RuntimeFailure) as failure:
        runtime.drift([])
    assert failure.value.reason == "engine_unreachable"
    assert runtime.adopt() == []  # the monitor starting up must not fail for it


def test_the_event_stream_waits_for_an_unreachable_engine_and_still_stops_at_once(tmp_path):
    runtime = DockerRuntime(f"unix://{tmp_path}/no-engine.sock", REPOSITORY, "redis://x:1/0")
    reader = EventCollector(runtime)
    time.sleep(0.5)
    assert reader.close() < 1.0
    assert reader.events == []


def test_a_missing_image_is_image_missing_naming_the_image_and_the_command(runtime, make_spec):
    spec = make_spec(version="0.0.0-never-built")
    spec = AgentSpec.from_dict({**spec.to_dict(), "ports": runtime.provision(spec)["ports"]})
    for action in (runtime.deploy, runtime.start):
        with pytest.raises(RuntimeFailure) as failure:
            action(spec)
        assert failure.value.reason == "image_missing"
        assert f"{REPOSITORY}:0.0.0-never-built" in failure.value.message
        assert "manage.py agents build-image --version 0.0.0-never-built" in failure.value.message


def test_a_port_in_use_is_port_in_use_and_leaves_nothing_running(runtime, deployed):
    spec = deployed()
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", spec.ports[0]))
        holder.listen()
        with pytest.raises(RuntimeFailure) as failure:
            runtime.start(spec)
    assert failure.value.reason == "port_in_use"
    assert str(spec.ports[0]) in failure.value.message
    assert failure.value.details["exit_code"] == 3
    assert any("bind_failed" in line for line in failure.value.details["log_lines"])
    assert [r.state for r in runtime.status(spec).replicas] == ["exited"]


def test_a_config_agentd_refuses_is_bad_config(runtime, deployed):
    spec = deployed(config={"task_block_ms": 1})  # below agentd's minimum
    with pytest.raises(RuntimeFailure) as failure:
        runtime.start(spec)
    assert failure.value.reason == "bad_config"
    assert "task_block_ms" in failure.value.message
    assert failure.value.details["exit_code"] == 2


def test_memory_over_the_limit_at_start_is_oom(runtime, deployed):
    # The engine enforces memory limits through the kernel's memory cgroup (whatever the
    # storage driver, vfs included): agentd touching 200 MiB under a 64 MiB limit is killed.
    spec = deployed(memory_mb=64, config={"faults": {"allocate_mb": 200}})
    with pytest.raises(RuntimeFailure) as failure:
        runtime.start(spec)
    assert failure.value.reason == "oom"
    assert "64 MiB" in failure.value.message
    assert failure.value.details["oom"] is True and failure.value.details["exit_code"] == 137
    status = runtime.status(spec).replicas[0]
    assert status.state == "exited" and status.oom_killed and status.signal == 9


def test_readiness_never_passing_is_not_ready_and_the_container_is_stopped(runtime, deployed):
    spec = deployed(ready_timeout=3, config={"faults": {"refuse_readiness": True}})
    began = time.monotonic()
    with pytest.raises(RuntimeFailure) as failure:
        runtime.start(spec)
    assert 3 <= time.monotonic() - began < 12
    assert failure.value.reason == "not_ready"
    assert "refuse_readiness" in failure.value.message
    assert [r.state for r in runtime.status(spec).replicas] == ["exited"]


def test_a_failing_health_check_is_not_ready(runtime, deployed):
    spec = deployed(ready_timeout=8, config={"faults": {"unhealthy": True}})
    with pytest.raises(RuntimeFailure) as failure:
        runtime.start(spec)
    assert failure.value.reason == "not_ready"
    assert failure.value.details["last_readiness"]["status"] == 503
    assert failure.value.details["health"] == "unhealthy"
    assert "health check reports it unhealthy" in failure.value.message
    assert [r.state for r in runtime.status(spec).replicas] == ["exited"]


def test_a_container_name_taken_by_something_else_is_refused_clearly(runtime, make_spec, engine):
    spec = make_spec()
    spec = AgentSpec.from_dict({**spec.to_dict(), "ports": runtime.provision(spec)["ports"]})
    stranger = engine.containers.create(
        f"{REPOSITORY}:{VERSION}", name=f"waooaw-{spec.slug}-0", labels={"owner": "someone"}
    )
    try:
        with pytest.raises(RuntimeFailure) as failure:
            runtime.deploy(spec)
        assert failure.value.details["conflict"] == "container_name"
        assert f"waooaw-{spec.slug}-0" in failure.value.message
        assert "not to" in failure.value.message
        stranger.reload()  # untouched
        assert stranger.labels == {"owner": "someone"} | stranger.image.labels
    finally:
        stranger.remove(force=True)


# --- events ------------------------------------------------------------------------------


def test_events_report_start_pause_resume_and_a_requested_stop_with_container_ids(
    runtime, deployed, collector
):
    events = collector()
    spec = deployed()
    details = runtime.start(spec)
    container_id = details["container_ids"][0]
    runtime.suspend(spec)
    runtime.resume(spec)
    runtime.stop(spec)
    exited = events.wait_for(spec.slug, "exited")[0]
    # A health check that times out on a loaded machine may add an "unhealthy": not the point.
    lifecycle = [e.kind for e in events.of(spec.slug) if e.kind != "unhealthy"]
    assert lifecycle == ["started", "paused", "resumed", "exited"]
    assert all(e.details["container_id"] == container_id for e in events.of(spec.slug))
    assert exited.exit_code == 0 and exited.signal is None
    assert exited.details["requested_stop"] is True
    ids = [int(e.id) for e in events.of(spec.slug)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_a_docker_kill_is_an_exit_by_sigkill_that_nobody_requested(
    runtime, started, collector, engine
):
    events = collector()
    spec, details = started()
    engine.containers.get(details["container_ids"][0]).kill()
    exited = events.wait_for(spec.slug, "exited")[0]
    assert exited.exit_code == 137 and exited.signal == 9
    assert exited.details["requested_stop"] is False
    assert exited.details["oom"] is False
    assert exited.details["container_id"] == details["container_ids"][0]


def test_a_crash_after_a_restart_is_not_taken_for_the_stop_before_it(
    runtime, started, collector, engine
):
    events = collector()
    spec, details = started()
    runtime.restart(spec)  # a stop the portal asked for, then a start of the same container
    engine.containers.get(details["container_ids"][0]).kill()
    exits = events.wait_for(spec.slug, "exited", count=2)
    assert [e.details["requested_stop"] for e in exits] == [True, False]
    assert [e.exit_code for e in exits] == [0, 137]


def test_memory_growing_past_the_limit_while_running_gives_oom_and_exit_events(
    runtime, started, collector
):
    events = collector()
    spec, details = started(memory_mb=64)
    http(spec.ports[0], "/config", "PATCH", {"faults": {"allocate_mb": 200}})
    exited = events.wait_for(spec.slug, "exited")[0]
    assert exited.exit_code == 137 and exited.details["oom"] is True
    assert (
        events.wait_for(spec.slug, "oom")[0].details["container_id"]
        == exited.details["container_id"]
    )


def test_a_failing_health_check_gives_an_unhealthy_event(runtime, started, collector):
    events = collector()
    spec, _ = started()
    http(spec.ports[0], "/config", "PATCH", {"faults": {"unhealthy": True}})
    unhealthy = events.wait_for(spec.slug, "unhealthy", timeout=20)[0]
    assert unhealthy.details["action"] == "health_status: unhealthy"


def test_the_event_stream_resumes_after_the_last_id_with_exactly_the_missed_events(
    runtime, started, collector
):
    first = collector()
    spec, _ = started()
    runtime.suspend(spec)
    first.wait_for(spec.slug, "paused")
    last_id = first.of(spec.slug)[-1].id
    first.close()

    runtime.resume(spec)  # while nobody reads
    runtime.stop(spec)
    time.sleep(0.3)

    resumed = collector(since_id=last_id)
    resumed.wait_for(spec.slug, "exited")
    time.sleep(0.5)  # anything else would have come by now
    assert [e.kind for e in resumed.of(spec.slug) if e.kind != "unhealthy"] == [
        "resumed",
        "exited",
    ]
    assert all(int(e.id) > int(last_id) for e in resumed.events)


def test_the_event_stream_returns_soon_after_stop_is_set(runtime, collector):
    events = collector()
    assert events.close() < 1.0


def test_removing_a_container_gives_a_removed_event(runtime, started, collector, engine):
    events = collector()
    spec, details = started()
    engine.containers.get(details["container_ids"][0]).remove(force=True)
    removed = events.wait_for(spec.slug, "removed")[0]
    assert removed.details["container_id"] == details["container_ids"][0]
    assert removed.details["requested_stop"] is False


# --- adoption, drift and reconciliation ----------------------------------------------------


def test_adopt_finds_running_agents_and_touches_nothing(runtime, started, deployed):
    spec, details = started()
    idle = deployed()
    adopted = runtime.adopt()
    assert spec.slug in adopted and idle.slug not in adopted
    assert runtime.status(spec).replicas[0].container_id == details["container_ids"][0]


def test_drift_finds_a_container_removed_behind_the_portals_back(runtime, started, engine):
    spec, details = started()
    assert [d for d in runtime.drift([(spec, "RUNNING")]) if d["slug"] == spec.slug] == []
    engine.containers.get(details["container_ids"][0]).remove(force=True)
    found = [d for d in runtime.drift([(spec, "RUNNING")]) if d["slug"] == spec.slug]
    assert [(d["kind"], d["replica"]) for d in found] == [("missing", 0)]
    assert f"waooaw-{spec.slug}-0" in found[0]["message"]
    reconciled = runtime.reconcile(spec, "RUNNING")
    name = f"waooaw-{spec.slug}-0"
    assert reconciled["actions"] == [f"recreated {name}", f"started {name}"]
    assert [r.state for r in runtime.status(spec).replicas] == ["running"]
    assert http(spec.ports[0], "/readyz")[0] == 200


def test_drift_reports_an_orphan_and_remove_orphan_deletes_it(runtime, make_spec, engine):
    orphan = make_spec()  # labelled as ours, unknown to the portal
    engine.containers.create(
        f"{REPOSITORY}:{VERSION}",
        name=f"waooaw-{orphan.slug}-0",
        labels={"waooaw.managed": "true", "waooaw.agent": orphan.slug, "waooaw.replica": "0"},
    )
    found = [d for d in runtime.drift([]) if d["slug"] == orphan.slug]
    assert [d["kind"] for d in found] == ["orphan"]
    assert runtime.remove_orphan(orphan.slug)["removed"] == [f"waooaw-{orphan.slug}-0"]
    assert [d for d in runtime.drift([]) if d["slug"] == orphan.slug] == []


def test_drift_reports_states_that_contradict_the_portal_and_reconcile_fixes_them(runtime, started):
    spec, _ = started()
    found = [d for d in runtime.drift([(spec, "STOPPED")]) if d["slug"] == spec.slug]
    assert [d["kind"] for d in found] == ["unexpected_state"]
    assert f"waooaw-{spec.slug}-0 is running while" in found[0]["message"]
    assert runtime.reconcile(spec, "SUSPENDED")["actions"] == [f"paused waooaw-{spec.slug}-0"]
    assert [d for d in runtime.drift([(spec, "SUSPENDED")]) if d["slug"] == spec.slug] == []
    assert runtime.reconcile(spec, "STOPPED")["actions"] == [f"stopped waooaw-{spec.slug}-0"]
    assert [d for d in runtime.drift([(spec, "STOPPED")]) if d["slug"] == spec.slug] == []
    exited = runtime.drift([(spec, "RUNNING")])
    assert [d["kind"] for d in exited if d["slug"] == spec.slug] == ["unexpected_state"]
    assert runtime.reconcile(spec, "ERRORED")["actions"] == []  # its restart is not ours
    assert runtime.reconcile(spec, "RUNNING")["actions"] == [f"started waooaw-{spec.slug}-0"]
    assert [d for d in runtime.drift([(spec, "RUNNING")]) if d["slug"] == spec.slug] == []


def test_drift_reports_replicas_beyond_the_count_and_reconcile_removes_them(runtime, started):
    spec, _ = started(replicas=2)
    fewer = AgentSpec.from_dict({**spec.to_dict(), "replicas": 1})
    found = [d for d in runtime.drift([(fewer, "RUNNING")]) if d["slug"] == spec.slug]
    assert [(d["kind"], d["replica"]) for d in found] == [("orphan", 1)]
    assert runtime.reconcile(fewer, "RUNNING")["actions"] == [
        f"removed waooaw-{spec.slug}-1 (replica beyond the agent's count)"
    ]
    assert [r.replica for r in runtime.status(fewer).replicas] == [0]
