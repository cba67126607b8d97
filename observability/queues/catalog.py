"""Which queues there are: one Redis stream per agent (``agents:<slug>:tasks``, read by the
consumer group agentd's contract names, dead letters beside it) and the portal's own Celery
queue. A queue is known by its ``queue_name``: the stream's key, or ``celery:<queue>``.

An agent stream is listed when its agent is registered (and not revoked) or when the stream
exists in Redis without one (producers may write to a slug before it is registered).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import redis
from django.conf import settings

from agents.agentd import contract
from agents.models import Agent, State
from portal.refusals import Refused

AGENT = "agent"
CELERY = "celery"
CELERY_PREFIX = "celery:"
STREAM_PATTERN = contract.task_stream("*")
SCAN_BATCH = 1000


class QueueNotFound(Refused):
    """No queue by that name: answered 404."""

    default_status = 404
    default_code = "not_found"


class QueueRefused(Refused):
    """An action a queue cannot take (409), or input it cannot use (400, code ``invalid``)."""

    status_by_code = {**Refused.status_by_code, "invalid": 400, "forbidden": 403}


@dataclass(frozen=True)
class QueueRef:
    """One queue: its name, what kind it is, and the Redis keys behind it."""

    name: str
    kind: str
    slug: str = ""
    agent_id: int | None = None
    agent_name: str = ""
    replicas: int = 0
    agent_state: str = ""
    ports: tuple[int, ...] = ()  # each replica's HTTP port, where the portal can reach it

    @property
    def is_agent(self) -> bool:
        return self.kind == AGENT

    @property
    def title(self) -> str:
        if self.is_agent:
            return self.agent_name or self.slug
        return f"Celery · {self.celery_queue}"

    @property
    def stream(self) -> str:
        return contract.task_stream(self.slug)

    @property
    def dead_letters(self) -> str:
        return contract.dead_letters(self.slug)

    @property
    def group(self) -> str:
        return contract.CONSUMER_GROUP

    @property
    def celery_queue(self) -> str:
        return self.name.removeprefix(CELERY_PREFIX)


def agent_redis() -> redis.Redis:
    """A client on the Redis the agents' streams live in (strings decoded)."""
    return _client(settings.AGENT_REDIS_URL)


def broker_redis() -> redis.Redis:
    """A client on the Celery broker."""
    return _client(settings.CELERY_BROKER_URL)


@cache
def _pool(url: str) -> redis.ConnectionPool:
    # Bytes that are not UTF-8 (agentd keeps a task's bytes as they came) are shown replaced,
    # never a crash; the redrive scripts move the exact bytes inside Redis.
    return redis.ConnectionPool.from_url(
        url,
        decode_responses=True,
        encoding_errors="replace",
        socket_timeout=5,
        socket_connect_timeout=2,
    )


def _client(url: str) -> redis.Redis:
    return redis.Redis(connection_pool=_pool(url))


def celery_queues() -> list[str]:
    """The Celery queues the portal's workers read (today the default one)."""
    return [getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "") or "celery"]


def slug_of_stream(stream: str) -> str | None:
    prefix, suffix = contract.task_stream("\0").split("\0")
    if stream.startswith(prefix) and stream.endswith(suffix):
        slug = stream[len(prefix) : len(stream) - len(suffix)]
        return slug or None
    return None


def _agent_ref(agent: Agent) -> QueueRef:
    return QueueRef(
        name=contract.task_stream(agent.slug),
        kind=AGENT,
        slug=agent.slug,
        agent_id=agent.pk,
        agent_name=agent.name,
        replicas=agent.replicas,
        agent_state=agent.state,
        ports=tuple(int(port) for port in (agent.runtime_details or {}).get("ports") or ()),
    )


def _stream_ref(slug: str) -> QueueRef:
    return QueueRef(name=contract.task_stream(slug), kind=AGENT, slug=slug)


def _celery_ref(queue: str) -> QueueRef:
    return QueueRef(name=CELERY_PREFIX + queue, kind=CELERY)


def discover(client: redis.Redis | None = None, *, agent_slug: str | None = None) -> list[QueueRef]:
    """Every queue: the registered agents' streams (by agent name), streams without an agent
    (by slug), then the Celery queues. With ``agent_slug``, only that agent's stream."""
    agents = Agent.objects.exclude(state=State.REVOKED).only(
        "id", "slug", "name", "replicas", "state", "runtime_details"
    )
    if agent_slug is not None:
        return [_agent_ref(agent) for agent in agents.filter(slug=agent_slug)]
    refs = [_agent_ref(agent) for agent in agents.order_by("name")]
    known = {ref.slug for ref in refs}
    revoked = set(Agent.objects.filter(state=State.REVOKED).values_list("slug", flat=True))
    client = client or agent_redis()
    orphans = set()
    for key in client.scan_iter(match=STREAM_PATTERN, count=SCAN_BATCH, _type="stream"):
        slug = slug_of_stream(key)
        if slug and slug not in known and slug not in revoked:
            orphans.add(slug)
    refs.extend(_stream_ref(slug) for slug in sorted(orphans))
    refs.extend(_celery_ref(queue) for queue in celery_queues())
    return refs


def resolve(name: str, client: redis.Redis | None = None) -> QueueRef:
    """The queue called ``name`` (a ``queue_name`` from the list), or ``QueueNotFound``."""
    if "\x00" in name or len(name) > 200:
        raise QueueNotFound(_unknown(name[:80]))
    if name.startswith(CELERY_PREFIX):
        queue = name.removeprefix(CELERY_PREFIX)
        if queue in celery_queues():
            return _celery_ref(queue)
        raise QueueNotFound(_unknown(name))
    slug = slug_of_stream(name)
    if slug is None:
        raise QueueNotFound(_unknown(name))
    agent = (
        Agent.objects.filter(slug=slug)
        .only("id", "slug", "name", "replicas", "state", "runtime_details")
        .first()
    )
    if agent is not None and agent.state != State.REVOKED:
        return _agent_ref(agent)
    if agent is None and (client or agent_redis()).exists(name):
        return _stream_ref(slug)
    raise QueueNotFound(_unknown(name))


def for_agent(agent: Agent) -> QueueRef:
    return _agent_ref(agent)


def _unknown(name: str) -> str:
    return (
        f"There is no queue {name!r}. Queue names are an agent's stream "
        f"({contract.task_stream('<slug>')}) or celery:<queue>; the Queues page and "
        f"GET /api/platform/queues list them."
    )
