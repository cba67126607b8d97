"""What the help desk's playbooks register when the app is ready (API routers, lookups, workflow
step kinds, sweeps); called from ``HelpdeskConfig.ready``."""

from __future__ import annotations


def register() -> None:
    pass
