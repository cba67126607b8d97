"""Servicing benchmark: hot config patches and upgrades of agents under load.

Everything runs for real: agentd processes on the local runtime (containers on Docker for (e)),
a private PostgreSQL and Redis, the upgrade workflows' steps carried out here as Celery workers
would (several at once, like a worker's concurrency), and a load generator sending tasks to the
agents throughout, each task with an id and a reply stream, every answer counted.

(a) WowCache running with three replicas; a config patch through the service the page and the
    API call, from the call to every replica answering the new value on its own ``GET /config``;
    target < 1 s (median of ``--runs`` patches).
(b) A rolling upgrade of all 14 agents 1.0.0 → 1.1.0, requested together and driven side by
    side, under a steady load to every agent: finished in < 2 min, 0 tasks lost, 0 failed
    (every task answered exactly once, succeeded).
(c) The same for a blue-green upgrade (WowMemory) and a canary upgrade by 10, 50, 100 % with
    min_tasks 200 (WowCache), 1.1.0 → 1.1.1: durations, 0 lost, 0 failed.
(d) Roll-back: 1.2.0 fails a fifth of its task attempts; a canary of it on WowCache under load
    trips its error gate. From the trip to all of the agent's traffic on the old version, as the
    upgrade measured it (its roll-back row's switch_seconds) and independently (from the tripped
    row's time to the last reply by 1.2.0 on the load's reply stream); target < 5 s (median of
    ``--rollbacks``). Also the whole roll-back (trip to the run finished).
(e) (d) on the Docker runtime, when an engine answers (in a child process with its own private
    database: Django is configured once per process); waooaw/agentd:1.0.0 is tagged 1.1.0 and
    1.2.0 for the run and the tags removed afterwards.

Run it with::

    .venv/bin/python benchmarks/bench_servicing.py            # everything
    .venv/bin/python benchmarks/bench_servicing.py --smoke    # (a) 3 patches, (b) one agent (CI)

``--smoke`` skips Docker (the Docker upgrade tests run it in CI).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _harness import django_environment, require_sample  # noqa: E402
from _load import RATE, FleetLoad, tasks_line  # noqa: E402

ROLLING_GATES = {"min_tasks": 20, "verify_seconds": 3}
CANARY_GATES = {"min_tasks": 200, "verify_seconds": 3}
ROLLBACK_GATES = {"min_tasks": 60, "min_step_seconds": 1, "verify_seconds": 3}
FAULTY = {"faults": {"fail_rate": 0.2}, "task_max_failures": 5}
DOCKER_HOST = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
BASE_IMAGE = os.environ.get("AGENT_BASE_IMAGE", "waooaw/agentd-base:bookworm")
REPOSITORY = "waooaw/agentd"
DOCKER_AGENT = "wow-cache"

verdicts: list[bool] = []
hard_failures: list[str] = []  # tasks lost or failed: fail even a smoke run


def met(ok: bool) -> str:
    verdicts.append(ok)
    return "→ met" if ok else "NOT MET"


def live_value(port: int, key: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as answer:
        return json.loads(answer.read()).get(key)


def clean(figures: dict[str, int], what: str) -> bool:
    ok = figures["lost"] == 0 and figures["twice"] == 0 and figures["failed"] == 0
    if not ok:
        hard_failures.append(f"{what}: {tasks_line(figures)}")
    return ok


# --- upgrades, driven as workers would ----------------------------------------------------------


def _run_step(pk: int) -> None:
    from django.db import connection

    from agents.workflows import engine

    try:
        engine.run_step(pk)
    finally:
        connection.close()


def drive_all(upgrades: list, workers: int, timeout: float = 300.0) -> dict[int, tuple]:
    """Carry out the due steps of every upgrade whose run is active, up to ``workers`` at once
    (as Celery workers would), until every run has ended; answers each upgrade (refreshed)
    with the seconds from the call to its end, by its id."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db.models import Q
    from django.utils import timezone

    from agents.workflows.models import ACTIVE, STEP_BUSY, StepRun, WorkflowRun
    from servicing.upgrades import requests

    began = time.perf_counter()
    open_ = {upgrade.pk: upgrade for upgrade in upgrades}
    ended: dict[int, tuple] = {}
    busy: dict = {}
    with ThreadPoolExecutor(workers) as pool:
        while open_:
            if time.perf_counter() - began > timeout:
                phases = {u.agent.slug: u.phase for u in open_.values()}
                raise SystemExit(f"upgrades still under way after {timeout:.0f} s: {phases}")
            for pk, future in list(busy.items()):
                if future.done():
                    del busy[pk]
                    future.result()
            runs = {u.run_id for u in open_.values()}
            status = dict(WorkflowRun.objects.filter(pk__in=runs).values_list("pk", "status"))
            for pk, upgrade in list(open_.items()):
                if status[upgrade.run_id] not in ACTIVE:
                    upgrade.refresh_from_db()
                    ended[pk] = (requests.sync(upgrade), time.perf_counter() - began)
                    del open_[pk]
            due = StepRun.objects.filter(
                Q(wake_at__isnull=True) | Q(wake_at__lte=timezone.now()),
                run_id__in=[u.run_id for u in open_.values()], current=True,
                status__in=STEP_BUSY,
            ).values_list("pk", flat=True)  # fmt: skip
            for pk in due:
                if pk not in busy:
                    busy[pk] = pool.submit(_run_step, pk)
            time.sleep(0.05)
    return ended


