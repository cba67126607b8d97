"""The flow diagram drawn from the traffic observed: agentd's per-producer counts, sampled."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from observability.queues import catalog, figures, flow
from observability.queues.models import QueueSample

pytestmark = pytest.mark.django_db


def _sample(name: str, seconds_ago: float, producers: dict) -> None:
    QueueSample.objects.create(
        queue_name=name, ts=timezone.now() - timedelta(seconds=seconds_ago), pending=0,
        producers=producers,
    )  # fmt: skip


def test_edges_follow_the_producers_that_sent_within_the_window(seeded, queue_redis):
    cache, event = "agents:wow-cache:tasks", "agents:wow-event:tasks"
    _sample(cache, 200, {"wow-memory": 100, "portal:ann": 5, "wow-search": 7})
    _sample(cache, 31, {"wow-memory": 130, "portal:ann": 5, "wow-search": 7})
    _sample(cache, 0, {"wow-memory": 190, "portal:ann": 5, "wow-search": 7})
    _sample(event, 400, {"portal:old": 1})  # before the window
    _sample(event, 10, {"portal:old": 1})
    _sample(event, 0, {"portal:old": 1})

    looks = figures.with_rates(figures.look(catalog.discover(), catalog.agent_redis(), None))
    graph = flow.diagram(looks)

    edges = {(e.source, e.target): e for e in graph.edges}
    memory = edges[("group:wow-memory", "stream:wow-cache")]
    assert memory.label == "1.9 msg/s"  # 60 in the last 31 s
    assert memory.status == "healthy"
    # Sent within the window but nothing lately, and a producer quiet all along: no edge for
    # the quiet one, an idle one for the other.
    assert ("producer:portal:ann", "stream:wow-cache") not in edges
    assert ("group:wow-search", "stream:wow-cache") not in edges
    assert ("producer:portal:old", "stream:wow-event") not in edges
    assert {n.id for n in graph.nodes} >= {
        "stream:wow-cache",
        "group:wow-cache",
        "stream:celery-celery",
    }
    assert not any(n.kind == "producer" for n in graph.nodes)


def test_a_producer_that_went_quiet_keeps_an_idle_edge_for_the_window(seeded, queue_redis):
    cache = "agents:wow-cache:tasks"
    _sample(cache, 200, {"portal:ann": 1})
    _sample(cache, 100, {"portal:ann": 9})
    _sample(cache, 0, {"portal:ann": 9})

    graph = flow.diagram(figures.look([catalog.resolve(cache)], catalog.agent_redis(), None))

    [edge] = [e for e in graph.edges if e.source == "producer:portal:ann"]
    assert (edge.label, edge.status) == ("idle", "idle")
    assert graph.node("producer:portal:ann").label == "portal:ann"
