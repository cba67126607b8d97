"""Why something failed on Docker, told as a RuntimeFailure an operator can act on."""

from __future__ import annotations

from typing import Any

from ..base import AgentSpec, RuntimeFailure
from ..failures import ended_before_ready, not_ready, port_in_use, who
from .containers import exit_signal


def image_missing(spec: AgentSpec, image: str, base_url: str) -> RuntimeFailure:
    return RuntimeFailure(
        f"The Docker engine at {base_url} has no image {image} for {spec.name}. Build it with "
        f"`python manage.py agents build-image --version {spec.version}` (or make it pullable "
        "from a registry the engine can reach), then try again.",
        reason="image_missing",
        details={"image": image, "docker_host": base_url, "version": spec.version},
    )


def name_conflict(spec: AgentSpec, name: str, labels: dict[str, str]) -> RuntimeFailure:
    owner = labels.get("waooaw.agent")
    whose = f"agent {owner!r}" if owner else "something outside the portal"
    return RuntimeFailure(
        f"A container named {name} already exists and belongs to {whose}, not to "
        f"{spec.name}; the portal will not touch it. Rename or remove it "
        f"(`docker rm -f {name}`), then try again.",
        reason="bad_config",
        details={"conflict": "container_name", "container": name, "labels": labels},
    )


def start_failure(
    spec: AgentSpec, replica: int, port: int, inspected: dict[str, Any], log_lines: list[str]
) -> RuntimeFailure:
    """A replica's container ended (or could not run) before it was ready: say why."""
    state = inspected.get("State") or {}
    exit_code = state.get("ExitCode")
    signal_number = exit_signal(exit_code)
    details = {
        "replica": replica,
        "port": port,
        "container_id": inspected.get("Id"),
        "exit_code": exit_code,
        "signal": signal_number,
        "oom": bool(state.get("OOMKilled")),
        "log_lines": log_lines,
    }
    if state.get("Error") and not state.get("OOMKilled"):
        return RuntimeFailure(
            f"The Docker engine could not run {who(spec, replica)}: {state['Error']}",
            reason="crashed_on_start",
            details={**details, "engine_error": state["Error"]},
        )
    return ended_before_ready(
        spec,
        replica,
        port,
        exit_code=exit_code,
        signal_number=signal_number,
        oom=bool(state.get("OOMKilled")),
        log_lines=log_lines,
        details=details,
    )


def engine_refused_start(
    spec: AgentSpec, replica: int, port: int, explanation: str, container_id: str
) -> RuntimeFailure:
    """The engine would not start the container at all (a published port taken, a broken
    mount, a runtime error)."""
    details = {"replica": replica, "port": port, "container_id": container_id}
    lowered = explanation.lower()
    if "address already in use" in lowered or "port is already allocated" in lowered:
        return port_in_use(spec, replica, port, {**details, "engine_error": explanation})
    return RuntimeFailure(
        f"The Docker engine could not start {who(spec, replica)}: {explanation}",
        reason="crashed_on_start",
        details={**details, "engine_error": explanation},
    )


def never_ready(
    spec: AgentSpec,
    replica: int,
    port: int,
    answer: dict[str, Any] | None,
    health: str | None,
    container_id: str,
    log_lines: list[str],
) -> RuntimeFailure:
    return not_ready(
        spec,
        replica,
        port,
        answer,
        log_lines,
        unhealthy=health == "unhealthy",
        details={"container_id": container_id, "health": health},
    )


def not_deployed(spec: AgentSpec, what: str) -> RuntimeFailure:
    return RuntimeFailure(
        f"{spec.name} has no container on Docker to {what}; deploy it (or start it) first.",
        reason="not_found",
        details={"slug": spec.slug},
    )


def not_provisioned(spec: AgentSpec) -> RuntimeFailure:
    return RuntimeFailure(
        f"{spec.name} has no ports reserved on Docker; provision it first.",
        reason="not_found",
        details={"slug": spec.slug},
    )
