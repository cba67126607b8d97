"""The queue list as the Queues page and ``manage.py queues list`` show it: every queue graded
(the registered agents' queues even while Redis does not answer), filtered and sorted by the
same keys. The API sorts by its field names and takes these keys as aliases."""

from __future__ import annotations

from collections.abc import Callable

import redis

from agents.models import Agent, State
from observability.queues import catalog, figures
from portal.refusals import BadRequest

# A - in front sorts biggest first; ties stay in name order.
SORTS: dict[str, Callable[[figures.Figures], float | str]] = {
    "name": lambda f: f.ref.title.lower(),
    "status": lambda f: figures.STATUS_ORDER[f.status],
    "pending": lambda f: f.pending,
    "in_flight": lambda f: f.in_flight,
    "in": lambda f: f.in_rate or 0,
    "out": lambda f: f.out_rate or 0,
    "lag": lambda f: f.lag_seconds or 0,
    "errors": lambda f: f.error_rate or 0,
    "dlq": lambda f: f.dead_letters,
}
DEFAULT_SORT = "-status"
STATUSES = [figures.HEALTHY, figures.DEGRADED, figures.CRITICAL, figures.UNKNOWN]
KINDS = [catalog.AGENT, catalog.CELERY]


class ListFilterError(BadRequest):
    """A sort key or filter the list cannot use (400); the message says what to use."""


def parse_sort(value: str | None, example: str = "sort=-dlq") -> tuple[str, bool]:
    """(key, descending) from ``-dlq``, ``name``...; the default when empty."""
    raw = (value or "").strip() or DEFAULT_SORT
    key = raw.lstrip("-")
    if key not in SORTS:
        raise ListFilterError(
            f"Cannot sort by {raw[:40]!r}: choose one of {', '.join(SORTS)} (a - in front "
            f"reverses: {example})."
        )
    return key, raw.startswith("-")


def look_all(agent_slug: str | None = None) -> tuple[list[figures.Figures], str]:
    """Every queue (or one agent's) graded; with a sentence when Redis could not be asked."""
    client, broker = catalog.agent_redis(), catalog.broker_redis()
    try:
        refs = catalog.discover(client, agent_slug=agent_slug)
    except (redis.RedisError, OSError) as exc:
        agents = Agent.objects.exclude(state=State.REVOKED).order_by("name")
        if agent_slug is not None:
            agents = agents.filter(slug=agent_slug)
        refs = [catalog.for_agent(agent) for agent in agents]
        problem = f"Redis does not answer ({exc}); the figures will be back when it does."
        return figures.with_rates(figures.look(refs, client, broker)), problem
    return figures.with_rates(figures.look(refs, client, broker)), ""


def choose(
    looks: list[figures.Figures],
    *,
    statuses: set[str] | None = None,
    kinds: set[str] | None = None,
    text: str = "",
    sort: tuple[str, bool] | None = ("status", True),
) -> list[figures.Figures]:
    """The queues that pass the filters, sorted (ties in name order); ``sort=None`` keeps the
    order given (the API sorts by its own field names)."""
    text = text.lower()
    rows = [
        f
        for f in looks
        if (not statuses or f.status in statuses)
        and (not kinds or f.ref.kind in kinds)
        and (not text or text in f"{f.ref.title} {f.name}".lower())
    ]
    if sort is None:
        return rows
    key, descending = sort
    rows.sort(key=lambda f: f.ref.title.lower())
    rows.sort(key=SORTS[key], reverse=descending)
    return rows
