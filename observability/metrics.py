"""Metrics: every agent's ``/metrics`` scraped on an interval into one sample per agent, turned
from counters into rates, downsampled into 5-minute averages, and read back as time series.

A sample is written for each agent that is meant to be running (RUNNING, or ERRORED: ``up`` 0),
so uptime is the share of samples in which the agent was up. Agents deliberately stopped or
suspended have no samples: a planned stop is not downtime.

Counters become rates between two scrapes; the previous scrape's counters are kept in Redis (a
lost value only costs one interval without rates). A counter that went down means the agent
restarted, so the new value counts from zero.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from agents.agentd import contract
from agents.models import Agent, Health, State
from observability.models import MetricSample
from portal.refusals import BadRequest

logger = logging.getLogger(__name__)

SCRAPE_TIMEOUT_SECONDS = 2.0
PREVIOUS_KEY = "observability:scrape:{agent}:{replica}"
SAMPLED_STATES = (State.RUNNING, State.ERRORED)
MiB = 1024 * 1024

# The series a chart can ask for, with how replicas (or the fleet's agents) add up.
METRICS = {
    "up": "avg",
    "cpu_percent": "sum",
    "memory_bytes": "sum",
    "memory_percent": "avg",
    "throughput": "sum",
    "failures": "sum",
    "error_rate": "rate",
    "latency_p50_ms": "avg",
    "latency_p95_ms": "avg",
    "latency_p99_ms": "avg",
    "queue_depth": "sum",
    "dead_letters": "sum",
}


@dataclass(frozen=True)
class TimeRange:
    """A range the Metrics page and the API offer, and how many buckets its charts have."""

    key: str
    label: str
    span: timedelta
    points: int  # buckets per chart: about two scrapes per bucket at 1 h, so no false gaps


RANGES = {
    r.key: r
    for r in (
        TimeRange("1h", "1 h", timedelta(hours=1), 120),
        TimeRange("6h", "6 h", timedelta(hours=6), 120),
        TimeRange("24h", "24 h", timedelta(hours=24), 144),
        TimeRange("7d", "7 d", timedelta(days=7), 168),
    )
}


class MetricQueryError(BadRequest, ValueError):
    """A metrics question that cannot be answered; the message says what to change. A
    ``BadRequest`` (400) at every door; still the ``ValueError`` it always was."""


# --- parsing agentd's exposition ----------------------------------------------------------


@dataclass
class Scrape:
    """What one replica's /metrics said."""

    processed: float = 0.0
    failed: float = 0.0
    dead_lettered: float = 0.0
    cpu_seconds: float = 0.0
    memory_bytes: float = 0.0
    queue_depth: float | None = None
    dead_letters: float | None = None
    buckets: dict[str, float] = field(default_factory=dict)  # le -> cumulative count
    at: float = 0.0


def parse_exposition(text: str) -> Scrape:
    """Read the Prometheus text agentd serves (the families it writes; others are ignored)."""
    scrape = Scrape()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name_part, _, value_text = line.rpartition(" ")
        try:
            value = float(value_text)
        except ValueError:
            continue
        name, _, labels = name_part.partition("{")
        if name == contract.METRIC_TASKS_PROCESSED:
            scrape.processed = value
        elif name == contract.METRIC_TASKS_FAILED:
            scrape.failed = value
        elif name == contract.METRIC_TASKS_DEAD_LETTERED:
            scrape.dead_lettered = value
        elif name == contract.METRIC_CPU_SECONDS:
            scrape.cpu_seconds = value
        elif name == contract.METRIC_RESIDENT_MEMORY:
            scrape.memory_bytes = value
        elif name == contract.METRIC_QUEUE_DEPTH:
            scrape.queue_depth = value
        elif name == contract.METRIC_DEAD_LETTER_DEPTH:
            scrape.dead_letters = value
        elif name == f"{contract.METRIC_TASK_LATENCY}_bucket":
            le = _label(labels, "le")
            if le is not None:
                scrape.buckets[le] = value
    return scrape