def up(slugs: list[str] | None = None) -> None:
    """Deploy and start the agents (all of them when ``slugs`` is None) in dependency order,
    as the bulk operation does."""
    from agents import bulk
    from portal.actors import Actor

    target = {"filter": {"all": True}} if slugs is None else {"targets": slugs}
    operation = bulk.create_bulk_operation(
        "deploy_and_start", Actor.command("bench"), parallelism=4, enqueue=False, **target
    )
    finished = bulk.run_bulk_operation(operation.pk)
    if finished is None or finished.status != "succeeded":
        failures = operation.items.exclude(status="succeeded").values_list("agent__slug", "message")
        raise SystemExit(f"the agents did not come up: {list(failures)}")


def publish(version: str, changes: dict | None = None):
    from portal.actors import Actor
    from servicing import services

    actor = Actor.command("bench")
    services.register_first_release(actor)
    return services.publish(actor, version, "local", f"Benchmark release {version}.", changes)


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# --- (a) ------------------------------------------------------------------------------------------


def hot_patch(runs: int, replicas: int) -> None:
    from agents import services
    from agents.models import Agent
    from portal.actors import Actor
    from servicing.upgrades import requests

    actor = Actor.command("bench")
    Agent.objects.filter(slug="wow-cache").update(replicas=replicas)
    cache = Agent.objects.get(slug="wow-cache")
    for action in ("provision", "deploy", "start"):
        operation = services.request_action(cache, action, actor, enqueue=False)
        if services.run_operation(str(operation.pk)).status != "succeeded":
            raise SystemExit(f"WowCache did not {action}")
    cache.refresh_from_db()
    ports = cache.runtime_details["ports"][:replicas]
    print(f"(a) a hot config patch to {len(ports)} replicas of WowCache ({runs} patches)")
    times = []
    for number in range(runs):
        value = 1000 + number
        began = time.perf_counter()
        applied = services.patch_config(cache, {"task_retry_ms": value}, actor)
        if not all(live_value(port, "task_retry_ms") == value for port in ports):
            raise SystemExit("a replica does not answer the new value")
        times.append(time.perf_counter() - began)
        if not applied.all_applied:
            raise SystemExit(f"not every replica took the patch: {applied.replicas}")
        cache.refresh_from_db()
    require_sample(times, "config patches")
    median = statistics.median(times) * 1000
    print(f"  median {median:.1f} ms, max {max(times) * 1000:.1f} ms, every replica answering "
          f"the new value (target < 1 s) {met(median < 1000)}", flush=True)  # fmt: skip
    # Back to one replica (servicing's scaling: extra replicas stop gracefully) for the upgrades.
    requests.scale(actor, cache, 1)


