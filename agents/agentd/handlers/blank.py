"""The blank template: the output is the task's payload, a stand-in for work still to be
written."""

from __future__ import annotations

from typing import Any

from . import checks
from .base import Handler, HandlerContext, Settings, Task


def parse_settings(data: object, *, slug: str) -> dict[str, Any]:
    checks.only_known("settings", checks.mapping("settings", data), ())
    return {}


class BlankHandler(Handler):
    template = "blank"

    def __init__(self, settings: Settings, context: HandlerContext) -> None:
        pass

    def handle(self, task: Task) -> dict[str, Any]:
        return task.payload