def _label(labels: str, wanted: str) -> str | None:
    for part in labels.rstrip("}").split(","):
        key, _, value = part.partition("=")
        if key.strip() == wanted:
            return value.strip().strip('"')
    return None


def quantile(q: float, buckets: dict[str, float]) -> float | None:
    """The q-quantile (seconds) of a cumulative histogram, interpolated inside its bucket as
    Prometheus's ``histogram_quantile`` does; None without observations."""
    bounds = sorted(
        ((math.inf if le == "+Inf" else float(le)), count) for le, count in buckets.items()
    )
    if not bounds or bounds[-1][1] <= 0:
        return None
    rank = q * bounds[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for upper, count in bounds:
        if count >= rank:
            if math.isinf(upper):
                return lower_bound  # beyond the last finite bucket: its bound is all we know
            if count == lower_count:
                return upper
            return lower_bound + (upper - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = upper, count
    return lower_bound


# --- scraping -------------------------------------------------------------------------------


def scrape_all(now: datetime | None = None) -> int:
    """Scrape every agent meant to be running and store one sample each; answers how many."""
    now = (now or timezone.now()).replace(microsecond=0)
    agents = list(Agent.objects.filter(state__in=SAMPLED_STATES))
    if not agents:
        return 0
    client = _redis()
    with ThreadPoolExecutor(max_workers=min(8, len(agents))) as pool:
        samples = list(pool.map(lambda agent: _sample(agent, now, client), agents))
    MetricSample.objects.bulk_create(samples, ignore_conflicts=True)
    return len(samples)


def _sample(agent: Agent, now: datetime, client: redis.Redis) -> MetricSample:
    sample = MetricSample(agent=agent, ts=now, step=MetricSample.RAW, up=0.0)
    if agent.state != State.RUNNING or agent.pending_action:
        return sample
    ports = (agent.runtime_details.get("ports") or [])[: agent.replicas]
    if not ports:
        # A runtime the portal cannot reach directly (Kubernetes): up is its own health view.
        sample.up = 1.0 if agent.health == Health.HEALTHY else 0.0
        return sample
    scrapes = []
    for replica, port in enumerate(ports):
        scrape = fetch_scrape(f"http://127.0.0.1:{port}/metrics")
        if scrape is not None:
            scrapes.append((replica, scrape))
    if not scrapes:
        return sample
    sample.up = 1.0 if len(scrapes) == len(ports) else len(scrapes) / len(ports)
    sample.memory_bytes = sum(scrape.memory_bytes for _, scrape in scrapes)
    sample.memory_limit_bytes = float(agent.memory_mb * MiB * len(ports))
    depths = [s.queue_depth for _, s in scrapes if s.queue_depth is not None]
    sample.queue_depth = max(depths) if depths else None
    letters = [s.dead_letters for _, s in scrapes if s.dead_letters is not None]
    sample.dead_letters = max(letters) if letters else None
    _rates(sample, agent, scrapes, client)
    return sample


def fetch_scrape(url: str) -> Scrape | None:
    """One replica's /metrics, parsed; None when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_SECONDS) as response:
            text = response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    scrape = parse_exposition(text)
    scrape.at = timezone.now().timestamp()
    return scrape


def _rates(
    sample: MetricSample, agent: Agent, scrapes: list[tuple[int, Scrape]], client: redis.Redis
) -> None:
    """Fill the rate fields from the difference to each replica's previous scrape."""
    processed = failed = cpu = seconds = 0.0
    buckets: dict[str, float] = {}
    compared = False
    for replica, scrape in scrapes:
        key = PREVIOUS_KEY.format(agent=agent.pk, replica=replica)
        try:
            previous = client.get(key)
            client.set(key, json.dumps(scrape.__dict__), ex=3600)
        except redis.RedisError as exc:
            logger.info("cannot keep %s's previous scrape: %s", agent.slug, exc)
            previous = None
        if not previous:
            continue
        before = Scrape(**json.loads(previous))
        elapsed = scrape.at - before.at
        if elapsed <= 0:
            continue
        compared = True
        processed += _increase(before.processed, scrape.processed)
        failed += _increase(before.failed, scrape.failed)
        cpu += _increase(before.cpu_seconds, scrape.cpu_seconds)
        seconds = max(seconds, elapsed)
        for le, count in scrape.buckets.items():
            buckets[le] = buckets.get(le, 0.0) + _increase(before.buckets.get(le, 0.0), count)
    if not compared:
        return
    sample.throughput = processed / seconds
    sample.failures = failed / seconds
    sample.cpu_percent = 100.0 * cpu / seconds
    attempts = processed + failed
    sample.error_rate = 100.0 * failed / attempts if attempts else None
    for q, name in ((0.5, "latency_p50_ms"), (0.95, "latency_p95_ms"), (0.99, "latency_p99_ms")):
        value = quantile(q, buckets)
        setattr(sample, name, None if value is None else value * 1000.0)


def _increase(before: float, now: float) -> float:
    return now - before if now >= before else now  # a drop is a restart: count from zero


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, decode_responses=True, socket_timeout=5)


# --- downsampling and retention -----------------------------------------------------------


ROLLUP_SQL = """
INSERT INTO observability_metricsample (
    agent_id, ts, step, up, cpu_percent, memory_bytes, memory_limit_bytes, throughput, failures,
    error_rate, latency_p50_ms, latency_p95_ms, latency_p99_ms, queue_depth, dead_letters, samples
)
SELECT agent_id, date_bin('300 seconds', ts, TIMESTAMPTZ '1970-01-01 00:00:00+00'), %(step)s, avg(up),
    avg(cpu_percent), avg(memory_bytes), max(memory_limit_bytes), avg(throughput), avg(failures),
    CASE WHEN sum(throughput) + sum(failures) > 0
         THEN 100.0 * sum(failures) / (sum(throughput) + sum(failures)) END,
    avg(latency_p50_ms), avg(latency_p95_ms), avg(latency_p99_ms), avg(queue_depth),
    avg(dead_letters), count(*)
FROM observability_metricsample
WHERE step = 0 AND ts >= %(start)s AND ts < %(end)s
GROUP BY 1, 2
ON CONFLICT (agent_id, step, ts) DO UPDATE SET
    up = EXCLUDED.up, cpu_percent = EXCLUDED.cpu_percent,
    memory_bytes = EXCLUDED.memory_bytes, memory_limit_bytes = EXCLUDED.memory_limit_bytes,
    throughput = EXCLUDED.throughput, failures = EXCLUDED.failures,
    error_rate = EXCLUDED.error_rate, latency_p50_ms = EXCLUDED.latency_p50_ms,
    latency_p95_ms = EXCLUDED.latency_p95_ms, latency_p99_ms = EXCLUDED.latency_p99_ms,
    queue_depth = EXCLUDED.queue_depth, dead_letters = EXCLUDED.dead_letters,
    samples = EXCLUDED.samples
"""


def downsample(now: datetime | None = None, lookback: timedelta = timedelta(hours=2)) -> int:
    """Average the raw samples of every finished 5-minute bucket in the last ``lookback`` into
    one sample per agent and bucket. Recomputing a bucket gives the same row, so running it
    twice (or a redelivered task) is harmless; answers how many rows were written."""
    now = now or timezone.now()
    end = _bucket_start(now)
    start = _bucket_start(now - lookback)
    with connection.cursor() as cursor:
        cursor.execute(ROLLUP_SQL, {"step": MetricSample.ROLLUP, "start": start, "end": end})
        return cursor.rowcount


def _bucket_start(moment: datetime) -> datetime:
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % MetricSample.ROLLUP, tz=moment.tzinfo)


