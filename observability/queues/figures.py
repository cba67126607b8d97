"""What a queue looks like right now, read from Redis in one pipeline for any number of queues,
and its health against thresholds.

An agent's stream holds exactly the work not yet done (agentd deletes a task once it is done or
dead-lettered), so of its ``length`` messages ``in_flight`` are delivered to a replica and not
yet acknowledged (the group's pending entries) and the rest, ``pending``, wait to be delivered:
that is the consumer lag in messages, and the age of the oldest of them the lag in seconds.

Rates (in, out, error rate, dead-letter inflow) need two looks; the sampler computes them and
keeps them in ``QueueSample``, and :func:`with_rates` joins the newest sample to a live look.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.utils import timezone

from agents.agentd import contract
from observability.queues.catalog import QueueRef
from observability.queues.models import QueueSample, QueueThreshold

HEALTHY, DEGRADED, CRITICAL, UNKNOWN = "healthy", "degraded", "critical", "unknown"
STATUS_ORDER = {HEALTHY: 0, UNKNOWN: 1, DEGRADED: 2, CRITICAL: 3}
# Kombu's Redis transport keeps delivered, unacknowledged messages in this hash.
CELERY_UNACKED = "unacked"


@dataclass
class Consumer:
    """One reader of a stream (an agent replica) or one Celery worker."""

    name: str
    pending: int = 0
    idle_ms: int | None = None
    replica: int | None = None
    active: int | None = None  # Celery: tasks running now
    reserved: int | None = None  # Celery: tasks prefetched, waiting


@dataclass
class Figures:
    """One look at one queue (counts now, rates from the newest sample)."""

    ref: QueueRef
    at: float
    length: int = 0
    in_flight: int = 0
    dead_letters: int = 0
    oldest_age_seconds: float | None = None
    lag_seconds: float | None = None
    group_exists: bool = False
    consumers: list[Consumer] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    producers: dict[str, int] = field(default_factory=dict)  # tasks taken per producer, ever
    error: str = ""  # Redis could not be asked
    # From the newest sample:
    in_rate: float | None = None
    out_rate: float | None = None
    error_rate: float | None = None
    dlq_inflow: float | None = None
    sampled_at: datetime | None = None
    # From thresholds:
    status: str = UNKNOWN
    reasons: list[str] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return max(0, self.length - self.in_flight)

    @property
    def name(self) -> str:
        return self.ref.name


def _age(entry_id: str | None, now: float) -> float | None:
    if not entry_id:
        return None
    try:
        millis = int(entry_id.split("-", 1)[0])
    except ValueError:
        return None
    return max(0.0, now - millis / 1000)


def look(
    refs: list[QueueRef], agent_client: redis.Redis, broker: redis.Redis | None
) -> list[Figures]:
    """Counts for every queue in ``refs`` (Celery worker figures are the sampler's: they take a
    broadcast). A queue Redis does not answer for carries ``error``."""
    now = time.time()
    looks = [Figures(ref=ref, at=now) for ref in refs]
    streams = [f for f in looks if f.ref.is_agent]
    celery = [f for f in looks if not f.ref.is_agent]
    if streams:
        try:
            _look_streams(streams, agent_client, now)
        except (redis.RedisError, OSError) as exc:
            for figures in streams:
                figures.error = f"Redis does not answer: {exc}"
    if celery and broker is not None:
        try:
            pipe = broker.pipeline(transaction=False)
            for figures in celery:
                pipe.llen(figures.ref.celery_queue)
            pipe.hlen(CELERY_UNACKED)
            replies = pipe.execute()
            for figures, length in zip(celery, replies, strict=False):
                figures.length = int(length)
                # Delivered and unacknowledged messages are not on the list any more.
                figures.in_flight = 0
            celery[0].counters["unacked"] = int(replies[-1])
        except (redis.RedisError, OSError) as exc:
            for figures in celery:
                figures.error = f"the Celery broker does not answer: {exc}"
    return looks


# One read-only script per LOOK_CHUNK streams, in one pipeline: it answers every figure of any
# number of streams as a few flat values each, where six commands a stream made redis-py pack
# and parse thousands of replies (a list of 500 streams spent most of its time there). Chunks
# keep each script short, so Redis is never held for long.
LOOK_CHUNK = 50
# KEYS: per stream, its stream, dead letters, counters and producer counts. ARGV: the group.
# Per stream: length, dead letters, first id ('' if empty), the group's pending entries (-1:
# no group), the first undelivered id ('' if none), consumers (name, pending, idle ms; flat),
# counters and producer counts (flat). A key of another type reads as empty.
LOOK_SCRIPT = """
local group, out = ARGV[1], {}
for i = 1, #KEYS, 4 do
  local stream = KEYS[i]
  local length = redis.pcall('XLEN', stream)
  if type(length) ~= 'number' then length = 0 end
  local letters = redis.pcall('XLEN', KEYS[i + 1])
  if type(letters) ~= 'number' then letters = 0 end
  local first, pending, last, waiting, consumers = '', -1, '0-0', '', {}
  if length > 0 then first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1][1] end
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if not groups.err then
    for _, g in ipairs(groups) do
      local t = {}
      for j = 1, #g, 2 do t[g[j]] = g[j + 1] end
      if t['name'] == group then pending, last = t['pending'], t['last-delivered-id'] end
    end
  end
  if pending >= 0 then
    if length > pending then
      local next = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 1)
      if next[1] then waiting = next[1][1] end
    end
    local readers = redis.pcall('XINFO', 'CONSUMERS', stream, group)
    if not readers.err then
      for _, c in ipairs(readers) do
        local t = {}
        for j = 1, #c, 2 do t[c[j]] = c[j + 1] end
        table.insert(consumers, t['name'])
        table.insert(consumers, t['pending'])
        table.insert(consumers, t['idle'])
      end
    end
  end
  local counters = redis.pcall('HGETALL', KEYS[i + 2])
  if counters.err then counters = {} end
  local producers = redis.pcall('HGETALL', KEYS[i + 3])
  if producers.err then producers = {} end
  out[#out + 1] = {length, letters, first, pending, waiting, consumers, counters, producers}
end
return out
"""


def _look_streams(streams: list[Figures], client: redis.Redis, now: float) -> None:
    script = client.register_script(LOOK_SCRIPT)
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(streams), LOOK_CHUNK):
        keys = []
        for figures in streams[start : start + LOOK_CHUNK]:
            ref = figures.ref
            keys += [
                ref.stream,
                ref.dead_letters,
                contract.counters(ref.slug),
                contract.producer_counts(ref.slug),
            ]
        script(keys=keys, args=[contract.CONSUMER_GROUP], client=pipe)
    replies = [reply for chunk in pipe.execute() for reply in chunk]
    for figures, reply in zip(streams, replies, strict=True):
        length, letters, first, in_flight, waiting, consumers, counters, producers = reply
        figures.length = int(length)
        figures.dead_letters = int(letters)
        figures.oldest_age_seconds = _age(first, now)
        figures.counters = {key: _int(value) for key, value in _pairs(counters)}
        figures.producers = {key: _int(value) for key, value in _pairs(producers)}
        if int(in_flight) < 0:
            # Nobody has read the stream yet: everything in it waits for delivery.
            figures.lag_seconds = figures.oldest_age_seconds if figures.length else None
            continue
        figures.group_exists = True
        figures.in_flight = int(in_flight)
        figures.lag_seconds = _age(waiting, now)
        figures.consumers = [
            Consumer(
                name=name,
                pending=int(pending),
                idle_ms=int(idle),
                replica=contract.replica_of(name, figures.ref.slug),
            )
            for name, pending, idle in zip(*[iter(consumers)] * 3, strict=True)
        ]


def _pairs(flat: list) -> zip:
    """A flat [key, value, key, value, ...] reply as pairs."""
    return zip(flat[::2], flat[1::2], strict=True)


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


def latest_samples(names: list[str], now: datetime | None = None) -> dict[str, QueueSample]:
    """Each queue's newest raw sample of the last few sampling intervals, in one query."""
    now = now or timezone.now()
    within = timedelta(seconds=max(30, settings.QUEUE_SAMPLE_INTERVAL_SECONDS * 4))
    rows = (
        QueueSample.objects.filter(step=QueueSample.RAW, ts__gte=now - within, queue_name__in=names)
        .order_by("queue_name", "-ts")
        .distinct("queue_name")
    )
    return {row.queue_name: row for row in rows}


def with_rates(
    looks: list[Figures], samples: dict[str, QueueSample] | None = None
) -> list[Figures]:
    """Join each look with its queue's newest sample (the rates), then grade its health."""
    if samples is None:
        samples = latest_samples([f.name for f in looks])
    thresholds = thresholds_for([f.name for f in looks])
    for figures in looks:
        sample = samples.get(figures.name)
        if sample is not None:
            figures.in_rate = sample.in_rate
            figures.out_rate = sample.out_rate
            figures.error_rate = sample.error_rate
            figures.dlq_inflow = sample.dlq_inflow
            figures.sampled_at = sample.ts
            if not figures.ref.is_agent and sample.consumers:
                figures.consumers = consumers_from_json(sample.consumers)
        grade(figures, thresholds.get(figures.name, Thresholds.defaults()))
    return looks


def consumers_from_json(data: dict) -> list[Consumer]:
    return [Consumer(name=name, **values) for name, values in sorted(data.items())]


def consumers_to_json(consumers: list[Consumer]) -> dict:
    return {
        c.name: {
            key: value
            for key, value in (
                ("pending", c.pending),
                ("idle_ms", c.idle_ms),
                ("replica", c.replica),
                ("active", c.active),
                ("reserved", c.reserved),
            )
            if value is not None
        }
        for c in consumers
    }


# --- health -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """When a queue turns degraded and critical; ``None`` means that check is off."""

    backlog_degraded: float | None
    backlog_critical: float | None
    age_degraded_seconds: float | None
    age_critical_seconds: float | None
    error_rate_degraded: float | None
    error_rate_critical: float | None
    dlq_inflow_degraded: float | None
    dlq_inflow_critical: float | None
    own: bool = False  # the queue has overrides

    FIELDS = (
        "backlog_degraded",
        "backlog_critical",
        "age_degraded_seconds",
        "age_critical_seconds",
        "error_rate_degraded",
        "error_rate_critical",
        "dlq_inflow_degraded",
        "dlq_inflow_critical",
    )

    @classmethod
    def defaults(cls) -> Thresholds:
        s = settings
        return cls(
            s.QUEUE_BACKLOG_DEGRADED,
            s.QUEUE_BACKLOG_CRITICAL,
            s.QUEUE_AGE_DEGRADED_SECONDS,
            s.QUEUE_AGE_CRITICAL_SECONDS,
            s.QUEUE_ERROR_RATE_DEGRADED,
            s.QUEUE_ERROR_RATE_CRITICAL,
            s.QUEUE_DLQ_INFLOW_DEGRADED,
            s.QUEUE_DLQ_INFLOW_CRITICAL,
        )

    @classmethod
    def merged(cls, row: QueueThreshold) -> Thresholds:
        base = cls.defaults()
        values = {
            name: getattr(row, name) if getattr(row, name) is not None else getattr(base, name)
            for name in cls.FIELDS
        }
        return cls(**values, own=True)

    def as_dict(self) -> dict[str, float | None]:
        return {name: getattr(self, name) for name in self.FIELDS}


def thresholds_for(names: list[str]) -> dict[str, Thresholds]:
    """The thresholds of the queues that have their own (the rest take ``defaults()``)."""
    rows = QueueThreshold.objects.filter(queue_name__in=names)
    return {row.queue_name: Thresholds.merged(row) for row in rows}


def grade(figures: Figures, limits: Thresholds) -> None:
    """Set ``status`` (the worst check) and ``reasons`` (each check past its threshold)."""
    if figures.error:
        figures.status, figures.reasons = UNKNOWN, [figures.error]
        return
    checks = (
        (
            "backlog",
            figures.pending,
            limits.backlog_degraded,
            limits.backlog_critical,
            "{:,.0f} messages",
        ),
        (
            "oldest waiting message",
            figures.lag_seconds,
            limits.age_degraded_seconds,
            limits.age_critical_seconds,
            "{:,.0f} s",
        ),
        (
            "error rate",
            figures.error_rate,
            limits.error_rate_degraded,
            limits.error_rate_critical,
            "{:.1f} %",
        ),
        (
            "dead-letter inflow",
            figures.dlq_inflow,
            limits.dlq_inflow_degraded,
            limits.dlq_inflow_critical,
            "{:.1f}/min",
        ),
    )
    status, reasons = HEALTHY, []
    for label, value, degraded, critical, unit in checks:
        if value is None:
            continue
        if critical is not None and value >= critical and (critical > 0 or value > 0):
            level, limit = CRITICAL, critical
        elif degraded is not None and value >= degraded and (degraded > 0 or value > 0):
            level, limit = DEGRADED, degraded
        else:
            continue
        reasons.append(f"{label} {unit.format(value)} ≥ {unit.format(limit)} ({level})")
        if STATUS_ORDER[level] > STATUS_ORDER[status]:
            status = level
    figures.status, figures.reasons = status, reasons


def figures_json(figures: Figures) -> dict[str, Any]:
    """The figures as plain data (the API's and the CLI's shape)."""
    return json.loads(json.dumps(_plain(figures), default=str))


def _plain(f: Figures) -> dict[str, Any]:
    return {
        "queue_name": f.name,
        "kind": f.ref.kind,
        "title": f.ref.title,
        "agent": f.ref.slug or None,
        "status": f.status,
        "reasons": f.reasons,
        "messages_pending": f.pending,
        "in_flight": f.in_flight,
        "length": f.length,
        "throughput_per_sec": f.out_rate,
        "throughput_in_per_sec": f.in_rate,
        "consumer_lag": f.pending,
        "consumer_lag_seconds": f.lag_seconds,
        "oldest_age_seconds": f.oldest_age_seconds,
        "error_rate": f.error_rate,
        "dlq_messages": f.dead_letters,
        "dlq_inflow_per_min": f.dlq_inflow,
        "consumers": consumers_to_json(f.consumers),
        "sampled_at": f.sampled_at,
        "error": f.error or None,
    }
