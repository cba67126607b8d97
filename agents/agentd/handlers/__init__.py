"""The handlers, one per factory template: what a task does on an agent of that template.

The config's ``template`` names one, its ``settings`` configure it. :func:`parse_settings`
checks the settings (filling in defaults) when the config is read, so a bad value stops agentd
from starting or refuses the ``PATCH /config`` that brings it; :func:`build_handler` makes the
handler the worker then calls for every task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import api, blank, data, memory, monitoring, orchestration
from .base import Handler, HandlerContext, Invalid, Settings, Task, TaskError

__all__ = [
    "DEFAULT_TEMPLATE",
    "TEMPLATES",
    "Handler",
    "HandlerContext",
    "Invalid",
    "Task",
    "TaskError",
    "build_handler",
    "parse_settings",
]


@dataclass(frozen=True)
class Template:
    parse_settings: Callable[..., dict[str, Any]]
    handler: Callable[[Settings, HandlerContext], Handler]


TEMPLATES: dict[str, Template] = {
    "blank": Template(blank.parse_settings, blank.BlankHandler),
    "memory": Template(memory.parse_settings, memory.MemoryHandler),
    "orchestration": Template(orchestration.parse_settings, orchestration.OrchestrationHandler),
    "api": Template(api.parse_settings, api.ApiHandler),
    "data": Template(data.parse_settings, data.DataHandler),
    "monitoring": Template(monitoring.parse_settings, monitoring.MonitoringHandler),
}
DEFAULT_TEMPLATE = "blank"


def parse_settings(template: str, settings: object, *, slug: str) -> dict[str, Any]:
    """The settings of ``template`` for the agent ``slug``, checked, with defaults filled in;
    :class:`Invalid` names the first bad key (``settings.max_keys ...``)."""
    return TEMPLATES[template].parse_settings(settings, slug=slug)


def build_handler(template: str, settings: Settings, context: HandlerContext) -> Handler:
    """The handler of ``template`` with settings that :func:`parse_settings` answered;
    :class:`Invalid` when what it needs around it is not there (its data directory...)."""
    return TEMPLATES[template].handler(settings, context)