def purge(now: datetime | None = None) -> int:
    """Delete raw samples past ``METRICS_RAW_RETENTION_HOURS`` and averages past
    ``METRICS_RETENTION_DAYS``; answers how many rows went."""
    now = now or timezone.now()
    raw_cutoff = now - timedelta(hours=settings.METRICS_RAW_RETENTION_HOURS)
    rollup_cutoff = now - timedelta(days=settings.METRICS_RETENTION_DAYS)
    deleted = MetricSample.objects.filter(step=MetricSample.RAW, ts__lt=raw_cutoff).delete()[0]
    deleted += MetricSample.objects.filter(step=MetricSample.ROLLUP, ts__lt=rollup_cutoff).delete()[
        0
    ]
    return deleted


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    metric: str
    start: datetime
    end: datetime
    bucket_seconds: int
    points: list[tuple[datetime, float | None]]

    @property
    def last(self) -> float | None:
        for _, value in reversed(self.points):
            if value is not None:
                return value
        return None


def series(
    metric: str,
    *,
    agent: Agent | None = None,
    start: datetime,
    end: datetime,
    points: int = 120,
) -> Series:
    """One metric from ``start`` to ``end`` in about ``points`` equal buckets (None where there
    is no sample), for one agent or, with ``agent=None``, the whole fleet."""
    if metric not in METRICS:
        raise MetricQueryError(
            f"Unknown metric {metric!r}: choose one of {', '.join(sorted(METRICS))}."
        )
    if start >= end:
        raise MetricQueryError("The start of the time range must be before its end.")
    step = _source_step(start)
    bucket = max(
        int((end - start).total_seconds() // points),
        step or settings.METRICS_SCRAPE_INTERVAL_SECONDS,
    )
    values = _bucketed(metric, agent, start, end, bucket, step)
    moments = []
    moment = _align(start, bucket)
    while moment < end:
        moments.append(moment)
        moment += timedelta(seconds=bucket)
    return Series(metric, start, end, bucket, [(moment, values.get(moment)) for moment in moments])


def _source_step(start: datetime) -> int:
    """Raw samples while they are kept for the whole range, otherwise the 5-minute averages."""
    raw_kept_since = timezone.now() - timedelta(hours=settings.METRICS_RAW_RETENTION_HOURS)
    return MetricSample.RAW if start >= raw_kept_since else MetricSample.ROLLUP


def _align(moment: datetime, bucket: int) -> datetime:
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % bucket, tz=moment.tzinfo)


