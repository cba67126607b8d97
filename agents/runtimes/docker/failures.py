"""Why something failed on Docker, told as a RuntimeFailure an operator can act on."""

from __future__ import annotations

from typing import Any

from ...agentd.contract import BAD_CONFIG_MARKER, EXIT_BAD_CONFIG, EXIT_BIND_FAILED
from ..base import AgentSpec, RuntimeFailure
from ..local.failures import port_holder
from .containers import exit_signal

# How many of the agent's last log lines a failure carries in its details.
FAILURE_LOG_LINES = 20


def who(spec: AgentSpec, replica: int) -> str:
    return spec.name if spec.replicas == 1 else f"{spec.name} replica {replica}"


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
    name = who(spec, replica)
    if state.get("OOMKilled"):
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
    if state.get("Error"):
        return RuntimeFailure(
            f"The Docker engine could not run {name}: {state['Error']}",
            reason="crashed_on_start",
            details={**details, "engine_error": state["Error"]},
        )
    how = f"exited with code {exit_code}"
    if signal_number:
        how = f"was killed by signal {signal_number} (exit code {exit_code})"
    return RuntimeFailure(
        f"{name} {how} before it was ready; see its last log lines.",
        reason="crashed_on_start",
        details=details,
    )


def port_in_use(
    spec: AgentSpec, replica: int, port: int, details: dict[str, Any] | None = None
) -> RuntimeFailure:
    holder = port_holder(port)
    by = f" by {holder['description']}" if holder else ""
    return RuntimeFailure(
        f"{who(spec, replica)} cannot listen on port {port}: the port is in use{by}. Stop "
        "whatever holds it, or remove and provision the agent again for a new port.",
        reason="port_in_use",
        details={**(details or {"replica": replica, "port": port}), "holder": holder},
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


def not_ready(
    spec: AgentSpec,
    replica: int,
    port: int,
    answer: dict[str, Any] | None,
    health: str | None,
    container_id: str,
    log_lines: list[str],
) -> RuntimeFailure:
    body = (answer or {}).get("body")
    why = body.get("reason") if isinstance(body, dict) else None
    said = f" (last answer: {why})" if why else ""
    if health == "unhealthy":
        said += "; the engine's health check reports it unhealthy"
    return RuntimeFailure(
        f"{who(spec, replica)} did not become ready within {spec.ready_timeout:g}s{said}; "
        "it was stopped. Check its dependencies and log lines.",
        reason="not_ready",
        details={
            "replica": replica,
            "port": port,
            "container_id": container_id,
            "ready_timeout": spec.ready_timeout,
            "last_readiness": answer,
            "health": health,
            "log_lines": log_lines,
        },
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
