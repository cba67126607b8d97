"""Workflow engine benchmark: the pages with many runs stored, the engine's overhead against a
plain Celery chain, and many runs of customer onboarding at once with real agents.

(a) 10,000 runs with 60,000 step runs stored: the Workflows list's first page and a deep page
    (keyset ``?before=``), server time (Django's test client, in process), target < 100 ms; a
    200-step run's page with its Gantt chart and step graph, target < 200 ms.
(b) a chain of 50 no-op steps run by a real Celery worker, against a Celery chain of 50 no-op
    tasks on the same worker in the same run; target: the workflow within 2x the chain.
(c) 100 customer onboarding runs started at once with the 14 agents running (real agentd
    processes): every run finishes, no step lost or run twice (each task id answered once,
    agentd's processed counters up by exactly five per run).

Each figure is the median of ``--runs`` runs. Run it with::

    .venv/bin/python benchmarks/bench_workflows.py            # the sizes above
    .venv/bin/python benchmarks/bench_workflows.py --smoke    # small sizes, one run (CI)
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from celery import shared_task

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the project, when run as a script

from agents.workflows import registry  # noqa: E402
from agents.workflows.definitions import Definition, Step  # noqa: E402

CHAIN = 50


def register_definitions() -> None:
    """The benchmark's definitions: no-op chains, a six-step one for the stored runs, and a
    200-step one eight steps wide. Registered once Django is set up (their kinds are then
    known): in this process and in the benchmark's worker, through
    WORKFLOW_DEFINITION_MODULES=bench_workflows."""

    for length in (10, CHAIN):
        registry.register(
            Definition(
                name=f"bench-chain-{length}", version=1, title=f"Chain of {length} no-ops",
                steps=tuple(Step(f"s{i}", "noop", after=(f"s{i - 1}",) if i else ())
                            for i in range(length)),
                max_parallel=1,
            )
        )  # fmt: skip
    registry.register(
        Definition(
            name="bench-six", version=1, title="Six steps", deadline_seconds=600,
            steps=tuple(Step(f"step-{i}", "noop", after=(f"step-{i - 1}",) if i else ())
                        for i in range(6)),
        )
    )  # fmt: skip
    registry.register(
        Definition(
            name="bench-200", version=1, title="Two hundred steps", max_parallel=8,
            steps=tuple(Step(f"step-{i}", "noop", after=(f"step-{i - 8}",) if i >= 8 else ())
                        for i in range(200)),
        )
    )  # fmt: skip


def _portal_started() -> bool:
    """Whether a portal process imports this module at start-up (its kinds are known)."""
    try:
        from agents.workflows.kinds import kinds
    except ImportError:  # run as a script: the project is not on the path yet
        return False
    return "noop" in kinds()


def register_tasks() -> None:
    """The plain Celery tasks (b) compares with, in the benchmark's worker."""

    @shared_task(name="bench.workflows.noop", ignore_result=True)
    def noop_task(*args) -> None:
        return None

    @shared_task(name="bench.workflows.mark", ignore_result=True)
    def mark_task(key: str) -> None:
        import redis
        from django.conf import settings

        redis.Redis.from_url(settings.REDIS_URL).set(key, "1", ex=60)


if _portal_started():
    register_definitions()
    register_tasks()


def met(ok: bool) -> str:
    return "target met" if ok else "TARGET MISSED"


def median_ms(values: list[float]) -> float:
    return statistics.median(values)


# --- (a) the pages -----------------------------------------------------------------------------


