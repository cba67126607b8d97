"""Server push: rendered HTML fragments sent to the browsers that show them.

Pages subscribe a WebSocket (``portal.consumers.LiveConsumer``) to groups; code anywhere (a
request, a Celery task, the monitor) calls :func:`publish` after a change is committed, with
the fragments that change. Each fragment's root carries an ``id``; the htmx ``ws`` extension
swaps it into the page out of band.

Publishing goes through one background event loop per process, so the Redis channel layer keeps
its connections instead of opening new ones per message (``async_to_sync`` would create a
loop per call). Per group, a message goes out at once if the group had none in the last
``THROTTLE_SECONDS``; otherwise fragments are merged (the newest per element id wins) and sent
when the window ends, so a burst (a bulk job, a log tail) costs one message per window.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

THROTTLE_SECONDS = 0.25
MESSAGE_TYPE = "live.fragments"
_GROUP_SAFE = re.compile(r"[^A-Za-z0-9_.-]")

# Access levels that see different fragments (an Operator's card has an actions menu).
ACCESS_VIEW = "view"
ACCESS_OPERATE = "operate"
ACCESS_LEVELS = (ACCESS_VIEW, ACCESS_OPERATE)


def group_name(*parts: object) -> str:
    """A channel-layer group name (letters, digits, ``.``, ``-``, ``_`` only, < 100 chars)."""
    return _GROUP_SAFE.sub("_", ".".join(str(part) for part in parts))[:99]


def fleet_group(access: str) -> str:
    """Every page's frame at this access level: alert toasts, the sidebar, the agent switcher."""
    return group_name("fleet", access)


def user_group(user_id: int) -> str:
    return group_name("user", user_id)


# --- topics: what a page subscribes to -----------------------------------------------------------
#
# A page subscribes to what it shows, so it is sent nothing it has no element for. Every element
# a push swaps carries ``data-live-subscribe="<topic>"``; the page sends the topics of the ones it
# holds (static/js/portal.js), again whenever a swap adds or removes some. Apps register their
# topics from ``AppConfig.ready``: named ones (``fleet-counts``) and kinds with a key
# (``card:<slug>``) with how to tell which keys name something; portal itself knows none.


@dataclass(frozen=True)
class _Named:
    per_access: bool
    group: str
    resync: Callable[[], None] | None = None


@dataclass(frozen=True)
class _Kind:
    per_access: bool
    existing: Callable[[list[str]], set[str]]
    resync: Callable[[list[str]], None] | None = None


_NAMED_TOPICS: dict[str, _Named] = {}
_TOPIC_KINDS: dict[str, _Kind] = {}
_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def register_topic(
    name: str,
    *,
    per_access: bool = False,
    group: str = "",
    resync: Callable[[], None] | None = None,
) -> None:
    """Let pages subscribe to ``name``; ``per_access`` when a Viewer and an Operator are sent
    different HTML (an Operator's has buttons); ``group`` names its group (default: the name).
    ``resync()`` publishes what the topic shows now (see :func:`resync`)."""
    _NAMED_TOPICS[name] = _Named(per_access, group or group_name(name), resync)


def register_topic_kind(
    kind: str,
    *,
    existing: Callable[[list[str]], set[str]],
    per_access: bool = False,
    resync: Callable[[list[str]], None] | None = None,
) -> None:
    """Let pages subscribe to ``<kind>:<key>``; ``existing(keys)`` says which keys name
    something (it runs in a thread and may query the database; keys match ``[A-Za-z0-9_-]``).
    ``resync(keys)`` publishes what those keys' elements show now (see :func:`resync`)."""
    _TOPIC_KINDS[kind] = _Kind(per_access, existing, resync)


def topic_group(name: str, access: str = ACCESS_VIEW) -> str:
    """The group behind a named topic, for the given access level when that matters."""
    topic = _NAMED_TOPICS[name]
    return group_name(topic.group, access) if topic.per_access else topic.group


