"""Bulk deploy + start of all 14 Platform CoE agents: the portal's bulk operation against raw
runtime calls, on the local runtime and on Docker.

Portal: the 14 agents registered in DRAFT (seed), then one bulk "deploy_and_start" through
``bulk.create_bulk_operation(..., enqueue=False)`` and ``bulk.run_bulk_operation(id)``, in this
process, as the Celery worker runs it: provision, deploy and start of each agent, dependencies
first, at most ``--parallel`` agents at once. Timed until the run returns with every agent
RUNNING; checked afterwards through the database and the runtime (14 agents running).

Raw: in the same run, the same 14 agents taken provision -> deploy -> start by calling the
runtime directly (``build_runtime`` + ``spec_for``'s AgentSpec, no database in the timed part),
in the same dependency order, in a thread pool of the same size where an agent starts only once
its dependencies are started: what a script without the portal would do.

Between measurements everything is removed (processes, containers, volumes, agent directories)
and the registry is seeded afresh; portal and raw alternate which goes first. Median of
``--runs`` runs each. Targets: all RUNNING in under 5 minutes (seed story); under 30 s on Docker
(issue 6).

Docker needs an engine at DOCKER_HOST and the base image (scripts/build-agent-base-image.sh);
the agent image is built from the current sources if needed. Without an engine Docker is
skipped with a message.

    .venv/bin/python benchmarks/bench_bulk.py [--runtime local docker] [--runs 3] [--parallel 5]
                                              [--agents 14]
    .venv/bin/python benchmarks/bench_bulk.py --smoke   # 5 agents, one run on each runtime

``--agents K`` takes the first K in dependency order (each one's dependencies among them); the
targets above are about all 14. The smoke run leaves Docker out without CI=true (``.ci/run``
starts the engine then); with CI=true a Docker that cannot be measured is a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import statistics
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from _harness import _kill_under, django_environment, docker_skipped_in_smoke, summary

RUNTIMES = ("local", "docker")
DOCKER_HOST = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
BASE_IMAGE = os.environ.get("AGENT_BASE_IMAGE", "waooaw/agentd-base:bookworm")
REPOSITORY = "waooaw/agentd"
VERSION = "1.0.0"
SEED_TARGET_SECONDS = 300.0
DOCKER_TARGET_SECONDS = 30.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--parallel", type=int, default=None, help="default: BULK_DEFAULT_PARALLELISM (5)"
    )
    parser.add_argument(
        "--agents", type=int, default=14, help="the first K agents in dependency order"
    )
    parser.add_argument("--smoke", action="store_true", help="5 agents, one run per runtime (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.agents = 1, 5
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not 1 <= args.agents <= 14:
        parser.error("--agents must be 1 to 14")
    began = time.perf_counter()

    runtimes = list(dict.fromkeys(args.runtime))
    skipped: dict[str, str] = {}
    if "docker" in runtimes and docker_skipped_in_smoke(args.smoke):
        skipped["docker"] = docker_skipped_in_smoke(args.smoke)
        runtimes.remove("docker")
        print(f"docker: skipped, {skipped['docker']}")
    elif "docker" in runtimes:
        why_not = prepare_docker()
        if why_not:
            skipped["docker"] = why_not
            runtimes.remove("docker")
            print(f"docker: skipped, {why_not}")
            if os.environ.get("CI") == "true":
                raise SystemExit("CI=true needs the Docker engine for this benchmark")

    if not runtimes:
        return
    results: dict[str, tuple[list[float], list[float]]] = {}
    with django_environment(DOCKER_HOST=DOCKER_HOST, AGENT_IMAGE=REPOSITORY) as root:
        from agents import bulk

        parallel = bulk.check_parallelism(args.parallel)
        for name in runtimes:
            fleet = Fleet(name, root / "agents", args.agents)
            try:
                fleet.clean()
                results[name] = fleet.measure(args.runs, parallel)
            finally:
                fleet.clean()

    print()
    for name in RUNTIMES:
        if name in skipped:
            print(f"{name}: skipped ({skipped[name]})")
        if name not in results:
            continue
        portal_times, raw_times = results[name]
        portal, raw = statistics.median(portal_times), statistics.median(raw_times)
        print(
            f"{name} runtime: {args.agents} agents, deploy and start (provision + deploy + start) "
            f"until all RUNNING, parallelism {parallel}"
        )
        print(f"    portal bulk operation: {summary(portal_times)}")
        print(f"    raw runtime calls:     {summary(raw_times)}")
        print(
            f"    ratio portal/raw (medians): {portal / raw:.2f} "
            f"(portal overhead {portal - raw:+.2f} s, {(portal / raw - 1) * 100:+.0f} %)"
        )
        if args.agents < 14:
            continue  # the targets are about all 14
        print(
            f"    seed target: all RUNNING < {SEED_TARGET_SECONDS / 60:.0f} min -> "
            f"{met(portal, SEED_TARGET_SECONDS)}"
        )
        if name == "docker":
            print(
                f"    our target:  all RUNNING < {DOCKER_TARGET_SECONDS:.0f} s -> "
                f"{met(portal, DOCKER_TARGET_SECONDS)}"
            )
    print(f"(benchmark took {time.perf_counter() - began:.0f} s)")


def met(seconds: float, target: float) -> str:
    return "met" if seconds < target else "NOT met"


# --- Docker engine and image ---------------------------------------------------------------


def prepare_docker() -> str:
    """Make sure the agent image exists; answers why Docker cannot be measured, or ""."""
    import docker
    import docker.errors

    from agents.runtimes.base import RuntimeFailure
    from agents.runtimes.images import build_agent_image, image_exists

    try:
        engine = docker.DockerClient(base_url=DOCKER_HOST, version="auto", timeout=120)
        engine.ping()
    except Exception as error:  # noqa: BLE001 - any failure means "no engine here"
        return (
            f"no Docker engine answers at {DOCKER_HOST} ({type(error).__name__}); start one "
            "(dockerd --storage-driver=vfs) or set DOCKER_HOST"
        )
    agent_image = f"{REPOSITORY}:{VERSION}"
    leftovers = [
        container.name for container in engine.containers.list(all=True) if _ours(container.labels)
    ]
    if leftovers:
        return (
            f"containers of these agents exist already ({', '.join(sorted(leftovers))}): another "
            "benchmark may be running; remove them (docker rm -f) if they are leftovers"
        )
    if image_exists(engine, BASE_IMAGE):
        try:
            build_agent_image(engine, VERSION, BASE_IMAGE, repository=REPOSITORY)
        except RuntimeFailure as failure:
            return f"could not build {agent_image}: {failure.message}"
    elif not image_exists(engine, agent_image):
        return (
            f"neither {agent_image} nor its base {BASE_IMAGE} is in the engine; run "
            "scripts/build-agent-base-image.sh, then manage.py agents build-image"
        )
    return ""


def _ours(labels: dict | None) -> bool:
    """Labelled as one of the 14 seeded agents (not a test's suffixed copy)."""
    from agents.catalog import PLATFORM_SLUGS

    labels = labels or {}
    return labels.get("waooaw.managed") == "true" and labels.get("waooaw.agent") in PLATFORM_SLUGS


# --- one runtime -------------------------------------------------------------------------------


class Fleet:
    """The first ``count`` of the 14 agents in dependency order, on one runtime: measured
    through the portal and raw, cleaned in between."""

    def __init__(self, runtime: str, agent_root: Path, count: int = 14) -> None:
        from agents import services
        from agents.models import Agent

        self.runtime = runtime
        self.agent_root = agent_root
        ordered = services.dependency_order(Agent.objects.prefetch_related("dependencies"))
        self.slugs = [agent.slug for agent in ordered[:count]]

    def measure(self, runs: int, parallel: int) -> tuple[list[float], list[float]]:
        portal_times: list[float] = []
        raw_times: list[float] = []
        for run in range(1, runs + 1):
            # Alternate who goes first, so that neither always meets a warm engine or cache.
            order = ("portal", "raw") if run % 2 else ("raw", "portal")
            for which in order:
                self.fresh_registry()
                if which == "portal":
                    portal_times.append(self.portal_start(parallel))
                else:
                    raw_times.append(self.raw_start(parallel))
                self.clean()
            print(
                f"{self.runtime} run {run} ({order[0]} first): portal {portal_times[-1]:.2f} s, "
                f"raw {raw_times[-1]:.2f} s",
                flush=True,
            )
        return portal_times, raw_times

    # --- the portal ---------------------------------------------------------------------------

    def portal_start(self, parallel: int) -> float:
        """One bulk deploy-and-start of them all, run in this process as the worker runs it."""
        from agents import bulk, services
        from agents.models import Agent, State
        from portal.actors import Actor

        actor = Actor.command("benchmark")
        began = time.perf_counter()
        operation = bulk.create_bulk_operation(
            "deploy_and_start", actor, targets=self.slugs, parallelism=parallel, enqueue=False
        )
        finished = bulk.run_bulk_operation(operation.pk)
        elapsed = time.perf_counter() - began

        if (
            finished is None
            or finished.status != "succeeded"
            or finished.succeeded != len(self.slugs)
        ):
            failures = operation.items.exclude(status="succeeded").values_list(
                "agent__slug", "message"
            )
            raise SystemExit(
                f"{self.runtime}: bulk operation #{operation.pk} ended "
                f"{finished.status if finished else 'unrun'}: {list(failures)}"
            )
        agents = list(Agent.objects.filter(slug__in=self.slugs))
        not_running = [a.slug for a in agents if a.state != State.RUNNING]
        if len(agents) != len(self.slugs) or not_running:
            raise SystemExit(f"{self.runtime}: not RUNNING in the database: {not_running}")
        runtime = services.build_runtime(self.runtime)
        self.check_running(runtime, [services.spec_for(agent) for agent in agents])
        return elapsed

    # --- the same work with the runtime alone -------------------------------------------------

    def raw_start(self, parallel: int) -> float:
        """Provision, deploy and start each agent with runtime calls only, dependencies first,
        at most ``parallel`` at once."""
        from agents import bulk, services
        from agents.models import Agent
        from agents.runtimes import AgentSpec
        from agents.services import DependencyGraph

        # Read once before the clock starts: the same specs and order the portal would use.
        graph = DependencyGraph.load()
        plan = bulk.plan_bulk(
            "deploy_and_start", list(Agent.objects.filter(slug__in=self.slugs)), graph=graph
        )
        order = [item.agent.slug for item in plan.items]
        specs = {item.agent.slug: services.spec_for(item.agent) for item in plan.items}
        slug_of = {pk: agent.slug for pk, agent in graph.agents.items()}
        needs = {slug_of[pk]: {slug_of[d] for d in deps} for pk, deps in graph.edges.items()}
        runtime = services.build_runtime(self.runtime)

        began = time.perf_counter()
        started: dict[str, AgentSpec] = {}
        pending = list(order)
        running: dict[Future, str] = {}
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="raw") as pool:
            while pending or running:
                for slug in [s for s in pending if needs[s] <= started.keys()]:
                    if len(running) >= parallel:
                        break
                    running[pool.submit(bring_up, runtime, specs[slug])] = slug
                    pending.remove(slug)
                if not running:
                    raise SystemExit(f"{self.runtime}: raw run stuck with {pending} left")
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    slug = running.pop(future)
                    started[slug] = future.result()
        elapsed = time.perf_counter() - began

        self.check_running(runtime, list(started.values()))
        return elapsed

    # --- checking and cleaning ----------------------------------------------------------------

    def check_running(self, runtime, specs: list) -> None:
        """The runtime itself runs every one measured, each answering /healthz."""
        down = [
            spec.slug
            for spec in specs
            if not runtime.status(spec).all_running
            or any(http_status(port, "/healthz") != 200 for port in spec.ports)
        ]
        if len(specs) != len(self.slugs) or down:
            raise SystemExit(f"{self.runtime}: not running on the runtime: {down}")

    def fresh_registry(self) -> None:
        """An empty registry seeded again: the 14 agents in DRAFT on this runtime, no history
        (benchmark housekeeping, not lifecycle transitions)."""
        from agents import services
        from agents.models import Agent, AgentTransition, BulkOperation, Operation
        from portal.actors import Actor

        BulkOperation.objects.all().delete()
        AgentTransition.objects.all().delete()
        Operation.objects.all().delete()
        Agent.objects.all().delete()
        services.seed_platform_agents(Actor.command("benchmark"))
        Agent.objects.update(runtime=self.runtime)

    def clean(self) -> None:
        """Remove what either kind of run created (of any of the 14); fail loudly if anything is
        left."""
        from django.conf import settings

        from agents import services
        from agents.catalog import PLATFORM_SLUGS
        from agents.runtimes import AgentSpec

        runtime = services.build_runtime(self.runtime)
        specs = [
            AgentSpec(
                slug=slug,
                name=slug,
                version=VERSION,
                redis_url=settings.AGENT_REDIS_URL,
                grace_seconds=settings.AGENT_STOP_GRACE_SECONDS,
            )
            for slug in PLATFORM_SLUGS
        ]
        with ThreadPoolExecutor(max_workers=len(specs)) as pool:
            for future in [pool.submit(runtime.remove, spec, True) for spec in specs]:
                with contextlib.suppress(Exception):
                    future.result()
        if self.runtime == "local":
            _kill_under(self.agent_root)
            shutil.rmtree(self.agent_root, ignore_errors=True)
            left = processes_under(self.agent_root)
        else:
            left = remove_docker_leftovers()
        if left:
            raise SystemExit(f"{self.runtime}: could not clean up {left}")


