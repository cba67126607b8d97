"""``manage.py up`` supervises its embedded PostgreSQL and Redis: killed, they come back.

One portal for the module, started as ``make run`` starts it (its own var directory and port).
Each test SIGKILLs one data store, as the OOM killer or a careless ``kill -9`` would, and checks
that the supervisor brings it back on the same socket or port with its data, and that the
portal recovers by itself: ``/healthz`` answers 200 again within seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import pytest
import redis
import requests

from portal import embedded
from tests.portal.test_up import ROOT, Up, sign_in

RECOVERY_SECONDS = 10


@dataclass
class Portal:
    up: Up
    var_dir: Path
    base: str
    password: str
    # A one-off command that started the servers before up took them over; still running.
    earlier_command: subprocess.Popen


def command_env(var_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    # Its own collectstatic target (see tests/portal/test_up.py).
    return {**env, "PORTAL_VAR_DIR": str(var_dir), "STATIC_ROOT": str(var_dir / "static"), **extra}


@pytest.fixture(scope="module")
def portal() -> Iterator[Portal]:
    root = Path(tempfile.mkdtemp(prefix="portal-supervision-"))
    root.chmod(0o755)  # PostgreSQL runs as its own user and must reach into it
    var_dir = root / "var"
    port = embedded.free_port()
    # A shell left open while the portal is started: it started the servers itself.
    earlier = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-c", "import sys; sys.stdin.readline()"],
        cwd=ROOT,
        env=command_env(var_dir),
        stdin=subprocess.PIPE,
    )
    up = None
    try:
        deadline = time.monotonic() + 60
        while not (embedded.redis_is_running(var_dir) and embedded.postgres_is_running(var_dir)):
            assert time.monotonic() < deadline and earlier.poll() is None
            time.sleep(0.1)
        up = Up(var_dir, port)
        up.wait_for(r"is up at http://127\.0\.0\.1:\d+")
        password = up.wait_for(r"username: admin\s+password: (\S+)").group(1)
        yield Portal(up, var_dir, f"http://127.0.0.1:{port}", password, earlier)
    finally:
        earlier.kill()
        code = up.stop() if up else 0
        shutil.rmtree(root, ignore_errors=True)
    assert code == 0, up.output[-3000:]


def supervised(portal: Portal, name: str) -> psutil.Process:
    """The one process called ``name`` among ``up``'s direct children."""
    found = [c for c in psutil.Process(portal.up.process.pid).children() if c.name() == name]
    assert len(found) == 1, [c.cmdline() for c in found]
    return found[0]


def kill(process: psutil.Process) -> float:
    started = time.monotonic()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    return started


def healthz(portal: Portal) -> int:
    try:
        return requests.get(f"{portal.base}/healthz", timeout=5).status_code
    except requests.ConnectionError:
        return 0


def wait_for_healthz_200(portal: Portal, since: float) -> float:
    """Seconds from ``since`` until /healthz answers 200 (fails after RECOVERY_SECONDS)."""
    while healthz(portal) != 200:
        assert time.monotonic() - since < RECOVERY_SECONDS, portal.up.output[-3000:]
        time.sleep(0.1)
    return time.monotonic() - since


@pytest.mark.timeout(240)
def test_a_killed_redis_comes_back_on_its_port_with_its_data(portal: Portal) -> None:
    url = embedded.redis_url(portal.var_dir)
    client = redis.Redis.from_url(url)
    client.set("supervision:probe", "kept")
    client.close()
    server = supervised(portal, "redis-server")
    command = server.cmdline()
    assert healthz(portal) == 200

    killed_at = kill(server)
    assert healthz(portal) == 503
    recovered_in = wait_for_healthz_200(portal, killed_at)

    assert embedded.redis_url(portal.var_dir) == url
    back = supervised(portal, "redis-server")
    assert back.pid != server.pid and back.cmdline() == command
    client = redis.Redis.from_url(url)
    assert client.get("supervision:probe") == b"kept"
    client.close()
    assert "redis exited with status -9; restarting in 1 s" in portal.up.output
    print(f"/healthz answered 200 again {recovered_in:.1f} s after redis-server was killed")


@pytest.mark.timeout(240)
def test_a_killed_postgres_comes_back_with_its_data(portal: Portal) -> None:
    url = embedded.postgres_url(portal.var_dir)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS supervision_probe (note text)")
        conn.execute("INSERT INTO supervision_probe VALUES ('kept')")
    postmaster = supervised(portal, "postgres")
    command = postmaster.cmdline()
    assert healthz(portal) == 200

    killed_at = kill(postmaster)
    assert healthz(portal) == 503
    recovered_in = wait_for_healthz_200(portal, killed_at)

    assert embedded.postgres_url(portal.var_dir) == url
    back = supervised(portal, "postgres")
    assert back.pid != postmaster.pid and back.cmdline() == command
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT note FROM supervision_probe").fetchall() == [("kept",)]
    # The app's own requests use the database again (sessions, users).
    dashboard = sign_in(portal.base, "admin", portal.password).get(f"{portal.base}/", timeout=10)
    assert "Dashboard" in dashboard.text
    assert "postgres exited with status -9; restarting in 1 s" in portal.up.output
    print(f"/healthz answered 200 again {recovered_in:.1f} s after the postmaster was killed")


@pytest.mark.timeout(120)
def test_a_command_that_started_the_servers_before_up_leaves_them_to_it(portal: Portal) -> None:
    servers = [supervised(portal, "redis-server").pid, supervised(portal, "postgres").pid]

    portal.earlier_command.communicate(b"\n", timeout=60)  # the shell ends, as Ctrl-D would

    assert portal.earlier_command.returncode == 0
    time.sleep(1.5)  # a server it had stopped would have been seen and restarted by now
    assert [supervised(portal, "redis-server").pid, supervised(portal, "postgres").pid] == servers
    assert healthz(portal) == 200


@pytest.mark.timeout(120)
def test_a_second_up_on_the_same_data_is_refused(portal: Portal) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "up", "--no-migrate"],
        cwd=ROOT,
        env=command_env(portal.var_dir, PORT=str(embedded.free_port())),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Another `manage.py up` is serving the data in" in result.stderr
    # The first one's servers were not touched.
    assert healthz(portal) == 200
