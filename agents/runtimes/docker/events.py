"""The engine's event stream, as the portal's runtime events; and the record of stops the
portal asked for, so that whoever reads a ``die`` can tell a stop from a crash.

The engine keeps its recent events in memory and replays them to a client that asks with
``since``: each event's id here is the engine's ``timeNano``, so a reader that comes back
(after its own restart, or the stream dropping) asks from the last id it handled and misses
nothing the engine still holds. Events at or before that id are skipped, so nothing is
handled twice either.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import redis
import requests

from ..base import RuntimeEvent, RuntimeFailure
from .containers import AGENT_LABEL, MANAGED_FILTER, exit_signal, labelled_replica

logger = logging.getLogger(__name__)

# Only what the portal acts on, filtered by the engine: health checks alone would otherwise
# send three exec events per container every interval.
ENGINE_EVENTS = ["start", "die", "oom", "health_status", "destroy", "pause", "unpause"]
EVENT_FILTERS = {"type": ["container"], "label": [MANAGED_FILTER], "event": ENGINE_EVENTS}
KINDS = {
    "start": "started",
    "die": "exited",
    "oom": "oom",
    "health_status: unhealthy": "unhealthy",
    "destroy": "removed",
    "pause": "paused",
    "unpause": "resumed",
}
RECONNECT_BACKOFF = (0.2, 5.0)
STOP_POLL_SECONDS = 0.1
# How long a requested stop is remembered after it was asked for, beyond its grace period;
# when the container was last started is remembered longer, so it outlives the stop it follows.
STOP_MARK_MARGIN_SECONDS = 60
START_MARK_SECONDS = 3600
# A replica stopped on purpose by stop_replicas stays out of status this long (unless started
# again); the upgrade that stopped it has long replaced or restarted it by then.
RETIRED_MARK_SECONDS = 30 * 24 * 3600
MARK_KEY = "runtime:docker:{what}:{container_id}"
# This process's marks: (what, container id) -> (wall time in ns, monotonic expiry).
_marks: dict[tuple[str, str], tuple[int, float]] = {}
_marks_lock = threading.Lock()


class StopRequests:
    """Containers the portal stops, removes or kills on purpose.

    The engine's ``die`` event says only how a container ended; ``docker stop`` from the portal
    and ``docker kill`` by someone else look alike. Before it stops a container the runtime
    marks it, with the time; when it starts the container again it notes that time too, so a
    later crash of the same container is not mistaken for the stop. Marks are kept in this
    process and in Redis with an expiry (the grace period plus a margin), because the events
    are usually read by another process (the monitor) than the one that stopped the container
    (a Celery worker). Times are this host's clock, compared with the engine's event times: the
    engine is expected on this host (as the agents' ports are). Without Redis a mark only
    reaches this process; the portal's pending-action marker still keeps a requested stop from
    counting as a crash.
    """

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._client: redis.Redis | None = None

    def mark(self, container_id: str, grace_seconds: float) -> None:
        """The portal is about to stop (or remove) this container."""
        self._set("stop", container_id, int(grace_seconds) + STOP_MARK_MARGIN_SECONDS)

    def started(self, container_id: str) -> None:
        """The portal is starting this container again: its next ``die`` is not that stop."""
        self._set("start", container_id, START_MARK_SECONDS)

    def retire(self, container_id: str) -> None:
        """The portal stopped this container on purpose and means it to stay stopped (one
        replica of a running agent, during an upgrade): it is neither running nor crashed."""
        self._set("retired", container_id, RETIRED_MARK_SECONDS)

    def is_retired(self, container_id: str, started_at: float | None) -> bool:
        """Whether this container was retired after it last started (``started_at``, a Unix
        time): starting it again ends its retirement."""
        retired = self._get("retired", container_id)
        if retired is None:
            return False
        return started_at is None or started_at * 1_000_000_000 < retired

    def was_requested(self, container_id: str, at: int) -> bool:
        """Whether the ``die`` of this container at ``at`` (ns) is a stop the portal asked for."""
        stopped, started = self._get("stop", container_id), self._get("start", container_id)
        if stopped is None:
            return False
        return not (started is not None and started > stopped and at > started)

    def _set(self, what: str, container_id: str, ttl: int) -> None:
        now = time.time_ns()
        with _marks_lock:
            moment = time.monotonic()
            for key, (_, until) in list(_marks.items()):
                if until <= moment:
                    del _marks[key]
            _marks[(what, container_id)] = (now, moment + ttl)
        with contextlib.suppress(redis.RedisError, OSError):
            self._redis().set(
                MARK_KEY.format(what=what, container_id=container_id), str(now), ex=ttl
            )

    def _get(self, what: str, container_id: str) -> int | None:
        with _marks_lock:
            local = _marks.get((what, container_id))
        if local is not None and local[1] > time.monotonic():
            return local[0]
        try:
            value = self._redis().get(MARK_KEY.format(what=what, container_id=container_id))
        except (redis.RedisError, OSError):
            return None
        return int(value) if value and value.isdigit() else None

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.redis_url, socket_timeout=2, socket_connect_timeout=2
            )
        return self._client


def since_parameter(nanoseconds: int) -> str:
    """The engine's ``since`` in its ``seconds.nanoseconds`` form (no rounding to seconds)."""
    return f"{nanoseconds // 1_000_000_000}.{nanoseconds % 1_000_000_000:09d}"


def event_stream(
    connect: Callable[[], docker.DockerClient],
    since_id: str | None,
    stop: threading.Event,
    translate: Callable[[dict[str, Any], int], RuntimeEvent | None],
) -> Iterator[RuntimeEvent]:
    """Runtime events after ``since_id`` until ``stop`` is set, across engine restarts and
    dropped connections. ``connect`` answers a client (or raises); ``translate`` turns one
    engine event into a runtime event, or None for one the portal does not care about."""
    last = int(since_id) if since_id and since_id.isdecimal() else time.time_ns()
    current: list[Any] = [None]
    lock = threading.Lock()
    finished = threading.Event()

    def close_when_stopped() -> None:
        # The stream blocks until the engine sends something: close its socket from here so
        # the reader returns as soon as ``stop`` is set.
        while not finished.is_set():
            if stop.wait(STOP_POLL_SECONDS):
                with lock:
                    if current[0] is not None:
                        with contextlib.suppress(Exception):
                            current[0].close()
                return

    closer = threading.Thread(target=close_when_stopped, name="docker-events-closer", daemon=True)
    closer.start()
    backoff = RECONNECT_BACKOFF[0]
    try:
        while not stop.is_set():
            try:
                stream = connect().api.events(
                    since=since_parameter(last), filters=EVENT_FILTERS, decode=True
                )
            except (
                RuntimeFailure,
                docker.errors.DockerException,
                requests.RequestException,
            ) as exc:
                logger.warning("Docker events unavailable (%s); retrying in %.1fs", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, RECONNECT_BACKOFF[1])
                continue
            with lock:
                current[0] = stream
            if stop.is_set():
                break
            backoff = RECONNECT_BACKOFF[0]
            try:
                for raw in stream:
                    moment = _nanoseconds(raw)
                    if moment <= last:
                        continue
                    last = moment
                    event = translate(raw, moment)
                    if event is not None:
                        yield event
            except (docker.errors.DockerException, requests.RequestException, OSError, ValueError):
                pass  # the stream broke: reconnect and ask again from the last event handled
            finally:
                with lock:
                    current[0] = None
                with contextlib.suppress(Exception):
                    stream.close()
            if not stop.is_set():
                # The stream ended without our asking (the engine went away or restarted).
                stop.wait(backoff)
                backoff = min(backoff * 2, RECONNECT_BACKOFF[1])
    finally:
        finished.set()
        with lock:
            if current[0] is not None:
                with contextlib.suppress(Exception):
                    current[0].close()


def _nanoseconds(raw: dict[str, Any]) -> int:
    if raw.get("timeNano"):
        return int(raw["timeNano"])
    return int(raw.get("time") or 0) * 1_000_000_000


def translate_event(
    raw: dict[str, Any],
    moment: int,
    stop_requests: StopRequests,
    inspect_oom: Callable[[str], bool | None],
) -> RuntimeEvent | None:
    """One engine event as a runtime event; None for events the portal does not act on."""
    action = str(raw.get("Action") or raw.get("status") or "")
    kind = KINDS.get(action)
    actor = raw.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    slug = attributes.get(AGENT_LABEL)
    if kind is None or not slug:
        return None
    container_id = str(actor.get("ID") or raw.get("id") or "")
    details: dict[str, Any] = {
        "container_id": container_id,
        "container": attributes.get("name"),
        "image": attributes.get("image"),
        "action": action,
        "runtime": "docker",
    }
    exit_code = signal_number = None
    if kind in ("exited", "removed"):
        details["requested_stop"] = stop_requests.was_requested(container_id, moment)
    if kind == "exited":
        code = str(attributes.get("exitCode", ""))
        exit_code = int(code) if code.lstrip("-").isdecimal() else None
        signal_number = exit_signal(exit_code)
        if exit_code == 137:
            # Killed: by the kernel for its memory (the "oom" event may come before or after
            # this one), or by someone. The container says which, while it still exists.
            oom = inspect_oom(container_id)
            if oom is not None:
                details["oom"] = oom
    return RuntimeEvent(
        kind=kind,
        slug=slug,
        replica=labelled_replica(attributes) or 0,
        at=moment / 1_000_000_000,
        exit_code=exit_code,
        signal=signal_number,
        details=details,
        id=str(moment),
    )
