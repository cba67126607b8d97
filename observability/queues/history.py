"""Queue figures over time, read back from ``QueueSample`` as chart series."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from observability import charts
from observability.metrics import TimeRange
from observability.queues.models import QueueSample

# What the detail page charts: (key, title, unit, lines of (column, label)).
CHARTS = (
    (
        "backlog",
        "Backlog and in flight (messages)",
        "",
        (("pending", "Waiting"), ("in_flight", "In flight")),
    ),
    ("throughput", "Throughput (msg/s)", "/s", (("in_rate", "In"), ("out_rate", "Out"))),
    ("lag", "Consumer lag (seconds)", "s", (("lag_seconds", "Oldest waiting"),)),
    ("errors", "Error rate (% of attempts)", "%", (("error_rate", "Failed attempts"),)),
    ("dead_letters", "Dead letters", "", (("dead_letters", "In the dead-letter queue"),)),
    ("dlq_inflow", "Dead-letter inflow (per minute)", "", (("dlq_inflow", "New dead letters"),)),
)
COLUMNS = {column for _, _, _, lines in CHARTS for column, _ in lines}


def series(
    queue_name: str, column: str, start: datetime, end: datetime, points: int
) -> list[tuple[datetime, float | None]]:
    """One column of one queue in about ``points`` buckets (None where there is no sample)."""
    if column not in COLUMNS:
        raise ValueError(f"unknown queue figure {column!r}")
    raw_since = timezone.now() - timedelta(hours=settings.METRICS_RAW_RETENTION_HOURS)
    step = QueueSample.RAW if start >= raw_since else QueueSample.ROLLUP
    bucket = max(
        int((end - start).total_seconds() // points), step or settings.QUEUE_SAMPLE_INTERVAL_SECONDS
    )
    sql = f"""
        SELECT date_bin(make_interval(secs => %(bucket)s), ts, TIMESTAMPTZ '1970-01-01 00:00:00+00'),
               avg({column})
        FROM observability_queuesample
        WHERE queue_name = %(queue)s AND step = %(step)s AND ts >= %(start)s AND ts < %(end)s
        GROUP BY 1
    """  # noqa: S608 - the column is one of ours (checked above); values are parameters
    with connection.cursor() as cursor:
        cursor.execute(
            sql, {"bucket": bucket, "queue": queue_name, "step": step, "start": start, "end": end}
        )
        values = dict(cursor.fetchall())
    epoch = int(start.timestamp())
    moment = datetime.fromtimestamp(epoch - epoch % bucket, tz=start.tzinfo)
    out = []
    while moment < end:
        out.append((moment, values.get(moment)))
        moment += timedelta(seconds=bucket)
    return out


def build_charts(queue_name: str, time_range: TimeRange, *, celery: bool = False) -> list[dict]:
    """The detail page's charts over ``time_range`` ending now: ``{"key", "title", "html"}``."""
    end = timezone.now()
    start = end - time_range.span
    built = []
    for key, title, unit, lines in CHARTS:
        if celery and key in ("lag", "errors", "dead_letters", "dlq_inflow"):
            continue
        drawn = [
            charts.Series(
                label, series(queue_name, column, start, end, time_range.points), f"series-{i + 1}"
            )
            for i, (column, label) in enumerate(lines)
        ]
        html = charts.line_chart(drawn, title=title, unit=unit, start=start, end=end, height=160)
        built.append({"key": key, "title": title, "html": html})
    return built
