"""The task worker: consumes the agent's Redis stream, retries failures, dead-letters poison.

Delivery is at least once. A task is acknowledged and deleted from the stream only after it was
processed, so the stream holds exactly the work not yet done (its length is the queue depth). A
failed task stays pending in the consumer group; it is claimed again (XAUTOCLAIM) once it has
been idle for ``task_retry_ms``, which also rescues tasks left pending by a replica that died.
Its failures are counted in Redis, so the count survives restarts, and each failed attempt is
logged there (when, why, which replica); at ``task_max_failures`` the task is copied to the
dead-letter stream with that history and acknowledged, in one transaction. Every move also counts
itself in the queue's counters hash in its own transaction, and a task done or dead-lettered
counts for its producer, so the portal's figures and flow diagram are exact.

Every task that gets past the injected faults goes through the handler of the config's template
(``handlers``), whose output is the reply's; a handler's ``TaskError`` is a failed attempt like
any other. The worker thread alone calls the handler; a new one (the config named another
template or other settings) is handed over by :meth:`TaskWorker.use_handler` and taken up, the
old one closed, between two tasks.

A task that completes is handed on, in the transaction that completes it, to the agents the
config's ``forward`` list draws, as new tasks on their streams: real agent-to-agent traffic.

While two versions run side by side, ``routing.VersionRouter`` says which streams a replica reads
and hands on the tasks that are another version's; all that follows acts on the task's stream.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import contract, records, replies
from .config import AgentConfig
from .faults import task_failure
from .handlers import Handler, Task, TaskError
from .log import JsonLogger
from .metrics import Metrics, ProbeStatus, QueueStats
from .records import BadPayload, hops, task_payload
from .routing import VersionRouter

CLAIM_BATCH = 10
# The longest wait between two looks for abandoned or claimed tasks (XAUTOCLAIM).
CLAIM_LOOK_SECONDS = 1.0
# Longer than the longest XREADGROUP block (task_block_ms is at most 5 s).
WORKER_SOCKET_TIMEOUT = 10.0
CONTROL_TIMEOUT = 1.0
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


@dataclass(frozen=True)
class QueueKeys:
    """The Redis names one agent replica uses."""

    slug: str
    stream: str
    dead_letters: str
    failures: str
    attempts: str
    counters: str
    producers: str
    dead_letter_groups: str
    dead_letter_labels: str
    group: str
    consumer: str

    @classmethod
    def for_agent(cls, slug: str, replica: int) -> QueueKeys:
        return cls(
            slug=slug,
            stream=contract.task_stream(slug),
            dead_letters=contract.dead_letters(slug),
            failures=contract.failure_counts(slug),
            attempts=contract.attempt_log(slug),
            counters=contract.counters(slug),
            producers=contract.producer_counts(slug),
            dead_letter_groups=contract.dead_letter_groups(slug),
            dead_letter_labels=contract.dead_letter_labels(slug),
            group=contract.CONSUMER_GROUP,
            consumer=contract.consumer_name(slug, replica),
        )


def epoch_ms() -> int:
    return int(time.time() * 1000)


def connect(url: str, socket_timeout: float, single_connection: bool = False) -> redis.Redis:
    """A Redis client that fails fast: agentd does its own retrying, with backoff and logs."""
    # Built from a pool rather than Redis.from_url(..., single_connection_client=...), which
    # redis-py 4.3 (Debian bookworm's python3-redis, in the agent image) does not accept.
    pool = redis.ConnectionPool.from_url(
        url,
        decode_responses=True,
        # Bytes that are not UTF-8 (a producer's bug) decode to lone surrogates and encode back
        # to the same bytes, so such a task is read, failed and dead-lettered intact instead of
        # making every read of the stream raise.
        encoding_errors="surrogateescape",
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
        handler: Handler,
        rng: random.Random | None = None,
        version: str = "",
    ) -> None:
        self.keys = keys
        self._handler = handler
        # A handler handed over by use_handler and not yet taken up by the worker thread.
        self._next_handler: Handler | None = None
        self._handler_lock = threading.Lock()
        self._version = version
        self._redis_url = redis_url
        self._config = config
        self._metrics = metrics
        self._log = logger
        self._router = VersionRouter(keys.slug, version, keys.group, metrics, logger)
        self._on_ready = on_ready
        self._rng = rng or random.Random()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentd-worker", daemon=True)
        # The Redis client id of the worker's connection, so a stop can cut its blocking read.
        self._client_id: int | None = None
        self._control = connect(redis_url, CONTROL_TIMEOUT)

    def start(self) -> None:
        self._thread.start()

    def use_handler(self, handler: Handler) -> None:
        """Have tasks go through ``handler`` from the next one on; the current handler is closed
        once the task in hand (if any) is done."""
        with self._handler_lock:
            unused, self._next_handler = self._next_handler, handler
        if unused is not None:
            unused.close()  # handed over and replaced before any task used it

    def probes(self) -> Sequence[ProbeStatus]:
        """What the current handler watches, for /metrics."""
        return self._handler.probes()

    def _take_new_handler(self) -> None:
        with self._handler_lock:
            handler, self._next_handler = self._next_handler, None
        if handler is not None:
            previous, self._handler = self._handler, handler
            previous.close()

    def close_handlers(self) -> None:
        """Close the handler (and one handed over but not taken up): the worker is done."""
        with self._handler_lock:
            pending, self._next_handler = self._next_handler, None
        for handler in (self._handler, pending):
            if handler is not None:
                handler.close()

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
            self._take_new_handler()
            try:
                if client is None:
                    # One dedicated connection (made here, it connects at once) whose id
                    # identifies the blocking read for CLIENT UNBLOCK.
                    client = connect(self._redis_url, WORKER_SOCKET_TIMEOUT, single_connection=True)
                self._router.ensure_groups(client)
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
        self.close_handlers()

    def _consume(self, client: redis.Redis) -> None:
        next_claim = 0.0
        while not self._stopping.is_set():
            self._take_new_handler()
            config = self._config()
            streams = self._router.streams(client)
            if time.monotonic() >= next_claim:
                claimed = self._claim_stale(client, config, streams)
                # After a full batch there may be more waiting: look again at once.
                # At least every CLAIM_LOOK_SECONDS: an operator's claim (the portal's XCLAIM
                # marks the entries long idle) is taken within a second, not a retry interval.
                delay = (
                    0.0
                    if len(claimed) == CLAIM_BATCH
                    else min(config.task_retry_ms / 1000, CLAIM_LOOK_SECONDS)
                )
                next_claim = time.monotonic() + delay
                for stream, message_id, fields in claimed:
                    if not self._router.hand_on(client, stream, message_id, fields):
                        self._process(client, stream, message_id, fields)
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
                    dict.fromkeys(streams, ">"),
                    count=1,
                    block=block_ms,
                ),
            )
            for stream, messages in response or []:
                for message_id, fields in messages:
                    if not self._router.hand_on(client, stream, message_id, fields):
                        self._process(client, stream, message_id, fields)

    def _claim_stale(
        self, client: redis.Redis, config: AgentConfig, streams: list[str]
    ) -> list[tuple[str, str, dict[str, str]]]:
        """Take over tasks that failed, or were abandoned, at least ``task_retry_ms`` ago."""
        # Idle time counts from delivery, so a task's own processing time is added: otherwise a
        # slow task could be claimed by another replica while it is still being worked on.
        longest_task_ms = int(self._handler.longest_task_seconds() * 1000)
        min_idle_ms = config.task_retry_ms + config.faults.latency_ms + longest_task_ms
        claimed = []
        for stream in streams:
            response = client.xautoclaim(
                stream,
                self.keys.group,
                self.keys.consumer,
                min_idle_time=min_idle_ms,
                start_id="0-0",
                count=CLAIM_BATCH,
            )
            for message_id, fields in response[1]:
                if message_id is None or fields is None:
                    continue  # deleted from the stream while pending; Redis drops it from the group
                claimed.append((stream, message_id, fields))
        return claimed

    def _process(
        self, client: redis.Redis, stream: str, message_id: str, fields: dict[str, str]
    ) -> None:
        self._take_new_handler()
        config = self._config()
        if replies.wants_answer(fields) and replies.already_answered(
            client, self.keys.slug, fields
        ):
            self._skip_answered(client, stream, message_id, fields)
            return
        self._log.debug("task_started", f"processing task {message_id}", task_id=message_id)
        started = time.monotonic()
        if config.faults.latency_ms:
            time.sleep(config.faults.latency_ms / 1000)
        error: str | None
        output: dict[str, Any] = {}
        try:
            payload = task_payload(fields)
        except BadPayload as exc:
            error = str(exc)
        else:
            error = task_failure(fields, payload, config.faults, self._rng)
        if error is None:
            output, error = self._handle(message_id, fields, payload)
        elapsed = time.monotonic() - started
        if error is not None:
            self._record_failure(client, stream, message_id, fields, error, elapsed, config)
            return
        forward_to = self._draw_forwards(message_id, fields, config)
        outcome = None
        if replies.wants_answer(fields) or fields.get(contract.FIELD_CUSTOMER):
            field = self._router.failure_field(stream, message_id)
            tried = len(records.attempts(client.hget(self.keys.attempts, field)))
            outcome = replies.Outcome(
                contract.REPLY_SUCCEEDED, output, "", round(elapsed * 1000), tried + 1
            )
        forwards = self._complete(client, stream, message_id, fields, forward_to, outcome)
        self._metrics.task_processed(elapsed)
        self._log.debug(
            "task_processed",
            f"task {message_id} processed in {elapsed:.3f}s",
            task_id=message_id,
            duration_seconds=round(elapsed, 6),
        )
        self._account_forwards(message_id, forwards)

    def _handle(
        self, message_id: str, fields: dict[str, str], payload: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        """The handler's (output, None), or ({}, error) for a failed attempt."""
        handler = self._handler
        task = Task(message_id, payload, fields.get(contract.FIELD_CUSTOMER, ""))
        try:
            return handler.handle(task), None
        except TaskError as exc:
            return {}, str(exc)
        except (redis.ConnectionError, redis.TimeoutError):
            raise  # Redis is away: the task stays pending and is retried once it is back
        except Exception as exc:
            # A bug in a handler fails the attempt, so the task is retried and in the end
            # dead-lettered instead of being taken up again and again.
            self._log.error(
                "handler_error",
                f"the {handler.template} handler failed on task {message_id}: {exc!r}",
                task_id=message_id,
                template=handler.template,
                error=repr(exc),
            )
            return {}, f"the {handler.template} handler failed: {exc!r}"

    def _complete(
        self,
        client: redis.Redis,
        stream: str,
        message_id: str,
        fields: dict[str, str],
        forward_to: list[str],
        outcome: replies.Outcome | None = None,
    ) -> list[tuple[str, object]]:
        """Acknowledge, delete and count the task and add its forwarded tasks, in one
        transaction; answers each forward's target with its new task id or its error."""
        pipeline = client.pipeline(transaction=True)
        self._router.queue_removal(pipeline, stream, message_id)
        pipeline.hincrby(self.keys.counters, contract.COUNTER_PROCESSED, 1)
        pipeline.hincrby(self.keys.producers, fields.get(contract.FIELD_PRODUCER, ""), 1)
        if outcome is not None:
            self._answer(pipeline, message_id, fields, outcome)
        own_commands = len(pipeline.command_stack)
        forwarded: dict[Any, Any] = self._forwarded_task(message_id, fields)
        for to in forward_to:
            pipeline.xadd(contract.task_stream(to), forwarded)
        # A forward that Redis refuses (say its target key is not a stream) must not undo the
        # completion, so errors come back as results instead of being raised.
        results = pipeline.execute(raise_on_error=False)
        for result in results[:own_commands]:
            if isinstance(result, Exception):
                raise result
        return list(zip(forward_to, results[own_commands:], strict=True))

    def _draw_forwards(
        self, message_id: str, fields: dict[str, str], config: AgentConfig
    ) -> list[str]:
        """The agents this task is handed on to: each ``forward`` entry with its share's chance
        (0 and 1 exact), none once the task came through FORWARD_MAX_HOPS forwards."""
        if not config.forward:
            return []
        if hops(fields) >= contract.FORWARD_MAX_HOPS:
            self._log.info(
                "forward_stopped",
                f"not forwarding task {message_id}: it came through {contract.FORWARD_MAX_HOPS} "
                "forwards already (is there a cycle of forwarding agents?)",
                task_id=message_id,
                max_hops=contract.FORWARD_MAX_HOPS,
            )
            return []
        return [entry.to for entry in config.forward if self._rng.random() < entry.share]

    def _forwarded_task(self, message_id: str, fields: dict[str, str]) -> dict[str, str]:
        task = {contract.FIELD_PRODUCER: self.keys.slug}
        if fields.get(contract.FIELD_CUSTOMER):
            task[contract.FIELD_CUSTOMER] = fields[contract.FIELD_CUSTOMER]
        task[contract.FIELD_SENT_AT] = str(epoch_ms())
        task[contract.FIELD_HOPS] = str(hops(fields) + 1)
        task[contract.FIELD_PAYLOAD] = json.dumps(
            {"forwarded_from": f"{self.keys.slug}/{message_id}", "kind": "forward"}
        )
        return task

    def _account_forwards(self, message_id: str, forwards: list[tuple[str, object]]) -> None:
        for to, result in forwards:
            if isinstance(result, Exception):
                self._log.warning(
                    "forward_failed",
                    f"could not forward task {message_id} to {to}: {result}",
                    task_id=message_id,
                    to=to,
                    error=str(result),
                )
                continue
            self._metrics.task_forwarded(to)
            self._log.debug(
                "task_forwarded",
                f"task {message_id} forwarded to {to} as {result}",
                task_id=message_id,
                to=to,
                forwarded_id=result,
            )

    def _record_failure(
        self,
        client: redis.Redis,
        stream: str,
        message_id: str,
        fields: dict[str, str],
        error: str,
        elapsed: float,
        config: AgentConfig,
    ) -> None:
        # Read, then written back in the transaction that counts the failure: only the consumer
        # holding the task writes its attempts.
        field = self._router.failure_field(stream, message_id)
        attempts = records.attempts(client.hget(self.keys.attempts, field))
        attempts.append({"at": epoch_ms(), "error": error, "replica": self.keys.consumer})
        pipeline = client.pipeline(transaction=True)
        pipeline.hincrby(self.keys.failures, field, 1)
        pipeline.hincrby(self.keys.counters, contract.COUNTER_FAILED, 1)
        pipeline.hset(self.keys.attempts, field, json.dumps(attempts))
        failures = int(pipeline.execute()[0])
        self._metrics.task_failed(elapsed)
        max_failures = config.task_max_failures
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
        self._dead_letter(client, stream, message_id, fields, error, failures, attempts, elapsed)

    def _dead_letter(
        self,
        client: redis.Redis,
        stream: str,
        message_id: str,
        fields: dict[str, str],
        error: str,
        failures: int,
        attempts: list[dict[str, Any]],
        elapsed: float = 0.0,
    ) -> None:
        """Move the task, with its attempts, to the dead letters and count it in its error's
        group, in one transaction."""
        fingerprint, label = contract.error_fingerprint(error)
        dead_letter: dict[Any, Any] = {
            **fields,
            contract.DLQ_ERROR: error,
            contract.DLQ_FAILURES: str(failures),
            contract.DLQ_ORIGINAL_ID: message_id,
            contract.DLQ_ATTEMPTS: json.dumps(attempts),
            contract.DLQ_FIRST_FAILED_AT: str(attempts[0]["at"]),
            contract.DLQ_LAST_FAILED_AT: str(attempts[-1]["at"]),
            contract.DLQ_REPLICA: self.keys.consumer,
            contract.DLQ_FINGERPRINT: fingerprint,
        }
        pipeline = client.pipeline(transaction=True)
        pipeline.xadd(self.keys.dead_letters, dead_letter)
        self._router.queue_removal(pipeline, stream, message_id)
        pipeline.hincrby(self.keys.counters, contract.COUNTER_DEAD_LETTERED, 1)
        pipeline.hincrby(self.keys.producers, fields.get(contract.FIELD_PRODUCER, ""), 1)
        pipeline.hincrby(self.keys.dead_letter_groups, fingerprint, 1)
        pipeline.hset(self.keys.dead_letter_labels, fingerprint, label)
        outcome = replies.Outcome(
            contract.REPLY_DEAD_LETTERED, {}, error, round(elapsed * 1000), failures
        )
        self._answer(pipeline, message_id, fields, outcome)
        dead_letter_id = pipeline.execute()[0]
        self._metrics.task_dead_lettered()
        self._log.warning(
            "task_dead_lettered",
            f"task {message_id} failed {failures} times; moved to {self.keys.dead_letters}",
            task_id=message_id,
            dead_letter_id=dead_letter_id,
            error=error,
            failures=failures,
            fingerprint=fingerprint,
        )

    def _answer(
        self, pipeline: Any, message_id: str, fields: dict[str, str], outcome: replies.Outcome
    ) -> None:
        """The task's reply and its interaction record, where it has them, in ``pipeline``."""
        replies.queue_outcome(
            pipeline, slug=self.keys.slug, consumer=self.keys.consumer, version=self._version,
            template=self._handler.template, message_id=message_id, fields=fields,
            outcome=outcome, now_ms=epoch_ms(),
        )  # fmt: skip

    def _skip_answered(
        self, client: redis.Redis, stream: str, message_id: str, fields: dict[str, str]
    ) -> None:
        """A task whose id was answered before (a redelivery, a producer sending it twice):
        acknowledged and removed, not processed again."""
        pipeline = client.pipeline(transaction=True)
        self._router.queue_removal(pipeline, stream, message_id)
        pipeline.execute()
        self._log.info(
            "task_already_answered",
            f"task {message_id} has the id {fields.get(contract.FIELD_TASK_ID)!r}, answered "
            "before: acknowledged without processing it again",
            task_id=message_id,
            producer_task_id=fields.get(contract.FIELD_TASK_ID),
        )
