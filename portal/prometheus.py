"""The portal's own metrics, for Prometheus, at ``/-/metrics``.

Two kinds. What the processes count as they go (requests by route, their latency, WebSockets
open, live pushes, Celery task outcomes) uses prometheus-client's multi-process mode: ``manage.py
up`` gives every process it starts one ``PROMETHEUS_MULTIPROC_DIR`` (emptied at start) and the
endpoint adds them up. What describes the fleet (agents by state and health, operations and bulk
jobs, open alerts and errors, the Celery queue, the monitor's and collector's lag) is read when
scraped, a few aggregate queries whatever the fleet's size, by collectors the apps register
(``add_collector``; portal imports no app).

Readable with an Admin's API token (``Authorization: Bearer``) or from ``PROMETHEUS_ALLOWED_NETWORKS``
(loopback by default), without a session: Prometheus signs in to nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable, Iterable

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from portal import roles

logger = logging.getLogger(__name__)

REQUESTS = Counter(
    "portal_http_requests", "HTTP requests answered, by route", ["method", "route", "status"]
)
LATENCY = Histogram(
    "portal_http_request_duration_seconds", "Time to answer a request, by route",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)  # fmt: skip
WEBSOCKETS = Gauge(
    "portal_websockets_open", "Live-update WebSockets open now", multiprocess_mode="livesum"
)
PUSHES = Counter("portal_live_pushes", "Fragments pushed to live pages")
TASKS = Counter("portal_celery_tasks", "Celery tasks finished, by outcome", ["task", "outcome"])

FleetCollector = Callable[[], Iterable[Metric]]
_COLLECTORS: list[FleetCollector] = []


def add_collector(collector: FleetCollector) -> None:
    """``collector()`` yields metric families read at scrape time (an app's own figures)."""
    if collector not in _COLLECTORS:
        _COLLECTORS.append(collector)


def observe_request(request: HttpRequest, status: int, seconds: float) -> None:
    """Count one answered request under its route pattern (bounded: never the raw path)."""
    match = getattr(request, "resolver_match", None)
    route = (match.route or match.view_name) if match is not None else "unmatched"
    method = request.method if request.method in _METHODS else "OTHER"
    REQUESTS.labels(method, route[:120], str(status)).inc()
    LATENCY.labels(method, route[:120]).observe(seconds)


_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


def _celery_queue() -> Iterable[Metric]:
    """Tasks waiting in the broker's queue (the Redis list Celery reads)."""
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=1)
    try:
        family = GaugeMetricFamily("portal_celery_queue_length", "Celery tasks waiting",
                                   labels=["queue"])  # fmt: skip
        family.add_metric(["celery"], client.llen("celery"))
        yield family
    finally:
        client.close()


add_collector(_celery_queue)


class _Fleet:
    """The apps' scrape-time collectors as one prometheus-client collector; one that fails
    costs its own figures (and says so in ``portal_scrape_errors``), never the scrape."""

    def collect(self) -> Iterable[Metric]:
        failed = 0
        for collector in _COLLECTORS:
            try:
                yield from list(collector())
            except Exception:
                failed += 1
                logger.exception("metrics collector %r failed", collector)
        errors = GaugeMetricFamily("portal_scrape_errors", "Collectors that failed this scrape")
        errors.add_metric([], failed)
        yield errors


def exposition() -> bytes:
    """Every metric in the text format: the processes' counters (all of them in multi-process
    mode) and the fleet's figures read now."""
    registry = CollectorRegistry()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        MultiProcessCollector(registry, path=directory)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY  # one process (tests, a shell): its own counters
    text = generate_latest(registry)
    fleet = CollectorRegistry()
    fleet.register(_Fleet())
    return text + generate_latest(fleet)


def _allowed_network(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in settings.PROMETHEUS_ALLOWED_NETWORKS)


@login_not_required
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """``/-/metrics``: an Admin's token, or a scraper on an allowed network."""
    token = getattr(request, "api_token", None)
    if token is not None:
        if roles.role_of(token.user) != roles.ADMIN:
            return HttpResponse(
                "The metrics need an Admin's API token; this one acts as "
                f"{roles.role_of(token.user) or 'no role'}.\n", status=403, content_type="text/plain",
            )  # fmt: skip
    elif not _allowed_network(request.META.get("REMOTE_ADDR", "")):
        return HttpResponse(
            "The metrics are read with an Admin's API token (Authorization: Bearer ...) or from "
            "PROMETHEUS_ALLOWED_NETWORKS; this address is in neither.\n",
            status=403, content_type="text/plain",
        )  # fmt: skip
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