# --- (b) and (c) ------------------------------------------------------------------------------


def upgrade_side_by_side(
    plan: list[tuple[str, str, dict]], version: str, load_slugs: list[str], workers: int, tag: str
) -> tuple[float, dict, dict[str, int]]:
    """Request each (slug, strategy, options) upgrade to ``version`` at once under a load to
    ``load_slugs``, drive them all; answers the seconds until the last ended, each upgrade and
    its seconds by slug, and the load's figures."""
    from agents.models import Agent
    from portal.actors import Actor
    from servicing.upgrades import requests

    actor = Actor.command("bench")
    load = FleetLoad(load_slugs, tag).start()
    time.sleep(2)  # the load is steady before the first upgrade begins
    began = time.perf_counter()
    upgrades = [
        requests.request_upgrade(actor, Agent.objects.get(slug=slug), version, strategy, **options)
        for slug, strategy, options in plan
    ]
    ended = drive_all(upgrades, workers)
    seconds = time.perf_counter() - began
    time.sleep(1)  # the load carries on a moment after the last upgrade
    figures = load.check(load.settle())
    by_slug = {upgrade.agent.slug: (upgrade, took) for upgrade, took in ended.values()}
    return seconds, by_slug, figures


def rolling_fleet(slugs: list[str], workers: int) -> None:
    n = len(slugs)
    print(f"\n(b) rolling upgrade of {n} agent(s) 1.0.0 → 1.1.0, requested together and driven "
          f"side by side ({workers} steps at once, as workers would), under {RATE:g} tasks/s to "
          f"each of the {n} agent(s) throughout; gates min_tasks {ROLLING_GATES['min_tasks']}, "
          f"verify_seconds {ROLLING_GATES['verify_seconds']} (single run)", flush=True)  # fmt: skip
    publish("1.1.0")
    plan = [(slug, "rolling", {"gate_settings": ROLLING_GATES}) for slug in slugs]
    seconds, by_slug, figures = upgrade_side_by_side(plan, "1.1.0", slugs, workers, "rolling")
    succeeded = [s for s, (u, _) in by_slug.items() if u.status == "succeeded"]
    each = [took for _u, took in by_slug.values()]
    if len(succeeded) < n:
        for slug, (upgrade, _took) in by_slug.items():
            if upgrade.status != "succeeded":
                print(f"  {slug}: {upgrade.status}: {upgrade.outcome}")
    print(f"  {len(succeeded)} of {n} succeeded; all finished in {seconds:.1f} s (each from the "
          f"request: median {statistics.median(each):.1f} s, max {max(each):.1f} s)")  # fmt: skip
    ok = clean(figures, "(b)") and len(succeeded) == n and seconds < 120
    print(f"  {tasks_line(figures)}")
    print(f"  {n} agent(s) upgraded in {seconds:.1f} s, {figures['lost']} lost, "
          f"{figures['failed']} failed (target < 2 min, 0 lost, 0 failed) {met(ok)}", flush=True)  # fmt: skip


