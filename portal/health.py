"""Reachability checks for PostgreSQL and Redis, and the heartbeat of the worker and beat."""

from __future__ import annotations

import time

import redis
from django.conf import settings
from django.db import connection

HEARTBEAT_KEY = "portal:heartbeat"


def redis_client(**kwargs) -> redis.Redis:
    timeout = settings.HEALTHZ_TIMEOUT_SECONDS
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout, **kwargs
    )


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # any failure means "unreachable"; the message says which
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}".strip()[:300]}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_redis() -> None:
    client = redis_client()
    try:
        client.ping()
    finally:
        client.close()


def check_dependencies() -> dict[str, dict]:
    result = {"database": _timed(_check_database), "redis": _timed(_check_redis)}
    if not result["database"]["ok"]:
        # A broken connection must not poison the next request served by this thread.
        connection.close()
    return result


def record_heartbeat() -> None:
    """Called by the periodic heartbeat task: proves beat schedules and a worker runs."""
    client = redis_client()
    try:
        client.set(HEARTBEAT_KEY, str(time.time()), ex=3600)
    finally:
        client.close()


def last_heartbeat_age() -> float | None:
    """Seconds since the worker last ran the heartbeat task, or None if never / unknown."""
    client = redis_client()
    try:
        value = client.get(HEARTBEAT_KEY)
    except redis.RedisError:
        return None
    finally:
        client.close()
    return None if value is None else max(0.0, time.time() - float(value))


def system_status() -> dict:
    checks = check_dependencies()
    age = last_heartbeat_age() if checks["redis"]["ok"] else None
    return {
        "database": checks["database"],
        "redis": checks["redis"],
        "worker": {"ok": age is not None and age < HEARTBEAT_STALE_SECONDS, "age": age},
    }


HEARTBEAT_INTERVAL_SECONDS = 15
HEARTBEAT_STALE_SECONDS = 60
