"""The one WebSocket a page opens: ``/ws/live/``.

On connect the socket joins the fleet group for the user's access level (what every page's frame
shows: alert toasts, the sidebar's badge, the agent switcher) and the user's own group (toasts for
actions they took). The page then sends ``{"subscribe": ["card:wow-cache", "fleet-counts",
"agent:wow-cache", "logs:*", ...]}`` for what else it shows, and ``unsubscribe`` for what it no
longer shows (see portal.realtime); each topic is checked before it is joined.
Server → browser messages are HTML fragments for the htmx ws extension. A heartbeat every
``LIVE_HEARTBEAT_SECONDS`` (one per web process) goes through the channel layer itself, so a dead
Redis closes the sockets (code 1011) and the pages switch to polling until they can reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from portal import prometheus, realtime, roles

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
# A page of 100 agent cards and its frame's topics fit.
MAX_SUBSCRIPTIONS = 200
_PUSH_TYPES = frozenset({"live.fragments", "live.heartbeat"})


def _is_time(value: object) -> bool:
    """A page's ``since``: seconds since the epoch, not in the future by more than a minute."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and 0 < value < time.time() + 60
    )


def _heartbeat_seconds() -> int:
    return settings.LIVE_HEARTBEAT_SECONDS


class LiveConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        role = await database_sync_to_async(roles.role_of)(user)
        if role is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.access = (
            realtime.ACCESS_OPERATE
            if roles.role_allows(role, roles.OPERATE)
            else realtime.ACCESS_VIEW
        )
        self.groups_joined: set[str] = set()
        await self.accept()
        prometheus.WEBSOCKETS.inc()
        self._counted = True
        try:
            await self._join(realtime.fleet_group(self.access))
            await self._join(realtime.user_group(user.pk))
            await self._join(_heartbeat.group)
        except Exception as exc:
            logger.warning("live socket cannot join its groups: %s", exc)
            await self.close(code=1011)
            return
        self._base_groups = set(self.groups_joined)
        _heartbeat.ensure_running(self.channel_layer)
        self._heartbeat_answered = time.monotonic()
        self._watchdog = asyncio.ensure_future(self._watch())

    async def disconnect(self, code: int) -> None:
        if getattr(self, "_counted", False):
            prometheus.WEBSOCKETS.dec()
            self._counted = False
        task = getattr(self, "_watchdog", None)
        if task is not None:
            task.cancel()
        for group in getattr(self, "groups_joined", set()):
            # Redis may be the very reason the socket is closing.
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            message = json.loads(text_data or "")
        except json.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        topics = message.get("subscribe")
        joined: dict[str, str] = {}
        if isinstance(topics, list):
            joined = await self._groups_for(topics)
            for group in joined.values():
                await self._join(group)
        since = message.get("since")
        if not getattr(self, "_since_checked", False) and _is_time(since):
            # The page's first subscription: what changed while it loaded is sent again now
            # that the socket is in the groups (see portal.realtime.resync).
            self._since_checked = True
            await self._resync(joined, float(since))
        # What a page no longer shows (a swapped region, a paused log tail). Only groups the
        # page asked for can be left: the fleet, user and heartbeat groups stay.
        topics = message.get("unsubscribe")
        if isinstance(topics, list):
            for group in (await self._groups_for(topics)).values():
                if group not in self._base_groups:
                    await self._leave(group)

    async def _groups_for(self, topics: list) -> dict[str, str]:
        """Topic -> group for the topics the user may see (unknown ones left out)."""
        return await database_sync_to_async(realtime.topic_groups)(
            topics[:MAX_SUBSCRIPTIONS], self.access
        )

    async def _resync(self, joined: dict[str, str], since: float) -> None:
        try:
            changed = await database_sync_to_async(realtime.changed_since)(
                list(joined.values()), since
            )
            stale = {topic: group for topic, group in joined.items() if group in changed}
            if stale and await database_sync_to_async(realtime.resync)(stale):
                await self.send(
                    text_data=f'<span id="live-resync" hidden data-at="{time.time():.3f}"></span>'
                )
        except Exception as exc:  # a page that cannot be resynced still gets later pushes
            logger.warning("live socket cannot resync its page: %s", exc)

    async def _leave(self, group: str) -> None:
        if group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
            self.groups_joined.discard(group)

    async def _join(self, group: str) -> None:
        if group not in self.groups_joined and len(self.groups_joined) < MAX_SUBSCRIPTIONS + 2:
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.add(group)

    async def _watch(self) -> None:
        """Close when the process heartbeat stops arriving (the channel layer is down)."""
        while True:
            await asyncio.sleep(_heartbeat_seconds())
            if time.monotonic() - self._heartbeat_answered > 3 * _heartbeat_seconds():
                logger.info("live socket closing: no heartbeat through the channel layer")
                await self.close(code=1011)
                return

    # --- messages from the channel layer -------------------------------------------------------

    async def dispatch(self, message: dict) -> None:
        # Channels closes stale database connections (a thread hop) before every message; pushes
        # touch no database, and with hundreds of sockets that hop per socket per push was most
        # of the fan-out's cost (benchmarks/bench_realtime.py).
        if message["type"] in _PUSH_TYPES:
            await getattr(self, message["type"].replace(".", "_"))(message)
            return
        await super().dispatch(message)

    async def live_fragments(self, event: dict) -> None:
        await self.send(text_data=event["html"])

    async def live_heartbeat(self, event: dict) -> None:
        self._heartbeat_answered = time.monotonic()
        await self.send(
            text_data=f'<span id="live-beat" hidden data-at="{time.time():.3f}"></span>'
        )


class _ProcessHeartbeat:
    """One heartbeat per web process, sent through the channel layer to every socket in it.

    A message that makes the round trip proves Redis carries messages; when it stops coming,
    each socket's watchdog closes it. One publish per interval, whatever the number of sockets.
    """

    def __init__(self) -> None:
        self.group = realtime.group_name("live-beat", socket.gethostname(), os.getpid())
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def ensure_running(self, layer) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._task = loop.create_task(self._run(layer))

    async def _run(self, layer) -> None:
        while True:
            try:
                await asyncio.wait_for(
                    layer.group_send(self.group, {"type": "live.heartbeat"}), _heartbeat_seconds()
                )
            except Exception as exc:
                logger.info("live heartbeat not sent: %s", exc)
            await asyncio.sleep(_heartbeat_seconds())


_heartbeat = _ProcessHeartbeat()
