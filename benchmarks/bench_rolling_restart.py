"""Zero-downtime bulk restart: Platform CoE agents of two replicas each, restarted together as
one bulk operation while a load of tasks is sent to every one of them.

A private PostgreSQL and Redis; the agents really run (agentd processes on the local runtime).
The bulk operation runs in this process as the Celery worker runs it
(``bulk.create_bulk_operation(..., enqueue=False)`` then ``bulk.run_bulk_operation``); each
agent's restart is the lifecycle's rolling restart (a spare first, then one replica at a time,
each readiness-gated). A thread asks every replica's ``/readyz`` all along. Reported per run:

- how long the bulk restart took;
- the tasks sent during it (``--rate`` a second to each agent), and how many were lost (never
  answered), answered twice or failed: all three must be 0;
- the fewest ready replicas any agent had while it ran: never fewer than before (2).

Median of ``--runs`` runs.

    .venv/bin/python benchmarks/bench_rolling_restart.py [--agents 4] [--runs 3] [--rate 50]
    .venv/bin/python benchmarks/bench_rolling_restart.py --smoke   # 2 agents, one run (CI)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import django_environment, require_sample  # noqa: E402
from _load import FleetLoad, tasks_line  # noqa: E402

# Agents with no dependency among the Platform CoE agents, and the ones that need only them.
AGENTS = ["wow-cache", "wow-event", "wow-security", "wow-memory", "wow-communication"]
REPLICAS = 2


class ReadyWatch:
    """The fewest replicas answering ``/readyz`` seen per agent, sampled every 20 ms."""

    def __init__(self, agents) -> None:
        from agents.placement import runtime_for, spec_for

        self.watched = [(a.slug, runtime_for(a), spec_for(a)) for a in agents]
        self.fewest = {slug: REPLICAS * 10 for slug, _, _ in self.watched}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ReadyWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for slug, runtime, spec in self.watched:
                self.fewest[slug] = min(self.fewest[slug], ready(runtime, spec))
            self.samples += 1
            self._stop.wait(0.02)


def ready(runtime, spec) -> int:
    count = 0
    for replica in runtime.status(spec).replicas:
        if replica.state != "running" or not replica.port:
            continue
        try:
            url = f"http://127.0.0.1:{replica.port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as answer:
                count += answer.status == 200
        except OSError:
            pass
    return count


def bring_up(slugs: list[str]):
    from agents import services
    from agents.models import Agent
    from portal.actors import Actor

    actor = Actor.command("benchmark")
    Agent.objects.filter(slug__in=slugs).update(replicas=REPLICAS)
    agents = list(Agent.objects.filter(slug__in=slugs).order_by("slug"))
    for slug in slugs:  # in dependency order
        agent = next(a for a in agents if a.slug == slug)
        for action in ("provision", "deploy", "start"):
            operation = services.request_action(agent, action, actor, enqueue=False)
            done = services.run_operation(str(operation.pk))
            if done.status != "succeeded":
                raise SystemExit(f"{action} {slug} failed: {done.error}")
    return list(Agent.objects.filter(slug__in=slugs).order_by("slug"))


def one_run(agents, rate: float, run: int) -> tuple[float, dict[str, int], int, int]:
    from agents import bulk
    from agents.models import BulkOperation, Operation
    from portal.actors import Actor

    load = FleetLoad([a.slug for a in agents], f"restart{run}", rate).start()
    time.sleep(1)
    with ReadyWatch(agents) as watch:
        began = time.perf_counter()
        operation = bulk.create_bulk_operation(
            "restart", Actor.command("benchmark"), targets=[a.slug for a in agents],
            parallelism=len(agents), enqueue=False,
        )  # fmt: skip
        done = bulk.run_bulk_operation(operation.pk)
        seconds = time.perf_counter() - began
    time.sleep(1)
    figures = load.check(load.settle())
    if done is None or done.status != BulkOperation.Status.SUCCEEDED:
        raise SystemExit(f"the bulk restart ended {getattr(done, 'status', None)}")
    rolled = Operation.objects.filter(
        bulk_items__bulk=operation, action="restart", result__rolled=True
    ).count()
    return seconds, figures, min(watch.fewest.values()), rolled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=4, choices=range(1, len(AGENTS) + 1))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=50.0, help="tasks a second to each agent")
    parser.add_argument("--smoke", action="store_true", help="2 agents, one run")
    args = parser.parse_args()
    count, runs = (2, 1) if args.smoke else (args.agents, args.runs)
    with django_environment():
        agents = bring_up(AGENTS[:count])
        print(f"bulk restart of {count} agents of {REPLICAS} replicas each under {args.rate:g} "
              f"tasks/s to each ({runs} run(s)):")  # fmt: skip
        seconds: list[float] = []
        clean = True
        for run in range(runs):
            took, figures, fewest, rolled = one_run(agents, args.rate, run)
            seconds.append(took)
            ok = figures["lost"] == figures["twice"] == figures["failed"] == 0
            ok = ok and fewest >= REPLICAS and rolled == count
            clean = clean and ok
            print(f"  run {run + 1}: {took:.1f} s, {rolled} of {count} rolled; "
                  f"{tasks_line(figures)}; fewest ready replicas {fewest} (before: {REPLICAS}) "
                  f"{'→ met' if ok else 'NOT MET'}")  # fmt: skip
        require_sample(seconds, "bulk restart")
        print(f"  median {statistics.median(seconds):.1f} s; every run lost, doubled and failed "
              f"no task and kept every replica ready: {'→ met' if clean else 'NOT MET'}")  # fmt: skip
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
