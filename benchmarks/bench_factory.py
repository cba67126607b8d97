"""Factory benchmark: a field's validation answer, a sandbox run of each template's tests, and the
time from "Create" to a RUNNING agent that answered its first task.

(a) the wizard's field endpoint (a slug, a schema-checked setting, a resource slider), server time
    through Django's test client in process; target < 50 ms.
(b) a sandbox run of each of the six templates' test tasks (a real agentd, its stand-ins, real
    HTTP and TCP targets for the API and Monitoring templates), run by a real Celery worker, from
    the request to the verdict; target < 20 s.
(c) creation on the local runtime with a real Celery worker: from "Create" on the review step
    (its sandbox passed already, so it is reused) to the agent RUNNING with its first task
    answered; target < 60 s. And the API's one-shot creation (sandbox included).
(d) the same on Docker (a real engine and the agent image) when one answers; target < 90 s.

Each figure is the median of ``--runs`` runs. Run it with::

    .venv/bin/python benchmarks/bench_factory.py            # every template, 3 runs each
    .venv/bin/python benchmarks/bench_factory.py --smoke    # one run (CI)
"""

from __future__ import annotations

import argparse
import http.server
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def http_target() -> str:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def tcp_target() -> int:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def accept() -> None:
        while True:
            connection, _ = listener.accept()
            connection.close()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def configs(url: str, port: int) -> dict[str, dict]:
    """A configuration per template that its tests should pass with."""
    configs = {
        "memory": {},
        "orchestration": {"settings": {"targets": ["wow-cache", "wow-event"]}},
        "api": {"settings": {"base_url": url}},
        "data": {},
        "monitoring": {"settings": {"targets": [
            {"name": "web", "kind": "http", "url": url + "/"},
            {"name": "tcp", "kind": "tcp", "host": "127.0.0.1", "port": port},
        ], "interval_seconds": 5}},
        "blank": {},
    }  # fmt: skip
    return {key: {"owner": "Bench Co", **config} for key, config in configs.items()}


def start_worker(root: Path) -> subprocess.Popen:
    from portal.celery import app

    log = open(root / "worker.log", "a")  # noqa: SIM115 (open while it runs)
    name = f"bench-factory-{os.getpid()}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--concurrency", "4",
         "--without-mingle", "--without-gossip", "--hostname", f"{name}@%h", "--loglevel",
         "WARNING"],
        cwd=HERE.parent, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not app.control.ping(destination=[f"{name}@{os.uname().nodename}"], timeout=0.5):
        if time.monotonic() > deadline or worker.poll() is not None:
            raise SystemExit(
                f"the worker did not come up: {(root / 'worker.log').read_text()[-2000:]}"
            )
    return worker