def bring_up(runtime, spec):
    """provision -> deploy -> start, as the portal's three operations call the runtime; answers
    the spec with the ports provision reserved (what ``spec_for`` reads back from the registry)."""
    provisioned = runtime.provision(spec)
    spec = dataclasses.replace(spec, ports=tuple(provisioned["ports"]))
    runtime.deploy(spec)
    runtime.start(spec)
    return spec


def http_status(port: int, path: str) -> int | None:
    try:
        with _DIRECT.open(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def processes_under(root: Path) -> list[int]:
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(str(root) in part for part in process.info["cmdline"] or []):
                found.append(process.pid)
    return found


def remove_docker_leftovers() -> list[str]:
    """Force-remove containers and volumes of the 14 agents that ``remove`` left; answers what
    is still there after that."""
    import docker
    import docker.errors

    engine = docker.DockerClient(base_url=DOCKER_HOST, version="auto", timeout=120)
    for container in engine.containers.list(all=True):
        if _ours(container.labels):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
    for volume in engine.volumes.list(filters={"label": "waooaw.managed=true"}):
        if _ours(volume.attrs.get("Labels")):
            with contextlib.suppress(docker.errors.NotFound):
                volume.remove(force=True)
    left = [c.name for c in engine.containers.list(all=True) if _ours(c.labels)]
    left += [v.name for v in engine.volumes.list() if _ours(v.attrs.get("Labels"))]
    engine.close()
    return left


if __name__ == "__main__":
    main()
