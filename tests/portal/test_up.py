"""``manage.py up`` as ``make run`` uses it: real embedded servers, real children, clean stop."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from portal import embedded

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def var_root():
    """A plain temporary directory: PostgreSQL runs as its own user and must reach into it
    (pytest's tmp_path lives under a 0700 per-user directory that is pruned between runs)."""
    root = Path(tempfile.mkdtemp(prefix="portal-up-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


class Up:
    """A running ``manage.py up`` whose output is collected line by line."""

    def __init__(self, var_dir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(
            PORTAL_VAR_DIR=str(var_dir),
            # Its own collectstatic target: two `up`s collecting into one folder at once (the
            # other test worker's, a developer's portal) trip over each other's files.
            STATIC_ROOT=str(var_dir / "static"),
            PORT=str(port),
            LOG_FORMAT="text",
            CELERY_WORKER_CONCURRENCY="1",
        )
        env.pop("PORTAL_ADMIN_EMAIL", None)
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "up"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output)
            if match:
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} never appeared; output:\n{self.output[-4000:]}")

    def stop(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def sign_in(base: str, username: str, password: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{base}/login/", timeout=10)
    response = session.post(
        f"{base}/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{base}/login/"},
        timeout=10,
    )
    response.raise_for_status()
    return session


def _children_of(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.timeout(180)
def test_up_serves_then_stops_everything_and_reuses_data_next_time(var_root: Path) -> None:
    var_dir = var_root / "var"
    port = embedded.free_port()
    base = f"http://127.0.0.1:{port}"

    first = Up(var_dir, port)
    try:
        first.wait_for(r"is up at http://127\.0\.0\.1:\d+")
        password = first.wait_for(r"username: admin\s+password: (\S+)").group(1)
        first.wait_for(r"worker@\S+ ready", timeout=60)
        children = _children_of(first.process.pid)
        assert {"daphne", "celery"} <= {arg for child in children for arg in child.cmdline()}
        # The data stores are supervised children too, not daemons.
        assert {"postgres", "redis-server"} <= {child.name() for child in children}
        health = requests.get(f"{base}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        dashboard = sign_in(base, "admin", password).get(f"{base}/", timeout=10)
        assert "Dashboard" in dashboard.text and "Admin" in dashboard.text
    finally:
        code = first.stop()
    assert code == 0, first.output[-3000:]
    assert not [
        child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    ]
    assert not embedded.postgres_is_running(var_dir), second_output_or_first(locals())
    assert not embedded.redis_is_running(var_dir)
    assert (
        "web stopped" in first.output
        and "worker stopped" in first.output
        and "beat stopped" in first.output
    )
    # The app processes stop first, the data stores they use last.
    stopped = re.findall(r"^up\s+\| (\S+) stopped", first.output, re.MULTILINE)
    assert stopped[-2:] in (["postgres", "redis"], ["redis", "postgres"]), stopped

    second = Up(var_dir, port)
    try:
        second.wait_for(r"is up at")
        assert "shown only once" not in second.output
        assert sign_in(base, "admin", password).get(f"{base}/", timeout=10).url == f"{base}/"
    finally:
        code = second.stop()
    assert code == 0, second.output[-3000:]
    assert not embedded.postgres_is_running(var_dir), second_output_or_first(locals())


def test_up_refuses_a_taken_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items()}
        env.update(
            DATABASE_URL=os.environ["PORTAL_TEST_DATABASE_URL"],
            REDIS_URL=os.environ["PORTAL_TEST_REDIS_URL"],
            PORT=str(port),
        )
        result = subprocess.run(
            [sys.executable, "manage.py", "up", "--no-migrate"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"Port {port} on 127.0.0.1 is already in use" in result.stderr


def second_output_or_first(scope: dict) -> str:
    run = scope.get("second") or scope.get("first")
    return run.output[-3000:] if run else ""
