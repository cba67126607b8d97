"""Runtimes: where agents run, behind one interface (:class:`~agents.runtimes.base.Runtime`).

``get_runtime("local", root=..., redis_url=...)`` builds one by name. Implementations are
imported only when asked for, so the local runtime's shim (which imports this package) and
callers that never touch Docker or Kubernetes do not load those SDKs.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import (
    AgentSpec,
    LogLine,
    ReplicaStats,
    ReplicaStatus,
    Runtime,
    RuntimeEvent,
    RuntimeFailure,
    RuntimeStatus,
)

__all__ = [
    "AgentSpec",
    "LogLine",
    "ReplicaStats",
    "ReplicaStatus",
    "Runtime",
    "RuntimeEvent",
    "RuntimeFailure",
    "RuntimeStatus",
    "get_runtime",
    "register_runtime",
    "runtime_names",
]

# name -> "module:ClassName"
_REGISTRY: dict[str, str] = {
    "local": "agents.runtimes.local:LocalRuntime",
    "docker": "agents.runtimes.docker:DockerRuntime",
    "kubernetes": "agents.runtimes.kubernetes:KubernetesRuntime",
}


def register_runtime(name: str, target: str) -> None:
    """Make a runtime available to :func:`get_runtime` as ``name``; ``target`` is
    ``"package.module:ClassName"``."""
    _REGISTRY[name] = target


def runtime_names() -> list[str]:
    return sorted(_REGISTRY)


def get_runtime(name: str, **kwargs: Any) -> Runtime:
    """A runtime of the kind ``name``, constructed with ``kwargs``."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise RuntimeFailure(
            f"unknown runtime {name!r}; available: {', '.join(runtime_names())}",
            reason="bad_config",
            details={"runtime": name},
        ) from None
    module_name, _, class_name = target.partition(":")
    runtime_class = getattr(importlib.import_module(module_name), class_name)
    return runtime_class(**kwargs)
