"""Host ports for agents that listen on this machine's loopback (the local and Docker runtimes).

Each replica gets a port of its own, reserved by ``provision`` from the runtime's range and kept
until the agent is removed. This module picks free ones, checks a reservation, and names the
process that holds a port when an agent cannot bind it.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable, Sequence
from typing import Any

import psutil

from .base import AgentSpec, RuntimeFailure

# Agents listen on loopback only: the portal (and nothing else) reaches them here.
HOST = "127.0.0.1"
# Random draws before giving up on a range that is (nearly) full.
PICK_ATTEMPTS = 500


def port_is_free(port: int) -> bool:
    with socket.socket() as listener:
        # As agentd binds: a connection of a previous run in TIME_WAIT must not count as taken.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_free_port(port_range: tuple[int, int], taken: set[int]) -> int:
    """A port of ``port_range`` (inclusive) that is neither in ``taken`` nor bound now."""
    low, high = port_range
    for _ in range(PICK_ATTEMPTS):
        port = random.randint(low, high)
        if port not in taken and port_is_free(port):
            return port
    raise RuntimeFailure(
        f"no free port found between {low} and {high}; free some or widen the range.",
        reason="port_in_use",
        details={"port_range": [low, high]},
    )


def reserve_ports(
    spec: AgentSpec,
    current: Iterable[int | None],
    reserved_by_others: set[int],
    port_range: tuple[int, int],
) -> tuple[list[int], list[int]]:
    """The ports of the agent's replicas: ``current`` (kept even if something holds one now:
    starting then names the holder rather than the agent moving silently), topped up with free
    ones nobody has reserved, also where a port was released (None). Answers them and the ones
    added."""
    ports = list(current)[: spec.replicas]
    ports += [None] * (spec.replicas - len(ports))
    taken = reserved_by_others | {port for port in ports if port is not None}
    added = []
    for index, port in enumerate(ports):
        if port is None:
            port = pick_free_port(port_range, taken)
            taken.add(port)
            ports[index] = port
            added.append(port)
    chosen = [port for port in ports if port is not None]
    check_distinct(spec, chosen)
    return chosen, added


def reserve_replica_ports(
    current: list[int | None],
    replicas: Iterable[int],
    reserved_by_others: set[int],
    port_range: tuple[int, int],
) -> tuple[list[int | None], dict[int, int], list[int]]:
    """Ports for the replica numbers ``replicas``, indexed by number in ``current`` (None: not
    reserved): reserved ones are kept, the others get free ports nobody has reserved. Answers
    the new list, the port of each replica asked for, and the replicas given a new port."""
    ports = list(current)
    taken = reserved_by_others | {port for port in ports if port is not None}
    chosen: dict[int, int] = {}
    added = []
    for replica in replicas:
        ports += [None] * (replica + 1 - len(ports))
        port = ports[replica]
        if port is None:
            port = pick_free_port(port_range, taken)
            taken.add(port)
            ports[replica] = port
            added.append(replica)
        chosen[replica] = port
    return ports, chosen, added


def release_replica_ports(current: list[int | None], replicas: Iterable[int]) -> list[int | None]:
    """``current`` without the ports of ``replicas`` (None in their place; none at the end)."""
    ports = list(current)
    for replica in replicas:
        if replica < len(ports):
            ports[replica] = None
    while ports and ports[-1] is None:
        ports.pop()
    return ports


def replica_ports(spec: AgentSpec, reserved: Sequence[int | None]) -> list[int]:
    """The first ``spec.replicas`` of the ports provision ``reserved``; refuses too few."""
    ports = [port for port in reserved[: spec.replicas] if port is not None]
    if len(ports) < spec.replicas:
        raise RuntimeFailure(
            f"{spec.name} has {len(ports)} port(s) reserved for {spec.replicas} replicas; "
            "provision it again to reserve the rest.",
            reason="bad_config",
            details={"ports": reserved, "replicas": spec.replicas},
        )
    check_distinct(spec, ports)
    return ports


def check_distinct(spec: AgentSpec, ports: list[int]) -> None:
    if len(set(ports)) != len(ports):
        raise RuntimeFailure(
            f"{spec.name} lists one port for several replicas ({ports}); each needs its own.",
            reason="bad_config",
            details={"ports": ports},
        )


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
