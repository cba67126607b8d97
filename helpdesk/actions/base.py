"""What every quick action answers, and how one is declared."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.models import Agent
    from helpdesk.models import Customer
    from portal.actors import Actor


@dataclass(frozen=True)
class ActionResult:
    """What an action did: ``ok`` false when it was carried out and did not work (a restart
    that failed, a memory store that did not answer); a refusal is raised instead."""

    action: str
    ok: bool
    message: str
    details: dict = field(default_factory=dict)


Runner = Callable[["Actor", "Customer", "Agent | None", dict[str, Any]], ActionResult]
Describer = Callable[["Customer", "Agent | None", dict[str, Any]], str]


@dataclass(frozen=True)
class Spec:
    """One quick action: its label, whether it acts on one of the customer's agents (``agent``:
    "required", "optional" or "none"), its params, whether it needs a confirmation (destructive),
    and the functions that carry it out and describe it. ``atomic``: it only writes rows, so
    they and its audit entry commit together (an action that waits for a worker cannot)."""

    name: str
    label: str
    agent: str
    params: tuple[str, ...]
    destructive: bool
    run: Runner
    describe: Describer
    help: str = ""
    atomic: bool = False
