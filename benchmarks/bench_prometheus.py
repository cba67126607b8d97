"""Prometheus endpoint benchmark: ``GET /-/metrics`` with a large registered fleet.

A private PostgreSQL and Redis; Customer-tier agents bulk-created beside the 14 Platform CoE
agents (most not running, a few running with a recent probe), with the history a fleet gathers
(finished operations, resolved errors, alerts), ANALYZEd. The endpoint is read through Django's
test client from an allowed network (server time, no network), several runs:

(a) the median scrape time with 5,000 agents: target < 50 ms;
(b) the number of queries per scrape, the same with 100 agents as with 5,000 (aggregate queries
    only, never one per agent), and the size of the answer;
(c) the same scrape in multi-process mode, adding up the files of 8 processes as ``manage.py up``
    runs them (a web server that answered 150 routes, four worker pool processes that ran 40
    kinds of task each, the monitor and the collector pushing): target < 50 ms.

Run it with::

    .venv/bin/python benchmarks/bench_prometheus.py            # 5,000 agents
    .venv/bin/python benchmarks/bench_prometheus.py --smoke    # 500 agents (CI, a few seconds)
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _harness import django_environment, summary, timed  # noqa: E402

TARGET_MS = 50


def add_fleet(count: int, start: int) -> None:
    """``count`` Customer-tier agents numbered from ``start``: a tenth DRAFT, one in fifty
    running (probed a few seconds ago), the rest deployed or stopped; and per agent the history
    a fleet gathers: two finished operations, and now and then a resolved error."""
    from django.utils import timezone

    from agents.models import Agent, AgentError, Operation

    rng = random.Random(7 + start)
    now = timezone.now()
    states = ["DEPLOYED"] * 6 + ["STOPPED"] * 3 + ["DRAFT"]
    agents = Agent.objects.bulk_create(
        (
            Agent(
                slug=f"cust-{n:05d}",
                name=f"Customer agent {n:05d}",
                tier="customer",
                template="blank",
                owner_team=f"team-{n % 40}",
                state="RUNNING" if n % 50 == 0 else rng.choice(states),
                health="healthy" if n % 50 == 0 else "unknown",
                health_checked_at=now - timedelta(seconds=rng.randrange(1, 15))
                if n % 50 == 0
                else None,
            )  # fmt: skip
            for n in range(start, start + count)
        ),
        batch_size=1000,
    )
    Operation.objects.bulk_create(
        (
            Operation(
                agent=agent,
                action=action,
                status=Operation.Status.SUCCEEDED,
                started_at=now - timedelta(days=rng.randrange(1, 30)),
                finished_at=now - timedelta(days=rng.randrange(1, 30)),
            )  # fmt: skip
            for agent in agents
            for action in ("deploy", "start")
        ),
        batch_size=2000,
    )
    AgentError.objects.bulk_create(
        (
            AgentError(
                agent=agent,
                source=AgentError.Source.CRASH,
                summary="crashed",
                classification="transient",
                rule="bench",
                root_cause="bench",
                signature="bench",
                status=AgentError.Status.RESOLVED if n % 5 else AgentError.Status.OPEN,
            )  # fmt: skip
            for n, agent in enumerate(agents)
            if n % 10 == 0
        ),
        batch_size=1000,
    )


# The processes ``manage.py up`` runs, each writing its own files: the web server answered 150
# routes (far more than a day of use reaches), four worker pool processes ran 40 kinds of task
# each, the monitor and the collector pushed to live pages; forked from one set-up process.
PROCESSES = """
import os, django
django.setup()
from portal import prometheus

def web():
    for n in range(150):
        route = f"/route-{n}/<slug:slug>/"
        for status in ("200", "302", "404"):
            prometheus.REQUESTS.labels("GET", route, status).inc(10)
        prometheus.LATENCY.labels("GET", route).observe(0.02)
    prometheus.WEBSOCKETS.inc(20)

def pool():
    for n in range(40):
        prometheus.observe_task(f"app.task_{n}", "succeeded", 0.5)
        prometheus.observe_task(f"app.task_{n}", "failed", 2.0)

def pushes():
    prometheus.PUSHES.inc(100)
    prometheus.PUSHED_FRAGMENTS.inc(300)

for role in (web, pool, pool, pool, pool, pushes, pushes):
    pid = os.fork()
    if pid == 0:
        role()
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
"""


def fill_multiprocess_dir(directory: str) -> int:
    """The files of eight processes (the set-up one and seven forked); answers how many."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
    subprocess.run(
        [sys.executable, "-c", PROCESSES], cwd=HERE.parent, env=env, check=True, timeout=120
    )
    return len({name.rsplit("_", 1)[-1] for name in os.listdir(directory)})


def measure(client, runs: int) -> tuple[list[float], int, int, dict]:
    """Scrape times (s), queries and bytes of one scrape, and the fleet figures it reported."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from prometheus_client.parser import text_string_to_metric_families

    def scrape():
        response = client.get("/-/metrics", REMOTE_ADDR="127.0.0.1")
        assert response.status_code == 200, response.content[:300]
        return response

    seconds = timed(scrape, runs, "scrape")
    with CaptureQueriesContext(connection) as queries:
        response = scrape()
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    agents = sum(sample.value for sample in families["portal_agents"].samples)
    errors = families["portal_scrape_errors"].samples[0].value
    return seconds, len(queries), len(response.content), {"agents": agents, "errors": errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="500 agents, fewer runs")
    args = parser.parse_args()
    total, runs = (500, 10) if args.smoke else (5_000, 50)
    with django_environment():
        from django.conf import settings
        from django.db import connection
        from django.test import Client

        settings.ALLOWED_HOSTS = ["*"]
        client = Client()

        add_fleet(86, start=0)
        small_seconds, small_queries, _, small = measure(client, 5)
        print(f"with {int(small['agents'])} agents: {small_queries} queries per scrape")

        started = time.perf_counter()
        add_fleet(total - 100, start=86)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        print(f"added agents up to {total} in {time.perf_counter() - started:.1f} s")

        seconds, queries, size, figures = measure(client, runs)
        if figures["agents"] != total or figures["errors"]:
            print(f"the scrape reported {figures}, expected {total} agents and no errors")
            return 1
        median_ms = statistics.median(seconds) * 1000
        ok_time = median_ms < TARGET_MS
        ok_queries = queries == small_queries
        print(f"(a) GET /-/metrics with {total} agents: {summary([s * 1000 for s in seconds], 'ms')}; "
              f"target < {TARGET_MS} ms {'→ met' if ok_time else 'NOT MET'}")  # fmt: skip
        print(f"(b) {queries} queries per scrape ({small_queries} with 100 agents), "
              f"{size / 1024:.1f} KiB; constant {'→ met' if ok_queries else 'NOT MET'}")  # fmt: skip

        with tempfile.TemporaryDirectory(prefix="portal-bench-prom-") as directory:
            processes = fill_multiprocess_dir(directory)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
            try:
                seconds, _, size, figures = measure(client, runs)
            finally:
                del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        median_ms = statistics.median(seconds) * 1000
        ok_multi = median_ms < TARGET_MS and not figures["errors"]
        print(f"(c) the same, adding up {processes} processes' files: {summary([s * 1000 for s in seconds], 'ms')}, "
              f"{size / 1024:.0f} KiB; target < {TARGET_MS} ms {'→ met' if ok_multi else 'NOT MET'}")  # fmt: skip
    return 0 if ok_time and ok_queries and ok_multi else 1


if __name__ == "__main__":
    raise SystemExit(main())
