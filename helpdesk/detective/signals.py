"""What the Issue Detective looks at: every signal of one customer's agents, gathered at once.

``gather(customer)`` reads the database in a fixed number of queries and Redis in two round
trips, however many agents the customer has: the agents (state, health, readiness, replicas,
version, restarts, last exit, config changes) and their dependencies, open errors with their
classified root causes, recent transitions (deploys, restarts, crashes, stops) and upgrades,
the newest metric sample (CPU, memory against its limit, throughput, latency), the newest
warning-and-above log lines, the customer's interactions (last hour, and in buckets over the
last few hours to compare before and after a change), then the queue figures, dead letters and
their error groups from Redis. Detectors (``helpdesk.detective.detectors``) only read this.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from django.db import connection
from django.utils import timezone

from agents.agentd import contract
from agents.models import Agent, AgentError, AgentTransition
from helpdesk.models import Customer, Outcome
from observability.logs import format_line
from observability.models import Level, LogEntry, MetricSample
from observability.queues import catalog
from observability.queues import figures as queue_figures
from observability.queues.deadletters import Group
from observability.queues.models import QueueSample
from servicing.models import Upgrade

# How far back each kind of signal is read.
TRANSITIONS_SINCE = timedelta(hours=24)
UPGRADES_SINCE = timedelta(days=3)
METRICS_WITHIN = timedelta(minutes=10)
LOGS_SINCE = timedelta(hours=2)
INTERACTIONS_WINDOW = timedelta(hours=1)
BUCKETS_SINCE = timedelta(hours=6)
BUCKET_SECONDS = 600
LOG_LINES_PER_AGENT = 8
TRANSITIONS_MAX = 300
FAILING_ERRORS = 10
# Newest dead letters read per agent to count the customer's share of them.
LETTERS_SAMPLED = 200
# Inflow is judged over this long: a burst does not read as a rate that keeps coming.
INFLOW_WINDOW = timedelta(minutes=5)


@dataclass
class Bucket:
    """The customer's interactions with one agent in one ten-minute bucket."""

    start: datetime
    total: int = 0
    failed: int = 0
    latency_avg_ms: float = 0.0


@dataclass
class Traffic:
    """The customer's interactions with one agent (or with all) over the last hour."""

    total: int = 0
    failed: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None

    @property
    def failure_share(self) -> float:
        return self.failed / self.total if self.total else 0.0


@dataclass
class AgentSignals:
    agent: Agent
    dependencies: list[Agent] = field(default_factory=list)
    errors: list[AgentError] = field(default_factory=list)
    transitions: list[AgentTransition] = field(default_factory=list)
    upgrades: list[Upgrade] = field(default_factory=list)
    metric: MetricSample | None = None
    log_lines: list[str] = field(default_factory=list)
    traffic: Traffic = field(default_factory=Traffic)
    buckets: list[Bucket] = field(default_factory=list)
    queue: queue_figures.Figures | None = None
    letter_groups: list[Group] = field(default_factory=list)
    letters_sampled: int = 0
    letters_for_customer: int = 0  # of those sampled

    @property
    def slug(self) -> str:
        return self.agent.slug

    def since(self, moment: datetime) -> Traffic:
        """Interactions (no percentiles) in the buckets from ``moment`` on."""
        chosen = [b for b in self.buckets if b.start + timedelta(seconds=BUCKET_SECONDS) > moment]
        return Traffic(sum(b.total for b in chosen), sum(b.failed for b in chosen))

    def before(self, moment: datetime) -> Traffic:
        chosen = [b for b in self.buckets if b.start + timedelta(seconds=BUCKET_SECONDS) <= moment]
        return Traffic(sum(b.total for b in chosen), sum(b.failed for b in chosen))

    def latency_since(self, moment: datetime) -> float | None:
        return _weighted_latency(
            b for b in self.buckets if b.start + timedelta(seconds=BUCKET_SECONDS) > moment
        )

    def latency_before(self, moment: datetime) -> float | None:
        return _weighted_latency(
            b for b in self.buckets if b.start + timedelta(seconds=BUCKET_SECONDS) <= moment
        )

    @property
    def dead_letters(self) -> int:
        return self.queue.dead_letters if self.queue is not None else 0

    @property
    def customer_dead_letters(self) -> int:
        """The customer's dead letters, estimated from the newest ones sampled."""
        if not self.letters_sampled:
            return 0
        share = self.letters_for_customer / self.letters_sampled
        return round(self.dead_letters * share)


def _weighted_latency(buckets) -> float | None:
    total = weighted = 0.0
    for bucket in buckets:
        total += bucket.total
        weighted += bucket.total * bucket.latency_avg_ms
    return weighted / total if total else None


