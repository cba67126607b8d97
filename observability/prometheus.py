"""What observability tells ``/-/metrics`` when Prometheus scrapes: open alerts by severity and
status, and how old the newest metric sample and stored log line are (the collector's lag).
Three aggregate queries, each on an index, whatever the fleet's size."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Count, Max
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from observability.models import Alert, LogEntry, MetricSample, Severity


def collect() -> Iterable[Metric]:
    yield _open_alerts()
    now = timezone.now()
    for rows, name, what in (
        (MetricSample.objects.filter(step=MetricSample.RAW), "portal_metrics_newest_sample_age_seconds", "metric sample"),
        (LogEntry.objects.all(), "portal_logs_newest_line_age_seconds", "log line stored"),
    ):  # fmt: skip
        newest = rows.order_by().aggregate(at=Max("ts"))["at"]
        age = GaugeMetricFamily(
            name, f"Seconds since the newest {what} (the collector's lag; absent with none)"
        )
        if newest is not None:
            age.add_metric([], max(0.0, (now - newest).total_seconds()))
        yield age


def _open_alerts() -> GaugeMetricFamily:
    found = {
        (severity, status): n
        for severity, status, n in Alert.objects.filter(status__in=Alert.OPEN)
        .order_by()
        .values_list("severity", "status")
        .annotate(n=Count("id"))
    }
    family = GaugeMetricFamily(
        "portal_open_alerts", "Alerts firing or acknowledged, by severity and status",
        labels=["severity", "status"],
    )  # fmt: skip
    for severity in Severity.values:
        for status in Alert.OPEN:
            family.add_metric([severity, str(status)], found.get((severity, status), 0))
    return family
