"""Test-session set-up: a real PostgreSQL and Redis from the same wheels as ``make run``.

The controlling pytest process starts both in a fresh temporary directory and exports their
URLs; xdist workers inherit them and use their own Redis database number. pytest-django has
imported settings before this runs, so the connection settings are patched here, before any
connection is made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from portal import embedded
from portal.env import database_from_url
from tests.audit_kit import walker  # noqa: F401 (the audit walk's fixture, for every app)

PROJECT_ROOT = Path(__file__).resolve().parents[1]

_ENV_DB = "PORTAL_TEST_DATABASE_URL"
_ENV_REDIS = "PORTAL_TEST_REDIS_URL"
_ENV_ROOT = "PORTAL_TEST_ROOT"
_started_root: Path | None = None


def _worker_number() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) + 1 if worker.startswith("gw") else 0


def pytest_configure(config: pytest.Config) -> None:
    global _started_root
    if not os.environ.get(_ENV_DB):
        root = Path(tempfile.mkdtemp(prefix="portal-test-"))
        os.environ[_ENV_ROOT] = str(root)
        os.environ[_ENV_DB] = embedded.start_postgres(root)
        os.environ[_ENV_REDIS] = embedded.start_redis(root, persistent=False)
        _started_root = root

    from django.conf import settings

    redis_base = os.environ[_ENV_REDIS].rsplit("/", 1)[0]
    redis_url = f"{redis_base}/{_worker_number()}"
    # In place: Django's connection handler may already hold this very dict.
    database = settings.DATABASES["default"]
    database.update(database_from_url(os.environ[_ENV_DB]))
    database["CONN_MAX_AGE"] = 0
    settings.REDIS_URL = redis_url
    settings.AGENT_REDIS_URL = redis_url
    settings.CACHES["default"]["LOCATION"] = redis_url
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [redis_url]
    # Pub/sub ignores the database number: each worker (and the portal, Celery worker and
    # agents it starts, which inherit the environment) pushes under its own prefix.
    prefix = f"portal:channels:test{_worker_number()}"
    os.environ["CHANNEL_LAYER_PREFIX"] = prefix
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = prefix
    settings.CELERY_BROKER_URL = redis_url
    static_root = Path(os.environ[_ENV_ROOT]) / "static"
    static_root.mkdir(exist_ok=True)
    settings.STATIC_ROOT = static_root
    settings.STORAGES["staticfiles"] = {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
    }
    # Fast hashing for the many users tests create; PBKDF2 stays available for the browser tests,
    # whose server process runs the real settings.
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]

    from portal.celery import app as celery_app

    celery_app.conf.broker_url = redis_url


def pytest_unconfigure(config: pytest.Config) -> None:
    if _started_root is not None:
        embedded.stop_redis(_started_root)
        embedded.stop_postgres(_started_root)
        shutil.rmtree(_started_root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of the test session's real Redis (this xdist worker's own database)."""
    from django.conf import settings

    return settings.REDIS_URL


@pytest.fixture
def redis_client(redis_url):
    """A client on an emptied Redis database."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def test_database_url(django_db_setup, django_db_blocker) -> str:
    """A URL of the test database, for subprocesses (Daphne, workers) that must share it."""
    from django.db import connection

    with django_db_blocker.unblock():
        name = connection.settings_dict["NAME"]
    base = os.environ[_ENV_DB]
    prefix, _, query = base.partition("?")
    return f"{prefix.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


@contextmanager
def _serving_portal(env: dict[str, str], workdir: Path) -> Iterator[str]:
    """Daphne on the real ASGI app with ``env`` (static files collected into ``workdir``);
    yields its base URL once /healthz answers, and stops it afterwards."""
    static_root = workdir / "static"
    env = {**env, "STATIC_ROOT": str(static_root), "PYTHONUNBUFFERED": "1"}
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=PROJECT_ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    port = embedded.free_port()
    log = open(workdir / "daphne.log", "w+")  # noqa: SIM115 (open while Daphne runs)
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "--websocket_timeout", "-1",
         "--access-log", os.devnull, "portal.asgi:application"],
        cwd=PROJECT_ROOT, env={**env, "PORT": str(port)}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            log.seek(0)
            server.kill()
            pytest.fail(f"Daphne did not come up:\n{log.read()[-3000:]}")
        time.sleep(0.2)
    try:
        yield base
    finally:
        server.terminate()
        server.wait(timeout=15)
        log.close()


@pytest.fixture(scope="session")
def serve_portal():
    """Starts a Daphne of a test's own: ``with serve_portal(env, workdir) as base_url: ...``."""
    return _serving_portal


