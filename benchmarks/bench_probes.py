"""The cost of the monitor's probes per agent, with the thresholds' counts in Redis.

N running agents on the local runtime answer on ports of their own (a small asyncio server in
another process answers every port, so the figures are the monitor's alone). Each round is the
monitor's: every agent's liveness and readiness probes, the counts, and the health recorded.
Measured per kind (the defaults; HTTP, TCP and exec with thresholds), at N and N/2 agents, so a
cost per agent that grows with the fleet would show.

    .venv/bin/python benchmarks/bench_probes.py [--agents 100] [--rounds 5] [--smoke]

Figures: CPU (the monitor's, with the exec probes' programs) and wall time of a round per
agent, database queries per agent (the probes and their counts make none; recording the health
makes one), and the probes alone (no recording).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import django_environment, require_sample

SERVER = r"""
import asyncio, sys
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
async def answer(reader, writer):
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(ANSWER)
        await writer.drain()
    except Exception:
        pass
    writer.close()
async def main(ports):
    servers = [await asyncio.start_server(answer, "127.0.0.1", p) for p in ports]
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main([int(p) for p in sys.argv[1:]]))
"""

KINDS = {
    "defaults (HTTP, every tick)": {},
    "HTTP, thresholds 3/2": {
        "liveness": {"kind": "http", "path": "/healthz", "failure_threshold": 3,
                     "success_threshold": 2, "interval_seconds": 5, "timeout_seconds": 1},
        "readiness": {"kind": "http", "path": "/readyz", "interval_seconds": 5, "timeout_seconds": 1},
    },
    "TCP, thresholds 3/2": {
        "liveness": {"kind": "tcp", "failure_threshold": 3, "success_threshold": 2,
                     "interval_seconds": 5, "timeout_seconds": 1},
        "readiness": {"kind": "tcp", "interval_seconds": 5, "timeout_seconds": 1},
    },
    "exec `true`, thresholds 3/2": {
        "liveness": {"kind": "exec", "command": ["true"], "failure_threshold": 3,
                     "interval_seconds": 5, "timeout_seconds": 1},
        "readiness": {"kind": "tcp", "interval_seconds": 5, "timeout_seconds": 1},
    },
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="20 agents, 2 rounds: that it works")
    args = parser.parse_args()
    if args.smoke:
        args.agents, args.rounds = 20, 2

    with django_environment() as root:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from agents.models import Agent, Health, State
        from agents.monitor import Monitor
        from agents.probes import engine
        from agents.probes.schema import effective_probes, validate_probes

        ports = _free_ports(args.agents)
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, *map(str, ports)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            agent_root = root / "agents"
            slugs = [f"bench-probe-{i:04d}" for i in range(args.agents)]
            Agent.objects.bulk_create(
                Agent(slug=slug, name=f"Bench probe {i}", runtime="local",
                      runtime_details={"ports": [port], "pids": [i + 1]})
                for i, (slug, port) in enumerate(zip(slugs, ports, strict=True))
            )  # fmt: skip
            Agent.objects.filter(slug__in=slugs).update(state=State.RUNNING, health=Health.HEALTHY)
            _launch_records(agent_root, slugs)
            monitor = Monitor(probe_interval=5, runtimes=["local"])
            print(f"{args.agents} running agents (local runtime), {args.rounds} rounds per kind\n")
            header = f"{'kind':<30} {'agents':>6} {'CPU/agent':>11} {'wall/agent':>11} {'queries/agent':>14} {'probes alone CPU/agent':>23}"
            print(header)
            print("-" * len(header))
            figures = []
            for kind, document in KINDS.items():
                probes = validate_probes(document, 5)
                Agent.objects.filter(slug__in=slugs).update(probes=probes)
                for count in (args.agents // 2, args.agents):
                    chosen = slugs[:count]
                    Agent.objects.exclude(slug__in=chosen).filter(
                        slug__startswith="bench-probe-"
                    ).update(state=State.STOPPED)
                    Agent.objects.filter(slug__in=chosen).update(state=State.RUNNING)
                    cpu, wall, queries = [], [], []
                    monitor.probe_all()  # warm: runtimes built, connections open
                    for _ in range(args.rounds):
                        with CaptureQueriesContext(connection) as captured:
                            began_cpu, began = _cpu(), time.perf_counter()
                            monitor._probe_round(due_only=False, check_task_failures=False)
                            cpu.append(_cpu() - began_cpu)
                            wall.append(time.perf_counter() - began)
                        queries.append(len(captured.captured_queries))
                    agents = list(Agent.objects.filter(slug__in=chosen))
                    unhealthy = [a.slug for a in agents if a.health != Health.HEALTHY]
                    if unhealthy:
                        raise SystemExit(f"{kind}: {len(unhealthy)} agents not healthy, e.g. {unhealthy[0]}: "
                                         f"{Agent.objects.get(slug=unhealthy[0]).health_detail}")  # fmt: skip
                    runtime = monitor._runtime("local")
                    targets = [
                        engine.Target(
                            a, runtime, effective_probes(a.probes, 5), bool(a.probes), 5.0
                        )
                        for a in agents
                    ]
                    alone = []
                    for _ in range(args.rounds):
                        began_cpu = _cpu()
                        monitor._prober.run(targets)
                        alone.append(_cpu() - began_cpu)
                    row = {
                        "kind": kind,
                        "agents": count,
                        "cpu_ms_per_agent": statistics.median(cpu) * 1000 / count,
                        "wall_ms_per_agent": statistics.median(wall) * 1000 / count,
                        "queries_per_agent": statistics.median(queries) / count,
                        "probes_cpu_ms_per_agent": statistics.median(alone) * 1000 / count,
                    }
                    figures.append(row)
                    print(
                        f"{kind:<30} {count:>6} {row['cpu_ms_per_agent']:>8.2f} ms "
                        f"{row['wall_ms_per_agent']:>8.2f} ms {row['queries_per_agent']:>14.1f} "
                        f"{row['probes_cpu_ms_per_agent']:>20.2f} ms"
                    )
            require_sample(figures, "probe rounds")
            print()
            print("CPU per agent at N/2 and N should be about equal (a constant cost per agent).")
            print("The queries: the list of running agents (one a round) and record_health's.")
            if os.environ.get("BENCH_JSON"):
                Path(os.environ["BENCH_JSON"]).write_text(json.dumps(figures, indent=2))
        finally:
            server.kill()
            server.wait()


def _cpu() -> float:
    """CPU seconds of this process and of the children it waited for (exec probes)."""
    import resource

    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _free_ports(count: int) -> list[int]:
    import socket

    sockets, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


def _launch_records(root: Path, slugs: list[str]) -> None:
    """What the local runtime writes for a started replica: the exec probes' environment and
    working directory."""
    work = Path(tempfile.mkdtemp(dir=root.parent if root.parent.exists() else None))
    for slug in slugs:
        replica_dir = root / slug / "replica-0"
        replica_dir.mkdir(parents=True, exist_ok=True)
        launch = {"env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, "cwd": str(work)}
        (replica_dir / "launch.json").write_text(json.dumps(launch))


if __name__ == "__main__":
    main()
