"""Pending entries: what each replica of an agent holds, delivered and not yet acknowledged.

A consumer is stuck when it holds entries and either its replica is gone (the agent runs fewer
replicas, or is not running) or one of its entries has waited past ``QUEUE_STUCK_AFTER_SECONDS``
since it was delivered. Its entries can be claimed for a healthy replica (XCLAIM, marked idle
so agentd's next look for abandoned tasks takes them) or redelivered: put back on the stream as
new messages and acknowledged, in one step per entry, so they are read at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

from agents.agentd import contract
from agents.models import State
from agents.runtimes.ports import HOST
from agents.runtimes.probe import http_ok
from observability.queues.catalog import QueueRef

PENDING_PAGE = 100
PROBE_TIMEOUT = 0.5
# XCLAIM with this idle time: long past any retry interval, so the next XAUTOCLAIM takes it.
CLAIMED_IDLE_MS = 10 * 365 * 24 * 3600 * 1000


@dataclass(frozen=True)
class PendingEntry:
    id: str
    consumer: str
    idle_ms: int
    deliveries: int


@dataclass
class ConsumerState:
    name: str
    replica: int | None
    pending: int
    idle_ms: int
    oldest_idle_ms: int = 0
    replica_gone: bool = False
    stuck: bool = False
    why: str = ""


def consumers(client: redis.Redis, ref: QueueRef) -> list[ConsumerState]:
    """Every consumer of the agent's group, with its pending count and whether it is stuck."""
    try:
        rows = client.xinfo_consumers(ref.stream, ref.group)
    except redis.ResponseError:
        return []  # no group yet: nobody holds anything
    result = []
    stuck_ms = settings.QUEUE_STUCK_AFTER_SECONDS * 1000
    running = ref.agent_state == State.RUNNING
    for row in rows:
        replica = contract.replica_of(row["name"], ref.slug)
        state = ConsumerState(
            name=row["name"],
            replica=replica,
            pending=int(row.get("pending") or 0),
            idle_ms=int(row.get("idle") or 0),
        )
        state.replica_gone = not running or replica is None or replica >= max(ref.replicas, 1)
        if state.pending and not state.replica_gone and not _answers(ref, replica):
            state.replica_gone = True  # its process is dead (killed, crashed) or hangs
        if state.pending:
            oldest = client.xpending_range(
                ref.stream, ref.group, "-", "+", 1, consumername=state.name
            )
            state.oldest_idle_ms = int(oldest[0]["time_since_delivered"]) if oldest else 0
            if state.replica_gone:
                state.stuck, state.why = True, _gone_reason(ref, replica)
            elif state.oldest_idle_ms >= stuck_ms:
                state.stuck = True
                state.why = (
                    f"holds an entry delivered {state.oldest_idle_ms // 1000:,} s ago "
                    f"(stuck after {settings.QUEUE_STUCK_AFTER_SECONDS} s)"
                )
        result.append(state)
    return sorted(result, key=lambda c: (c.replica is None, c.replica or 0, c.name))


def _answers(ref: QueueRef, replica: int | None) -> bool:
    """Whether the replica's agentd answers its liveness probe; True when the portal cannot
    reach it directly (Kubernetes), where only the idle time tells."""
    if replica is None or replica >= len(ref.ports):
        return True
    return http_ok(f"http://{HOST}:{ref.ports[replica]}/healthz", PROBE_TIMEOUT)


def _gone_reason(ref: QueueRef, replica: int | None) -> str:
    if ref.agent_state != State.RUNNING:
        return f"the agent is {ref.agent_state.lower() or 'not registered'}, so no replica reads"
    if replica is None:
        return "not one of the agent's replicas"
    if replica < ref.replicas:
        return f"replica {replica} does not answer its liveness probe"
    return f"replica {replica} is gone (the agent runs {ref.replicas})"


def entries(
    client: redis.Redis, ref: QueueRef, consumer: str = "", count: int = PENDING_PAGE
) -> list[PendingEntry]:
    """The first ``count`` pending entries of the group (of one consumer), oldest first."""
    try:
        rows = client.xpending_range(
            ref.stream, ref.group, "-", "+", count, consumername=consumer or None
        )
    except redis.ResponseError:
        return []
    return [
        PendingEntry(
            id=str(row["message_id"]),
            consumer=str(row["consumer"]),
            idle_ms=int(row["time_since_delivered"]),
            deliveries=int(row["times_delivered"]),
        )
        for row in rows
    ]


def healthy_target(states: list[ConsumerState], ref: QueueRef, exclude: str) -> str | None:
    """A consumer of a live replica to hand entries to (the least loaded), or replica 0's name
    when the agent runs and no consumer is known yet."""
    live = [s for s in states if not s.replica_gone and not s.stuck and s.name != exclude]
    if live:
        return min(live, key=lambda s: s.pending).name
    if ref.agent_state == State.RUNNING:
        for replica in range(max(ref.replicas, 1)):
            name = contract.consumer_name(ref.slug, replica)
            if name != exclude:
                return name
    return None


def claim(client: redis.Redis, ref: QueueRef, consumer: str, target: str) -> list[str]:
    """XCLAIM every entry ``consumer`` holds for ``target``; answers the ids moved."""
    moved: list[str] = []
    while True:
        batch = entries(client, ref, consumer, count=PENDING_PAGE)
        if not batch:
            return moved
        ids: list[Any] = [e.id for e in batch]
        client.xclaim(ref.stream, ref.group, target, 0, ids, idle=CLAIMED_IDLE_MS, justid=True)
        moved.extend(ids)


_REDELIVER = """
local rows = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1], 'COUNT', 1)
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
if #rows == 0 then return 0 end
redis.call('XADD', KEYS[1], '*', unpack(rows[1][2]))
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
"""


def redeliver(client: redis.Redis, ref: QueueRef, consumer: str) -> tuple[list[str], int]:
    """Put every entry ``consumer`` holds back on the stream as a new message (same fields) and
    acknowledge the old one, atomically per entry; answers (ids, how many were already gone)."""
    script = client.register_script(_REDELIVER)
    moved: list[str] = []
    gone = 0
    while True:
        batch = entries(client, ref, consumer, count=PENDING_PAGE)
        if not batch:
            return moved, gone
        for entry in batch:
            if int(script(keys=[ref.stream], args=[entry.id, ref.group])):
                moved.append(entry.id)
            else:
                gone += 1
