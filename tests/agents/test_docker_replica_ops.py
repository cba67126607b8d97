"""Per-replica operations of the Docker runtime against a real engine (see
test_docker_runtime.py for how the engine and the image are found): replicas of two versions
side by side, stopping some on purpose without that looking like a crash, and backing up and
restoring the agent's volume through a container of its own image.

The second version is the same image tagged ``1.0.<pid>`` for the test (no registry here); the
tag is removed afterwards. It is the test worker's own: a tag two workers shared (as 1.1.0 was,
with servicing's Docker tests and with this module's other tests) was taken away under one of
them when the other finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import redis

from agents import services
from agents.models import Agent, State
from agents.monitor import EXIT_DETAILS_GRACE_SECONDS, Monitor
from agents.runtimes import AgentSpec, RuntimeFailure
from agents.runtimes.docker import DockerRuntime, HealthCheck
from portal.actors import Actor

pytestmark = pytest.mark.docker

DOCKER_HOST = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
REPOSITORY = "waooaw/agentd"
NEW_VERSION = f"1.0.{os.getpid()}"  # this worker's own tag; see the module's docstring
FAST_HEALTH = HealthCheck(interval=1, timeout=2, retries=2, start_period=1)


@pytest.fixture
def new_version(engine) -> Iterator[str]:
    """``waooaw/agentd:1.0.<pid>``: the test's second version, the 1.0.0 image under a new tag."""
    engine.images.get(f"{REPOSITORY}:1.0.0").tag(REPOSITORY, NEW_VERSION)
    yield NEW_VERSION
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        engine.images.remove(f"{REPOSITORY}:{NEW_VERSION}")


@pytest.fixture
def runtime(engine, redis_url: str) -> DockerRuntime:
    return DockerRuntime(DOCKER_HOST, REPOSITORY, redis_url, health=FAST_HEALTH)