@dataclass
class Signals:
    customer: Customer
    at: datetime
    agents: list[AgentSignals] = field(default_factory=list)
    traffic: Traffic = field(default_factory=Traffic)
    failing_errors: list[tuple[str, str, datetime]] = field(default_factory=list)
    redis_problem: str = ""

    def summary(self) -> dict:
        """What was looked at, as plain data (kept on the diagnosis)."""
        return {
            "at": self.at.isoformat(),
            "customer": {
                "status": self.customer.status,
                "plan": self.customer.plan,
                "trial_ends_at": _iso(self.customer.trial_ends_at),
                "last_payment_failed_at": _iso(self.customer.last_payment_failed_at),
            },
            "interactions": {
                "last_hour": self.traffic.total,
                "failed": self.traffic.failed,
                "failure_share": round(self.traffic.failure_share, 3),
                "p95_ms": _round(self.traffic.p95_ms),
            },
            "agents": [
                {
                    "slug": a.slug,
                    "state": a.agent.state,
                    "health": a.agent.health,
                    "version": a.agent.version,
                    "replicas": a.agent.replicas,
                    "open_errors": len(a.errors),
                    "backlog": a.queue.pending if a.queue is not None else None,
                    "dead_letters": a.dead_letters,
                    "interactions": a.traffic.total,
                    "failed": a.traffic.failed,
                    "p95_ms": _round(a.traffic.p95_ms),
                    "cpu_percent": _round(a.metric.cpu_percent if a.metric else None),
                    "memory_percent": _round(a.metric.memory_percent if a.metric else None),
                }
                for a in self.agents
            ],
            "redis_problem": self.redis_problem,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 1)


def gather(customer: Customer, *, now: datetime | None = None, client=None) -> Signals:
    """Every signal of ``customer``'s agents (see the module's docstring)."""
    now = now or timezone.now()
    signals = Signals(customer=customer, at=now)
    agents = list(
        Agent.objects.filter(customer_link__customer=customer)
        .prefetch_related("dependencies")
        .order_by("name")
    )
    by_id = {
        agent.pk: AgentSignals(agent, dependencies=list(agent.dependencies.all()))
        for agent in agents
    }
    signals.agents = list(by_id.values())
    ids = list(by_id)
    _read_traffic(signals, by_id, now)
    if not ids:
        return signals

    for error in AgentError.objects.open().filter(agent_id__in=ids).order_by("-last_seen_at"):
        by_id[error.agent_id].errors.append(error)
    for transition in AgentTransition.objects.filter(
        agent_id__in=ids, at__gte=now - TRANSITIONS_SINCE
    ).order_by("-at", "-id")[:TRANSITIONS_MAX]:
        by_id[transition.agent_id].transitions.append(transition)
    for upgrade in Upgrade.objects.filter(
        agent_id__in=ids, created_at__gte=now - UPGRADES_SINCE
    ).order_by("-created_at"):
        by_id[upgrade.agent_id].upgrades.append(upgrade)
    for sample in (
        MetricSample.objects.filter(
            step=MetricSample.RAW, ts__gte=now - METRICS_WITHIN, agent_id__in=ids
        )
        .order_by("agent_id", "-ts")
        .distinct("agent_id")
    ):
        by_id[sample.agent_id].metric = sample
    _read_logs(by_id, now)
    _read_redis(signals, by_id, client)
    return signals


_LOGS = f"""
SELECT l.id, l.agent_id, l.replica, l.ts, l.level, l.event, l.message, l.fields
  FROM unnest(%s::bigint[]) AS a(id)
  CROSS JOIN LATERAL (
    SELECT * FROM {LogEntry._meta.db_table} e
     WHERE e.agent_id = a.id AND e.level >= %s AND e.ts >= %s
     ORDER BY e.ts DESC, e.id DESC LIMIT %s
  ) l
 ORDER BY l.agent_id, l.ts, l.id
"""


def _read_logs(by_id: dict[int, AgentSignals], now: datetime) -> None:
    entries = LogEntry.objects.raw(
        _LOGS, [list(by_id), int(Level.WARNING), now - LOGS_SINCE, LOG_LINES_PER_AGENT]
    )
    for entry in entries:
        found = by_id[entry.agent_id]
        entry.agent = found.agent  # format_line names the agent; no query for it
        found.log_lines.append(format_line(entry))


