"""Why an agent's start failed, told as a RuntimeFailure an operator can act on.

What every runtime that watches agentd start has in common: reading how it ended by the exit
statuses its contract defines (:mod:`agents.agentd.contract`), the port it could not bind, the
readiness it never reached. Each runtime adds what only it knows (a container's id, its
engine's own error) in ``details``.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from typing import Any

from ..agentd.contract import BAD_CONFIG_MARKER, EXIT_BAD_CONFIG, EXIT_BIND_FAILED
from .base import AgentSpec, RuntimeFailure
from .ports import HOST, port_holder

# How many of the agent's last log lines a failure carries in its details.
FAILURE_LOG_LINES = 20


def who(spec: AgentSpec, replica: int) -> str:
    """The agent, or the replica when it has several."""
    return spec.name if spec.replicas == 1 else f"{spec.name} replica {replica}"


def ended_before_ready(
    spec: AgentSpec,
    replica: int,
    port: int,
    *,
    exit_code: int | None,
    signal_number: int | None,
    oom: bool,
    log_lines: list[str],
    details: dict[str, Any],
    not_run: str | None = None,
) -> RuntimeFailure:
    """A replica ended before it was ready: say why, from its exit status (agentd's contract),
    its memory kill and its last log lines. ``not_run`` says why its process could not even be
    started, when that is what happened."""
    name = who(spec, replica)
    if oom:
        return RuntimeFailure(
            f"{name} was killed during start for using more than its {spec.memory_mb} MiB "
            "memory limit; raise the limit or find what holds the memory.",
            reason="oom",
            details=details,
        )
    if exit_code == EXIT_BIND_FAILED:
        return port_in_use(spec, replica, port, details)
    if exit_code == EXIT_BAD_CONFIG:
        said = [line for line in log_lines if BAD_CONFIG_MARKER in line]
        why = said[-1].split(BAD_CONFIG_MARKER, 1)[-1].strip() if said else "see the log lines"
        return RuntimeFailure(
            f"{name} refused its configuration ({why}); correct the config and start it again.",
            reason="bad_config",
            details=details,
        )
    if not_run:
        how = f"could not be started ({not_run})"
    elif signal_number:
        how = f"was killed by {signal_name(signal_number)}"
        if exit_code is not None:
            how += f" (exit code {exit_code})"
    else:
        how = f"exited with code {exit_code}"
    return RuntimeFailure(
        f"{name} {how} before it was ready; see its last log lines.",
        reason="crashed_on_start",
        details=details,
    )


def port_in_use(
    spec: AgentSpec, replica: int, port: int, details: dict[str, Any] | None = None
) -> RuntimeFailure:
    """The replica cannot listen on its port: something else holds it (named when it can be)."""
    holder = port_holder(port)
    by = f" by {holder['description']}" if holder else ""
    return RuntimeFailure(
        f"{who(spec, replica)} cannot listen on {HOST}:{port}: the port is in use{by}. "
        "Stop whatever holds it, or remove and provision the agent again for a new port.",
        reason="port_in_use",
        details={
            **(details or {"replica": replica, "port": port, "log_lines": []}),
            "holder": holder,
        },
    )


def not_ready(
    spec: AgentSpec,
    replica: int,
    port: int,
    answer: dict[str, Any] | None,
    log_lines: list[str],
    *,
    unhealthy: bool = False,
    details: dict[str, Any] | None = None,
) -> RuntimeFailure:
    """The replica runs but did not answer ``/readyz`` in time (``answer`` is its last one);
    ``unhealthy`` when the runtime's own health check gave up on it first."""
    body = (answer or {}).get("body")
    why = body.get("reason") if isinstance(body, dict) else None
    said = f" (last answer: {why})" if why else ""
    if unhealthy:
        said += "; the engine's health check reports it unhealthy"
    return RuntimeFailure(
        f"{who(spec, replica)} did not become ready within {spec.ready_timeout:g}s{said}; "
        "it was stopped. Check its dependencies and log lines.",
        reason="not_ready",
        details={
            "replica": replica,
            "port": port,
            "ready_timeout": spec.ready_timeout,
            "last_readiness": answer,
            "log_lines": log_lines,
            **(details or {}),
        },
    )


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# --- per-replica operations ------------------------------------------------------------------


def replica_numbers(spec: AgentSpec, replicas: Sequence[int]) -> list[int]:
    """The distinct replica numbers asked for, in order; refuses anything but whole numbers
    from 0."""
    numbers = list(replicas)
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in numbers):
        raise RuntimeFailure(
            f"replica numbers of {spec.name} are whole numbers from 0; got {numbers}.",
            reason="bad_config",
            details={"replicas": [str(n) for n in numbers]},
        )
    return sorted(set(numbers))


def runs_other_version(spec: AgentSpec, replica: int, running: str) -> RuntimeFailure:
    return RuntimeFailure(
        f"replica {replica} of {spec.name} already runs version {running or '(unknown)'}; "
        f"stop it before launching {spec.version} there.",
        reason="bad_config",
        details={"replica": replica, "version": running, "wanted": spec.version},
    )