def blue_green_and_canary(slugs: list[str], workers: int) -> None:
    print(f"\n(c) blue-green (WowMemory) and canary 10,50,100 % (WowCache; gates min_tasks "
          f"{CANARY_GATES['min_tasks']}, verify_seconds {CANARY_GATES['verify_seconds']}) "
          f"1.1.0 → 1.1.1, side by side under {RATE:g} tasks/s to each of the {len(slugs)} "
          "agents (single run each)", flush=True)  # fmt: skip
    publish("1.1.1")
    plan = [
        ("wow-memory", "blue-green", {"gate_settings": CANARY_GATES}),
        ("wow-cache", "canary", {"steps": [10, 50, 100], "gate_settings": CANARY_GATES}),
    ]
    _seconds, by_slug, figures = upgrade_side_by_side(plan, "1.1.1", slugs, workers, "bg-canary")
    tasks_ok = clean(figures, "(c)")
    print(f"  {tasks_line(figures)}")
    for slug, label in (("wow-memory", "blue-green"), ("wow-cache", "canary")):
        upgrade, took = by_slug[slug]
        steps = [
            f"{row['step']}: {row['tasks']} tasks"
            + (f", {row['share']} % new" if row["weight"] < 100 else "")
            for row in upgrade.measurements
            if row.get("verdict") == "passed" and row["step"] != "verify"
        ]
        detail = f" ({'; '.join(steps)})" if steps else ""
        ok = upgrade.status == "succeeded" and tasks_ok
        print(f"  {label} of {upgrade.agent.name}: {upgrade.status} in {took:.1f} s{detail}, "
              f"{figures['lost']} lost, {figures['failed']} failed (target: 0 lost, 0 failed) "
              f"{met(ok)}", flush=True)  # fmt: skip


# --- (d) and (e): roll-back ------------------------------------------------------------------------


def rollbacks(slug: str, runs: int, workers: int, load_slugs: list[str], label: str) -> None:
    """Canary the faulty 1.2.0 on ``slug`` ``runs`` times under load; each trips and rolls back
    (1.2.0 is unpinned again between runs)."""
    from agents.agentd import contract
    from agents.models import Agent
    from portal.actors import Actor
    from servicing import services
    from servicing.upgrades import requests

    actor = Actor.command("bench")
    bad = publish("1.2.0", FAULTY)
    agent = Agent.objects.get(slug=slug)
    print(f"{label} roll-back of a canary {agent.version} → 1.2.0 (config {json.dumps(FAULTY)}) "
          f"on {agent.name} ({agent.runtime} runtime) under {RATE:g} tasks/s to each of "
          f"{len(load_slugs)} agent(s); gates {json.dumps(ROLLBACK_GATES)}; "
          f"{'median of ' + str(runs) if runs > 1 else 'a single run'}", flush=True)  # fmt: skip
    load = FleetLoad(load_slugs, f"rollback-{agent.runtime}").start()
    time.sleep(2)
    switches, last_replies, wholes = [], [], []
    for run in range(runs):
        agent.refresh_from_db()
        upgrade = requests.request_upgrade(
            actor, agent, "1.2.0", "canary", steps=[10, 50, 100], gate_settings=ROLLBACK_GATES
        )
        ((upgrade, _took),) = drive_all([upgrade], workers).values()
        if upgrade.status != "rolled_back":
            raise SystemExit(f"run {run + 1}: the upgrade {upgrade.status}: {upgrade.outcome}")
        tripped = next(r for r in upgrade.measurements if r.get("verdict") == "tripped")
        switch = next(r for r in upgrade.measurements if r.get("step") == "roll-back")
        trip_at = at(tripped["at"])
        time.sleep(1)  # replies of tasks in hand are in
        requested_at = upgrade.created_at.timestamp()
        by_new = [
            int(entry.split("-")[0]) / 1000  # the reply's time, as Redis stamped its entry
            for entry, fields in load.answers(slug)
            if fields.get(contract.REPLY_VERSION) == "1.2.0"
            and int(entry.split("-")[0]) / 1000 >= requested_at
        ]
        offset = (max(by_new) - trip_at) if by_new else 0.0
        switches.append(switch["switch_seconds"])
        last_replies.append(max(0.0, offset))
        wholes.append(upgrade.finished_at.timestamp() - trip_at)
        when = f"{offset:.2f} s after" if offset >= 0 else f"{-offset:.2f} s before (none after)"
        print(f"  run {run + 1}: tripped at {tripped['step']} ({tripped['new']['error_rate']} % "
              f"errors on 1.2.0); switch {switch['switch_seconds'] * 1000:.0f} ms; {len(by_new)} "
              f"replies by 1.2.0, the last {when} the trip; roll-back finished "
              f"{wholes[-1]:.2f} s after it", flush=True)  # fmt: skip
        bad.refresh_from_db()
        if bad.pinned:
            services.unpin(actor, bad, "benchmark: canary it again")
    figures = load.check(load.settle())
    print(f"  {tasks_line(figures)}")
    if figures["lost"] or figures["twice"]:
        hard_failures.append(f"{label}: {tasks_line(figures)}")
    switch_m, last_m = statistics.median(switches), statistics.median(last_replies)
    print(f"  traffic back on the old version: {switch_m * 1000:.0f} ms as the upgrade measured "
          f"it; trip → last reply by 1.2.0: {last_m:.2f} s{' (median)' if runs > 1 else ''}; "
          f"{figures['lost']} lost (target < 5 s) {met(max(switch_m, last_m) < 5)}")  # fmt: skip
    print(f"  whole roll-back (trip → run finished, the new replica stopped and its leftovers "
          f"handed back): {statistics.median(wholes):.2f} s"
          f"{' (median)' if runs > 1 else ''}", flush=True)  # fmt: skip