def store_runs(count: int) -> list[int]:
    """``count`` runs of six steps each, in the statuses and times of a busy week."""
    from django.utils import timezone

    from agents.workflows.models import StepRun, WorkflowRun

    rng = random.Random(1)
    statuses = ["succeeded"] * 7 + ["failed", "cancelled", "running", "rolled_back"]
    now = timezone.now()
    ids: list[int] = []
    for first in range(0, count, 2000):
        runs = []
        for n in range(first, min(count, first + 2000)):
            started = now - timedelta(minutes=count - n)
            status = rng.choice(statuses)
            runs.append(WorkflowRun(
                definition="bench-six", version=1, title="Six steps", actor_kind="system",
                actor="system:bench", status=status, subject=f"Customer {n % 500}",
                subject_kind="customer", created_at=started, started_at=started,
                finished_at=None if status == "running" else started + timedelta(seconds=30),
                total_steps=6, completed_steps=6 if status == "succeeded" else 3,
                failed_steps=1 if status == "failed" else 0,
                deadline_at=started + timedelta(minutes=10), deadline_state="on_time",
            ))  # fmt: skip
        made = WorkflowRun.objects.bulk_create(runs)
        steps = []
        for run in made:
            for i in range(6):
                began = run.started_at + timedelta(seconds=5 * i)
                steps.append(StepRun(
                    run=run, definition="bench-six", step_id=f"step-{i}", position=i,
                    kind="noop", title=f"Step {i}", status="succeeded" if i < 3 else "pending",
                    queued_at=began, started_at=began if i < 3 else None,
                    finished_at=began + timedelta(seconds=4) if i < 3 else None,
                ))  # fmt: skip
        StepRun.objects.bulk_create(steps)
        ids.extend(run.pk for run in made)
    return ids


