"""Per-replica operations of the local runtime (what upgrades build on), against real agentd
processes: launching replicas of another version beside the running ones, stopping some on
purpose without that looking like a crash, and backing up and restoring an agent's data."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

from agents import services
from agents.models import Agent, State
from agents.monitor import EXIT_DETAILS_GRACE_SECONDS, Monitor
from agents.runtimes import AgentSpec, RuntimeFailure
from agents.runtimes.local import LocalRuntime
from portal.actors import Actor
from tests.agents.test_local_runtime import processes_under, wait_until


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "agents"
    yield directory
    for process in processes_under(directory):
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    wait_until(lambda: not processes_under(directory), what="the test's processes to end")


@pytest.fixture
def runtime(root: Path, redis_url: str) -> LocalRuntime:
    return LocalRuntime(root, redis_url)


@pytest.fixture
def started(runtime: LocalRuntime, redis_url: str) -> Iterator[Callable[..., AgentSpec]]:
    """Provision, deploy and start an agent of its own slug; answers its spec with its ports."""
    slugs: list[str] = []

    def start(**fields: object) -> AgentSpec:
        slug = f"rep-{uuid.uuid4().hex[:10]}"
        slugs.append(slug)
        spec = AgentSpec(
            slug=slug, name=f"Agent {slug}", redis_url=redis_url, grace_seconds=5,
            ready_timeout=10, **fields,  # type: ignore[arg-type]
        )  # fmt: skip
        spec = dataclasses.replace(spec, ports=tuple(runtime.provision(spec)["ports"]))
        runtime.deploy(spec)
        runtime.start(spec)
        return spec

    yield start
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


def test_launch_a_replica_of_a_new_version_beside_the_old_one(runtime, started):
    old = started(version="1.0.0")
    new = dataclasses.replace(old, version="1.1.0")

    answer = runtime.launch_replicas(new, [1])

    assert answer["runtime"] == "local" and answer["duration_seconds"] >= 0
    [launched] = answer["replicas"]
    assert launched["replica"] == 1 and launched["version"] == "1.1.0"
    assert launched["pid"] and not launched["already_running"]
    assert launched["port"] not in old.ports  # a new port, reserved for replica 1
    assert health(old.ports[0])["version"] == "1.0.0"
    assert health(launched["port"])["version"] == "1.1.0"
    assert versions(runtime, old) == {0: ("running", "1.0.0"), 1: ("running", "1.1.0")}
    assert runtime.provision(new)["ports"] == list(old.ports)  # kept, not moved

    again = runtime.launch_replicas(new, [1])
    assert (
        again["replicas"][0]["already_running"] and again["replicas"][0]["pid"] == launched["pid"]
    )
    with pytest.raises(RuntimeFailure) as refused:
        runtime.launch_replicas(new, [0])  # replica 0 runs 1.0.0
    assert refused.value.reason == "bad_config" and "1.0.0" in refused.value.message


def test_stopped_replicas_leave_status_and_those_beyond_the_count_are_forgotten(
    runtime, started, root
):
    old = started(version="1.0.0")
    new = dataclasses.replace(old, version="1.1.0")
    extra_port = runtime.launch_replicas(new, [1])["replicas"][0]["port"]

    stopped = runtime.stop_replicas(old, [0])
    assert stopped["replicas"][0]["exit_code"] == 0  # SIGTERM, ended cleanly
    assert stopped["forgotten"] == []
    assert versions(runtime, old) == {1: ("running", "1.1.0")}
    assert runtime.status(old).all_running
    assert runtime.stop_replicas(old, [0])["stopped"] == 0  # stopping it again is no error

    stopped = runtime.stop_replicas(old, [1])
    assert stopped["forgotten"] == [1]
    assert runtime.status(old).replicas == []
    assert json.loads((root / old.slug / "ports.json").read_text()) == list(old.ports)
    assert not (root / old.slug / "replica-1" / "launch.json").exists()
    assert extra_port not in json.loads((root / old.slug / "ports.json").read_text())

    runtime.start(old)  # starting the agent again brings replica 0 back
    assert versions(runtime, old) == {0: ("running", "1.0.0")}


def test_a_failed_launch_leaves_nothing_behind(runtime, started, root):
    old = started(version="1.0.0")
    broken = dataclasses.replace(old, version="1.1.0", config={"faults": {"fail_rate": 5}})
    ports_before = json.loads((root / old.slug / "ports.json").read_text())

    with pytest.raises(RuntimeFailure) as failure:
        runtime.launch_replicas(broken, [1])

    assert failure.value.reason == "bad_config"
    assert versions(runtime, old) == {0: ("running", "1.0.0")}
    assert json.loads((root / old.slug / "ports.json").read_text()) == ports_before
    assert len([p for p in processes_under(root) if "agents.agentd" in p.cmdline()]) == 1


@pytest.mark.django_db(transaction=True)
def test_a_replica_stopped_on_purpose_is_not_a_crash_to_reconciliation(bring_up):
    services.seed_platform_agents(Actor.command("test"))
    agent = bring_up(Agent.objects.get(slug="wow-cache"))
    runtime, spec = services.runtime_for(agent), services.spec_for(agent)
    runtime.launch_replicas(dataclasses.replace(spec, version="9.9.9"), [1])

    runtime.stop_replicas(spec, [0])
    Monitor().reconcile()
    time.sleep(EXIT_DETAILS_GRACE_SECONDS + 0.1)  # past the grace for exits without details
    Monitor().reconcile()

    agent.refresh_from_db()
    assert agent.state == State.RUNNING
    assert not agent.transitions.filter(action="fail").exists()
    assert [(r.replica, r.version) for r in runtime.status(spec).replicas] == [(1, "9.9.9")]


def test_backup_and_restore_bring_the_data_back_while_the_agent_runs(runtime, started, tmp_path):
    spec = started(version="1.0.0", replicas=2)
    data = [runtime.layout.replica_dir(spec.slug, r) / "data" for r in (0, 1)]
    (data[0] / "memory").mkdir(exist_ok=True)
    (data[0] / "memory" / "key.json").write_text('{"key": "k", "value": 1}')
    (data[1] / "notes.txt").write_text("replica one")

    backup = runtime.backup_data(spec, str(tmp_path / "backups" / "cache.tar.gz"))
    assert backup["path"] == str(tmp_path / "backups" / "cache.tar.gz")
    assert backup["files"] == 2 and backup["bytes"] == Path(backup["path"]).stat().st_size
    assert len(backup["sha256"]) == 64 and backup["replicas"] == [0, 1]

    (data[0] / "memory" / "key.json").write_text('{"key": "k", "value": 2}')
    (data[0] / "memory" / "later.json").write_text("{}")
    (data[1] / "notes.txt").unlink()

    restored = runtime.restore_data(spec, backup["path"])
    assert restored["sha256"] == backup["sha256"] and restored["replicas"] == [0, 1]
    assert (data[0] / "memory" / "key.json").read_text() == '{"key": "k", "value": 1}'
    assert not (data[0] / "memory" / "later.json").exists()
    assert (data[1] / "notes.txt").read_text() == "replica one"
    assert runtime.status(spec).all_running
    assert health(spec.ports[0])["version"] == "1.0.0"


def test_a_corrupt_missing_or_escaping_archive_is_refused_and_changes_nothing(
    runtime, started, tmp_path
):
    spec = started(version="1.0.0")
    data = runtime.layout.replica_dir(spec.slug, 0) / "data"
    (data / "kept.txt").write_text("still here")
    backup = runtime.backup_data(spec, str(tmp_path / "good.tar.gz"))

    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(Path(backup["path"]).read_bytes()[:-20])
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"not an archive at all")
    escaping = tmp_path / "escaping.tar.gz"
    with tarfile.open(escaping, "w:gz") as archive:
        archive.add(data / "kept.txt", arcname="replica-0/data/../../../outside.txt")
    linking = tmp_path / "linking.tar.gz"
    with tarfile.open(linking, "w:gz") as archive:
        link = tarfile.TarInfo("replica-0/data/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)

    for bad, reason, words in [
        (truncated, "bad_config", "damaged"),
        (garbage, "bad_config", "damaged"),
        (escaping, "bad_config", "outside"),
        (linking, "bad_config", "not a regular file"),
        (tmp_path / "absent.tar.gz", "not_found", "no backup archive"),
    ]:
        with pytest.raises(RuntimeFailure) as refused:
            runtime.restore_data(spec, str(bad))
        assert refused.value.reason == reason and words in refused.value.message, bad
    assert (data / "kept.txt").read_text() == "still here"
    assert not (tmp_path / "outside.txt").exists()
    with gzip.open(backup["path"]) as stream:  # the good one was left alone
        assert stream.read()
