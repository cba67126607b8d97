"""Commit → fragment received, by N connected WebSocket clients (N = 1, 200, 1000).

A real Daphne serves the portal on a private PostgreSQL and Redis. Client processes hold N
signed-in sockets to /ws/live/, each subscribed to WowCache's card (what the Agents page does).
WowCache is put in RUNNING first: the portal ignores probes of an agent that is not running, so
a DRAFT agent's health changes push nothing. This process then records probes of WowCache
through ``services.record_health``, healthy each time with a new detail (the card's health
tooltip), one every 400 ms so the 250 ms per-group batching never merges two, and notes the
time right after each commit; the clients note when the card carrying that change arrives.
Latency = arrival - commit, per client per change. (A healthy detail change is one event and
one card; a probe that turns an agent degraded also opens an error, a second event with work
of its own before the card goes out.)

Baselines, same machine, same run:
- raw Redis pub/sub round trip (publish → one subscriber);
- a bare relay: Redis pub/sub → a minimal WebSocket server (the ``websockets`` package, one
  process) → the same N clients, each message published right after the same commit;
  what this architecture (Redis fan-out to sockets) can do with no Django, Channels or
  templates in the way. The ratio portal p95 / relay p95 says how far the portal is from it.

    .venv/bin/python benchmarks/bench_realtime.py [--clients 1 200 1000] [--changes 20] [--repeat 3]
    .venv/bin/python benchmarks/bench_realtime.py --smoke     # seconds: 1 and 20 clients, 1 run

Exits 1 when a change pushes nothing or a run measured nothing (no fragment arrived): a
benchmark that cannot see the pushes must not print figures. Goal (issue 5): p95 under 50 ms at
200 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _harness import ROOT, django_environment, percentile, require_sample

GOAL_P95_MS = 50.0
CLIENT_PROCESSES = int(os.environ.get("BENCH_CLIENT_PROCESSES", "2"))
MARKER = re.compile(r"bench-(\d+)-(\d+)")
CONNECTS_AT_ONCE = 25


# --- the client process ------------------------------------------------------------------------


async def _clients(url: str, cookie: str, count: int) -> None:
    import websockets

    arrivals: dict[str, list[float]] = {}
    seen: list[set[str]] = [set() for _ in range(count)]

    # Hundreds of handshakes at once overflow the servers' listen backlogs (connections reset):
    # a page load spreads them out too. Connect a few dozen at a time, retrying a refused one.
    opening = asyncio.Semaphore(CONNECTS_AT_ONCE)

    async def connected(headers: dict):
        for attempt in range(5):
            async with opening:
                try:
                    return await websockets.connect(
                        url, additional_headers=headers, max_size=None, open_timeout=60
                    )
                except (OSError, websockets.exceptions.InvalidMessage):
                    if attempt == 4:
                        raise
            await asyncio.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    async def one(index: int) -> None:
        headers = {"Cookie": cookie, "Origin": "http://127.0.0.1"} if cookie != "-" else {}
        async with await connected(headers) as socket:
            if cookie != "-":  # the portal: what the Agents page subscribes to
                await socket.send(json.dumps({"subscribe": ["card:wow-cache"]}))
            ready.append(index)
            async for message in socket:
                now = time.time()
                for match in MARKER.finditer(message):
                    key = match.group(0)
                    if key not in seen[index]:
                        seen[index].add(key)
                        arrivals.setdefault(key, []).append(now)

    ready: list[int] = []
    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    while len(ready) < count:
        await asyncio.sleep(0.05)
        if any(task.done() for task in tasks):
            for task in tasks:
                if task.done() and task.exception():
                    raise task.exception()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # "done"
    await asyncio.sleep(0.5)
    for task in tasks:
        task.cancel()
    print(json.dumps(arrivals), flush=True)


# --- the benchmark ------------------------------------------------------------------------------


def raw_redis_round_trip(redis_url: str, samples: int) -> list[float]:
    """Publish → subscriber receive on the same Redis, in milliseconds."""
    import redis

    client = redis.Redis.from_url(redis_url)
    subscriber = client.pubsub()
    subscriber.subscribe("bench:raw")
    subscriber.get_message(timeout=1)
    latencies = []
    for n in range(samples):
        sent = time.perf_counter()
        client.publish("bench:raw", str(n))
        while time.perf_counter() - sent < 2:  # a lost message counts as none
            message = subscriber.get_message(timeout=1)
            if message and message["type"] == "message":
                latencies.append((time.perf_counter() - sent) * 1000)
                break
    subscriber.close()
    client.close()
    require_sample(latencies, "raw Redis pub/sub")
    return latencies


RELAY_CHANNEL = "bench:relay"


async def _relay(port: int, redis_url: str) -> None:
    """The bare relay: every message on a Redis channel goes to every connected socket."""
    import redis.asyncio as aioredis
    from websockets.asyncio.server import broadcast, serve

    sockets: set = set()

    async def handler(socket) -> None:
        sockets.add(socket)
        try:
            await socket.wait_closed()
        finally:
            sockets.discard(socket)

    client = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.subscribe(RELAY_CHANNEL)
    async with serve(handler, "127.0.0.1", port, max_size=None, ping_interval=None):
        print("ready", flush=True)
        async for message in pubsub.listen():
            if message["type"] == "message":
                broadcast(sockets, message["data"].decode())


def start_relay(port: int, redis_url: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, __file__, "--relay", str(port), redis_url],
        cwd=Path(__file__).parent, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    if process.stdout.readline().strip() != "ready":
        raise SystemExit("the bare relay did not start")
    return process


def start_daphne(port: int, log: Path) -> subprocess.Popen:
    """The portal under Daphne; its log goes to a file (a pipe nobody reads would fill up and
    stall it), shown when a run fails."""
    env = {**os.environ, "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "--websocket_timeout", "-1",
             "--access-log", os.devnull, "portal.asgi:application"],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            time.sleep(0.1)
    raise SystemExit("Daphne did not start")


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def start_clients(url: str, cookie: str, clients: int) -> list[subprocess.Popen]:
    """The sockets, spread over a few client processes, so that reading 200 of them is not
    itself the bottleneck being measured. Each process says "ready" once all of its are open."""
    shares = [
        clients // CLIENT_PROCESSES + (1 if i < clients % CLIENT_PROCESSES else 0)
        for i in range(CLIENT_PROCESSES)
    ]
    return [
        subprocess.Popen(
            [sys.executable, __file__, "--client", url, cookie, str(share)],
            cwd=Path(__file__).parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for share in shares
        if share
    ]


def commit_changes(clients: int, changes: int, relay: bool) -> dict[str, float]:
    """Record ``changes`` probes of WowCache, each with its marker as the health detail; with
    ``relay`` also publish the marker to the bare relay after each commit. Answers each marker's
    commit time."""
    import redis
    from django.conf import settings
    from django.db import transaction

    from agents import services
    from agents.models import Agent
    from portal.realtime import publisher

    relay_client = redis.Redis.from_url(settings.REDIS_URL) if relay else None
    agent = Agent.objects.get(slug="wow-cache")
    services.record_health(agent, "healthy", "bench-warm-up")  # templates, connections, caches
    time.sleep(0.5)
    committed: dict[str, float] = {}
    for n in range(changes):
        marker = f"bench-{clients}-{n}"
        with transaction.atomic():
            # Registered first, so it runs at commit, before the push it is measured against.
            transaction.on_commit(lambda m=marker: committed.__setitem__(m, time.time()))
            changed = services.record_health(agent, "healthy", marker)
        if not changed:
            raise SystemExit(f"the change {marker} pushed nothing: is WowCache RUNNING?")
        if relay_client is not None:
            relay_client.publish(RELAY_CHANNEL, f'<div id="agent-wow-cache">{marker}</div>')
        time.sleep(0.4)
    publisher.flush()
    time.sleep(0.5)
    if relay_client is not None:
        relay_client.close()
    return committed


def measure(port: int, cookie: str, clients: int, changes: int, relay: bool = False) -> list[float]:
    """One run: ``clients`` sockets, ``changes`` commits; latencies in ms. With ``relay`` the
    sockets go to the bare relay and each change is published to it right after its commit."""
    path = "/" if relay else "/ws/live/"
    client_processes = start_clients(
        f"ws://127.0.0.1:{port}{path}", "-" if relay else cookie, clients
    )
    try:
        for process in client_processes:
            if process.stdout.readline().strip() != "ready":
                raise SystemExit("clients did not connect")
        time.sleep(0.5 + clients / 500)  # the portal's sockets send their subscriptions
        committed = commit_changes(clients, changes, relay)
        arrivals: dict[str, list[float]] = {}
        for process in client_processes:
            out, _ = process.communicate("done\n", timeout=60)
            for marker, times in json.loads(out.strip().splitlines()[-1]).items():
                arrivals.setdefault(marker, []).extend(times)
    finally:  # a run that stops early leaves no client behind
        for process in client_processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    latencies = []
    missing = 0
    for marker, sent in committed.items():
        got = arrivals.get(marker, [])
        missing += clients - len(got)
        latencies.extend((arrived - sent) * 1000 for arrived in got)
        if os.environ.get("BENCH_VERBOSE") and got:
            print(
                f"  {marker}: first {(min(got) - sent) * 1000:.1f} ms, last {(max(got) - sent) * 1000:.1f} ms"
            )
    if missing:
        print(f"  warning: {missing} of {clients * changes} fragments never arrived")
    require_sample(
        latencies,
        f"{'relay' if relay else 'portal'} at {clients} clients: none of {clients * changes} "
        "fragments arrived",
    )
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 200, 1000])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per client count; medians are printed"
    )
    parser.add_argument("--smoke", action="store_true", help="1 and 20 clients, 3 changes, 1 run")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.changes, args.repeat = [1, 20], 3, 1

    with django_environment() as root:
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.test import Client

        from agents.models import Agent, State
        from portal import embedded, roles

        user = get_user_model().objects.create_user("bench", password="bench-password-1")
        roles.set_role(user, roles.VIEWER)
        client = Client()
        client.force_login(user)
        cookie = f"sessionid={client.cookies['sessionid'].value}"
        # Health changes push only for a RUNNING agent (a probe of anything else is ignored).
        Agent.objects.filter(slug="wow-cache").update(state=State.RUNNING)
        port, relay_port = embedded.free_port(), embedded.free_port()
        daphne_log = root / "daphne.log"
        daphne = start_daphne(port, daphne_log)
        relay = start_relay(relay_port, settings.REDIS_URL)
        try:
            raw = raw_redis_round_trip(settings.REDIS_URL, samples=30 if args.smoke else 300)
            rows = []
            for count in args.clients:
                portal_runs, relay_runs = [], []
                for _ in range(args.repeat):  # interleaved, so drift hits both alike
                    portal_runs.append(measure(port, cookie, count, args.changes))
                    relay_runs.append(measure(relay_port, cookie, count, args.changes, relay=True))
                rows.append((count, portal_runs, relay_runs))
        except SystemExit:
            print(f"the portal's log (Daphne), last lines:\n{tail(daphne_log)}", file=sys.stderr)
            raise
        finally:
            for process in (daphne, relay):
                process.terminate()
                process.wait(timeout=15)

    raw_p95 = percentile(raw, 95)
    print(f"raw Redis pub/sub round trip: p50 {percentile(raw, 50):.2f} ms, p95 {raw_p95:.2f} ms, "
          f"p99 {percentile(raw, 99):.2f} ms (n={len(raw)})")  # fmt: skip
    print(f"each row: the median over {args.repeat} run(s) of {args.changes} changes each")
    print(
        f"{'clients':>8} {'':>7} {'samples':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'p95/relay':>10} {'p95/raw':>8}"
    )
    p95_at_200 = None
    for count, portal_runs, relay_runs in rows:
        relay_p95 = statistics.median(percentile(run, 95) for run in relay_runs)
        for label, runs in (("portal", portal_runs), ("relay", relay_runs)):
            p50 = statistics.median(percentile(run, 50) for run in runs)
            p95 = statistics.median(percentile(run, 95) for run in runs)
            p99 = statistics.median(percentile(run, 99) for run in runs)
            samples = sum(len(run) for run in runs)
            print(
                f"{count:>8} {label:>7} {samples:>8} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f} "
                f"{p95 / relay_p95:>10.1f} {p95 / raw_p95:>8.1f}"
            )
            if count == 200 and label == "portal":
                p95_at_200 = p95
    if p95_at_200 is not None:
        verdict = "met" if p95_at_200 < GOAL_P95_MS else "NOT met"
        print(f"goal: p95 < {GOAL_P95_MS:.0f} ms at 200 clients → {verdict} ({p95_at_200:.1f} ms)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        asyncio.run(_clients(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    elif len(sys.argv) > 1 and sys.argv[1] == "--relay":
        asyncio.run(_relay(int(sys.argv[2]), sys.argv[3]))
    else:
        main()
