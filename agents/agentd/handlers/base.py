"""What every template's handler is: the work one task does, and the settings it is given.

A handler turns a task's payload into the reply's output, or raises :class:`TaskError`: the
worker then counts a failed attempt with the error's message, exactly as for an injected fault
(retried, dead-lettered after ``task_max_failures``). A handler is built from the config's
``template`` and ``settings``, used by the worker thread only, and closed when the config names
another (or the agent stops).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from ..log import JsonLogger
from ..metrics import ProbeStatus


class TaskError(Exception):
    """This attempt of the task failed; the message is the attempt's error, as it is."""


class Invalid(ValueError):
    """A value that breaks a rule: settings agentd cannot run with (a bad configuration), or a
    payload a task cannot be done with (a failed attempt). The message names the key."""


@dataclass(frozen=True)
class Task:
    """One task as a handler sees it."""

    message_id: str
    payload: dict[str, Any]
    customer: str = ""


@dataclass(frozen=True)
class HandlerContext:
    """What a handler may use of the agent around it."""

    slug: str
    data_dir: Path
    logger: JsonLogger
    # A Redis client on the agent's Redis with the given socket timeout (seconds).
    connect_redis: Callable[[float], redis.Redis]


class Handler:
    """The base of every template's handler."""

    template = ""

    def handle(self, task: Task) -> dict[str, Any]:
        """The reply's output for ``task``; raises :class:`TaskError` when the attempt fails."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the handler holds (threads, connections); called once, at the end."""

    def longest_task_seconds(self) -> float:
        """How long one task may take by the settings, so another replica does not claim a
        task that is still being worked on."""
        return 0.0

    def probes(self) -> Sequence[ProbeStatus]:
        """The targets the handler watches, for ``/metrics`` (only monitoring has any)."""
        return ()


# A template's settings, as its parse_settings answered them (defaults filled in).
Settings = Mapping[str, Any]
