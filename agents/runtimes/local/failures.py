"""Why a start failed, told as a RuntimeFailure an operator can act on."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import psutil

from ...agentd.contract import BAD_CONFIG_MARKER, EXIT_BAD_CONFIG, EXIT_BIND_FAILED
from ..base import AgentSpec, RuntimeFailure
from .logfiles import last_lines
from .processes import HOST

# How many of the agent's last log lines a failure carries in its details.
FAILURE_LOG_LINES = 20


def start_failure(
    spec: AgentSpec, replica: int, port: int, ended: dict[str, Any], replica_dir: Path
) -> RuntimeFailure:
    log_lines = last_lines(replica_dir / "agent.log", FAILURE_LOG_LINES)
    exit_code, signal_number = ended.get("exit_code"), ended.get("signal")
    who = _who(spec, replica)
    details = {
        "replica": replica,
        "port": port,
        "exit_code": exit_code,
        "signal": signal_number,
        "uptime_seconds": ended.get("uptime_seconds"),
        "log_lines": log_lines,
    }
    if exit_code == EXIT_BIND_FAILED:
        return port_in_use(spec, replica, port, log_lines, details)
    if exit_code == EXIT_BAD_CONFIG:
        said = [line for line in log_lines if BAD_CONFIG_MARKER in line]
        reason = said[-1].removeprefix("agentd: ") if said else "see the log lines"
        return RuntimeFailure(
            f"{who} refused its configuration ({reason}); correct the config and start it again.",
            reason="bad_config",
            details=details,
        )
    if ended.get("oom"):
        return RuntimeFailure(
            f"{who} was killed during start for using more than its {spec.memory_mb} MiB "
            "memory limit; raise the limit or find what holds the memory.",
            reason="oom",
            details=details,
        )
    how = (
        f"was killed by {signal.Signals(signal_number).name}"
        if signal_number
        else f"exited with code {exit_code}"
    )
    if ended.get("error"):
        how = f"could not be started ({ended['error']})"
    return RuntimeFailure(
        f"{who} {how} before it was ready; see its last log lines.",
        reason="crashed_on_start",
        details=details,
    )


def port_in_use(
    spec: AgentSpec,
    replica: int,
    port: int,
    log_lines: list[str],
    details: dict[str, Any] | None = None,
) -> RuntimeFailure:
    holder = port_holder(port)
    by = f" by {holder['description']}" if holder else ""
    return RuntimeFailure(
        f"{_who(spec, replica)} cannot listen on {HOST}:{port}: the port is in use{by}. "
        "Stop whatever holds it, or remove and provision the agent again for a new port.",
        reason="port_in_use",
        details={
            **(details or {"replica": replica, "port": port, "log_lines": log_lines}),
            "holder": holder,
        },
    )


def not_ready(
    spec: AgentSpec, replica: int, port: int, answer: Any, replica_dir: Path
) -> RuntimeFailure:
    body = (answer or {}).get("body")
    why = body.get("reason") if isinstance(body, dict) else None
    said = f" (last answer: {why})" if why else ""
    return RuntimeFailure(
        f"{_who(spec, replica)} did not become ready within {spec.ready_timeout:g}s{said}; "
        "it was stopped. Check its dependencies and log lines.",
        reason="not_ready",
        details={
            "replica": replica,
            "port": port,
            "ready_timeout": spec.ready_timeout,
            "last_readiness": answer,
            "log_lines": last_lines(replica_dir / "agent.log", FAILURE_LOG_LINES),
        },
    )


def shim_failure(spec: AgentSpec, replica: int, port: int, replica_dir: Path) -> RuntimeFailure:
    return RuntimeFailure(
        f"{_who(spec, replica)} could not be started: its supervisor exited before agentd ran.",
        reason="crashed_on_start",
        details={
            "replica": replica,
            "port": port,
            "log_lines": last_lines(replica_dir / "shim.log", FAILURE_LOG_LINES),
        },
    )


def _who(spec: AgentSpec, replica: int) -> str:
    return spec.name if spec.replicas == 1 else f"{spec.name} replica {replica}"


def port_holder(port: int) -> dict[str, Any] | None:
    """Which process listens on ``port``, if psutil may tell."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for connection in connections:
        if (
            connection.laddr
            and connection.laddr.port == port
            and connection.status == psutil.CONN_LISTEN
            and connection.pid
        ):
            try:
                process = psutil.Process(connection.pid)
                name, argv = process.name(), process.cmdline()
            except psutil.Error:
                return {"pid": connection.pid, "description": f"pid {connection.pid}"}
            description = f"{name} (pid {connection.pid})"
            if "agents.agentd" in argv and "--slug" in argv:
                slug = argv[argv.index("--slug") + 1]
                description = f"agent {slug} (agentd pid {connection.pid})"
            return {"pid": connection.pid, "name": name, "description": description}
    return None
