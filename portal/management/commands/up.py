"""``manage.py up``: the whole portal in one command, as ``make run`` starts it."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from portal import embedded
from portal.management.commands.setup import run_setup
from portal.supervisor import ChildSpec, Supervisor


class Command(BaseCommand):
    help = (
        "Start the portal: the embedded PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL "
        "point elsewhere), migrate, create the roles and the first Admin, then serve the web "
        "app (Daphne) with a Celery worker, Celery beat, the monitor and the log collector, "
        "all supervised (restarted if they die) until Ctrl-C or SIGTERM."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--port", type=int, default=settings.PORT, help="HTTP port (PORT, default 8000)."
        )
        parser.add_argument(
            "--bind", default=settings.BIND_ADDRESS, help="Address to listen on (BIND_ADDRESS)."
        )
        parser.add_argument(
            "--no-worker", action="store_true", help="Do not start a Celery worker."
        )
        parser.add_argument("--no-beat", action="store_true", help="Do not start Celery beat.")
        parser.add_argument(
            "--no-migrate", action="store_true", help="Skip migrations and set-up steps."
        )

    def handle(
        self,
        *args,
        port: int,
        bind: str,
        no_worker: bool,
        no_beat: bool,
        no_migrate: bool,
        **options,
    ) -> None:
        if not 0 < port < 65536:
            raise CommandError(f"--port {port} is not a TCP port; use 1-65535.")
        if not _port_free(bind, port):
            raise CommandError(
                f"Port {port} on {bind} is already in use (another portal?). Stop it, or use PORT=<other port>."
            )
        stores = []
        if embedded.current is not None:
            # Whoever serves the portal owns the embedded servers: supervised like the app
            # processes, so a killed redis-server or postgres comes back on its own.
            try:
                stores = embedded.current.hand_over()
            except embedded.AlreadyServed as exc:
                raise CommandError(str(exc)) from None

        # The processes' own metrics (requests, pushes, tasks) go to files here, one set per
        # process, which /-/metrics adds up; emptied at every start (prometheus-client's rule).
        metrics_dir = embedded.var_dir() / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        supervisor = Supervisor(
            self._children(bind, port, no_worker, no_beat), stores=stores, out=self.stdout._out
        )
        password = None

        def prepare() -> None:
            nonlocal password
            if not no_migrate:
                password = run_setup(self.stdout, collectstatic=True)
            # This process only watches from here on: no idle session for the stores to keep.
            connections.close_all()

        def announce() -> None:
            url = f"http://{'127.0.0.1' if bind in ('0.0.0.0', '::') else bind}:{port}"
            if _wait_for_port(bind, port, timeout=30):
                supervisor.say(
                    "up", f"WAOOAW Platform Portal is up at {url}  (Ctrl-C stops everything)"
                )
            else:
                supervisor.say(
                    "up", f"the web server has not opened {url} after 30 s; see its output above"
                )
            if password:
                supervisor.say(
                    "up",
                    "First start: an Admin account was created. This password is shown only once:",
                )
                supervisor.say("up", f"    username: admin    password: {password}")
                supervisor.say("up", "Change it with `python manage.py changepassword admin`.")
            elif settings.PORTAL_ADMIN_EMAIL:
                supervisor.say(
                    "up", f"Sign in as {settings.PORTAL_ADMIN_EMAIL} with PORTAL_ADMIN_PASSWORD."
                )

        code = supervisor.run(on_started=announce, prepare=prepare)
        if code:
            sys.exit(code)

    def _children(self, bind: str, port: int, no_worker: bool, no_beat: bool) -> list[ChildSpec]:
        python = sys.executable
        # No access log from Daphne: RequestLogMiddleware writes one structured line per request.
        web = [python, "-m", "daphne", "-b", bind, "-p", str(port), "--websocket_timeout", "-1",
               "--access-log", os.devnull]  # fmt: skip
        if getattr(settings, "SECURE_PROXY_SSL_HEADER", None):
            web.append("--proxy-headers")
        web.append("portal.asgi:application")
        specs = [ChildSpec("web", web)]
        if not no_worker:
            specs.append(
                ChildSpec(
                    "worker",
                    [python, "-m", "celery", "-A", "portal", "worker", "--loglevel", settings.LOG_LEVEL,
                     "--concurrency", str(settings.CELERY_WORKER_CONCURRENCY), "--hostname", "worker@%h"],
                )
            )  # fmt: skip
        if not no_beat:
            schedule = embedded.var_dir() / "celerybeat-schedule"
            specs.append(
                ChildSpec(
                    "beat",
                    [python, "-m", "celery", "-A", "portal", "beat", "--loglevel", settings.LOG_LEVEL,
                     "--schedule", str(schedule), "--pidfile="],
                )
            )  # fmt: skip
        for extra in EXTRA_CHILDREN:
            specs.append(extra(python))
        return specs


def monitor_child(python: str) -> ChildSpec:
    """The runtime monitor: crash detection, health probes, automatic restarts."""
    return ChildSpec("monitor", [python, "manage.py", "monitor"], env={"LOG_STREAM": "stdout"})


def collector_child(python: str) -> ChildSpec:
    """The log collector: every agent's log lines into the database and the live tail."""
    return ChildSpec("collect", [python, "manage.py", "collect"], env={"LOG_STREAM": "stdout"})


# Apps add their long-running processes here (agents adds the monitor); the log collector is
# always part of the portal.
EXTRA_CHILDREN: list = [collector_child]


def _port_free(bind: str, port: int) -> bool:
    with socket.socket(
        socket.AF_INET6 if ":" in bind else socket.AF_INET, socket.SOCK_STREAM
    ) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind, port))
        except OSError:
            return False
    return True


def _wait_for_port(bind: str, port: int, timeout: float) -> bool:
    host = "127.0.0.1" if bind in ("0.0.0.0", "") else ("::1" if bind == "::" else bind)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False