def _bucketed(
    metric: str, agent: Agent | None, start: datetime, end: datetime, bucket: int, step: int
) -> dict[datetime, float | None]:
    value = (
        "100.0 * memory_bytes / NULLIF(memory_limit_bytes, 0)"
        if metric == "memory_percent"
        else metric
    )
    # Per agent first (averaged over the bucket), then across agents for the fleet.
    if metric == "error_rate":
        per_agent = "sum(failures) AS f, sum(throughput) AS t"
        across = "CASE WHEN sum(f) + sum(t) > 0 THEN 100.0 * sum(f) / (sum(f) + sum(t)) END"
    else:
        per_agent = f"avg({value}) AS v"
        across = {"avg": "avg(v)", "sum": "sum(v)"}[METRICS[metric]]
    sql = f"""
        SELECT b, {across} FROM (
            SELECT date_bin(make_interval(secs => %(bucket)s), ts, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS b,
                   agent_id, {per_agent}
            FROM observability_metricsample
            WHERE step = %(step)s AND ts >= %(start)s AND ts < %(end)s
                  {"AND agent_id = %(agent)s" if agent is not None else ""}
            GROUP BY 1, 2
        ) per_agent GROUP BY b
    """  # noqa: S608 - only our own column names are formatted in; values are parameters
    params = {
        "bucket": bucket,
        "step": step,
        "start": start,
        "end": end,
        "agent": agent.pk if agent else None,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {moment: value for moment, value in cursor.fetchall()}


def uptime(agent: Agent | None, window: timedelta, now: datetime | None = None) -> float | None:
    """Percent of the last ``window`` in which the agent (or, for the fleet, the average agent)
    was up, among the times it was meant to run; None when there are no samples."""
    shares = _up_shares(window, now, agent_id=agent.pk if agent else None)
    if not shares:
        return None
    if agent is not None:
        return shares.get(agent.pk)
    return sum(shares.values()) / len(shares)


def uptimes(window: timedelta, now: datetime | None = None) -> dict[int, float]:
    """Every agent's uptime percentage over ``window``, by agent id (agents without samples are
    left out)."""
    return _up_shares(window, now)


def _up_shares(
    window: timedelta, now: datetime | None, agent_id: int | None = None
) -> dict[int, float]:
    """Uptime per agent from the 5-minute averages where raw samples are no longer kept and
    from the raw samples after the last average, each weighted by the scrapes it stands for."""
    now = now or timezone.now()
    start = now - window
    raw_kept_since = now - timedelta(hours=settings.METRICS_RAW_RETENTION_HOURS)
    # Averages cover whole buckets up to the newest one written; raw samples carry on from there.
    rolled_until = start
    if start < raw_kept_since:
        newest = (
            MetricSample.objects.filter(step=MetricSample.ROLLUP, ts__gte=start)
            .order_by("-ts")
            .values_list("ts", flat=True)
            .first()
        )
        if newest is not None:
            rolled_until = newest + timedelta(seconds=MetricSample.ROLLUP)
    sql = """
        SELECT agent_id, sum(up * weight) / sum(weight) FROM (
            SELECT agent_id, up, samples * %(interval)s AS weight FROM observability_metricsample
            WHERE step = %(rollup)s AND ts >= %(start)s AND ts < %(rolled_until)s
            UNION ALL
            SELECT agent_id, up, %(interval)s AS weight FROM observability_metricsample
            WHERE step = 0 AND ts >= %(rolled_until)s AND ts < %(now)s
        ) samples
        WHERE %(agent)s::bigint IS NULL OR agent_id = %(agent)s::bigint
        GROUP BY agent_id
    """
    params = {
        "rollup": MetricSample.ROLLUP,
        "interval": settings.METRICS_SCRAPE_INTERVAL_SECONDS,
        "start": start,
        "rolled_until": rolled_until,
        "now": now,
        "agent": agent_id,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0]: 100.0 * row[1] for row in cursor.fetchall()}