def remove_everything_of(engine: docker.DockerClient, slug: str) -> None:
    for container in engine.containers.list(all=True, filters={"label": f"waooaw.agent={slug}"}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    with contextlib.suppress(docker.errors.NotFound):
        engine.volumes.get(f"waooaw-{slug}-data").remove(force=True)


@pytest.fixture
def started(runtime, engine, redis_url) -> Iterator[Callable[..., AgentSpec]]:
    """Provision, deploy and start an agent of its own slug at 1.0.0; teardown deletes its
    containers, volume and Redis keys."""
    slugs: list[str] = []

    def start(**fields: object) -> AgentSpec:
        slug = f"dr-{uuid.uuid4().hex[:10]}"
        slugs.append(slug)
        spec = AgentSpec(
            slug=slug, name=f"Agent {slug}", version="1.0.0", redis_url=redis_url,
            memory_mb=128, grace_seconds=3, ready_timeout=15, **fields,  # type: ignore[arg-type]
        )  # fmt: skip
        spec = dataclasses.replace(spec, ports=tuple(runtime.provision(spec)["ports"]))
        runtime.deploy(spec)
        runtime.start(spec)
        return spec

    yield start
    for slug in slugs:
        remove_everything_of(engine, slug)
    client = redis.Redis.from_url(redis_url)
    for slug in slugs:
        keys = list(client.scan_iter(f"agents:{slug}:*"))
        if keys:
            client.delete(*keys)
    client.close()


def health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as answer:
        assert answer.status == 200
        return json.loads(answer.read())


def versions(runtime, spec) -> dict[int, tuple[str, str]]:
    return {r.replica: (r.state, r.version) for r in runtime.status(spec).replicas}


def test_launch_a_replica_of_a_new_version_then_stop_the_old_one(
    runtime, started, new_version, engine
):
    old = started()
    new = dataclasses.replace(old, version=new_version)

    [launched] = runtime.launch_replicas(new, [1])["replicas"]

    assert launched["replica"] == 1 and launched["version"] == new_version
    assert launched["container_id"] and not launched["already_running"]
    assert launched["port"] not in old.ports
    assert health(old.ports[0])["version"] == "1.0.0"
    assert health(launched["port"])["version"] == new_version
    assert versions(runtime, old) == {0: ("running", "1.0.0"), 1: ("running", new_version)}
    container = engine.api.inspect_container(launched["container_id"])
    assert container["Config"]["Image"] == f"{REPOSITORY}:{new_version}"
    assert runtime.launch_replicas(new, [1])["replicas"][0]["already_running"]
    with pytest.raises(RuntimeFailure) as refused:
        runtime.launch_replicas(new, [0])
    assert refused.value.reason == "bad_config" and "1.0.0" in refused.value.message

    stopped = runtime.stop_replicas(old, [0])
    assert stopped["replicas"][0]["exit_code"] == 0 and stopped["forgotten"] == []
    assert versions(runtime, old) == {1: ("running", new_version)}
    assert runtime.stop_replicas(old, [0])["stopped"] == 0

    assert runtime.stop_replicas(old, [1])["forgotten"] == [1]
    assert runtime.status(old).replicas == []
    with pytest.raises(docker.errors.NotFound):
        engine.api.inspect_container(launched["container_id"])

    runtime.start(old)  # starting the agent again ends replica 0's retirement
    assert versions(runtime, old) == {0: ("running", "1.0.0")}


def test_a_failed_launch_leaves_nothing_behind(runtime, started, new_version, engine):
    old = started()
    broken = dataclasses.replace(old, version=new_version, config={"faults": {"fail_rate": 5}})

    with pytest.raises(RuntimeFailure) as failure:
        runtime.launch_replicas(broken, [1])

    assert failure.value.reason == "bad_config"
    assert versions(runtime, old) == {0: ("running", "1.0.0")}
    labelled = engine.containers.list(all=True, filters={"label": f"waooaw.agent={old.slug}"})
    assert [c.labels["waooaw.replica"] for c in labelled] == ["0"]


@pytest.fixture
def docker_cache(engine, transactional_db, settings, bring_up) -> Iterator[Agent]:
    """wow-cache on the Docker runtime, running, under a slug of this test."""
    settings.AGENT_RUNTIME = "docker"
    settings.DOCKER_HOST = DOCKER_HOST
    settings.AGENT_IMAGE = REPOSITORY
    settings.AGENT_DOCKER_NETWORK = "host"
    services.seed_platform_agents(Actor.command("test"))
    slug = f"wow-cache-{uuid.uuid4().hex[:6]}"
    Agent.objects.filter(slug="wow-cache").update(slug=slug, runtime="docker")
    try:
        yield bring_up(Agent.objects.get(slug=slug))
    finally:
        remove_everything_of(engine, slug)


def test_a_replica_stopped_on_purpose_is_not_a_crash_to_reconciliation(docker_cache, new_version):
    runtime, spec = services.runtime_for(docker_cache), services.spec_for(docker_cache)
    runtime.launch_replicas(dataclasses.replace(spec, version=new_version), [1])

    runtime.stop_replicas(spec, [0])
    Monitor(runtimes=["docker"]).reconcile()
    time.sleep(EXIT_DETAILS_GRACE_SECONDS + 0.1)
    Monitor(runtimes=["docker"]).reconcile()

    docker_cache.refresh_from_db()
    assert docker_cache.state == State.RUNNING
    assert not docker_cache.transitions.filter(action="fail").exists()
    assert [(r.replica, r.version) for r in runtime.status(spec).replicas] == [(1, new_version)]


def read_volume(engine, spec, path: str) -> bytes | None:
    """A file of the agent's volume, read through its running replica 0."""
    try:
        chunks, _ = engine.api.get_archive(f"waooaw-{spec.slug}-0", f"/data/{path}")
    except docker.errors.NotFound:
        return None
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
        member = archive.next()
        assert member is not None
        content = archive.extractfile(member)
        return content.read() if content is not None else None


def write_volume(engine, spec, path: str, content: bytes) -> None:
    """Write a file into the agent's volume through its running replica 0, as its user."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(path)
        info.size, info.uid, info.gid, info.mode = len(content), 10001, 10001, 0o644
        archive.addfile(info, io.BytesIO(content))
    assert engine.api.put_archive(f"waooaw-{spec.slug}-0", "/data", buffer.getvalue())


def test_backup_and_restore_bring_the_volume_back_while_the_agent_runs(
    runtime, started, engine, tmp_path
):
    spec = started()
    write_volume(engine, spec, "notes.txt", b"before")

    backup = runtime.backup_data(spec, str(tmp_path / "cache.tar.gz"))
    assert backup["path"] == str(tmp_path / "cache.tar.gz") and len(backup["sha256"]) == 64
    assert backup["files"] >= 1 and backup["bytes"] == Path(backup["path"]).stat().st_size
    with tarfile.open(backup["path"]) as archive:
        assert archive.extractfile("data/notes.txt").read() == b"before"

    write_volume(engine, spec, "notes.txt", b"after")
    write_volume(engine, spec, "later.txt", b"new")
    restored = runtime.restore_data(spec, backup["path"])

    assert restored["sha256"] == backup["sha256"]
    assert read_volume(engine, spec, "notes.txt") == b"before"
    assert read_volume(engine, spec, "later.txt") is None
    assert runtime.status(spec).all_running and health(spec.ports[0])["version"] == "1.0.0"
    helpers = engine.containers.list(all=True, filters={"name": f"waooaw-{spec.slug}-data-"})
    assert helpers == []  # the short-lived containers are gone


def test_a_corrupt_or_escaping_archive_is_refused(runtime, started, engine, tmp_path):
    spec = started()
    write_volume(engine, spec, "kept.txt", b"still here")
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"\x1f\x8b not really gzip")
    escaping = tmp_path / "escaping.tar.gz"
    with tarfile.open(escaping, "w:gz") as archive:
        archive.addfile(tarfile.TarInfo("/etc/evil"), io.BytesIO(b""))

    for bad, words in [(garbage, "damaged"), (escaping, "outside")]:
        with pytest.raises(RuntimeFailure) as refused:
            runtime.restore_data(spec, str(bad))
        assert refused.value.reason == "bad_config" and words in refused.value.message
    with pytest.raises(RuntimeFailure) as missing:
        runtime.restore_data(spec, str(tmp_path / "absent.tar.gz"))
    assert missing.value.reason == "not_found"
    assert read_volume(engine, spec, "kept.txt") == b"still here"


def test_a_rolling_restart_on_docker_keeps_both_replicas_ready_and_loses_no_task(
    runtime, started, redis_url
):
    import threading

    from agents.agentd import contract
    from tests.agents.test_rolling_restart import Load, ready_replicas

    spec = started(replicas=2)
    before = {r.replica: r.started_at for r in runtime.status(spec).replicas}
    fewest = [2]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            fewest[0] = min(fewest[0], ready_replicas(runtime, spec))
            time.sleep(0.05)

    load = Load(redis_url, spec.slug, per_second=20)
    load.start()
    time.sleep(0.5)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = runtime.rolling_restart(spec)
    sampling.set()
    sampler.join()
    time.sleep(0.5)
    load.halt.set()
    load.join()
    deadline = time.monotonic() + 30
    while len(load.answers()) < len(load.sent) and time.monotonic() < deadline:
        time.sleep(0.2)

    assert result["rolled"] and len(result["container_ids"]) == 2
    assert fewest[0] >= 2
    answers = load.answers()
    assert sorted(a[contract.REPLY_TASK_ID] for a in answers) == sorted(load.sent)
    assert {a[contract.REPLY_STATUS] for a in answers} == {contract.REPLY_SUCCEEDED}
    after = {r.replica: (r.state, r.started_at) for r in runtime.status(spec).replicas}
    assert sorted(after) == [0, 1]  # the spare's container is gone
    # Each replica's container was stopped and started again: its process is new.
    assert all(state == "running" and at > before[n] for n, (state, at) in after.items())
    consumers = load.client.xinfo_consumers(
        contract.task_stream(spec.slug), contract.CONSUMER_GROUP
    )
    assert sorted(c["name"] for c in consumers) == [f"{spec.slug}-0", f"{spec.slug}-1"]
    load.client.delete(load.replies)
