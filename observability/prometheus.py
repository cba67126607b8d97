"""What observability tells ``/-/metrics`` at scrape time: open alerts by severity, and how
old the newest metric sample and log line are (the collector's lag)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Max
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from observability import alerts
from observability.models import LogEntry, MetricSample, Severity


def collect() -> Iterable[Metric]:
    counts = alerts.open_counts()
    family = GaugeMetricFamily("portal_open_alerts", "Alerts firing or acknowledged, by severity",
                               labels=["severity"])  # fmt: skip
    for severity in Severity.values:
        family.add_metric([severity], counts.get(severity, 0))
    yield family
    now = timezone.now()
    for rows, name, what in (
        (MetricSample.objects.filter(step=MetricSample.RAW), "portal_metrics_newest_sample_age_seconds", "metric sample"),
        (LogEntry.objects.all(), "portal_logs_newest_line_age_seconds", "log line stored"),
    ):  # fmt: skip
        newest = rows.aggregate(at=Max("ts"))["at"]
        age = GaugeMetricFamily(name, f"Seconds since the newest {what} (the collector's lag)")
        if newest is not None:
            age.add_metric([], (now - newest).total_seconds())
        yield age
