"""The host's side of Docker agents: their ports on the host's loopback, HTTP probes of
agentd there, and the engine's raw stats turned into figures."""

from __future__ import annotations

import json
import random
import socket
import urllib.error
import urllib.request
from typing import Any

from ..base import ReplicaStats, RuntimeFailure

HOST = "127.0.0.1"
PROBE_TIMEOUT = 0.5
# Probes go straight to the agent, whatever HTTP(S)_PROXY the portal runs with.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def probe(port: int, path: str) -> dict[str, Any]:
    """agentd's answer at ``path``: ``{"status", "body"}``, status None when nothing answers."""
    try:
        with _DIRECT.open(f"http://{HOST}:{port}{path}", timeout=PROBE_TIMEOUT) as answer:
            status, text = answer.status, answer.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    except (OSError, ValueError) as exc:
        return {"status": None, "body": str(exc)}
    try:
        return {"status": status, "body": json.loads(text)}
    except ValueError:
        return {"status": status, "body": text.decode(errors="replace")[:500]}


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
    low, high = port_range
    for _ in range(500):
        port = random.randint(low, high)
        if port not in taken and port_is_free(port):
            return port
    raise RuntimeFailure(
        f"no free port found between {low} and {high}; free some or widen the range.",
        reason="port_in_use",
        details={"port_range": [low, high]},
    )


def replica_stats(replica: int, answer: dict[str, Any]) -> ReplicaStats:
    """CPU percent and memory in use, computed as ``docker stats`` does from one answer of the
    engine's stats API (which holds the sample before, ``precpu_stats``)."""
    cpu, previous = answer.get("cpu_stats") or {}, answer.get("precpu_stats") or {}
    used = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (
        previous.get("cpu_usage") or {}
    ).get("total_usage", 0)
    elapsed = cpu.get("system_cpu_usage", 0) - previous.get("system_cpu_usage", 0)
    cpus = (
        cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    )
    percent = used / elapsed * cpus * 100 if elapsed > 0 and used >= 0 else 0.0
    memory = answer.get("memory_stats") or {}
    details = memory.get("stats") or {}
    # Usage less the inactive page cache (cgroup v1 and v2 names).
    cache = details.get("total_inactive_file", details.get("inactive_file", 0))
    return ReplicaStats(replica, round(percent, 2), max(int(memory.get("usage", 0)) - cache, 0))
