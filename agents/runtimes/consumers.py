"""Tidying an agent's consumer group after replicas are forgotten.

A replica reads its agent's streams as the consumer ``<slug>-<n>``, and Redis keeps a consumer
in the group until it is deleted. When a replica numbered past the agent's count stops for good
(a rolling restart's spare, an upgrade's surge), its consumer would stay listed on the Queues
page forever. It is deleted here, but only while it holds no pending entry: deleting a consumer
drops what it holds, and those entries must wait to be claimed by a live replica instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis

from ..agentd import contract
from .base import AgentSpec

log = logging.getLogger(__name__)


def forget_consumers(spec: AgentSpec, replicas: Sequence[int]) -> list[str]:
    """Delete the consumers of ``replicas`` numbered ``spec.replicas`` or more from every
    stream of the agent, unless they hold pending entries; answers the names deleted. Best
    effort: Redis being away leaves them listed, which is harmless."""
    names = {contract.consumer_name(spec.slug, r) for r in replicas if r >= spec.replicas}
    if not names:
        return []
    deleted: set[str] = set()
    try:
        client = redis.Redis.from_url(spec.redis_url, decode_responses=True)
        try:
            for stream in client.scan_iter(match=f"agents:{spec.slug}:tasks*", _type="STREAM"):
                deleted |= _delete_idle(client, stream, names)
        finally:
            client.close()
    except (redis.RedisError, OSError) as error:
        log.warning("could not tidy the consumers of %s: %s", spec.slug, error)
    return sorted(deleted)


def _delete_idle(client: redis.Redis, stream: str, names: set[str]) -> set[str]:
    try:
        rows = client.xinfo_consumers(stream, contract.CONSUMER_GROUP)
    except redis.ResponseError:
        return set()  # no group on this stream
    deleted = set()
    for row in rows:
        if row["name"] in names and not int(row.get("pending") or 0):
            client.xgroup_delconsumer(stream, contract.CONSUMER_GROUP, row["name"])
            deleted.add(row["name"])
    return deleted
