"""Every queue's figures sampled on an interval (beat: ``QUEUE_SAMPLE_INTERVAL_SECONDS``) into
``QueueSample``: the history behind the charts and the rates behind the list.

Rates come from the agents' queue counters (``contract.counters``) between two looks: what went
out is what agentd processed or dead-lettered; what came in is that plus the stream's growth
plus what the portal purged. The previous look is kept in one Redis hash; losing it costs one
interval without rates. A counter that went down (Redis restarted empty) counts from zero.

The Celery queue's workers are asked by broadcast (``inspect``: active, reserved and stats), at
most once per sample; what they processed since they started gives its out rate.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

import redis
from celery import current_app
from django.db import connection
from django.utils import timezone

from agents.agentd import contract
from observability.queues import catalog, figures
from observability.queues.figures import Consumer, Figures
from observability.queues.models import QueueSample

logger = logging.getLogger(__name__)

PREVIOUS_KEY = "observability:queues:previous"
# Kombu's Redis transport waits for replies with a BRPOP that blocks for up to 1 s. A broadcast
# that gives up sooner leaves that BRPOP pending on the old reply queue, and the next broadcast's
# replies are deleted unread: with 0.5 s, every other broadcast that waits its whole timeout lost
# all its answers. So the timeout is at least the BRPOP's.
INSPECT_TIMEOUT_SECONDS = 1.0
WORKERS_SEEN_KEY = "observability:queues:workers-seen"
RUNNING = "running"  # Celery: the tasks its workers run now


def sample_all(now: datetime | None = None, *, inspect_workers: bool = True) -> list[Figures]:
    """Look at every queue, store one raw sample each, and answer the graded figures."""
    now = (now or timezone.now()).replace(microsecond=0)
    client = catalog.agent_redis()
    broker = catalog.broker_redis()
    try:
        refs = catalog.discover(client)
    except (redis.RedisError, OSError) as exc:
        logger.warning("cannot list the queues: Redis does not answer (%s)", exc)
        return []
    looks = figures.look(refs, client, broker)
    if inspect_workers:
        _celery_workers([f for f in looks if not f.ref.is_agent])
    samples = [_sample(f, now) for f in looks if not f.error]
    _rates(samples, looks, client)
    QueueSample.objects.bulk_create(samples, ignore_conflicts=True)
    return figures.with_rates(looks, {s.queue_name: s for s in samples})


def _sample(f: Figures, now: datetime) -> QueueSample:
    return QueueSample(
        queue_name=f.name,
        ts=now,
        step=QueueSample.RAW,
        pending=f.pending,
        in_flight=f.in_flight,
        lag_seconds=f.lag_seconds,
        oldest_age_seconds=f.oldest_age_seconds,
        dead_letters=f.dead_letters,
        consumers=figures.consumers_to_json(f.consumers),
        producers=f.producers,
    )


def _counts(f: Figures) -> dict[str, float]:
    c = f.counters
    return {
        "at": f.at,
        # What has not gone out yet: a Celery worker counts a task as taken when it starts it, so
        # the tasks it runs are out already though the queue's length still shows them.
        "length": f.length - c.get(RUNNING, 0),
        "processed": c.get(contract.COUNTER_PROCESSED, 0),
        "failed": c.get(contract.COUNTER_FAILED, 0),
        "dead_lettered": c.get(contract.COUNTER_DEAD_LETTERED, 0),
        "purged": c.get(contract.COUNTER_PURGED, 0),
    }


def _increase(before: float, now: float) -> float:
    return now - before if now >= before else now


def _rates(samples: list[QueueSample], looks: list[Figures], client: redis.Redis) -> None:
    by_name = {f.name: f for f in looks}
    current = {s.queue_name: _counts(by_name[s.queue_name]) for s in samples}
    try:
        previous_raw = client.hmget(PREVIOUS_KEY, list(current)) if current else []
        if current:
            client.hset(PREVIOUS_KEY, mapping={name: json.dumps(c) for name, c in current.items()})
            client.expire(PREVIOUS_KEY, 3600)
    except (redis.RedisError, OSError) as exc:
        logger.info("cannot keep the queues' previous look: %s", exc)
        return
    for sample, raw in zip(samples, previous_raw, strict=True):
        if not raw:
            continue
        before, now = json.loads(raw), current[sample.queue_name]
        seconds = now["at"] - before["at"]
        if seconds <= 0:
            continue
        processed = _increase(before["processed"], now["processed"])
        failed = _increase(before["failed"], now["failed"])
        lettered = _increase(before["dead_lettered"], now["dead_lettered"])
        purged = _increase(before["purged"], now["purged"])
        out = processed + lettered
        grown = now["length"] - before["length"]
        sample.out_rate = out / seconds
        sample.in_rate = max(0.0, grown + out + purged) / seconds
        attempts = processed + failed
        sample.error_rate = 100.0 * failed / attempts if attempts else None
        sample.dlq_inflow = 60.0 * lettered / seconds
        if not by_name[sample.queue_name].ref.is_agent:
            _celery_rates(sample, before, now, seconds)


def _celery_rates(sample: QueueSample, before: dict, now: dict, seconds: float) -> None:
    """For Celery, ``processed`` is what the workers say they took (their stats)."""
    sample.error_rate = None
    sample.dlq_inflow = None


def _celery_workers(looks: list[Figures]) -> None:
    """Ask the workers what they run and hold (one broadcast each); fills consumers and the
    processed counter (total taken since each worker started)."""
    if not looks:
        return
    client = catalog.broker_redis()
    try:
        # Each broadcast ends as soon as the workers seen last time have answered (else after
        # the timeout), so a sample costs milliseconds rather than three timeouts; one sample
        # in twelve waits the whole timeout, to find workers that joined since.
        known = int(client.get(WORKERS_SEEN_KEY) or 0) or None
        if client.incr(WORKERS_SEEN_KEY + ":looks") % 12 == 0:
            known = None
        inspect = current_app.control.inspect(timeout=INSPECT_TIMEOUT_SECONDS, limit=known)
        active = inspect.active() or {}
        reserved = inspect.reserved() or {}
        stats = inspect.stats() or {}
        seen = len(set(active) | set(reserved) | set(stats))
        client.set(WORKERS_SEEN_KEY, seen, ex=600)
    except Exception as exc:  # the broker is away: the sample goes without worker figures
        logger.info("cannot ask the Celery workers: %s", exc)
        return
    for f in looks:
        queue = f.ref.celery_queue
        workers = sorted(set(active) | set(reserved) | set(stats))
        f.consumers = [
            Consumer(
                name=worker,
                pending=len(_on_queue(active.get(worker), queue))
                + len(_on_queue(reserved.get(worker), queue)),
                active=len(_on_queue(active.get(worker), queue)),
                reserved=len(_on_queue(reserved.get(worker), queue)),
            )
            for worker in workers
        ]
        f.in_flight = sum(c.pending for c in f.consumers)
        f.length += f.in_flight  # the list holds what waits; the workers hold the rest
        taken = sum(sum((stats.get(w) or {}).get("total", {}).values()) for w in workers)
        f.counters[contract.COUNTER_PROCESSED] = taken
        f.counters[RUNNING] = sum(c.active or 0 for c in f.consumers)


def _on_queue(tasks: list | None, queue: str) -> list:
    return [
        t for t in tasks or [] if (t.get("delivery_info") or {}).get("routing_key", queue) == queue
    ]


# --- downsampling and retention ---------------------------------------------------------------

ROLLUP_SQL = """
INSERT INTO observability_queuesample (
    queue_name, ts, step, pending, in_flight, in_rate, out_rate, lag_seconds, oldest_age_seconds,
    error_rate, dead_letters, dlq_inflow, consumers, producers, samples
)
SELECT queue_name, date_bin('300 seconds', ts, TIMESTAMPTZ '1970-01-01 00:00:00+00'), %(step)s,
    avg(pending), avg(in_flight), avg(in_rate), avg(out_rate), avg(lag_seconds),
    avg(oldest_age_seconds), avg(error_rate), avg(dead_letters), avg(dlq_inflow), '{}'::jsonb,
    '{}'::jsonb, count(*)