@pytest.fixture
def portal_on_own_redis(test_database_url, tmp_path_factory):
    """Starts a Daphne with a Redis of its own, which the test may stop and start again:
    ``with portal_on_own_redis(**env) as (base_url, redis_root): ...``."""

    @contextmanager
    def serve(**extra_env: str) -> Iterator[tuple[str, Path]]:
        redis_root = tmp_path_factory.mktemp("own-redis")
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url,
            "REDIS_URL": embedded.start_redis(redis_root, persistent=False),
            "LOG_LEVEL": "WARNING",
            **extra_env,
        }
        try:
            with _serving_portal(env, tmp_path_factory.mktemp("own-redis-daphne")) as base:
                yield base, redis_root
        finally:
            embedded.stop_redis(redis_root)

    return serve


@pytest.fixture(scope="session")
def start_celery_worker():
    """Starts a real Celery worker (solo pool) with ``env``, its output appended to ``log``;
    returns the process once it answers a ping: ``start_celery_worker(env, name, log)``."""

    def start(env: dict[str, str], name: str, log: Path) -> subprocess.Popen:
        from portal.celery import app

        handle = open(log, "a")  # noqa: SIM115 (closed when the worker ends)
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool", "solo",
             "--without-mingle", "--without-gossip", "--hostname", f"{name}@%h"],
            cwd=PROJECT_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not app.control.ping(destination=[f"{name}@{os.uname().nodename}"], timeout=0.5):
            if time.monotonic() > deadline or worker.poll() is not None:
                worker.kill()
                pytest.fail(f"worker {name} did not come up:\n{log.read_text()[-3000:]}")
        return worker

    return start


@pytest.fixture(scope="session")
def portal_server(test_database_url: str, redis_url: str, tmp_path_factory) -> Iterator[str]:
    """Daphne with the real settings, on the test database; yields its base URL."""
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url,
        "REDIS_URL": redis_url,
        "LOG_LEVEL": "WARNING",
    }
    with _serving_portal(env, tmp_path_factory.mktemp("daphne")) as base:
        yield base


# --- users of every role, and clients signed in as them ---------------------------------

PASSWORD = "correct horse battery staple"


@pytest.fixture
def make_user(db):
    from django.contrib.auth import get_user_model

    from portal import roles

    def make(username: str, role: str | None = None, **fields):
        user = get_user_model().objects.create_user(
            username=username,
            email=fields.pop("email", f"{username}@waooaw.test"),
            password=PASSWORD,
            **fields,
        )
        if role is not None:
            roles.set_role(user, role)
        return user

    return make


@pytest.fixture
def admin(make_user):
    return make_user("ada", "Admin")


@pytest.fixture
def operator(make_user):
    return make_user("otto", "Operator")


@pytest.fixture
def viewer(make_user):
    return make_user("vera", "Viewer")


@pytest.fixture
def outsider(make_user):
    """Signed up but given no role: sees nothing."""
    return make_user("oscar")


# --- the same users as actors, for calling services directly ------------------------------------


def _actor_of(user):
    from portal.actors import Actor

    return Actor(kind="user", user=user, source="127.0.0.1")


@pytest.fixture
def admin_actor(admin):
    return _actor_of(admin)


@pytest.fixture
def operator_actor(operator):
    return _actor_of(operator)


@pytest.fixture
def viewer_actor(viewer):
    return _actor_of(viewer)


@pytest.fixture
def outsider_actor(outsider):
    return _actor_of(outsider)


def _client_for(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def as_admin(admin):
    return _client_for(admin)


@pytest.fixture
def as_operator(operator):
    return _client_for(operator)


@pytest.fixture
def as_viewer(viewer):
    return _client_for(viewer)


@pytest.fixture
def as_outsider(outsider):
    return _client_for(outsider)


@pytest.fixture
def password() -> str:
    """The password every fixture user has."""
    return PASSWORD
