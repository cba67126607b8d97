"""Version routing: while two versions of an agent run side by side (blue-green, canary), which
version takes which tasks. Read by agentd, written by the portal; redis-py only, no Django.

The portal writes the routing hash (``contract.routing_key``). Replicas of the serving version
read the agent's main stream and hand each task whose key falls in the canary's share on to the
canary's own stream (``contract.version_stream``); every replica also reads its own version's
stream, where the portal's preview tests and the canary's share arrive. Without the hash every
replica reads the main stream and takes everything, as before routing existed. A replica reads
the hash at most every ROUTING_REFRESH_SECONDS, so for that long after a change it may still act
on the old routing: wait that long before moving a version's leftovers (:func:`move_tasks`).

Moving a task from one stream to another is one script (it adds the copy, acknowledges and
deletes the original), so an interrupted move loses and doubles nothing, and a task someone else
took or deleted meanwhile is not copied.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import redis

from . import contract
from .log import JsonLogger
from .metrics import Metrics

# How long a replica trusts the routing it read last.
ROUTING_REFRESH_SECONDS = 0.5
MOVE_BATCH = 100

# KEYS: source stream, target stream, and (optionally) the failures and attempts hashes.
# ARGV: consumer group, message id, the field the task's failures are counted under.
# Answers the copy's id on the target, or false when the entry is no longer on the source.
# XACK is a pcall: a source nobody ever read has no group, and the move must still happen.
MOVE_SCRIPT = """
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #entry == 0 then return false end
local new_id = redis.call('XADD', KEYS[2], '*', unpack(entry[1][2]))
redis.pcall('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if #KEYS == 4 then
  redis.call('HDEL', KEYS[3], ARGV[3])
  redis.call('HDEL', KEYS[4], ARGV[3])
end
return new_id
"""

_ERRORS = (redis.RedisError, OSError)


@dataclass(frozen=True)
class Routing:
    """Who takes the agent's main-stream tasks: ``serving``, except the ``weight`` percent of
    task keys that go to ``canary`` (when there is one)."""

    serving: str
    canary: str = ""
    weight: int = 0

    def target(self, key: str) -> str:
        """The version a main-stream task with this key goes to."""
        if self.canary and contract.canary_bucket(key) < self.weight:
            return self.canary
        return self.serving


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_routing(client: redis.Redis, slug: str) -> Routing | None:
    """The agent's routing, or None when there is none (every replica takes everything)."""
    raw = client.hgetall(contract.routing_key(slug))
    values = {_text(key): _text(value) for key, value in raw.items()}
    serving = values.get(contract.ROUTING_SERVING, "")
    if not serving:
        return None
    try:
        weight = min(max(int(values.get(contract.ROUTING_WEIGHT) or 0), 0), 100)
    except ValueError:
        weight = 0  # not written by set_routing; no share rather than a guess
    return Routing(serving, values.get(contract.ROUTING_CANARY, ""), weight)


def set_routing(
    client: redis.Redis, slug: str, serving: str, canary: str = "", weight: int = 0
) -> Routing:
    """Route the agent's main stream to ``serving``, ``weight`` percent of it to ``canary``;
    raises ValueError for a bad value. Replaced whole in one transaction, so a reader never sees
    half of it."""
    if not isinstance(serving, str) or not serving:
        raise ValueError("serving must be a version (a non-empty string)")
    if not isinstance(canary, str):
        raise ValueError("canary must be a version or empty")
    if canary == serving:
        raise ValueError(f"the canary must be another version than the serving one ({serving})")
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise ValueError("weight must be a whole number from 0 to 100")
    key = contract.routing_key(slug)
    pipeline = client.pipeline(transaction=True)
    pipeline.delete(key)
    pipeline.hset(
        key,
        mapping={
            contract.ROUTING_SERVING: serving,
            contract.ROUTING_CANARY: canary,
            contract.ROUTING_WEIGHT: str(weight),
        },
    )
    pipeline.execute()
    return Routing(serving, canary, weight)


def clear_routing(client: redis.Redis, slug: str) -> None:
    """Drop the agent's routing: every replica takes everything again."""
    client.delete(contract.routing_key(slug))


def failure_field(slug: str, stream: str, message_id: str) -> str:
    """The field of the failures and attempts hashes a task is counted under: its id on the
    agent's main stream, ``<stream>/<id>`` on a version stream (two streams' ids can be equal)."""
    return message_id if stream == contract.task_stream(slug) else f"{stream}/{message_id}"


def move_task(
    client: redis.Redis,
    source_stream: str,
    target_stream: str,
    message_id: str,
    group: str = contract.CONSUMER_GROUP,
    slug: str | None = None,
) -> str | None:
    """Move one entry (same fields) to the end of ``target_stream``, acknowledged and deleted on
    the source in the same script; answers its new id, or None when it was gone. With ``slug``,
    its failure count and attempts on that agent are dropped too: it starts afresh."""
    keys = [source_stream, target_stream]
    field = ""
    if slug is not None:
        keys += [contract.failure_counts(slug), contract.attempt_log(slug)]
        field = failure_field(slug, source_stream, message_id)
    new_id = client.eval(MOVE_SCRIPT, len(keys), *keys, group, message_id, field)
    return None if new_id is None else _text(new_id)


def move_tasks(
    client: redis.Redis,
    source_stream: str,
    target_stream: str,
    group: str = contract.CONSUMER_GROUP,
    slug: str | None = None,
) -> int:
    """Move every entry of ``source_stream``, pending or not yet delivered, to
    ``target_stream`` (each one in one script: never lost, never doubled); answers how many
    moved. Entries added while it runs are moved too. With ``slug`` the moved tasks' failure
    counts are dropped (see :func:`move_task`). The portal uses it at roll-back to hand a
    stopped version's leftover tasks back to the main stream."""
    moved = 0
    while True:
        batch = client.xrange(source_stream, count=MOVE_BATCH)
        if not batch:
            return moved
        for message_id, _fields in batch:
            if move_task(client, source_stream, target_stream, _text(message_id), group, slug):
                moved += 1


class VersionRouter:
    """One replica's side of the routing: which streams it reads, and which main-stream tasks it
    hands on to another version's stream instead of processing them."""

    def __init__(
        self, slug: str, version: str, group: str, metrics: Metrics, logger: JsonLogger
    ) -> None:
        self.slug = slug
        self.version = version
        self.group = group
        self.main_stream = contract.task_stream(slug)
        self.own_stream = contract.version_stream(slug, version)
        self._metrics = metrics
        self._log = logger
        self._routing: Routing | None = None
        self._read_at: float | None = None

    def ensure_groups(self, client: redis.Redis) -> None:
        """Create the consumer group on the main stream and this version's stream."""
        for stream in (self.main_stream, self.own_stream):
            try:
                # From id 0, so tasks queued before the agent's first start are not skipped.
                client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def routing(self, client: redis.Redis) -> Routing | None:
        """The routing, read at most every ROUTING_REFRESH_SECONDS; the last one read while
        Redis does not answer."""
        now = time.monotonic()
        if self._read_at is None or now - self._read_at >= ROUTING_REFRESH_SECONDS:
            with contextlib.suppress(*_ERRORS):
                self._routing = read_routing(client, self.slug)
            self._read_at = now
        return self._routing

    def streams(self, client: redis.Redis) -> list[str]:
        """The streams to read: the main one too, unless another version serves it."""
        routing = self.routing(client)
        if routing is None or routing.serving == self.version:
            return [self.main_stream, self.own_stream]
        return [self.own_stream]

    def hand_on(
        self, client: redis.Redis, stream: str, message_id: str, fields: dict[str, str]
    ) -> bool:
        """Move a main-stream task the routing gives another version to that version's stream;
        True when the task is not this replica's to process (moved, or gone already)."""
        routing = self.routing(client) if stream == self.main_stream else None
        if routing is None:
            return False
        if routing.canary and 0 < routing.weight < 100:
            # A share drawn by count, not by hash: exact over every hundred tasks, so the
            # canary's measured share is its weight and not the weight give or take chance.
            number = int(client.incr(contract.routing_sequence(self.slug)))
            bucket = contract.spread_bucket(number)
            to_version = routing.canary if bucket < routing.weight else routing.serving
        else:
            to_version = routing.target(fields.get(contract.FIELD_TASK_ID) or message_id)
        if to_version == self.version:
            return False
        target = contract.version_stream(self.slug, to_version)
        new_id = move_task(client, stream, target, message_id, self.group, self.slug)
        if new_id is not None:
            self._metrics.task_routed(to_version)
        self._log.debug(
            "task_routed",
            f"task {message_id} handed on to version {to_version}"
            + (f" as {new_id}" if new_id else " (it had left the stream already)"),
            task_id=message_id,
            to_version=to_version,
            routed_id=new_id,
        )
        return True

    def failure_field(self, stream: str, message_id: str) -> str:
        return failure_field(self.slug, stream, message_id)

    def queue_removal(self, pipeline: Any, stream: str, message_id: str) -> None:
        """Add to ``pipeline`` (the transaction that ends the task): acknowledge and delete the
        task on the stream it came from, and forget its failures and attempts."""
        field = failure_field(self.slug, stream, message_id)
        pipeline.xack(stream, self.group, message_id)
        pipeline.xdel(stream, message_id)
        pipeline.hdel(contract.failure_counts(self.slug), field)
        pipeline.hdel(contract.attempt_log(self.slug), field)
