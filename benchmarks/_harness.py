"""Shared set-up for benchmarks: a private PostgreSQL and Redis (the same wheels as `make run`),
Django configured against them, migrated and seeded. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@contextlib.contextmanager
def django_environment(**settings_env: str) -> Iterator[Path]:
    """Start throwaway servers, point Django at them, migrate and seed; clean up afterwards."""
    from portal import embedded

    root = Path(tempfile.mkdtemp(prefix="portal-bench-"))
    try:
        os.environ["DATABASE_URL"] = embedded.start_postgres(root)
        os.environ["REDIS_URL"] = embedded.start_redis(root, persistent=False)
        os.environ["PORTAL_VAR_DIR"] = str(root / "var")
        os.environ["AGENT_ROOT"] = str(root / "agents")
        os.environ.setdefault("LOG_LEVEL", "WARNING")
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
        os.environ.update(settings_env)
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        from agents import services
        from portal.actors import Actor

        services.seed_platform_agents(Actor.command("benchmark"))
        yield root
    finally:
        _kill_under(root)
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        embedded.stop_redis(root)
        embedded.stop_postgres(root)
        shutil.rmtree(root, ignore_errors=True)


def _kill_under(root: Path) -> None:
    import signal

    import psutil

    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if any(str(root) in part for part in process.info["cmdline"] or []):
                os.kill(process.pid, signal.SIGKILL)


def docker_skipped_in_smoke(smoke: bool) -> str:
    """Why a smoke run leaves Docker out ("" when it does not): outside CI the engine may be
    absent or busy with someone's tests, and `.ci/run` starts one only with CI=true."""
    if smoke and os.environ.get("CI") != "true":
        return "smoke mode runs Docker only with CI=true (.ci/run starts the engine then)"
    return ""


def require_sample(values: list, what: str) -> None:
    """Stop with status 1 when a measurement came back empty: a benchmark that measured nothing
    must fail, not print figures (or crash on a median of nothing)."""
    if not values:
        raise SystemExit(f"{what}: nothing was measured")


def timed(call, runs: int, what: str = "timing") -> list[float]:
    """``call()`` once to warm up, then ``runs`` times: the seconds each took."""
    call()
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    require_sample(seconds, what)
    return seconds


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float], unit: str = "s") -> str:
    return (
        f"median {statistics.median(values):.3f} {unit}, min {min(values):.3f}, max {max(values):.3f} "
        f"(n={len(values)})"
    )
