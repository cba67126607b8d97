"""Agent events: published once, after the change that caused them is committed.

Whatever changes an agent (a request, a Celery task, the monitor) calls ``emit`` inside its
transaction; listeners (the real-time layer, the event log) hear about it only if and when that
transaction commits, so nobody is ever told about a change that was rolled back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.db import transaction

if TYPE_CHECKING:
    from agents.models import Agent

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentEvent:
    kind: str  # "transition", "pending", "health", "operation", "registry"
    agent_id: int
    slug: str
    state: str
    health: str
    pending_action: str
    name: str = ""
    at: float = field(default_factory=time.time)
    data: dict = field(default_factory=dict)


Listener = Callable[[AgentEvent], None]
_listeners: list[Listener] = []
_recorders: list[Listener] = []


def record_with(recorder: Listener) -> Listener:
    """Register a recorder: called inside the transaction that emits the event, so what it
    writes (the event log) commits or rolls back with the change itself. Returns it."""
    if recorder not in _recorders:
        _recorders.append(recorder)
    return recorder


def subscribe(listener: Listener) -> Listener:
    """Register a listener; returns it, so this works as a decorator."""
    if listener not in _listeners:
        _listeners.append(listener)
    return listener


def unsubscribe(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def emit(kind: str, agent: Agent, **data: object) -> None:
    """Publish an event about ``agent`` when the current transaction commits."""
    event = AgentEvent(
        kind=kind,
        agent_id=agent.pk,
        slug=agent.slug,
        state=agent.state,
        health=agent.health,
        pending_action=agent.pending_action,
        name=agent.name,
        data=data,
    )
    for recorder in list(_recorders):
        try:
            with transaction.atomic():  # a savepoint: a failing recorder undoes only itself
                recorder(event)
        except Exception:
            logger.exception("agent event recorder %r failed", recorder)
    transaction.on_commit(lambda: _deliver(event), robust=True)


def _deliver(event: AgentEvent) -> None:
    logger.info(
        "agent event %s %s", event.kind, event.slug,
        extra={"event": event.kind, "agent": event.slug, "state": event.state, "health": event.health},
    )  # fmt: skip
    for listener in list(_listeners):
        try:
            listener(event)
        except Exception:  # one broken listener must not stop the others
            logger.exception("agent event listener %r failed", listener)


# --- bulk operations ------------------------------------------------------------------------


@dataclass(frozen=True)
class BulkEvent:
    kind: str  # "created", "item", "progress", "finished"
    bulk_id: int
    item_id: int | None = None
    at: float = field(default_factory=time.time)


BulkListener = Callable[[BulkEvent], None]
_bulk_listeners: list[BulkListener] = []


def subscribe_bulk(listener: BulkListener) -> BulkListener:
    if listener not in _bulk_listeners:
        _bulk_listeners.append(listener)
    return listener


def emit_bulk(kind: str, bulk_id: int, item_id: int | None = None) -> None:
    """Publish a change to a bulk operation (or one of its items) when the transaction commits."""
    event = BulkEvent(kind=kind, bulk_id=bulk_id, item_id=item_id)
    transaction.on_commit(lambda: _deliver_bulk(event), robust=True)


def _deliver_bulk(event: BulkEvent) -> None:
    for listener in list(_bulk_listeners):
        try:
            listener(event)
        except Exception:
            logger.exception("bulk event listener %r failed", listener)