def field_ms(client, url: str, data: dict, trigger: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        response = client.post(url, {**data, "_step": "configure"},
                                headers={"HX-Request": "true", "HX-Trigger-Name": trigger})  # fmt: skip
        times.append((time.perf_counter() - began) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"the field endpoint answered {response.status_code}")
    return times


def sandbox_seconds(template, values: dict, secrets: dict) -> tuple[float, str, str]:
    from factory.services import sandbox
    from portal.actors import Actor

    began = time.perf_counter()
    run = sandbox.start_sandbox(template, values, secrets, Actor.command("bench"))
    while True:
        run.refresh_from_db()
        if run.finished:
            break
        if time.perf_counter() - began > 120:
            raise SystemExit(f"the {template.key} sandbox did not finish in 120 s")
        time.sleep(0.05)
    return time.perf_counter() - began, run.status, run.error or f"{run.passed_count} passed"


def creation_seconds(key: str, number: int, config: dict, *, one_shot: bool) -> float:
    from agents.models import Agent
    from factory.creation import passed_sandbox
    from factory.services import creation, drafts, templates
    from portal.actors import Actor

    actor = Actor.command("bench")
    template = templates.get_template(key)
    name = f"Bench {key.title()} {number}{'a' if one_shot else 'w'}"
    if one_shot:
        began = time.perf_counter()
        draft = creation.create_from_config(actor, template, name, config)
    else:
        values, secrets = creation.parse_all(template, {**config, "name": name})
        draft = drafts.create_draft(template, actor, values)
        draft.secrets = secrets
        draft.save(update_fields=["secrets"])
        sandbox_seconds(template, values, secrets)  # the wizard's step 4, not timed
        from factory.models import SandboxRun

        SandboxRun.objects.filter(draft__isnull=True, template=template).order_by("-pk").update(
            draft=draft
        )
        assert passed_sandbox(draft) is not None, "the sandbox did not pass"
        began = time.perf_counter()
        draft = creation.create(draft, actor)
    run = draft.run
    while True:
        run.refresh_from_db()
        if run.is_finished:
            break
        if time.perf_counter() - began > 300:
            raise SystemExit(f"creating {name} did not finish in 300 s")
        time.sleep(0.05)
    seconds = time.perf_counter() - began
    if run.status != "succeeded":
        raise SystemExit(f"creating {name}: {run.status}: {run.error}")
    agent = Agent.objects.get(slug=draft.agent_slug)
    if agent.state != "RUNNING":
        raise SystemExit(f"{name} is {agent.state} after its creation")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smoke", "--quick", action="store_true", help="one run (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.runs = 1
    sys.path.insert(0, str(HERE))
    from _harness import django_environment, docker_skipped_in_smoke, require_sample

    verdicts: list[bool] = []

    def verdict(line: str, ok: bool) -> None:
        verdicts.append(ok)
        print(f"  {line} → {met(ok)}")

    with django_environment() as root:
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.test import Client, override_settings
        from django.urls import reverse

        from agents import services
        from agents.models import Agent
        from factory.services import creation, drafts, templates
        from portal import roles
        from portal.actors import Actor

        actor = Actor.command("bench")
        templates.seed_templates(actor)
        url, port = http_target(), tcp_target()
        by_key = configs(url, port)

        print("(a) a field's validation, server time (median of 20)")
        user = get_user_model().objects.create_user("bench-operator", password="x")
        roles.set_role(user, "Operator")
        with override_settings(
            STORAGES={
                **settings.STORAGES,
                "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
            }
        ):
            client = Client(SERVER_NAME="localhost")
            client.force_login(user)
            draft = drafts.create_draft(templates.get_template("memory"), actor)
            field_url = reverse("factory:field", args=[draft.pk])
            for label, data, trigger in (
                ("slug (registry lookups)", {"slug": "wow-cache"}, "slug"),
                ("setting (JSON Schema)", {"settings.max_keys": "0"}, "settings.max_keys"),
                (
                    "dependencies (cycle check)",
                    {"dependencies": "wow-cache, wow-memory"},
                    "dependencies",
                ),
            ):
                times = field_ms(client, field_url, data, trigger, 20)
                require_sample(times, label)
                median = statistics.median(times)
                verdict(
                    f"{label}: median {median:.1f} ms, max {max(times):.1f} ms (target < 50 ms)",
                    median < 50,
                )

        worker = start_worker(root)
        try:
            print(f"(b) a sandbox run of each template's tests (median of {args.runs})")
            for key, config in by_key.items():
                template = templates.get_template(key)
                values, secrets = creation.parse_all(template, {**config, "name": f"Sandbox {key}"})
                times, outcome = [], ""
                for _ in range(args.runs):
                    seconds, status, detail = sandbox_seconds(template, values, secrets)
                    if status != "passed":
                        raise SystemExit(f"the {key} sandbox {status}: {detail}")
                    times.append(seconds)
                    outcome = detail
                median = statistics.median(times)
                verdict(
                    f"{key}: median {median:.2f} s, max {max(times):.2f} s, {outcome} (target < 20 s)",
                    median < 20,
                )

            print("(c) from Create to RUNNING with its first task answered, local runtime")
            for agent in Agent.objects.filter(slug__in=["wow-cache", "wow-event"]):
                for action in ("provision", "deploy", "start"):
                    operation = services.request_action(agent, action, actor, enqueue=False)
                    services.run_operation(str(operation.pk))
            wizard = [
                creation_seconds("memory", n, by_key["memory"], one_shot=False)
                for n in range(args.runs)
            ]
            require_sample(wizard, "creation")
            verdict(
                f"memory, after the wizard's sandbox: median {statistics.median(wizard):.2f} s, max {max(wizard):.2f} s (target < 60 s)",
                statistics.median(wizard) < 60,
            )
            one_shot = [
                creation_seconds("orchestration", n, by_key["orchestration"], one_shot=True)
                for n in range(args.runs)
            ]
            verdict(
                f"orchestration through the API's one-shot creation (sandbox included): median {statistics.median(one_shot):.2f} s (target < 60 s)",
                statistics.median(one_shot) < 60,
            )

            skipped = docker_skipped_in_smoke(args.smoke)
            print("(d) the same on Docker")
            if skipped:
                print(f"  skipped: {skipped}")
            else:
                worker.terminate()
                worker.wait(timeout=30)
                os.environ["AGENT_RUNTIME"] = "docker"  # the worker registers the agents
                worker = start_worker(root)
                print("  " + docker_creation(by_key, args.runs, verdict))
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    if not all(verdicts):
        print("Some targets were NOT met.")


def docker_creation(by_key: dict, runs: int, verdict) -> str:
    """Creation with AGENT_RUNTIME=docker, when an engine answers and has the agent image."""
    from django.conf import settings

    image = settings.AGENT_IMAGE

    try:
        import docker

        client = docker.DockerClient(base_url=settings.DOCKER_HOST, version="auto", timeout=10)
        client.ping()
        from agents.models import Agent

        image = f"{settings.AGENT_IMAGE}:{Agent._meta.get_field('version').default}"
        client.images.get(image)
    except Exception as exc:  # noqa: BLE001 - no engine or no image here: say so
        return f"skipped: no Docker engine with {image} answers ({exc.__class__.__name__}); `manage.py agents build-image` builds it"
    try:
        times = [
            creation_seconds("blank", 100 + n, by_key["blank"], one_shot=True) for n in range(runs)
        ]
    finally:
        from agents.models import Agent
        from agents.services import request_action, run_operation
        from portal.actors import Actor

        for agent in Agent.objects.filter(runtime="docker").exclude(state="REVOKED"):
            operation = request_action(
                agent, "revoke", Actor.command("bench"), enqueue=False, confirm=True
            )
            run_operation(str(operation.pk))
    median = statistics.median(times)
    verdict(f"blank on Docker: median {median:.2f} s (target < 90 s)", median < 90)
    return "done"


if __name__ == "__main__":
    main()
