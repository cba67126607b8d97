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
    return metrics.downsample()


@shared_task(name="observability.purge_history", ignore_result=True)
def purge_history() -> dict:
    """Retention for metric samples and events (logs have their own task)."""
    return {
        "samples": metrics.purge(),
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
