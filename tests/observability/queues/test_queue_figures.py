"""Figures of many streams at once: ``figures.look`` reads them by one script per
``figures.LOOK_CHUNK`` streams, and every stream must get its own figures back."""

from __future__ import annotations

from agents.agentd import contract
from observability.queues import catalog, figures
from observability.queues.catalog import AGENT, QueueRef


def _ref(slug: str) -> QueueRef:
    return QueueRef(name=contract.task_stream(slug), kind=AGENT, slug=slug)


def test_more_streams_than_a_chunk_each_get_their_own_figures(queue_redis):
    slugs = [f"orphan-{n:03d}" for n in range(figures.LOOK_CHUNK * 2 + 7)]
    for n, slug in enumerate(slugs):
        stream = contract.task_stream(slug)
        for i in range(n % 5 + 1):
            queue_redis.xadd(stream, {"n": str(i)})
        for _ in range(n % 3):
            queue_redis.xadd(contract.dead_letters(slug), {contract.DLQ_ERROR: "boom"})
        queue_redis.hset(contract.counters(slug), contract.COUNTER_PROCESSED, n)
        if n % 2 == 0:
            queue_redis.xgroup_create(stream, contract.CONSUMER_GROUP, id="0")
        if n % 4 == 0:
            consumer = contract.consumer_name(slug, 1)
            queue_redis.xreadgroup(contract.CONSUMER_GROUP, consumer, {stream: ">"}, count=1)
    queue_redis.hset(contract.task_stream("not-a-stream"), "a", "1")
    refs = [_ref(slug) for slug in slugs]
    refs.insert(figures.LOOK_CHUNK - 1, _ref("not-a-stream"))

    looks = figures.look(refs, catalog.agent_redis(), None)

    by_slug = {look.ref.slug: look for look in looks}
    odd = by_slug.pop("not-a-stream")
    assert (odd.length, odd.dead_letters, odd.group_exists, odd.error) == (0, 0, False, "")
    for n, slug in enumerate(slugs):
        look = by_slug[slug]
        assert (look.length, look.dead_letters) == (n % 5 + 1, n % 3), slug
        assert look.counters == {contract.COUNTER_PROCESSED: n}, slug
        assert look.group_exists == (n % 2 == 0), slug
        assert look.in_flight == (1 if n % 4 == 0 else 0), slug
        assert [(c.name, c.pending, c.replica) for c in look.consumers] == (
            [(contract.consumer_name(slug, 1), 1, 1)] if n % 4 == 0 else []
        ), slug
        assert look.oldest_age_seconds is not None
        waiting = look.length - look.in_flight
        assert (look.lag_seconds is not None) == (waiting > 0), slug