FROM observability_queuesample
WHERE step = 0 AND ts >= %(start)s AND ts < %(end)s
GROUP BY 1, 2
ON CONFLICT (queue_name, step, ts) DO UPDATE SET
    pending = EXCLUDED.pending, in_flight = EXCLUDED.in_flight, in_rate = EXCLUDED.in_rate,
    out_rate = EXCLUDED.out_rate, lag_seconds = EXCLUDED.lag_seconds,
    oldest_age_seconds = EXCLUDED.oldest_age_seconds, error_rate = EXCLUDED.error_rate,
    dead_letters = EXCLUDED.dead_letters, dlq_inflow = EXCLUDED.dlq_inflow,
    samples = EXCLUDED.samples
"""


def downsample(now: datetime | None = None, lookback: timedelta = timedelta(hours=2)) -> int:
    """Average every finished 5-minute bucket of the last ``lookback`` (idempotent)."""
    now = now or timezone.now()
    end = _bucket_start(now)
    start = _bucket_start(now - lookback)
    with connection.cursor() as cursor:
        cursor.execute(ROLLUP_SQL, {"step": QueueSample.ROLLUP, "start": start, "end": end})
        return cursor.rowcount


def _bucket_start(moment: datetime) -> datetime:
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % QueueSample.ROLLUP, tz=moment.tzinfo)


def purge(raw_before: datetime, rollup_before: datetime) -> int:
    deleted = QueueSample.objects.filter(step=QueueSample.RAW, ts__lt=raw_before).delete()[0]
    deleted += QueueSample.objects.filter(step=QueueSample.ROLLUP, ts__lt=rollup_before).delete()[0]
    return deleted
