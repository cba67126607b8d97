"""The local runtime's events: a Redis stream the shims (and the runtime) add to and the
monitor reads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, cast

import redis

from ..base import RuntimeEvent, RuntimeFailure

EVENTS_STREAM = "runtime:local:events"
EVENTS_MAXLEN = 10_000
EVENTS_BLOCK_MS = 500


class EventPublisher:
    """Adds events to the stream, best effort like the shim: an event lost while Redis is
    away is reconciled later."""

    def __init__(self, redis_url: str, stream: str) -> None:
        self.redis_url = redis_url
        self.stream = stream
        self._client: redis.Redis | None = None

    def publish(self, event: RuntimeEvent) -> None:
        try:
            if self._client is None:
                self._client = redis.Redis.from_url(
                    self.redis_url, socket_timeout=2, socket_connect_timeout=2
                )
            fields = cast(dict[Any, Any], event.to_fields())
            self._client.xadd(self.stream, fields, maxlen=EVENTS_MAXLEN, approximate=True)
        except (redis.RedisError, OSError):
            pass


def read_events(
    redis_url: str, stream: str, since_id: str | None, stop: threading.Event
) -> Iterator[RuntimeEvent]:
    """Events of ``stream`` after ``since_id`` (None: from now on) until ``stop`` is set.

    Reconnects with backoff while Redis is away; returns soon after ``stop`` is set.
    """
    last_id = since_id
    client: redis.Redis | None = None
    backoff = 0.2
    try:
        while not stop.is_set():
            try:
                if client is None:
                    client = redis.Redis.from_url(
                        redis_url,
                        decode_responses=True,
                        socket_timeout=EVENTS_BLOCK_MS / 1000 + 5,
                        socket_connect_timeout=2,
                    )
                if last_id is None:
                    newest = cast(list[Any], client.xrevrange(stream, count=1))
                    last_id = str(newest[0][0]) if newest else "0-0"
                answer = cast(
                    list[tuple[str, list[tuple[str, dict[str, str]]]]],
                    client.xread({stream: last_id}, count=100, block=EVENTS_BLOCK_MS),
                )
                backoff = 0.2
            except redis.ResponseError as exc:
                raise RuntimeFailure(
                    f"cannot read runtime events after {last_id!r}: {exc}",
                    reason="bad_config",
                    details={"since_id": last_id},
                ) from exc
            except (redis.RedisError, OSError):
                if client is not None:
                    client.close()
                client = None
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for _stream, entries in answer or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    yield RuntimeEvent.from_fields(entry_id, fields)
    finally:
        if client is not None:
            client.close()
