"""The engine's raw stats of a container, turned into the figures ``docker stats`` shows."""

from __future__ import annotations

from typing import Any

from ..base import ReplicaStats


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
