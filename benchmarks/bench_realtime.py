"""Commit → fragment received, by N connected WebSocket clients (N = 1, 50, 200).

A real Daphne serves the portal on a private PostgreSQL and Redis. A client process holds N
signed-in sockets to /ws/live/. This process commits agent health changes (one every 400 ms, so
the 250 ms per-group batching never merges two) and notes the time right after each commit; the
clients note when the card carrying that change arrives. Latency = arrival - commit, per client
per change. Baseline, same machine, same run: the raw Redis pub/sub round trip (publish →
subscriber), with the ratio of the two p95s.

    .venv/bin/python benchmarks/bench_realtime.py [--clients 1 50 200] [--changes 20]

Goal (issue 5): p95 under 50 ms at 200 clients.
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

from _harness import ROOT, django_environment, percentile

GOAL_P95_MS = 50.0
CLIENT_PROCESSES = int(os.environ.get("BENCH_CLIENT_PROCESSES", "2"))
MARKER = re.compile(r"bench-(\d+)-(\d+)")


# --- the client process ------------------------------------------------------------------------


async def _clients(url: str, cookie: str, count: int) -> None:
    import websockets

    arrivals: dict[str, list[float]] = {}
    seen: list[set[str]] = [set() for _ in range(count)]

    async def one(index: int) -> None:
        headers = {"Cookie": cookie, "Origin": "http://127.0.0.1"}
        async with websockets.connect(
            url, additional_headers=headers, max_size=None, open_timeout=30
        ) as socket:
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


def raw_redis_round_trip(redis_url: str, samples: int = 300) -> list[float]:
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
        while True:
            message = subscriber.get_message(timeout=1)
            if message and message["type"] == "message":
                latencies.append((time.perf_counter() - sent) * 1000)
                break
    subscriber.close()
    client.close()
    return latencies


def start_daphne(port: int) -> subprocess.Popen:
    env = {**os.environ, "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "--websocket_timeout", "-1",
         "--access-log", os.devnull, "portal.asgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
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


def measure(port: int, cookie: str, clients: int, changes: int) -> list[float]:
    from django.db import transaction

    from agents import services
    from agents.models import Agent
    from portal.realtime import publisher

    # The sockets are spread over a few client processes, so that reading 200 of them is not
    # itself the bottleneck being measured.
    shares = [
        clients // CLIENT_PROCESSES + (1 if i < clients % CLIENT_PROCESSES else 0)
        for i in range(CLIENT_PROCESSES)
    ]
    client_processes = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--client",
                f"ws://127.0.0.1:{port}/ws/live/",
                cookie,
                str(share),
            ],
            cwd=Path(__file__).parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for share in shares
        if share
    ]
    for process in client_processes:
        if process.stdout.readline().strip() != "ready":
            raise SystemExit("clients did not connect")
    time.sleep(0.5)
    agent = Agent.objects.get(slug="wow-cache")
    services.record_health(agent, "unknown", "bench-warm-up")  # templates, connections, caches
    time.sleep(0.5)
    committed: dict[str, float] = {}
    for n in range(changes):
        marker = f"bench-{clients}-{n}"
        with transaction.atomic():
            # Registered first, so it runs at commit, before the push it is measured against.
            transaction.on_commit(lambda m=marker: committed.__setitem__(m, time.time()))
            services.record_health(agent, "degraded" if n % 2 else "healthy", marker)
        time.sleep(0.4)
    publisher.flush()
    time.sleep(0.5)
    arrivals: dict[str, list[float]] = {}
    for process in client_processes:
        out, _ = process.communicate("done\n", timeout=60)
        for marker, times in json.loads(out.strip().splitlines()[-1]).items():
            arrivals.setdefault(marker, []).extend(times)
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
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 50, 200])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per client count; medians are printed"
    )
    args = parser.parse_args()

    with django_environment():
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.test import Client

        from portal import embedded, roles

        user = get_user_model().objects.create_user("bench", password="bench-password-1")
        roles.set_role(user, roles.VIEWER)
        client = Client()
        client.force_login(user)
        cookie = f"sessionid={client.cookies['sessionid'].value}"
        port = embedded.free_port()
        daphne = start_daphne(port)
        try:
            raw = raw_redis_round_trip(settings.REDIS_URL)
            rows = []
            for count in args.clients:
                runs = [measure(port, cookie, count, args.changes) for _ in range(args.repeat)]
                rows.append((count, runs))
        finally:
            daphne.terminate()
            daphne.wait(timeout=15)

    raw_p95 = percentile(raw, 95)
    print(f"raw Redis pub/sub round trip: p50 {percentile(raw, 50):.2f} ms, p95 {raw_p95:.2f} ms, "
          f"p99 {percentile(raw, 99):.2f} ms (n={len(raw)})")  # fmt: skip
    print(f"each row: the median over {args.repeat} runs of {args.changes} changes each")
    print(
        f"{'clients':>8} {'samples':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'p95 / raw p95':>14}"
    )
    p95_at_200 = None
    for count, runs in rows:
        p50 = statistics.median(percentile(run, 50) for run in runs)
        p95 = statistics.median(percentile(run, 95) for run in runs)
        p99 = statistics.median(percentile(run, 99) for run in runs)
        samples = sum(len(run) for run in runs)
        print(f"{count:>8} {samples:>8} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f} {p95 / raw_p95:>14.1f}")
        if count == 200:
            p95_at_200 = p95
    if p95_at_200 is not None:
        verdict = "met" if p95_at_200 < GOAL_P95_MS else "NOT met"
        print(f"goal: p95 < {GOAL_P95_MS:.0f} ms at 200 clients → {verdict} ({p95_at_200:.1f} ms)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        asyncio.run(_clients(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        main()
