"""A worker SIGKILLed in the middle of a sandbox run leaves nothing behind: the sweep (beat's,
called here at once) finds the run no runner holds, tears its agent down (process, directory,
Redis keys) and marks it, saying what happened. A real Celery worker, a real agentd calling a
real HTTP server that takes its time to answer."""

from __future__ import annotations

import http.server
import os
import signal
import threading
import time
from datetime import timedelta

import psutil
import pytest
import redis
from django.conf import settings

from factory.models import SandboxRun
from factory.services import creation, sandbox, templates
from portal import work
from portal.actors import Actor

pytestmark = pytest.mark.django_db(transaction=True)


class Slow(http.server.BaseHTTPRequestHandler):
    asked = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        Slow.asked.set()
        time.sleep(20)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _processes_under(root) -> list[int]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(str(root) in part for part in process.info["cmdline"] or []):
                found.append(process.pid)
        except psutil.Error:
            pass
    return found


def test_a_worker_killed_mid_sandbox_leaves_nothing_behind(
    catalog, roots, test_database_url, redis_url, tmp_path, start_celery_worker
) -> None:
    from portal.celery import app

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    template = templates.get_template("api")
    values, secrets = creation.parse_all(template, {
        "name": "Slow API", "owner": "Acme",
        "settings": {"base_url": f"http://127.0.0.1:{server.server_address[1]}", "timeout_seconds": 30, "retries": 0},
    })  # fmt: skip
    app.control.purge()
    env = {
        **os.environ, "DATABASE_URL": test_database_url, "REDIS_URL": redis_url,
        "AGENT_REDIS_URL": settings.AGENT_REDIS_URL, "AGENT_ROOT": str(roots[0]),
        "FACTORY_SANDBOX_ROOT": str(roots[1]), "LOG_LEVEL": "WARNING",
    }  # fmt: skip
    worker = start_celery_worker(env, f"fx-sbx-{os.getpid()}", tmp_path / "worker.log")
    try:
        run = sandbox.start_sandbox(template, values, secrets, Actor.command("test"))
        # Killed while the agent waits for the slow server's answer to the test task.
        _wait(Slow.asked.is_set, 30, "the sandbox's agent calls the server")
        assert SandboxRun.objects.get(pk=run.pk).status == SandboxRun.Status.RUNNING
        assert _processes_under(roots[1]), "the sandbox agent runs"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
        app.control.purge()
    handed = work.sweep(timedelta(0))
    assert run.pk in handed.get("sandboxes", [])
    run.refresh_from_db()
    assert run.status == SandboxRun.Status.ERROR
    assert "The worker running this sandbox stopped; it was torn down." in run.error
    assert run.torn_down_at is not None and run.secrets == {}
    _wait(lambda: not _processes_under(roots[1]), 10, "the sandbox agent is gone")
    agents = redis.Redis.from_url(settings.AGENT_REDIS_URL, decode_responses=True)
    assert not list(agents.scan_iter(match=f"agents:{run.name}:*"))
    assert not any(p.name.startswith("sbx-") for p in roots[1].iterdir())
    server.shutdown()
