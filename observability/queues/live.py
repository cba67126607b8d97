"""The queue pages' live updates: a beat on a topic, on which an open page fetches its own
region again (with its own sort and filters), through the live-topic extension point.

=====================================  ===========================  ===========================
the page subscribes to                  beat element                 the page's region listens
=====================================  ===========================  ===========================
``queues`` (the list, the flow)         ``#queues-beat``             ``queues:changed``
``queue:<key>`` (one queue's page)      ``#queue-beat-<key>``        ``queue:changed``
=====================================  ===========================  ===========================

``<key>`` is :func:`topic_key` of the queue (its agent's slug; ``celery__<queue>``). The beat
carries ``data-beat-event``, which ``static/js/portal.js`` turns into that event on the body. The
sampler beats both after every sample; a dead-letter change (an edit, a job's progress) beats
the queue's topic at once.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time

from agents.models import Agent, State
from observability.queues import catalog
from observability.queues.catalog import QueueRef
from portal import realtime

logger = logging.getLogger(__name__)

LIST_TOPIC = "queues"
QUEUE_KIND = "queue"
LIST_EVENT = "queues:changed"
QUEUE_EVENT = "queue:changed"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def topic_key(ref: QueueRef) -> str:
    raw = ref.slug if ref.is_agent else f"celery__{ref.celery_queue}"
    return _UNSAFE.sub("_", raw)[:64]


def register_topics() -> None:
    def existing(keys: list[str]) -> set[str]:
        try:
            refs = catalog.discover()
        except Exception:  # Redis away: the registered agents' queues still count
            refs = [
                catalog.for_agent(agent) for agent in Agent.objects.exclude(state=State.REVOKED)
            ]
        return {topic_key(ref) for ref in refs} & set(keys)

    realtime.register_topic(LIST_TOPIC)
    realtime.register_topic_kind(QUEUE_KIND, existing=existing)


def list_group() -> str:
    return realtime.topic_group(LIST_TOPIC)


def queue_group(ref: QueueRef) -> str:
    return realtime.kind_group(QUEUE_KIND, topic_key(ref))


def beat_html(element_id: str, event: str) -> str:
    return (
        f'<span id="{element_id}" hidden data-beat-event="{event}" data-at="{time.time():.3f}">'
        "</span>"
    )


def beat_id(ref: QueueRef | None = None) -> str:
    return "queues-beat" if ref is None else f"queue-beat-{topic_key(ref)}"


def sampled(refs: list[QueueRef]) -> None:
    """After a sample: beat the list and every queue page someone has open. Never raises."""
    try:
        groups = {queue_group(ref): ref for ref in refs}
        watched = realtime.watched([list_group(), *groups])
        if list_group() in watched:
            realtime.publish(list_group(), {beat_id(): beat_html(beat_id(), LIST_EVENT)})
        for group, ref in groups.items():
            if group in watched:
                realtime.publish(group, {beat_id(ref): beat_html(beat_id(ref), QUEUE_EVENT)})
    except Exception:
        logger.exception("could not beat the queue pages")


def dead_letters_changed(ref: QueueRef) -> None:
    """A queue's dead letters changed now (an edit, a job's batch): beat its page."""
    try:
        group = queue_group(ref)
        if group in realtime.watched([group]):
            realtime.publish(group, {beat_id(ref): beat_html(beat_id(ref), QUEUE_EVENT)})
    except Exception:
        logger.exception("could not beat %s's page", ref.name)


def job_changed(job) -> None:
    with contextlib.suppress(catalog.QueueNotFound):
        dead_letters_changed(catalog.resolve(job.queue_name))
