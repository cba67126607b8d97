"""The task worker: consumes the agent's Redis stream, retries failures, dead-letters poison.

Delivery is at least once. A task is acknowledged and deleted from the stream only after it was
processed, so the stream holds exactly the work not yet done (its length is the queue depth). A
failed task stays pending in the consumer group; it is claimed again (XAUTOCLAIM) once it has
been idle for ``task_retry_ms``, which also rescues tasks left pending by a replica that died.
Its failures are counted in Redis, so the count survives restarts; at ``task_max_failures`` the
task is copied to the dead-letter stream and acknowledged, in one transaction.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import contract
from .config import AgentConfig
from .faults import task_failure
from .log import JsonLogger
from .metrics import Metrics, QueueStats

CLAIM_BATCH = 10
# Longer than the longest XREADGROUP block (task_block_ms is at most 5 s).
WORKER_SOCKET_TIMEOUT = 10.0
CONTROL_TIMEOUT = 1.0
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


@dataclass(frozen=True)
class QueueKeys:
    """The Redis names one agent replica uses."""

    stream: str
    dead_letters: str
    failures: str
    group: str
    consumer: str

    @classmethod
    def for_agent(cls, slug: str, replica: int) -> QueueKeys:
        return cls(
            stream=contract.task_stream(slug),
            dead_letters=contract.dead_letters(slug),
            failures=contract.failure_counts(slug),
            group=contract.CONSUMER_GROUP,
            consumer=contract.consumer_name(slug, replica),
        )


def connect(url: str, socket_timeout: float, single_connection: bool = False) -> redis.Redis:
    """A Redis client that fails fast: agentd does its own retrying, with backoff and logs."""
    # Built from a pool rather than Redis.from_url(..., single_connection_client=...), which
    # redis-py 4.3 (Debian bookworm's python3-redis, in the agent image) does not accept.
    pool = redis.ConnectionPool.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(socket_timeout, 2.0),
        retry=Retry(NoBackoff(), 0),
    )
    client = redis.Redis(connection_pool=pool, single_connection_client=single_connection)
    # Closing the client closes its pool's connections too (redis-py 5 reads this flag).
    client.auto_close_connection_pool = True
    return client


def queue_stats(client: redis.Redis, keys: QueueKeys) -> QueueStats:
    """Depth, pending count and dead-letter count of the agent's queue."""
    pipeline = client.pipeline(transaction=False)
    pipeline.xlen(keys.stream)
    pipeline.xlen(keys.dead_letters)
    depth, dead_letters = pipeline.execute()
    try:
        pending = client.xpending(keys.stream, keys.group)["pending"]
    except redis.ResponseError:
        pending = 0  # the group does not exist yet, so nothing can be pending
    return QueueStats(depth=depth, pending=pending, dead_letters=dead_letters)