def kind_group(kind: str, key: object, access: str = ACCESS_VIEW) -> str:
    """The group behind ``<kind>:<key>``, for the given access level when that matters."""
    if _TOPIC_KINDS[kind].per_access:
        return group_name(kind, key, access)
    return group_name(kind, key)


def topic_groups(topics: list[object], access: str) -> dict[str, str]:
    """Topic → group for those of ``topics`` that exist (the rest are left out). One
    ``existing`` call per kind, so a page of many cards costs one query."""
    found: dict[str, str] = {}
    keys_by_kind: dict[str, dict[str, str]] = {}
    for topic in topics:
        if not isinstance(topic, str):
            continue
        if topic in _NAMED_TOPICS:
            found[topic] = topic_group(topic, access)
            continue
        kind, _, key = topic.partition(":")
        if kind in _TOPIC_KINDS and _KEY.fullmatch(key):
            keys_by_kind.setdefault(kind, {})[key] = topic
    for kind, keys in keys_by_kind.items():
        for key in _TOPIC_KINDS[kind].existing(list(keys)):
            if key in keys:
                found[keys[key]] = kind_group(kind, key, access)
    return found


class Publisher:
    """Sends fragments to groups from synchronous code, throttled per group."""

    def __init__(self, throttle: float = THROTTLE_SECONDS) -> None:
        self.throttle = throttle
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._pending: dict[str, OrderedDict[str, str]] = {}
        self._last_sent: dict[str, float] = {}
        self._scheduled: set[str] = set()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or not self._loop.is_running():
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                threading.Thread(target=run, name="live-publisher", daemon=True).start()
                started.wait(5)
                self._loop = loop
            return self._loop

    def publish(self, group: str, fragments: dict[str, str]) -> None:
        """Queue ``fragments`` (element id → HTML) for ``group``; returns at once."""
        if not fragments:
            return
        loop = self._ensure_loop()
        loop.call_soon_threadsafe(self._enqueue, group, dict(fragments))

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far has been handed to the channel layer (tests)."""
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(self._drain(), loop)
        future.result(timeout)

    # --- inside the loop ----------------------------------------------------------------------

    def _enqueue(self, group: str, fragments: dict[str, str]) -> None:
        pending = self._pending.setdefault(group, OrderedDict())
        for element_id, html in fragments.items():
            pending.pop(element_id, None)
            pending[element_id] = html
        if group in self._scheduled:
            return
        wait = self._last_sent.get(group, 0.0) + self.throttle - time.monotonic()
        self._scheduled.add(group)
        if wait <= 0:
            asyncio.ensure_future(self._send(group))
        else:
            self._loop.call_later(wait, lambda: asyncio.ensure_future(self._send(group)))

    async def _send(self, group: str) -> None:
        self._scheduled.discard(group)
        fragments = self._pending.pop(group, None)
        if not fragments:
            return
        self._last_sent[group] = time.monotonic()
        layer = get_channel_layer()
        try:
            await layer.group_send(
                group,
                {"type": MESSAGE_TYPE, "html": "".join(fragments.values()), "sent": time.time()},
            )
        except Exception as exc:  # Redis away: the pages fall back to polling meanwhile
            logger.warning("could not publish to %s: %s", group, exc)
            _count_push(failed=True)
        else:
            _count_push(len(fragments))

    async def _drain(self) -> None:
        while self._scheduled or self._pending:
            await asyncio.sleep(0.01)


def _count_push(fragments: int = 0, *, failed: bool = False) -> None:
    """For /-/metrics: one message pushed with ``fragments`` in it, or one the layer refused."""
    from portal import prometheus  # here: realtime is imported before the apps are ready

    if failed:
        prometheus.PUSH_FAILURES.inc()
    else:
        prometheus.PUSHES.inc()
        prometheus.PUSHED_FRAGMENTS.inc(fragments)


publisher = Publisher()


def publish(group: str, fragments: dict[str, str]) -> None:
    publisher.publish(group, fragments)


_redis_client = None


def watched(groups: list[str]) -> set[str]:
    """Which of ``groups`` have a subscriber right now (a web process with a socket in them).

    One PUBSUB NUMSUB round trip, so an event renders only the fragments somebody will see:
    nobody has every agent's detail page open. When Redis cannot answer, nothing is watched
    (nothing could be sent either).
    """
    import redis

    if not groups:
        return set()
    prefix = _prefix()
    now = f"{time.time():.3f}"
    try:
        # Asking who watches is what a change does before it renders: the groups are marked
        # changed in the same round trip (a page subscribing later learns it, see resync).
        pipeline = _client().pipeline(transaction=False)
        pipeline.pubsub_numsub(*(f"{prefix}__group__{group}" for group in groups))
        for group in groups:
            pipeline.set(_changed_key(prefix, group), now, ex=CHANGE_MEMORY_SECONDS)
        counts = pipeline.execute()[0]
    except redis.RedisError as exc:
        logger.warning("cannot tell which live groups are watched: %s", exc)
        return set()
    return {group for group, (_, count) in zip(groups, counts, strict=True) if count}


# --- a page's first subscription, and the changes made while it loaded ----------------------------
#
# A page is rendered, then its socket subscribes: a change made in between is pushed to nobody
# (nobody watched yet), and the page would show the old state until the next change. So every
# change marks its groups with the time (in :func:`watched`), the page's first subscription says
# when its request began (``since``), and the groups it joined that changed since are published
# again by their topic's ``resync`` hook; topics without one make the page fetch its live
# regions again (the ``live:resync`` event, ``#live-resync``).

CHANGE_MEMORY_SECONDS = 300  # a page older than this at its first subscription is resynced


def _prefix() -> str:
    from django.conf import settings

    return settings.CHANNEL_LAYERS["default"]["CONFIG"].get("prefix", "asgi")


def _changed_key(prefix: str, group: str) -> str:
    return f"{prefix}__changed__{group}"


def _client():
    import redis
    from django.conf import settings

    if _redis_client is None or _redis_client_url != settings.REDIS_URL:
        _set_client(redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1), settings.REDIS_URL)
    return _redis_client


def changed_since(groups: list[str], since: float) -> set[str]:
    """Which of ``groups`` changed after ``since`` (seconds since the epoch); all of them when
    ``since`` is older than what is remembered, none when Redis cannot say."""
    import redis

    if not groups:
        return set()
    if time.time() - since > CHANGE_MEMORY_SECONDS:
        return set(groups)
    prefix = _prefix()
    try:
        marks = _client().mget([_changed_key(prefix, group) for group in groups])
    except redis.RedisError as exc:
        logger.warning("cannot tell which live groups changed: %s", exc)
        return set()
    return {
        group for group, mark in zip(groups, marks, strict=True) if mark and float(mark) > since
    }


def resync(topics: dict[str, str]) -> bool:
    """Publish again what the ``topics`` (topic -> group, the groups that changed) show, through
    their topics' ``resync`` hooks; answers whether some had none (the page must fetch those
    parts itself). Runs in a thread: the hooks query the database."""
    unhandled = False
    keys_by_kind: dict[str, list[str]] = {}
    for topic in topics:
        if topic in _NAMED_TOPICS:
            hook = _NAMED_TOPICS[topic].resync
            if hook is None:
                unhandled = True
            else:
                hook()
            continue
        kind, _, key = topic.partition(":")
        if kind in _TOPIC_KINDS and _TOPIC_KINDS[kind].resync is not None:
            keys_by_kind.setdefault(kind, []).append(key)
        else:
            unhandled = True
    for kind, keys in keys_by_kind.items():
        hook = _TOPIC_KINDS[kind].resync
        if hook is not None:
            hook(keys)
    return unhandled


_redis_client_url = ""


def _set_client(client, url: str) -> None:
    global _redis_client, _redis_client_url
    _redis_client, _redis_client_url = client, url