# --- (e): Docker, in a child process ------------------------------------------------------------


def docker_part(smoke: bool) -> None:
    """Run (e) in a child process (its own private database), when an engine answers."""
    print("\n(e) roll-back on the Docker runtime", flush=True)
    if smoke:
        # CI runs the Docker upgrades in tests/servicing/test_docker_upgrades.py already.
        print("  skipped in smoke mode: the full run measures it (tests cover Docker upgrades)")
        return
    try:
        import docker

        engine = docker.DockerClient(base_url=DOCKER_HOST, version="auto", timeout=30)
        engine.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no engine to measure on
        if os.environ.get("CI") == "true":
            print(f"  no Docker engine at {DOCKER_HOST} with CI=true: {exc} {met(False)}")
        else:
            print(f"  skipped: no Docker engine answers at {DOCKER_HOST} ({exc})")
        return
    command = [sys.executable, str(Path(__file__).resolve()), "--docker-child"]
    if smoke:
        command.append("--smoke")
    child = subprocess.run(command, check=False, stdout=subprocess.PIPE, text=True)
    print(child.stdout, end="", flush=True)
    for line in child.stdout.splitlines():
        if line.rstrip().endswith(("→ met", "NOT MET")):
            verdicts.append(line.rstrip().endswith("→ met"))
        if line.startswith("HARD: "):
            hard_failures.append(line.removeprefix("HARD: "))
    if child.returncode not in (0, 3):
        print(f"  the Docker run ended with status {child.returncode} {met(False)}")


