"""The flow diagram: producers → streams → consumer groups (replicas) → dead letters, for the
whole fleet, drawn from the traffic actually observed.

Edges from producers come from agentd's per-producer counts (``contract.producer_counts``),
sampled into ``QueueSample.producers``: an edge is drawn when a producer's count grew within
the last :data:`WINDOW`, labelled with its rate over that window. A producer that is an agent is
drawn as that agent's consumer group (its replicas produce the task), so agent-to-agent traffic
links one agent's replicas to another's stream. Other producers (``portal:<user>``,
``workflow:<run>``, ``customer:<id>``) are nodes of their own on the left.
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from observability.queues.figures import Figures
from observability.queues.models import QueueSample
from portal.graphs import Graph, GraphEdge, GraphNode

WINDOW = timedelta(minutes=5)
RECENT = timedelta(seconds=30)
UNKNOWN_PRODUCER = "(no producer)"
_SPACES = re.compile(r"\s")


def producer_rates(names: list[str], now=None) -> dict[str, dict[str, float]]:
    """Per queue, each producer that sent something in the last :data:`WINDOW`, with its tasks
    per second over the last :data:`RECENT` (0 when it has gone quiet since), from the raw
    samples' per-producer counts, in one query."""
    now = now or timezone.now()
    rows = (
        QueueSample.objects.filter(step=QueueSample.RAW, queue_name__in=names, ts__gte=now - WINDOW)
        .order_by("queue_name", "ts")
        .values_list("queue_name", "ts", "producers")
    )
    by_queue: dict[str, list[tuple]] = {}
    for name, ts, producers in rows:
        by_queue.setdefault(name, []).append((ts, producers or {}))
    rates: dict[str, dict[str, float]] = {}
    for name, samples in by_queue.items():
        (first_ts, first), (last_ts, last) = samples[0], samples[-1]
        # The rate is over the last RECENT: from the newest sample at least that old.
        recent_ts, recent = samples[0]
        for ts, producers in samples:
            if ts <= now - RECENT:
                recent_ts, recent = ts, producers
        seconds = (last_ts - recent_ts).total_seconds()
        if (last_ts - first_ts).total_seconds() <= 0:
            continue
        sent = {}
        for producer, count in last.items():
            if _grew(first.get(producer, 0), count) <= 0:
                continue  # quiet for the whole window: no edge
            sent[producer] = _grew(recent.get(producer, 0), count) / seconds if seconds > 0 else 0.0
        rates[name] = sent
    return rates


def _grew(before: int, now: int) -> int:
    return now - before if now >= before else now  # a count that went down started again


def _rate(value: float | None, unit: str = "/s") -> str:
    if not value:
        return ""
    return f"{value:.1f} msg{unit}" if value >= 0.1 else f"{value * 60:.1f} msg/min"


def diagram(looks: list[Figures]) -> Graph:
    """The flow as a graph for ``portal/graph.html``: ids, labels, statuses, links."""
    names = [f.name for f in looks]
    rates = producer_rates(names)
    nodes: list[GraphNode] = []
    edges: list[GraphEdge] = []
    slugs = {f.ref.slug for f in looks if f.ref.is_agent}
    outside: set[str] = set()
    for f in looks:
        href = reverse("queues:detail", args=[f.name])
        key = f.ref.slug if f.ref.is_agent else f"celery-{f.ref.celery_queue}"
        stream_id, group_id, dlq_id = f"stream:{key}", f"group:{key}", f"dlq:{key}"
        waiting = f"{f.pending:,} waiting · {f.in_flight:,} in flight"
        nodes.append(
            GraphNode(stream_id, f.ref.title, waiting, "stream", f.status, href,
                      "; ".join(f.reasons) or f.status)
        )  # fmt: skip
        replicas = len(f.consumers) if f.consumers else f.ref.replicas
        group_label = "workers" if not f.ref.is_agent else "replicas"
        nodes.append(
            GraphNode(group_id, f"{f.ref.title} {group_label}",
                      f"{replicas} {group_label}" + (f" · {_rate(f.out_rate)}" if f.out_rate else ""),
                      "group", f.status, href)
        )  # fmt: skip
        edges.append(
            GraphEdge(stream_id, group_id, _rate(f.out_rate), "healthy" if f.out_rate else "idle")
        )
        if f.ref.is_agent and (f.dead_letters or f.dlq_inflow):
            nodes.append(
                GraphNode(dlq_id, f"{f.ref.title} dead letters", f"{f.dead_letters:,} messages",
                          "dlq", "critical" if f.dlq_inflow else "degraded", href + "#dead-letters")
            )  # fmt: skip
            edges.append(
                GraphEdge(
                    group_id, dlq_id, _inflow(f.dlq_inflow), "failed" if f.dlq_inflow else "idle"
                )
            )
        for producer, rate in sorted(rates.get(f.name, {}).items()):
            if producer in slugs:
                source = f"group:{producer}"
            else:
                source = f"producer:{_token(producer or UNKNOWN_PRODUCER)}"
                outside.add(producer or UNKNOWN_PRODUCER)
            edges.append(
                GraphEdge(source, stream_id, _rate(rate) or "idle", "healthy" if rate else "idle")
            )
    for producer in sorted(outside):
        nodes.append(
            GraphNode(f"producer:{_token(producer)}", producer, "", "producer", "producer")
        )
    known = {node.id for node in nodes}
    edges = [edge for edge in edges if edge.source in known]  # a producer agent not shown
    return Graph(nodes, edges, "RIGHT", "Flow of tasks between producers, queues and replicas")


def _token(text: str) -> str:
    return _SPACES.sub("_", text)[:120]


def _inflow(per_minute: float | None) -> str:
    return f"{per_minute:.1f}/min" if per_minute else ""
