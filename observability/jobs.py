"""Observability's Celery tasks for metrics, alerts and retention (the log tasks live in
``tasks.py``). Beat runs them on the intervals set in settings; each is safe to run twice."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from observability import alerts, events, metrics
from observability.models import Alert
from observability.queues import live as queue_live
from observability.queues import redrive, sampler

logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 5


@shared_task(name="observability.scrape_metrics", ignore_result=True, expires=60)
def scrape_metrics() -> int:
    """One sample per agent meant to be running. Expires rather than piling up behind a
    stalled worker: a late scrape is worth nothing."""
    return metrics.scrape_all()


@shared_task(name="observability.evaluate_alerts", ignore_result=True, expires=60)
def evaluate_alerts() -> dict:
    return alerts.evaluate()


@shared_task(name="observability.downsample_metrics", ignore_result=True)
def downsample_metrics() -> int:
    return metrics.downsample() + sampler.downsample()


@shared_task(name="observability.purge_history", ignore_result=True)
def purge_history() -> dict:
    """Retention for metric and queue samples and events (logs have their own task)."""
    now = timezone.now()
    return {
        "samples": metrics.purge(),
        "queue_samples": sampler.purge(
            now - timedelta(hours=settings.METRICS_RAW_RETENTION_HOURS),
            now - timedelta(days=settings.METRICS_RETENTION_DAYS),
        ),
        "events": events.purge(timezone.now() - timedelta(days=settings.EVENT_RETENTION_DAYS)),
    }


@shared_task(
    name=alerts.WEBHOOK_TASK,
    ignore_result=True,
    autoretry_for=(urllib.error.URLError, OSError),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=8,
)
def send_alert_webhook(alert_id: int, change: str) -> int | None:
    """POST one alert change as JSON to ``ALERT_WEBHOOK_URL``; retried with backoff while the
    receiver is down or answers 5xx. A 4xx is the receiver refusing it: logged, not retried."""
    url = settings.ALERT_WEBHOOK_URL
    alert = Alert.objects.select_related("agent", "rule").filter(pk=alert_id).first()
    if not url or alert is None:
        return None
    body = json.dumps(alerts.webhook_payload(alert, change)).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
            return response.status
    except urllib.error.HTTPError as error:
        if error.code >= 500:
            raise
        logger.warning("alert webhook refused alert %s: HTTP %s", alert_id, error.code)
        return error.code


@shared_task(name="observability.sample_queues", ignore_result=True, expires=30)
def sample_queues() -> int:
    """Every queue's figures, one sample each; the open queue pages are told. Expires rather
    than piling up behind a stalled worker: a late sample is worth nothing."""
    looked = sampler.sample_all()
    queue_live.sampled([figures.ref for figures in looked])
    return len(looked)


@shared_task(name="observability.run_redrive", ignore_result=True, acks_late=True)
def run_redrive(job_id: int) -> str | None:
    """Carry a redrive (or delete) job out; safe to run twice (one runner holds the lease)."""
    job = redrive.run(job_id)
    return None if job is None else job.status
