"""Why a local start failed: the shared reading (:mod:`agents.runtimes.failures`) of what the
shim recorded in ``exit.json`` and of the replica's log files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..base import AgentSpec, RuntimeFailure
from ..failures import FAILURE_LOG_LINES, ended_before_ready, not_ready, who
from .logfiles import last_lines


def start_failure(
    spec: AgentSpec, replica: int, port: int, ended: dict[str, Any], replica_dir: Path
) -> RuntimeFailure:
    """agentd ended before it was ready; ``ended`` is the shim's ``exit.json``."""
    log_lines = last_lines(replica_dir / "agent.log", FAILURE_LOG_LINES)
    exit_code, signal_number = ended.get("exit_code"), ended.get("signal")
    return ended_before_ready(
        spec,
        replica,
        port,
        exit_code=exit_code,
        signal_number=signal_number,
        oom=bool(ended.get("oom")),
        log_lines=log_lines,
        not_run=ended.get("error"),
        details={
            "replica": replica,
            "port": port,
            "exit_code": exit_code,
            "signal": signal_number,
            "uptime_seconds": ended.get("uptime_seconds"),
            "log_lines": log_lines,
        },
    )


def never_ready(
    spec: AgentSpec, replica: int, port: int, answer: dict[str, Any] | None, replica_dir: Path
) -> RuntimeFailure:
    return not_ready(
        spec, replica, port, answer, last_lines(replica_dir / "agent.log", FAILURE_LOG_LINES)
    )


def shim_failure(spec: AgentSpec, replica: int, port: int, replica_dir: Path) -> RuntimeFailure:
    return RuntimeFailure(
        f"{who(spec, replica)} could not be started: its supervisor exited before agentd ran.",
        reason="crashed_on_start",
        details={
            "replica": replica,
            "port": port,
            "log_lines": last_lines(replica_dir / "shim.log", FAILURE_LOG_LINES),
        },
    )