class Backoff:
    """Exponential backoff with jitter, so a fleet does not reconnect in lockstep."""

    def __init__(self, initial: float = 0.1, maximum: float = 5.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._next = self.initial


class TaskWorker:
    """Runs the consume loop in a thread until :meth:`stop`; a task in hand is always finished."""

    def __init__(
        self,
        keys: QueueKeys,
        redis_url: str,
        config: Callable[[], AgentConfig],
        metrics: Metrics,
        logger: JsonLogger,
        on_ready: Callable[[], None],
        rng: random.Random | None = None,
    ) -> None:
        self.keys = keys
        self._redis_url = redis_url
        self._config = config
        self._metrics = metrics
        self._log = logger
        self._on_ready = on_ready
        self._rng = rng or random.Random()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentd-worker", daemon=True)
        # The Redis client id of the worker's connection, so a stop can cut its blocking read.
        self._client_id: int | None = None
        self._control = connect(redis_url, CONTROL_TIMEOUT)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Take no new task; the one in hand is finished."""
        self._stopping.set()
        self._wake()

    def _wake(self) -> None:
        """End a blocking XREADGROUP now (as if it timed out) rather than after task_block_ms."""
        client_id = self._client_id
        if client_id is None:
            return
        try:
            self._control.client_unblock(client_id)
        except (redis.RedisError, OSError):
            pass  # Redis is away, so the worker is not blocked on it either
        finally:
            self._control.close()

    def join(self, timeout: float) -> bool:
        """Wait for the loop to end; ``True`` if it did within ``timeout`` seconds."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        client: redis.Redis | None = None
        backoff = Backoff()
        outage = False
        while not self._stopping.is_set():
            try:
                if client is None:
                    # One dedicated connection (made here, it connects at once) whose id
                    # identifies the blocking read for CLIENT UNBLOCK.
                    client = connect(self._redis_url, WORKER_SOCKET_TIMEOUT, single_connection=True)
                self._ensure_group(client)
                self._client_id = client.client_id()
                if outage:
                    self._log.info("redis_reconnected", "Redis answers again; consuming tasks")
                    outage = False
                self._on_ready()
                backoff.reset()
                self._consume(client)
            except REDIS_ERRORS as exc:
                self._client_id = None
                if not outage:
                    self._log.warning(
                        "redis_unavailable",
                        f"Redis is unreachable, retrying with backoff: {exc}",
                        error=str(exc),
                    )
                    outage = True
                self._stopping.wait(backoff.next_delay())
            except redis.ResponseError as exc:
                # For instance NOGROUP after Redis restarted empty: loop to create the group again.
                self._log.warning("redis_error", f"Redis refused a command: {exc}", error=str(exc))
                self._stopping.wait(backoff.next_delay())
            except Exception as exc:
                # A bug must not silently stop the agent from working; log it loudly and go on.
                self._log.error(
                    "worker_error", f"unexpected error in the task loop: {exc!r}", error=repr(exc)
                )
                self._stopping.wait(backoff.next_delay())
        if client is not None:
            client.close()

    def _ensure_group(self, client: redis.Redis) -> None:
        try:
            # From id 0, so tasks queued before the agent's first start are not skipped.
            client.xgroup_create(self.keys.stream, self.keys.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _consume(self, client: redis.Redis) -> None:
        next_claim = 0.0
        while not self._stopping.is_set():
            config = self._config()
            if time.monotonic() >= next_claim:
                claimed = self._claim_stale(client, config)
                # After a full batch there may be more waiting: look again at once.
                delay = 0.0 if len(claimed) == CLAIM_BATCH else config.task_retry_ms / 1000
                next_claim = time.monotonic() + delay
                for message_id, fields in claimed:
                    self._process(client, message_id, fields)
                    if self._stopping.is_set():
                        return
                continue
            until_claim_ms = int((next_claim - time.monotonic()) * 1000)
            block_ms = max(1, min(config.task_block_ms, until_claim_ms))
            response = cast(
                "list[tuple[str, list[tuple[str, dict[str, str]]]]] | None",
                client.xreadgroup(
                    self.keys.group,
                    self.keys.consumer,
                    {self.keys.stream: ">"},
                    count=1,
                    block=block_ms,
                ),
            )
            for _stream, messages in response or []:
                for message_id, fields in messages:
                    self._process(client, message_id, fields)

    def _claim_stale(
        self, client: redis.Redis, config: AgentConfig
    ) -> list[tuple[str, dict[str, str]]]:
        """Take over tasks that failed, or were abandoned, at least ``task_retry_ms`` ago."""
        # Idle time counts from delivery, so a task's own processing time is added: otherwise a
        # slow task could be claimed by another replica while it is still being worked on.
        min_idle_ms = config.task_retry_ms + config.faults.latency_ms
        response = client.xautoclaim(
            self.keys.stream,
            self.keys.group,
            self.keys.consumer,
            min_idle_time=min_idle_ms,
            start_id="0-0",
            count=CLAIM_BATCH,
        )
        claimed = []
        for message_id, fields in response[1]:
            if message_id is None or fields is None:
                continue  # deleted from the stream while pending; Redis drops it from the group
            claimed.append((message_id, fields))
        return claimed

    def _process(self, client: redis.Redis, message_id: str, fields: dict[str, str]) -> None:
        faults = self._config().faults
        self._log.debug("task_started", f"processing task {message_id}", task_id=message_id)
        started = time.monotonic()
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        error = task_failure(fields, faults, self._rng)
        elapsed = time.monotonic() - started
        if error is None:
            self._complete(client, message_id)
            self._metrics.task_processed(elapsed)
            self._log.debug(
                "task_processed",
                f"task {message_id} processed in {elapsed:.3f}s",
                task_id=message_id,
                duration_seconds=round(elapsed, 6),
            )
        else:
            self._record_failure(client, message_id, fields, error, elapsed)

    def _complete(self, client: redis.Redis, message_id: str) -> None:
        pipeline = client.pipeline(transaction=True)
        pipeline.xack(self.keys.stream, self.keys.group, message_id)
        pipeline.xdel(self.keys.stream, message_id)
        pipeline.hdel(self.keys.failures, message_id)
        pipeline.execute()

    def _record_failure(
        self,
        client: redis.Redis,
        message_id: str,
        fields: dict[str, str],
        error: str,
        elapsed: float,
    ) -> None:
        failures = client.hincrby(self.keys.failures, message_id, 1)
        self._metrics.task_failed(elapsed)
        max_failures = self._config().task_max_failures
        if failures < max_failures:
            self._log.info(
                "task_failed",
                f"task {message_id} failed ({failures}/{max_failures}), will retry: {error}",
                task_id=message_id,
                error=error,
                failures=failures,
                max_failures=max_failures,
            )
            return
        dead_letter: dict[Any, Any] = {
            **fields,
            "error": error,
            "failures": str(failures),
            "original_id": message_id,
        }
        pipeline = client.pipeline(transaction=True)
        pipeline.xadd(self.keys.dead_letters, dead_letter)
        pipeline.xack(self.keys.stream, self.keys.group, message_id)
        pipeline.xdel(self.keys.stream, message_id)
        pipeline.hdel(self.keys.failures, message_id)
        dead_letter_id = pipeline.execute()[0]
        self._metrics.task_dead_lettered()
        self._log.warning(
            "task_dead_lettered",
            f"task {message_id} failed {failures} times; moved to {self.keys.dead_letters}",
            task_id=message_id,
            dead_letter_id=dead_letter_id,
            error=error,
            failures=failures,
        )
