"""Set-up steps ``manage.py up`` runs after migrating, before it serves.

Each step takes the acting ``Actor`` and an output stream, and must be idempotent. Apps append
theirs (the agent registry seeds the 14 Platform CoE agents here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from portal.actors import Actor

STARTUP_STEPS: list[Callable[[Actor, TextIO], None]] = []
