"""Task counters, the latency histogram, process figures and their Prometheus text exposition."""

from __future__ import annotations

import bisect
import resource
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import contract

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class MetricsSnapshot:
    """The task figures at one instant; ``bucket_counts`` are per bucket, not cumulative."""

    processed: int
    failed: int
    dead_lettered: int
    # Tasks forwarded per target agent slug.
    forwarded: Mapping[str, int]
    # Main-stream tasks handed on to another version's stream, per version.
    routed: Mapping[str, int]
    bucket_counts: tuple[int, ...]
    latency_sum: float
    latency_count: int


@dataclass(frozen=True)
class ProbeStatus:
    """The latest check of one target the monitoring template watches, and its counts."""

    name: str
    kind: str
    up: bool
    latency_seconds: float
    checked_at_ms: int
    error: str
    checks_up: int
    checks_down: int


@dataclass(frozen=True)
class QueueStats:
    """What Redis says about the agent's queue."""

    depth: int
    pending: int
    dead_letters: int


class Metrics:
    """Counts what the worker does; updated by the worker thread, read by HTTP threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processed = 0
        self._failed = 0
        self._dead_lettered = 0
        self._forwarded: dict[str, int] = {}
        self._routed: dict[str, int] = {}
        # One slot per bucket plus the last for observations above the largest bucket (+Inf).
        self._bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._latency_count = 0

    def task_processed(self, seconds: float) -> None:
        with self._lock:
            self._processed += 1
            self._observe(seconds)

    def task_failed(self, seconds: float) -> None:
        with self._lock:
            self._failed += 1
            self._observe(seconds)

    def task_dead_lettered(self) -> None:
        with self._lock:
            self._dead_lettered += 1

    def task_forwarded(self, to: str) -> None:
        with self._lock:
            self._forwarded[to] = self._forwarded.get(to, 0) + 1

    def task_routed(self, to_version: str) -> None:
        with self._lock:
            self._routed[to_version] = self._routed.get(to_version, 0) + 1

    def snapshot(self) -> MetricsSnapshot:
        with self._lock:
            return MetricsSnapshot(
                processed=self._processed,
                failed=self._failed,
                dead_lettered=self._dead_lettered,
                forwarded=dict(self._forwarded),
                routed=dict(self._routed),
                bucket_counts=tuple(self._bucket_counts),
                latency_sum=self._latency_sum,
                latency_count=self._latency_count,
            )

    def _observe(self, seconds: float) -> None:
        # Prometheus buckets are "less than or equal", hence bisect_left.
        self._bucket_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._latency_sum += seconds
        self._latency_count += 1


def process_cpu_seconds() -> float:
    """User plus system CPU time this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_resident_memory_bytes() -> int:
    """Current resident set size, from /proc where there is one, else the peak from getrusage."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    # Linux reports ru_maxrss in kilobytes; there is no /proc only on other systems (macOS: bytes).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def render_metrics(
    snapshot: MetricsSnapshot,
    labels: Mapping[str, str],
    queue: QueueStats | None,
    forward_targets: Iterable[str] = (),
    probes: Iterable[ProbeStatus] = (),
    version: str = "",
) -> str:
    """The Prometheus text exposition of everything agentd measures.

    The queue gauges are left out when Redis cannot be asked: a missing series is Prometheus's way
    of saying "unknown", a zero would be a lie. Every agent forwarded to, and every one the config
    names now, has a forwarded series, so a rate can be taken from the first forward on. The
    probes' series are there once the monitoring template has checked a target. The routed
    series are there once a task was handed on to another version (see ``routing``).
    """
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, value: float) -> None:
        lines.extend(_header(name, kind, help_text))
        lines.append(_sample(name, labels, value))

    family(
        contract.METRIC_UP, "gauge", "1 while the agent process runs and serves its endpoints.", 1
    )
    lines.extend(
        _header(
            contract.METRIC_BUILD_INFO,
            "gauge",
            "Always 1; labelled with this replica's agent version.",
        )
    )
    lines.append(_sample(contract.METRIC_BUILD_INFO, {**labels, "version": version}, 1))
    family(
        contract.METRIC_TASKS_PROCESSED,
        "counter",
        "Tasks processed successfully and acknowledged.",
        snapshot.processed,
    )
    family(
        contract.METRIC_TASKS_FAILED,
        "counter",
        "Task attempts that failed (each retry counts).",
        snapshot.failed,
    )
    family(
        contract.METRIC_TASKS_DEAD_LETTERED,
        "counter",
        "Tasks moved to the dead-letter stream after failing too often.",
        snapshot.dead_lettered,
    )
    forwarded = {**dict.fromkeys(forward_targets, 0), **snapshot.forwarded}
    lines.extend(
        _header(
            contract.METRIC_TASKS_FORWARDED,
            "counter",
            "Tasks handed on to another agent (config forward), by the agent they went to.",
        )
    )
    for to, count in sorted(forwarded.items()):
        lines.append(_sample(contract.METRIC_TASKS_FORWARDED, {**labels, "to": to}, count))
    if snapshot.routed:
        lines.extend(
            _header(
                contract.METRIC_TASKS_ROUTED,
                "counter",
                "Main-stream tasks handed on to another version's stream, by that version.",
            )
        )
        for to_version, count in sorted(snapshot.routed.items()):
            target = {**labels, "to_version": to_version}
            lines.append(_sample(contract.METRIC_TASKS_ROUTED, target, count))
    lines.extend(_histogram(snapshot, labels))
    if queue is not None:
        family(
            contract.METRIC_QUEUE_DEPTH,
            "gauge",
            "Tasks in the agent's stream not yet done (waiting or being retried).",
            queue.depth,
        )
        family(
            contract.METRIC_QUEUE_PENDING,
            "gauge",
            "Tasks delivered to a consumer and not yet acknowledged.",
            queue.pending,
        )
        family(
            contract.METRIC_DEAD_LETTER_DEPTH,
            "gauge",
            "Messages in the agent's dead-letter stream.",
            queue.dead_letters,
        )
    family(
        contract.METRIC_CPU_SECONDS,
        "counter",
        "User and system CPU time used by the agent process, in seconds.",
        process_cpu_seconds(),
    )
    family(
        contract.METRIC_RESIDENT_MEMORY,
        "gauge",
        "Resident memory of the agent process, in bytes.",
        process_resident_memory_bytes(),
    )
    lines.extend(_probes(list(probes), labels))
    return "\n".join(lines) + "\n"


def _probes(probes: list[ProbeStatus], labels: Mapping[str, str]) -> Iterable[str]:
    if not probes:
        return
    yield from _header(
        contract.METRIC_PROBE_UP,
        "gauge",
        "1 when the monitored target answered as expected at its latest check, else 0.",
    )
    for probe in probes:
        target = {**labels, "target": probe.name, "kind": probe.kind}
        yield _sample(contract.METRIC_PROBE_UP, target, 1 if probe.up else 0)
    yield from _header(
        contract.METRIC_PROBE_LATENCY,
        "gauge",
        "How long the monitored target took to answer its latest check, in seconds.",
    )
    for probe in probes:
        target = {**labels, "target": probe.name, "kind": probe.kind}
        yield _sample(contract.METRIC_PROBE_LATENCY, target, probe.latency_seconds)
    yield from _header(
        contract.METRIC_PROBE_CHECKS, "counter", "Checks of the monitored target, by result."
    )
    for probe in probes:
        for result, count in (("up", probe.checks_up), ("down", probe.checks_down)):
            target = {**labels, "target": probe.name, "result": result}
            yield _sample(contract.METRIC_PROBE_CHECKS, target, count)


def _histogram(snapshot: MetricsSnapshot, labels: Mapping[str, str]) -> Iterable[str]:
    name = contract.METRIC_TASK_LATENCY
    yield from _header(name, "histogram", "Time spent processing one task attempt, in seconds.")
    cumulative = 0
    bounds = [*(_format_value(bound) for bound in LATENCY_BUCKETS), "+Inf"]
    for bound, count in zip(bounds, snapshot.bucket_counts, strict=True):
        cumulative += count
        yield _sample(f"{name}_bucket", {**labels, "le": bound}, cumulative)
    yield _sample(f"{name}_sum", labels, snapshot.latency_sum)
    yield _sample(f"{name}_count", labels, snapshot.latency_count)


def _header(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _sample(name: str, labels: Mapping[str, str], value: float) -> str:
    rendered = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
    return f"{name}{{{rendered}}} {_format_value(value)}"


def _format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
