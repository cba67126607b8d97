"""The log collector with real agents: local processes, a Docker container, Kubernetes pods served
by kmock (the only stand-in: an API server at the HTTP boundary). Lines reach the database once
each, whatever happens in between: a crash and restart of the agent (its log renamed to
previous.log), a collector that stops and starts again, lines that share a millisecond. New lines
reach the pages that follow them, over the live WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import docker.errors
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connection, connections
from django.test import Client

from agents.models import Agent, State
from agents.runtimes import LogLine
from observability import live, logs
from observability.collector import (
    LOCK_KEY,
    Collector,
    CollectorBusy,
    collect_once,
)
from observability.models import LogCursor, LogEntry
from portal import realtime
from portal.asgi import application
from tests.agents.conftest import DOCKER_HOST

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1")


def wait_for(predicate, timeout: float = 20, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout} s")


@contextlib.contextmanager
def running_collector(**options):
    """A collector in a thread, as ``manage.py collect`` runs it (but scanning more often)."""
    collector = Collector(scan_interval=0.2, flush_interval=0.1, **options)
    thread = threading.Thread(target=collector.run, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        collector.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the collector did not stop"


def events_of(agent: Agent, event: str) -> list[LogEntry]:
    return list(LogEntry.objects.filter(agent=agent, event=event).order_by("ts", "id"))


def stored_lines(agent: Agent) -> Counter:
    """What the database holds for the agent, as (time, message) pairs."""
    return Counter(
        (entry.ts, entry.message)
        for entry in LogEntry.objects.filter(agent=agent).only("ts", "message")
    )


def parsed_lines(texts, slug: str) -> Counter:
    """Lines as the agent wrote them, as (time, message) pairs."""
    found: Counter = Counter()
    for text in texts:
        if text:
            parsed = logs.parse(LogLine(slug, 0, "", text))
            found[(parsed.ts, parsed.message)] += 1
    return found


def file_lines(root: Path, slug: str, replica: int = 0) -> Counter:
    """What the local runtime's files hold: this run's log and the one before."""
    directory = root / slug / f"replica-{replica}"
    texts = []
    for name in ("previous.log", "agent.log"):
        if (directory / name).exists():
            texts.extend((directory / name).read_text().splitlines())
    return parsed_lines(texts, slug)


def patch_config(agent: Agent, change: dict) -> None:
    """agentd writes a config_changed line for every accepted change."""
    port = agent.runtime_details["ports"][0]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/config",
        data=json.dumps(change).encode(),
        method="PATCH",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


@pytest.fixture
def cache(seeded) -> Agent:
    return seeded["wow-cache"]


# --- the local runtime ---------------------------------------------------------------------------


def test_collect_once_stores_a_running_agents_lines_once(cache, bring_up, agent_root):
    bring_up(cache)
    stored = collect_once(cache)
    assert stored >= 2
    assert events_of(cache, "started") and events_of(cache, "ready")
    assert collect_once(cache) == 0  # nothing new: nothing stored twice
    patch_config(cache, {"task_max_failures": 4})
    assert collect_once(cache) == 1
    [changed] = events_of(cache, "config_changed")
    assert changed.fields["changed"] == ["task_max_failures"]
    assert stored_lines(cache) == file_lines(agent_root, "wow-cache")
    cursor = LogCursor.objects.get(agent=cache, replica=0)
    assert cursor.last_ts == changed.ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert cursor.lines_at_last_ts >= 1


def test_lines_that_share_a_millisecond_are_stored_once_each(cache, act, agent_root):
    """The cursor counts the lines of its last time: the ones after that count are new."""
    act(cache, "provision")
    act(cache, "deploy")
    log = agent_root / "wow-cache" / "replica-0" / "agent.log"
    same = "2026-11-21T10:00:00.123Z"

    def write(*messages: str) -> None:
        with open(log, "a") as handle:
            for message in messages:
                handle.write(json.dumps({"ts": same, "level": "info", "message": message}) + "\n")

    write("one", "two")
    assert collect_once(cache) == 2
    cursor = LogCursor.objects.get(agent=cache)
    assert (cursor.last_ts, cursor.lines_at_last_ts) == (same, 2)
    write("three", "four", "five")
    assert collect_once(cache) == 3
    assert collect_once(cache) == 0
    assert sorted(LogEntry.objects.values_list("message", flat=True)) == sorted(
        ["one", "two", "three", "four", "five"]
    )
    assert LogCursor.objects.get(agent=cache).lines_at_last_ts == 5


def test_the_collector_follows_new_lines_as_agents_write_them(cache, bring_up, agent_root):
    bring_up(cache)
    with running_collector() as collector:
        wait_for(lambda: events_of(cache, "ready"), what="the agent's ready line stored")
        patch_config(cache, {"task_max_failures": 5})
        wait_for(lambda: events_of(cache, "config_changed"), what="the new line stored")
        assert collector.lines_stored >= 3
    assert stored_lines(cache) == file_lines(agent_root, "wow-cache")


def test_a_crash_and_restart_keep_the_lines_of_the_run_before(cache, bring_up, act, agent_root):
    bring_up(cache)
    first_pid = cache.runtime_details["pids"][0]
    with running_collector():
        wait_for(lambda: events_of(cache, "ready"))
        patch_config(cache, {"task_max_failures": 6})  # written just before the crash
        os.kill(first_pid, signal.SIGKILL)
        assert act(cache, "restart").status == "succeeded"  # agent.log becomes previous.log
        assert (agent_root / "wow-cache" / "replica-0" / "previous.log").exists()
        wait_for(lambda: len(events_of(cache, "ready")) == 2, what="the second run's lines")
        time.sleep(0.5)  # anything late would be a duplicate
    started = events_of(cache, "started")
    assert [entry.fields["pid"] for entry in started] == [
        first_pid,
        Agent.objects.get(pk=cache.pk).runtime_details["pids"][0],
    ]
    assert len(events_of(cache, "config_changed")) == 1
    assert stored_lines(cache) == file_lines(agent_root, "wow-cache")


def test_a_collector_restart_neither_loses_nor_repeats_lines(cache, bring_up, act, agent_root):
    bring_up(cache)
    with running_collector():
        wait_for(lambda: events_of(cache, "ready"))
    # Nobody collects: the agent writes, is restarted (its log renamed), writes again.
    patch_config(cache, {"task_max_failures": 7})
    assert act(cache, "restart").status == "succeeded"
    patch_config(Agent.objects.get(pk=cache.pk), {"task_max_failures": 8})
    expected = file_lines(agent_root, "wow-cache")
    with running_collector():
        wait_for(lambda: stored_lines(cache) == expected, what="every line stored once")
        time.sleep(0.5)
    assert stored_lines(cache) == expected
    assert len(events_of(cache, "ready")) == 2
    assert len(events_of(cache, "config_changed")) == 2


def test_a_stopped_agents_last_lines_are_read_once_more(cache, bring_up, act, agent_root):
    bring_up(cache)
    with running_collector():
        wait_for(lambda: events_of(cache, "ready"))
        assert act(cache, "stop").status == "succeeded"
        wait_for(lambda: events_of(cache, "shutdown"), what="the stop's last lines")
    assert stored_lines(cache) == file_lines(agent_root, "wow-cache")


def test_only_one_collector_works_at_a_time(cache, bring_up):
    bring_up(cache)
    other = connections.create_connection(DEFAULT_DB_ALIAS)  # another collector's session
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        with pytest.raises(CollectorBusy, match="collector is running"):
            collect_once(cache)
        with running_collector() as waiting:
            time.sleep(1.0)
            assert waiting.lines_stored == 0  # it waits for the lock
        assert not LogEntry.objects.exists()
    finally:
        with other.cursor() as cursor:  # that collector stops
            cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
        other.close()
    assert collect_once(cache) >= 2


# --- Docker ------------------------------------------------------------------------------------------


@pytest.mark.docker
def test_the_collector_follows_a_docker_agent_across_a_restart(
    engine, seeded, settings, bring_up, act, redis_client
):
    settings.DOCKER_HOST = DOCKER_HOST
    settings.AGENT_IMAGE = "waooaw/agentd"
    settings.AGENT_DOCKER_NETWORK = "host"
    slug = f"wow-cache-{uuid.uuid4().hex[:6]}"
    Agent.objects.filter(pk=seeded["wow-cache"].pk).update(slug=slug, runtime="docker")
    agent = Agent.objects.get(slug=slug)
    try:
        bring_up(agent)
        with running_collector():
            wait_for(lambda: events_of(agent, "ready"), timeout=30, what="the container's lines")
            patch_config(agent, {"task_max_failures": 4})
            wait_for(lambda: events_of(agent, "config_changed"), what="a followed line")
            assert act(agent, "restart").status == "succeeded"
            wait_for(lambda: len(events_of(agent, "ready")) == 2, timeout=30, what="the new run")
            time.sleep(1.0)  # a re-read after the restart would show up as duplicates
        assert len(events_of(agent, "started")) == 2
        assert len(events_of(agent, "config_changed")) == 1
        # Every line the engine holds for the container is stored, and none twice.
        (container,) = engine.containers.list(all=True, filters={"label": f"waooaw.agent={slug}"})
        engine_lines = parsed_lines(container.logs().decode().splitlines(), slug)
        stored = stored_lines(agent)
        assert not engine_lines - stored
        assert set(stored.values()) == {1}
        assert collect_once(agent) == 0
    finally:
        for container in engine.containers.list(
            all=True, filters={"label": f"waooaw.agent={slug}"}
        ):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            engine.volumes.get(f"waooaw-{slug}-data").remove(force=True)


# --- Kubernetes, through kmock ----------------------------------------------------------------------

NS = "waooaw-agents"


def pod(name: str, slug: str, created: str) -> dict:
    """A pod as the API shows it once a ReplicaSet made it and it runs."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "creationTimestamp": created,
            "labels": {"waooaw.agent": slug, "waooaw.managed": "true"},
        },
        "spec": {"containers": [{"name": "agentd", "image": "registry.test/waooaw/agentd:1.0.0"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def kubelet_line(stamp: str, message: str, level: str = "info") -> bytes:
    """A line of ``kubectl logs --timestamps``: the kubelet's time, then agentd's JSON."""
    record = {"ts": stamp[:23] + "Z", "level": level, "event": "note", "message": message}
    return f"{stamp} {json.dumps(record)}\n".encode()


@pytest.fixture
def kubernetes_agent(kmock, seeded, settings, tmp_path, monkeypatch) -> Agent:
    for resource in ("apps/v1/deployments", "v1/pods", "v1/services", "v1/configmaps", "v1/events"):
        kmock.resources[resource] = {"namespaced": True}
    kubeconfig = tmp_path / "kubeconfig"
    server = str(kmock.url).rstrip("/")
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "portal", "user": {"token": "portal-token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "portal"}}],
                "current-context": "kmock",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    settings.KUBERNETES_NAMESPACE = NS
    # Running on a cluster whose controllers kmock does not play: the test makes the pods.
    Agent.objects.filter(pk=seeded["wow-cache"].pk).update(
        runtime="kubernetes", state=State.RUNNING, replicas=2
    )
    return Agent.objects.get(pk=seeded["wow-cache"].pk)


def in_thread(function, *args):
    """Run portal code in a thread of its own (kmock serves from this test's event loop)."""

    def run():
        try:
            return function(*args)
        finally:
            close_old_connections()
            connection.close()

    return asyncio.to_thread(run)


@pytest.mark.asyncio
async def test_kubernetes_pod_logs_are_collected_per_pod_and_followed(kmock, kubernetes_agent):
    agent = kubernetes_agent
    first, second = "waooaw-wow-cache-7d9c5b8f4-a1", "waooaw-wow-cache-7d9c5b8f4-b2"
    kmock.objects["v1/pods", NS, first] = pod(first, "wow-cache", "2026-11-21T09:00:00Z")
    kmock.objects["v1/pods", NS, second] = pod(second, "wow-cache", "2026-11-21T09:00:01Z")
    first_log = kubelet_line("2026-11-21T10:00:01.000000001Z", "first pod started") + kubelet_line(
        "2026-11-21T10:00:03.500000000Z", "first pod busy", "warning"
    )
    second_log = kubelet_line("2026-11-21T10:00:02.250000000Z", "second pod started")
    kmock[f"get /api/v1/namespaces/{NS}/pods/{first}/log?follow=true"] << first_log + kubelet_line(
        "2026-11-21T10:00:04.000000000Z", "first pod, a followed line"
    )
    kmock[f"get /api/v1/namespaces/{NS}/pods/{first}/log"] << first_log
    kmock[f"get /api/v1/namespaces/{NS}/pods/{second}/log"] << second_log

    assert await in_thread(collect_once, agent) == 3
    stored = await sync_to_async(
        lambda: list(LogEntry.objects.order_by("ts").values_list("replica", "level", "message"))
    )()
    assert stored == [
        (0, 20, "first pod started"),
        (1, 20, "second pod started"),
        (0, 30, "first pod busy"),
    ]
    cursors = await sync_to_async(
        lambda: dict(LogCursor.objects.values_list("replica", "last_ts"))
    )()
    assert cursors == {0: "2026-11-21T10:00:03.500Z", 1: "2026-11-21T10:00:02.250Z"}
    assert await in_thread(collect_once, agent) == 0

    # The collector follows each pod (the API closes the follow stream after these lines; it
    # is opened again and serves them again: each is still stored once).
    collector = Collector(scan_interval=0.2, flush_interval=0.1)
    thread = threading.Thread(target=collector.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not await sync_to_async(
            LogEntry.objects.filter(message="first pod, a followed line").exists
        )():
            assert time.monotonic() < deadline, "the followed line never arrived"
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.5)  # the follow streams are opened again meanwhile
    finally:
        collector.stop()
        await asyncio.to_thread(thread.join, 30)
    counts = await sync_to_async(
        lambda: Counter(LogEntry.objects.values_list("message", flat=True))
    )()
    assert counts == {
        "first pod started": 1,
        "second pod started": 1,
        "first pod busy": 1,
        "first pod, a followed line": 1,
    }
    follows = [r for r in kmock if r.params.get("follow") == "true"]
    assert follows and all(r.params["timestamps"] == "true" for r in follows)


# --- the live tail -------------------------------------------------------------------------------------


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def follower_socket(user, *topics: str) -> WebsocketCommunicator:
    cookie = await sync_to_async(session_cookie)(user)
    communicator = WebsocketCommunicator(
        application, "/ws/live/", headers=[ORIGIN, (b"cookie", cookie)]
    )
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    await communicator.send_json_to({"subscribe": list(topics)})
    await asyncio.sleep(0.3)
    return communicator


async def next_message(communicator: WebsocketCommunicator, *containing: str, timeout=10) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise AssertionError(f"no message containing {containing!r} within {timeout} s")
        message = await communicator.receive_from(timeout=remaining)
        if all(text in message for text in containing):
            return message


async def received_within(communicator: WebsocketCommunicator, seconds: float) -> list[str]:
    """Every message that arrives within ``seconds`` (heartbeats included)."""
    messages = []
    deadline = asyncio.get_running_loop().time() + seconds
    while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
        if await communicator.receive_nothing(timeout=remaining):
            break
        messages.append(await communicator.receive_from())
    return messages


def collect_and_flush(agent: Agent) -> int:
    stored = collect_once(agent)
    realtime.publisher.flush()
    return stored


@pytest.mark.asyncio
async def test_new_lines_reach_the_pages_following_that_agent_or_all(viewer, cache, bring_up):
    await sync_to_async(bring_up)(cache)
    one_agent = await follower_socket(viewer, "logs:wow-cache")
    every_agent = await follower_socket(viewer, "logs:*")
    other_agent = await follower_socket(viewer, "logs:wow-memory")
    watched = await sync_to_async(live.watched_groups)(["wow-cache", "wow-memory", "wow-search"])
    assert watched == {"logs.wow-cache", "logs.wow-memory", "logs-all"}

    assert await sync_to_async(collect_and_flush)(cache) >= 2
    html = await next_message(one_agent, 'id="log-tail-rows-wow-cache"', "listening on")
    assert 'hx-swap-oob="beforeend"' in html
    assert 'data-agent="wow-cache"' in html and ">WowCache<" in html
    assert 'class="badge level-info"' in html
    # Oldest first, each row with its id for resuming.
    ids = [int(part.split('"')[0]) for part in html.split('data-id="')[1:]]
    assert ids == sorted(ids) and len(ids) >= 2
    everything = await next_message(every_agent, 'id="log-tail-rows"', "listening on")
    assert "log-tail-rows-wow-cache" not in everything
    assert "log-tail-rows" not in "".join(await received_within(other_agent, 0.8))
    for communicator in (one_agent, every_agent, other_agent):
        await communicator.disconnect()


@pytest.mark.asyncio
async def test_a_log_topic_of_no_agent_is_not_joined(viewer, seeded):
    communicator = await follower_socket(viewer, "logs:no-such-agent", "logs:", "logs:a b")
    realtime.publish(live.log_group("no-such-agent"), {"x": '<p id="x">leak</p>'})
    await sync_to_async(realtime.publisher.flush)()
    assert "leak" not in "".join(await received_within(communicator, 0.8))
    watched = await sync_to_async(live.watched_groups)(["no-such-agent"])
    assert watched == set()
    await communicator.disconnect()


@pytest.mark.asyncio
async def test_a_burst_sends_the_newest_rows_and_says_how_many_were_left_out(viewer, cache):
    communicator = await follower_socket(viewer, "logs:wow-cache")

    def burst() -> None:
        lines = [
            LogLine("wow-cache", 0, "", json.dumps({"ts": f"2026-11-21T10:00:{n // 1000:02d}.{n % 1000:03d}Z", "level": "info", "message": f"burst {n}"}))
            for n in range(live.LIVE_MAX_ROWS + 30)
        ]  # fmt: skip
        rows = [(cache.pk, logs.parse(line)) for line in lines]
        ids = logs.write_rows(rows)
        live.publish_entries(logs.entries_for(rows, ids, {cache.pk: cache}))
        realtime.publisher.flush()

    await sync_to_async(burst)()
    html = await next_message(communicator, "log-tail-rows-wow-cache")
    assert html.count("<tr id=") == live.LIVE_MAX_ROWS
    assert "30 more lines arrived at once" in html
    assert f"burst {live.LIVE_MAX_ROWS + 29}" in html and ">burst 29<" not in html
    await communicator.disconnect()


@pytest.mark.asyncio
async def test_a_page_can_stop_following_an_agent_but_not_leave_the_fleet(viewer, cache):
    communicator = await follower_socket(viewer, "logs:wow-cache")
    await communicator.send_json_to({"unsubscribe": ["logs:wow-cache", "fleet"]})
    await asyncio.sleep(0.3)
    realtime.publish(live.log_group("wow-cache"), {"x": '<p id="x">after unsubscribe</p>'})
    fleet = realtime.fleet_group(realtime.ACCESS_VIEW)
    realtime.publish(fleet, {"y": '<p id="y">fleet news</p>'})
    await sync_to_async(realtime.publisher.flush)()
    received = "".join(await received_within(communicator, 0.8))
    assert "after unsubscribe" not in received and "fleet news" in received
    await communicator.disconnect()