def sparklines(
    metric: str, agent_ids: Iterable[int], minutes: int = 60, now: datetime | None = None
) -> dict[int, list[tuple[datetime, float | None]]]:
    """The last ``minutes`` of one raw metric for several agents, in one query."""
    if metric not in METRICS or metric in ("memory_percent", "error_rate"):
        raise MetricQueryError(f"No sparkline for {metric!r}.")
    now = now or timezone.now()
    rows = (
        MetricSample.objects.filter(
            step=MetricSample.RAW,
            agent_id__in=list(agent_ids),
            ts__gte=now - timedelta(minutes=minutes),
        )
        .order_by("ts")
        .values_list("agent_id", "ts", metric)
    )
    lines: dict[int, list[tuple[datetime, float | None]]] = {}
    for agent_id, ts, value in rows:
        lines.setdefault(agent_id, []).append((ts, value))
    return lines


def latest(agent: Agent) -> MetricSample | None:
    """The agent's newest raw sample."""
    return MetricSample.objects.filter(agent=agent, step=MetricSample.RAW).order_by("-ts").first()


def latest_many(
    agent_ids: Iterable[int] | None = None,
    *,
    within: timedelta = timedelta(minutes=2),
    now: datetime | None = None,
) -> dict[int, MetricSample]:
    """Each agent's newest raw sample of the last ``within`` (of ``agent_ids``, or of every
    agent), in one query."""
    now = now or timezone.now()
    rows = MetricSample.objects.filter(step=MetricSample.RAW, ts__gte=now - within)
    if agent_ids is not None:
        rows = rows.filter(agent_id__in=list(agent_ids))
    rows = rows.order_by("agent_id", "-ts").distinct("agent_id")
    return {sample.agent_id: sample for sample in rows}