def docker_child(smoke: bool) -> None:
    """(e) itself: WowCache on Docker at 1.1.0 (the image 1.0.0 tagged), the faulty 1.2.0
    canaried and rolled back; every container, volume and tag made here removed afterwards."""
    import docker
    import docker.errors

    from agents.runtimes.images import build_agent_image, image_exists

    engine = docker.DockerClient(base_url=DOCKER_HOST, version="auto", timeout=120)
    base = f"{REPOSITORY}:1.0.0"
    if not image_exists(engine, base):
        if not image_exists(engine, BASE_IMAGE):
            print(f"  skipped: neither {base} nor {BASE_IMAGE} exists "
                  "(scripts/build-agent-base-image.sh)")  # fmt: skip
            return
        build_agent_image(engine, "1.0.0", BASE_IMAGE, repository=REPOSITORY)
    label = {"label": f"waooaw.agent={DOCKER_AGENT}"}
    if engine.containers.list(all=True, filters=label):
        print(f"  skipped: containers of {DOCKER_AGENT} exist already (another benchmark may be "
              "running; docker rm -f them if they are leftovers)")  # fmt: skip
        return
    tagged = []
    for version in ("1.2.0",) if smoke else ("1.1.0", "1.2.0"):
        if not image_exists(engine, f"{REPOSITORY}:{version}"):
            engine.images.get(base).tag(REPOSITORY, version)
            tagged.append(f"{REPOSITORY}:{version}")
    print(f"  {base} tagged {', '.join(tagged) or '(tags there already)'} for the run",
          flush=True)  # fmt: skip
    try:
        with django_environment(
            DOCKER_HOST=DOCKER_HOST, AGENT_IMAGE=REPOSITORY, AGENT_DOCKER_NETWORK="host"
        ):
            from agents.models import Agent

            Agent.objects.filter(slug=DOCKER_AGENT).update(runtime="docker")
            up([DOCKER_AGENT])
            if not smoke:  # first a rolling upgrade to 1.1.0, on Docker too
                publish("1.1.0")
                plan = [(DOCKER_AGENT, "rolling", {"gate_settings": ROLLING_GATES})]
                seconds, by_slug, figures = upgrade_side_by_side(
                    plan, "1.1.0", [DOCKER_AGENT], 2, "docker-rolling"
                )
                upgrade, _took = by_slug[DOCKER_AGENT]
                ok = upgrade.status == "succeeded" and clean(figures, "(e) rolling")
                print(f"  rolling upgrade 1.0.0 → 1.1.0 of WowCache on Docker under "
                      f"{RATE:g} tasks/s: {upgrade.status} in {seconds:.1f} s; "
                      f"{tasks_line(figures)} (0 lost, 0 failed) {met(ok)}", flush=True)  # fmt: skip
                if upgrade.status != "succeeded":
                    print(f"  its outcome: {upgrade.outcome}")
                    return
            rollbacks(DOCKER_AGENT, 1 if smoke else 3, 2, [DOCKER_AGENT], " ")
    finally:
        for container in engine.containers.list(all=True, filters=label):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            engine.volumes.get(f"waooaw-{DOCKER_AGENT}-data").remove(force=True)
        for tag in tagged:
            with contextlib.suppress(docker.errors.NotFound):
                engine.images.remove(tag, noprune=True)
        print(f"  removed {DOCKER_AGENT}'s containers and volume, and the tags {tagged}")


# --- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="config patches for (a)")
    parser.add_argument("--replicas", type=int, default=3, help="WowCache's replicas for (a)")
    parser.add_argument("--rollbacks", type=int, default=3, help="roll-backs for (d) and (e)")
    parser.add_argument("--workers", type=int, default=4, help="upgrade steps carried out at once")
    parser.add_argument("--smoke", "--quick", action="store_true",
                        help="(a) 3 patches, (b) one agent; Docker only with CI=true (CI)")  # fmt: skip
    parser.add_argument("--docker-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.runs = 3
    if args.docker_child:
        docker_child(args.smoke)
        print("".join(f"HARD: {line}\n" for line in hard_failures), end="")
        sys.exit(0)

    with django_environment(AGENT_READY_TIMEOUT_SECONDS="20", AGENT_STOP_GRACE_SECONDS="5"):
        from agents.models import Agent
        from agents.services import dependency_order

        hot_patch(args.runs, args.replicas)
        if args.smoke:
            rolling_fleet(["wow-cache"], args.workers)
        else:
            up()
            slugs = [
                a.slug for a in dependency_order(Agent.objects.prefetch_related("dependencies"))
            ]
            rolling_fleet(slugs, args.workers)
            blue_green_and_canary(slugs, args.workers)
            print()
            rollbacks("wow-cache", args.rollbacks, args.workers, slugs, "(d)")
    docker_part(args.smoke)
    print(f"\n{sum(verdicts)} of {len(verdicts)} targets met")
    if hard_failures:
        raise SystemExit("tasks lost or failed: " + "; ".join(hard_failures))
    if not all(verdicts) and not args.smoke:
        sys.exit(1)


if __name__ == "__main__":
    main()