def store_wide_run() -> int:
    """A finished run of 200 steps, eight at a time, twenty of them retried once."""
    from django.utils import timezone

    from agents.workflows.models import StepRun, WorkflowRun

    now = timezone.now()
    run = WorkflowRun.objects.create(
        definition="bench-200", version=1, title="Two hundred steps", actor_kind="system",
        actor="system:bench", status="succeeded", started_at=now - timedelta(minutes=10),
        finished_at=now, total_steps=200, completed_steps=200, max_parallel=8,
    )  # fmt: skip
    rows = []
    for i in range(200):
        began = run.started_at + timedelta(seconds=3 * (i // 8))
        retried = i % 10 == 0
        if retried:
            rows.append(StepRun(
                run=run, definition="bench-200", step_id=f"step-{i}", position=i, attempt=1,
                current=False, kind="noop", title=f"Step {i}", status="failed", error="boom",
                queued_at=began, started_at=began, finished_at=began + timedelta(seconds=1),
            ))  # fmt: skip
        rows.append(StepRun(
            run=run, definition="bench-200", step_id=f"step-{i}", position=i,
            attempt=2 if retried else 1, kind="noop", title=f"Step {i}", status="succeeded",
            queued_at=began, started_at=began + timedelta(seconds=1 if retried else 0),
            finished_at=began + timedelta(seconds=2.5), output={"i": i},
        ))  # fmt: skip
    StepRun.objects.bulk_create(rows)
    return run.pk


def page_ms(client, url: str, runs: int, expect: str) -> list[float]:
    timings = []
    for _ in range(runs + 1):  # the first warms the caches up and is left out
        began = time.perf_counter()
        response = client.get(url)
        timings.append((time.perf_counter() - began) * 1000)
        if response.status_code != 200 or expect not in response.content.decode():
            raise SystemExit(f"{url} answered {response.status_code} without {expect!r}")
    return timings[1:]


# --- (b), (c) a real worker --------------------------------------------------------------------


def start_worker(root: Path, concurrency: int) -> subprocess.Popen:
    from portal.celery import app

    env = {**os.environ, "WORKFLOW_DEFINITION_MODULES": "bench_workflows",
           "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}  # fmt: skip
    log = open(root / "worker.log", "a")  # noqa: SIM115 (open while it runs)
    name = f"bench-workflows-{os.getpid()}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--concurrency",
         str(concurrency), "--without-mingle", "--without-gossip", "--hostname", f"{name}@%h",
         "--loglevel", "WARNING"],
        cwd=HERE.parent, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not app.control.ping(destination=[f"{name}@{os.uname().nodename}"], timeout=0.5):
        if time.monotonic() > deadline or worker.poll() is not None:
            raise SystemExit(
                f"the worker did not come up: {(root / 'worker.log').read_text()[-2000:]}"
            )
    return worker


def celery_chain_seconds(length: int) -> float:
    import redis
    from celery import chain, current_app
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    key = f"bench:workflows:{time.time_ns()}"
    links = [current_app.signature("bench.workflows.noop", args=(i,), immutable=True)
             for i in range(length - 1)]  # fmt: skip
    links.append(current_app.signature("bench.workflows.mark", args=(key,), immutable=True))
    began = time.perf_counter()
    chain(*links).apply_async()
    while not client.exists(key):
        time.sleep(0.001)
        if time.perf_counter() - began > 60:
            raise SystemExit("the Celery chain did not finish in 60 s")
    return time.perf_counter() - began


def workflow_chain_seconds(length: int) -> float:
    from agents.workflows import services
    from agents.workflows.models import WorkflowRun
    from portal.actors import Actor

    began = time.perf_counter()
    run = services.start(Actor.command("bench"), f"bench-chain-{length}")
    while True:
        status = WorkflowRun.objects.filter(pk=run.pk).values_list("status", flat=True)[0]
        if status in ("succeeded", "failed"):
            break
        time.sleep(0.001)
        if time.perf_counter() - began > 60:
            raise SystemExit("the workflow chain did not finish in 60 s")
    if status != "succeeded":
        raise SystemExit(f"the workflow chain {status}")
    return time.perf_counter() - began


def onboard(count: int) -> tuple[float, int, int]:
    """Start ``count`` onboarding runs at once; answers (seconds, runs succeeded, tasks)."""
    import redis
    from django.conf import settings

    from agents.agentd import contract
    from agents.workflows import services
    from agents.workflows.models import StepRun, WorkflowRun
    from portal.actors import Actor

    agents = redis.Redis.from_url(settings.AGENT_REDIS_URL, decode_responses=True)

    onboarding = (
        "wow-agent-factory",
        "wow-domain",
        "wow-scaling",
        "wow-vision",
        "wow-communication",
    )

    def processed() -> int:
        """Tasks the five onboarding agents processed (others get tasks agents forward)."""
        return sum(int(agents.hget(contract.counters(s), "processed") or 0) for s in onboarding)

    before = processed()
    actor = Actor.command("bench")
    began = time.perf_counter()
    runs = [services.start(actor, "customer-onboarding", {"customer_name": f"Bench Co {i}"})
            for i in range(count)]  # fmt: skip
    ids = [run.pk for run in runs]
    while WorkflowRun.objects.filter(pk__in=ids, finished_at__isnull=True).exists():
        time.sleep(0.1)
        if time.perf_counter() - began > 600:
            raise SystemExit("the onboarding runs did not finish in 10 min")
    seconds = time.perf_counter() - began
    succeeded = WorkflowRun.objects.filter(pk__in=ids, status="succeeded").count()
    tasks = processed() - before
    if StepRun.objects.filter(run__in=ids, attempt__gt=1).exists():
        raise SystemExit("a step of an onboarding run took a second attempt")
    answered = 0
    for run_id in ids:
        for step, slug in (("provision", "wow-agent-factory"), ("configure", "wow-domain"),
                           ("deploy", "wow-scaling"), ("test", "wow-vision"),
                           ("activate", "wow-communication")):  # fmt: skip
            answered += agents.zscore(contract.answered(slug), f"wf{run_id}-{step}-a1") is not None
    if answered != 5 * count:
        raise SystemExit(f"{answered} task ids answered, not {5 * count}")
    return seconds, succeeded, tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stored", type=int, default=10_000, help="runs stored for (a)")
    parser.add_argument("--onboarding", type=int, default=100, help="runs started at once for (c)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--smoke", "--quick", action="store_true", help="small sizes, one run (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.stored, args.onboarding, args.runs = 300, 5, 1
    sys.path.insert(0, str(HERE))
    from _harness import django_environment

    verdicts: list[bool] = []

    def verdict(line: str, ok: bool) -> None:
        verdicts.append(ok)
        print(f"  {line} → {met(ok)}")

    with django_environment(WORKFLOW_DEFINITION_MODULES="bench_workflows") as root:
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.test import Client, override_settings

        from agents import bulk
        from portal import roles
        from portal.actors import Actor

        print(f"(a) {args.stored:,} runs with {6 * args.stored:,} step runs stored")
        began = time.perf_counter()
        ids = store_runs(args.stored)
        wide = store_wide_run()
        print(f"  stored in {time.perf_counter() - began:.1f} s")
        viewer = get_user_model().objects.create_user("bench-viewer", password="x" * 20)
        roles.set_role(viewer, roles.VIEWER)
        # Pages link their static files by name: no collected manifest is needed to time them.
        plain = {**settings.STORAGES, "staticfiles": {
            "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # fmt: skip
        override_settings(STORAGES=plain).enable()
        client = Client(SERVER_NAME="localhost")
        client.force_login(viewer)
        deep = ids[len(ids) // 20]
        first = page_ms(client, "/workflows/", args.runs, f'id="wf-run-{ids[-1]}"')
        deep_page = page_ms(
            client, f"/workflows/?before={deep}", args.runs, f'id="wf-run-{deep - 1}"'
        )
        filtered = page_ms(client, "/workflows/?status=failed&q=Customer 7", args.runs, "wf-table")
        run_page = page_ms(client, f"/workflows/{wide}/", args.runs, 'class="gantt"')
        verdict(f"list, first page: {median_ms(first):.1f} ms (< 100 ms)", median_ms(first) < 100)
        verdict(f"list, deep page (before={deep}): {median_ms(deep_page):.1f} ms (< 100 ms)",
                median_ms(deep_page) < 100)  # fmt: skip
        verdict(
            f"list, filtered: {median_ms(filtered):.1f} ms (< 100 ms)", median_ms(filtered) < 100
        )
        verdict(f"a 200-step run's page, Gantt and graph: {median_ms(run_page):.1f} ms (< 200 ms)",
                median_ms(run_page) < 200)  # fmt: skip

        print("\n(b) 50 no-op steps: the engine against a Celery chain on the same worker")
        worker = start_worker(root, 2)
        try:
            celery_chain_seconds(CHAIN), workflow_chain_seconds(CHAIN)  # warm up
            chains, flows = [], []
            for _ in range(max(args.runs, 3)):
                chains.append(celery_chain_seconds(CHAIN))
                flows.append(workflow_chain_seconds(CHAIN))
            ratio = median_ms(flows) / median_ms(chains)
            print(f"  Celery chain: {median_ms(chains) * 1000:.0f} ms; workflow: "
                  f"{median_ms(flows) * 1000:.0f} ms (medians of {len(flows)})")  # fmt: skip
            verdict(f"ratio {ratio:.2f} (≤ 2)", ratio <= 2)

            print(f"\n(c) {args.onboarding} customer onboarding runs at once, 14 real agents")
            operation = bulk.create_bulk_operation(
                "deploy_and_start", Actor.command("bench"),
                filter={"all": True}, enqueue=False,
            )  # fmt: skip
            bulk.run_bulk_operation(operation.pk)
            operation.refresh_from_db()
            if operation.failed:
                raise SystemExit(f"{operation.failed} agents did not come up")
            seconds, succeeded, tasks = onboard(args.onboarding)
            print(f"  {succeeded} of {args.onboarding} succeeded in {seconds:.1f} s; agentd "
                  f"processed {tasks} tasks ({5 * args.onboarding} expected)")  # fmt: skip
            verdict("every run finished, each task once",
                    succeeded == args.onboarding and tasks == 5 * args.onboarding)  # fmt: skip
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    print(f"\n{sum(verdicts)} of {len(verdicts)} targets met")
    if not all(verdicts) and not args.smoke:
        sys.exit(1)


if __name__ == "__main__":
    main()
