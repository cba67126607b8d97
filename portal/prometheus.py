"""The portal's own metrics, for Prometheus, at ``/-/metrics``.

Two kinds. What the processes count as they go (requests by route and their latency, WebSockets
open, live pushes, Celery task outcomes and durations) uses prometheus-client's multi-process
mode: ``manage.py up`` gives every process it starts one ``PROMETHEUS_MULTIPROC_DIR`` (emptied at
start) and the endpoint adds their files up. What describes the fleet (agents by state and
health, operations and bulk jobs, open alerts and errors, the Celery queue, the monitor's and
collector's lag) is read when scraped, a few aggregate queries whatever the fleet's size, by
collectors the apps register (``extensions.add_metrics_collector``; portal imports no app).

Readable with an Admin's API token (``Authorization: Bearer``) or from
``PROMETHEUS_ALLOWED_NETWORKS`` (loopback by default), without a session: Prometheus signs in to
nothing, and is never sent to the login page.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Iterable

import redis
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from portal import extensions, health, roles

logger = logging.getLogger(__name__)

# --- what the processes count ---------------------------------------------------------------
# Labels are bounded: a route is the URL pattern that matched (``/agents/<slug:slug>/``), never
# the path; a method outside the usual ones is OTHER; a task is a registered task's name.

REQUESTS = Counter(
    "portal_http_requests",
    "HTTP requests answered, by route pattern",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "portal_http_request_duration_seconds", "Time to answer a request, by route pattern",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)  # fmt: skip
WEBSOCKETS = Gauge(
    "portal_websockets_open", "Live-update WebSockets open now", multiprocess_mode="livesum"
)
PUSHES = Counter("portal_live_pushes", "Messages pushed to live pages (one per group and batch)")
PUSHED_FRAGMENTS = Counter("portal_live_push_fragments", "HTML fragments in those messages")
PUSH_FAILURES = Counter("portal_live_push_failures", "Pushes the channel layer did not take")
TASKS = Counter("portal_celery_tasks", "Celery tasks finished, by outcome", ["task", "outcome"])
TASK_DURATION = Histogram(
    "portal_celery_task_duration_seconds", "Time a Celery task ran, by task", ["task"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0),
)  # fmt: skip

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
UNMATCHED = "<unmatched>"  # no URL pattern matched: a 404, a redirect to add a slash
STATIC = "<static>"  # served by WhiteNoise before URL resolution


def route_of(request: HttpRequest) -> str:
    """The URL pattern that answered ``request``, as ``/agents/<slug:slug>/``: one label value
    per pattern, however many agents, objects or mistyped paths there are."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        static = settings.STATIC_URL or "/static/"
        return STATIC if request.path_info.startswith(static) else UNMATCHED
    return "/" + (match.route or match.view_name or "")[:120]


def observe_request(request: HttpRequest, status: int, seconds: float) -> None:
    """Count one answered request; counting never costs the request its answer."""
    try:
        method = request.method if request.method in METHODS else "OTHER"
        route = route_of(request)
        REQUESTS.labels(method, route, str(status)).inc()
        LATENCY.labels(method, route).observe(seconds)
    except Exception:  # a full disk under the multi-process files, say
        logger.exception("request metrics not recorded")


def observe_task(task_name: str, outcome: str, seconds: float | None = None) -> None:
    """Count one Celery task's outcome (succeeded, failed, retried, revoked) and its run time."""
    name = (task_name or "unknown")[:100]
    TASKS.labels(name, outcome).inc()
    if seconds is not None:
        TASK_DURATION.labels(name).observe(seconds)


# --- what is read when scraped --------------------------------------------------------------


def celery_queue() -> Iterable[Metric]:
    """Tasks waiting in the broker's queue, tasks a worker took but has not acknowledged yet,
    and how long ago a worker last ran the heartbeat task (a stuck or absent worker)."""
    queue = getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "") or "celery"
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=1)
    try:
        pipe = client.pipeline()
        pipe.llen(queue)
        pipe.hlen("unacked")  # kombu's hash of the messages workers hold
        waiting, unacked = pipe.execute()
    finally:
        client.close()
    family = GaugeMetricFamily(
        "portal_celery_queue_length", "Celery tasks waiting in the broker", labels=["queue"]
    )
    family.add_metric([queue], waiting)
    yield family
    taken = GaugeMetricFamily(
        "portal_celery_unacked", "Celery tasks taken by a worker and not yet acknowledged"
    )
    taken.add_metric([], unacked)
    yield taken
    age = health.last_heartbeat_age()
    heartbeat = GaugeMetricFamily(
        "portal_celery_heartbeat_age_seconds",
        "Seconds since a worker last ran the heartbeat task (absent when it never has)",
    )
    if age is not None:
        heartbeat.add_metric([], age)
    yield heartbeat


extensions.add_metrics_collector(celery_queue)


class ScrapeTimeCollector:
    """Every registered collector, read now, as one prometheus-client collector. One that fails
    costs only its own figures (counted in ``portal_scrape_errors``), never the scrape."""

    def collect(self) -> Iterable[Metric]:
        started = time.perf_counter()
        failed = 0
        for collector in extensions.metrics_collectors():
            try:
                families = list(collector())
            except Exception:
                failed += 1
                logger.exception("metrics collector %r failed", collector)
                continue
            yield from families
        errors = GaugeMetricFamily("portal_scrape_errors", "Collectors that failed this scrape")
        errors.add_metric([], failed)
        yield errors
        took = GaugeMetricFamily(
            "portal_scrape_collect_seconds", "Time this scrape spent reading the fleet's figures"
        )
        took.add_metric([], time.perf_counter() - started)
        yield took


class _ThisProcess:
    """This process's own metrics (prometheus-client's default registry), when there is no
    multi-process directory to add up: a shell, a test, a single web process."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def exposition(accept: str = "") -> tuple[bytes, str]:
    """Every metric, and its content type: the counts of every process (added up from
    ``PROMETHEUS_MULTIPROC_DIR``, or this process's own without one) and the fleet's figures
    read now; OpenMetrics when ``accept`` asks for it, else Prometheus' text format."""
    registry = CollectorRegistry()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_ThisProcess())
    registry.register(ScrapeTimeCollector())
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type


# --- the endpoint ---------------------------------------------------------------------------


def _allowed_network(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in settings.PROMETHEUS_ALLOWED_NETWORKS)


def _refused(message: str) -> HttpResponse:
    return HttpResponse(message + "\n", status=403, content_type="text/plain; charset=utf-8")


@login_not_required
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """``/-/metrics``: an Admin's API token from anywhere, or no token from an allowed network."""
    token = getattr(request, "api_token", None)
    if token is not None:
        role = roles.role_of(token.user)
        if role != roles.ADMIN:
            return _refused(
                f"/-/metrics needs an Admin's API token; this token acts as {role or 'no role'}."
            )
    elif not _allowed_network(request.META.get("REMOTE_ADDR", "")):
        return _refused(
            "/-/metrics is read with an Admin's API token (Authorization: Bearer <token>) or "
            f"from PROMETHEUS_ALLOWED_NETWORKS; {request.META.get('REMOTE_ADDR') or 'this address'} "
            "is in neither."
        )
    body, content_type = exposition(request.headers.get("Accept", ""))
    return HttpResponse(body, content_type=content_type)