_TRAFFIC = """
SELECT agent_slug, count(*), count(*) FILTER (WHERE outcome <> %(ok)s),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
  FROM helpdesk_interaction
 WHERE customer_id = %(customer)s AND at >= %(since)s
 GROUP BY ROLLUP (agent_slug)
"""
_BUCKETS = """
SELECT agent_slug, floor(extract(epoch FROM at) / %(step)s) * %(step)s AS bucket,
       count(*), count(*) FILTER (WHERE outcome <> %(ok)s), avg(latency_ms)
  FROM helpdesk_interaction
 WHERE customer_id = %(customer)s AND at >= %(since)s
 GROUP BY 1, 2 ORDER BY 1, 2
"""


def _read_traffic(signals: Signals, by_id: dict[int, AgentSignals], now: datetime) -> None:
    by_slug = {found.slug: found for found in by_id.values()}
    params: dict[str, Any] = {
        "ok": str(Outcome.SUCCEEDED),
        "customer": signals.customer.pk,
        "since": now - INTERACTIONS_WINDOW,
        "step": BUCKET_SECONDS,
    }
    with connection.cursor() as cursor:
        cursor.execute(_TRAFFIC, params)
        for slug, total, failed, p50, p95 in cursor.fetchall():
            traffic = Traffic(total, failed, p50, p95)
            if slug is None:
                signals.traffic = traffic
            elif slug in by_slug:
                by_slug[slug].traffic = traffic
        if by_slug:
            cursor.execute(_BUCKETS, {**params, "since": now - BUCKETS_SINCE})
            for slug, start, total, failed, latency in cursor.fetchall():
                if slug in by_slug:
                    moment = datetime.fromtimestamp(float(start), tz=now.tzinfo)
                    by_slug[slug].buckets.append(Bucket(moment, total, failed, float(latency or 0)))
    failing = (
        signals.customer.interactions.filter(at__gte=now - INTERACTIONS_WINDOW)
        .exclude(outcome=Outcome.SUCCEEDED)
        .order_by("-at", "-id")
        .values_list("agent_slug", "error", "at")[:FAILING_ERRORS]
    )
    signals.failing_errors = list(failing)


def _sustained_inflow(looks: list, now) -> None:
    """Each queue's inflow as what keeps coming, not a burst: the newest sample's rate, but no
    more than the median of the last INFLOW_WINDOW (a one-off burst of 1,500 tasks read as
    300 tasks/s would ask for twenty replicas). One query for every queue."""
    names = [figures.ref.name for figures in looks if figures.in_rate is not None]
    if not names:
        return
    rates: dict[str, list[float]] = {}
    for name, rate in QueueSample.objects.filter(
        queue_name__in=names, step=QueueSample.RAW, ts__gte=now - INFLOW_WINDOW,
        in_rate__isnull=False,
    ).values_list("queue_name", "in_rate"):  # fmt: skip
        if rate is not None:
            rates.setdefault(name, []).append(rate)
    for figures in looks:
        seen = rates.get(figures.ref.name)
        if seen and figures.in_rate is not None:
            figures.in_rate = min(figures.in_rate, statistics.median(seen))


def _read_redis(signals: Signals, by_id: dict[int, AgentSignals], client) -> None:
    """Queue figures (one pipeline, the queue pages' own look), then every agent's dead-letter
    groups and newest letters (a second pipeline)."""
    client = client or catalog.agent_redis()
    found = list(by_id.values())
    refs = [catalog.for_agent(a.agent) for a in found]
    looks = queue_figures.with_rates(queue_figures.look(refs, client, None))
    _sustained_inflow(looks, signals.at)
    for agent_signals, figures in zip(found, looks, strict=True):
        agent_signals.queue = figures
        if figures.error:
            signals.redis_problem = figures.error
    if signals.redis_problem:
        return
    try:
        pipe = client.pipeline(transaction=False)
        for a in found:
            pipe.hgetall(contract.dead_letter_groups(a.slug))
            pipe.hgetall(contract.dead_letter_labels(a.slug))
            pipe.xrevrange(contract.dead_letters(a.slug), count=LETTERS_SAMPLED)
        replies = pipe.execute(raise_on_error=False)
    except (redis.RedisError, OSError) as exc:
        signals.redis_problem = f"Redis does not answer: {exc}"
        return
    key = signals.customer.key
    for index, a in enumerate(found):
        counts, labels, letters = replies[3 * index : 3 * index + 3]
        if isinstance(counts, dict):
            labels = labels if isinstance(labels, dict) else {}
            a.letter_groups = sorted(
                (
                    Group(fp, labels.get(fp) or fp, _int(n))
                    for fp, n in counts.items()
                    if _int(n) > 0
                ),
                key=lambda g: (-g.count, g.label),
            )
        if isinstance(letters, list):
            a.letters_sampled = len(letters)
            a.letters_for_customer = sum(
                1 for _, fields in letters if fields.get(contract.FIELD_CUSTOMER) == key
            )


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0
