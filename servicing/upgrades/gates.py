"""Gates: what an upgrade measures of each version, and the verdict on the new one.

Every replica's ``/metrics`` is read and its figures summed by the version it runs (its
``/healthz`` says which), so both versions are measured from what they did, never assumed. A
measurement is the difference from a baseline taken when the step began: tasks each version
processed and failed, dead letters, the latency histogram (p50 and p95), CPU and memory.

The verdict follows Flagger's and Argo Rollouts' analysis: each gate has a threshold; a check
that fails counts against the gate's failure limit and the gate trips at the limit; with fewer
tasks than the minimum the verdict is "inconclusive" and the step is extended: no data never
passes and never fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.runtimes.probe import endpoint_answer
from observability.metrics import Scrape, fetch_scrape, quantile

# The defaults an upgrade takes for every gate it does not set.
DEFAULT_GATES: dict[str, float] = {
    "max_error_rate": 5.0,  # percent of task attempts the new version failed
    "max_latency_increase": 50.0,  # percent over the old version's p95
    "max_dead_letters": 0,  # tasks the new version dead-lettered
    "failure_limit": 2,  # failed checks in a row before a gate trips
    "health_failure_limit": 3,  # failed health or readiness probes in a row
    "min_tasks": 200,  # tasks (both versions) before a step can be judged
    "min_step_seconds": 5,  # the shortest a canary step lasts
    "verify_seconds": 15,  # how long the verify step watches the gates
}
GATE_BOUNDS: dict[str, tuple[float, float]] = {
    "max_error_rate": (0, 100),
    "max_latency_increase": (0, 10_000),
    "max_dead_letters": (0, 1_000_000),
    "failure_limit": (1, 100),
    "health_failure_limit": (1, 100),
    "min_tasks": (1, 1_000_000),
    "min_step_seconds": (0, 86_400),
    "verify_seconds": (0, 86_400),
}
# Without this many latency observations on both sides, p95 is not compared.
MIN_LATENCY_SAMPLES = 20


class GateError(ValueError):
    """Gate settings that cannot be used; the message names the gate."""


def parse_gates(raw: object) -> dict[str, float]:
    """The defaults overlaid with ``raw``'s known gates, each checked against its bounds."""
    if raw in (None, ""):
        raw = {}
    if not isinstance(raw, Mapping):
        raise GateError("gates must be an object of gate names and numbers.")
    unknown = sorted(str(key)[:40] for key in raw if key not in DEFAULT_GATES)
    if unknown:
        raise GateError(f"unknown gate {unknown[0]!r}; gates: {', '.join(sorted(DEFAULT_GATES))}.")
    gates = dict(DEFAULT_GATES)
    for key, value in raw.items():
        low, high = GATE_BOUNDS[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise GateError(f"gates.{key} must be a number from {low:g} to {high:g}.")
        if not low <= value <= high:
            raise GateError(f"gates.{key} is {value:g}; use a number from {low:g} to {high:g}.")
        gates[key] = value
    return gates


# --- measuring --------------------------------------------------------------------------------


@dataclass
class ReplicaReading:
    replica: int
    port: int
    version: str
    healthy: bool
    ready: bool
    scrape: Scrape | None


@dataclass
class VersionFigures:
    """What one version did since the baseline."""

    version: str
    replicas: int = 0
    processed: float = 0
    failed: float = 0
    dead_lettered: float = 0
    cpu_seconds: float = 0
    memory_bytes: float = 0
    buckets: dict[str, float] = field(default_factory=dict)

    @property
    def attempts(self) -> float:
        return self.processed + self.failed

    @property
    def error_rate(self) -> float | None:
        return None if not self.attempts else 100.0 * self.failed / self.attempts

    def latency_ms(self, q: float) -> float | None:
        if sum(1 for _ in self.buckets) == 0 or self.buckets.get("+Inf", 0) <= 0:
            return None
        value = quantile(q, self.buckets)
        return None if value is None else round(value * 1000, 2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VersionFigures:
        """Figures as :meth:`to_dict` wrote them (counts, and the histogram for latency)."""
        return cls(
            version=str(data.get("version", "")),
            replicas=int(data.get("replicas") or 0),
            processed=float(data.get("processed") or 0),
            failed=float(data.get("failed") or 0),
            dead_lettered=float(data.get("dead_lettered") or 0),
            buckets=dict(data.get("buckets") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "replicas": self.replicas,
            "processed": int(self.processed),
            "failed": int(self.failed),
            "dead_lettered": int(self.dead_lettered),
            "error_rate": _round(self.error_rate),
            "p50_ms": self.latency_ms(0.5),
            "p95_ms": self.latency_ms(0.95),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "memory_mb": round(self.memory_bytes / 1048576, 1),
            "buckets": dict(self.buckets),
        }


def read_replicas(replicas: Iterable[tuple[int, int]]) -> list[ReplicaReading]:
    """Health, readiness, version and metrics of each ``(replica, port)``."""
    readings = []
    for replica, port in replicas:
        health = endpoint_answer(port, "/healthz")
        ready = endpoint_answer(port, "/readyz")
        answered = health.get("body")
        body: dict[str, Any] = answered if isinstance(answered, dict) else {}
        readings.append(
            ReplicaReading(
                replica=replica,
                port=port,
                version=str(body.get("version", "")),
                healthy=health.get("status") == 200,
                ready=ready.get("status") == 200,
                scrape=fetch_scrape(f"http://127.0.0.1:{port}/metrics")
                if health.get("status") == 200
                else None,
            )
        )
    return readings


def snapshot(readings: Iterable[ReplicaReading]) -> dict[str, dict[str, Any]]:
    """Each replica's counters now, keyed by replica number: the baseline to measure from."""
    return {
        str(reading.replica): {
            "version": reading.version,
            "processed": reading.scrape.processed,
            "failed": reading.scrape.failed,
            "dead_lettered": reading.scrape.dead_lettered,
            "cpu_seconds": reading.scrape.cpu_seconds,
            "buckets": dict(reading.scrape.buckets),
        }
        for reading in readings
        if reading.scrape is not None
    }


def figures_since(
    baseline: Mapping[str, Mapping[str, Any]], readings: Iterable[ReplicaReading]
) -> dict[str, VersionFigures]:
    """Each version's figures since ``baseline``. A replica that restarted (its counters went
    down) or started after the baseline counts from zero."""
    by_version: dict[str, VersionFigures] = {}
    for reading in readings:
        if reading.scrape is None or not reading.version:
            continue
        figures = by_version.setdefault(reading.version, VersionFigures(reading.version))
        figures.replicas += 1
        scrape = reading.scrape
        before = baseline.get(str(reading.replica)) or {}
        if before.get("version") != reading.version or scrape.processed < before.get(
            "processed", 0
        ):
            before = {}
        figures.processed += scrape.processed - before.get("processed", 0)
        figures.failed += max(0.0, scrape.failed - before.get("failed", 0))
        figures.dead_lettered += max(0.0, scrape.dead_lettered - before.get("dead_lettered", 0))
        figures.cpu_seconds += max(0.0, scrape.cpu_seconds - before.get("cpu_seconds", 0))
        figures.memory_bytes += scrape.memory_bytes
        old_buckets = before.get("buckets") or {}
        for le, count in scrape.buckets.items():
            figures.buckets[le] = figures.buckets.get(le, 0) + max(
                0.0, count - old_buckets.get(le, 0)
            )
    return by_version


# --- judging ----------------------------------------------------------------------------------


@dataclass
class Verdict:
    """``passed``, ``inconclusive`` (too few tasks: extend the step) or ``failed`` checks, with
    the reasons a person reads."""

    outcome: str  # "passed", "inconclusive" or "failed"
    reasons: list[str]
    failed_gates: list[str]
    share: float | None  # the new version's share of the tasks, percent
    tasks: int


def judge(
    gates: Mapping[str, float],
    old: VersionFigures | None,
    new: VersionFigures | None,
    *,
    unhealthy: Sequence[str] = (),
    need_tasks: bool = True,
    latency_baseline: VersionFigures | None = None,
) -> Verdict:
    """The checks of one moment. ``need_tasks`` False judges health alone (blue-green preview,
    a step with no traffic expected). The new version's p95 is compared with the old one's
    now, or with ``latency_baseline`` (the old version's when it still took traffic) once the
    old version takes none."""
    old = old or VersionFigures("")
    new = new or VersionFigures("")
    tasks = int(old.processed + new.processed)
    share = None if not tasks else round(100.0 * new.processed / tasks, 1)
    failed: list[str] = []
    reasons: list[str] = []
    if unhealthy:
        failed.append("health")
        reasons.append("not healthy or not ready: " + ", ".join(unhealthy))
    if need_tasks and new.attempts < 1 or (need_tasks and tasks < gates["min_tasks"]):
        if not failed:
            return Verdict(
                "inconclusive",
                [f"{tasks} of {int(gates['min_tasks'])} tasks so far: too few to judge"],
                [],
                share,
                tasks,
            )
    else:
        if new.error_rate is not None and new.error_rate > gates["max_error_rate"]:
            failed.append("error_rate")
            reasons.append(
                f"error rate {new.error_rate:.1f} % over {gates['max_error_rate']:g} % "
                f"({int(new.failed)} failed attempts of {int(new.attempts)})"
            )
        if new.dead_lettered > gates["max_dead_letters"]:
            failed.append("dead_letters")
            reasons.append(f"{int(new.dead_lettered)} task(s) dead-lettered by {new.version}")
        reference = old
        if old.buckets.get("+Inf", 0) < MIN_LATENCY_SAMPLES and latency_baseline is not None:
            reference = latency_baseline
        old_p95, new_p95 = reference.latency_ms(0.95), new.latency_ms(0.95)
        if (
            old_p95
            and new_p95
            and reference.buckets.get("+Inf", 0) >= MIN_LATENCY_SAMPLES
            and new.buckets.get("+Inf", 0) >= MIN_LATENCY_SAMPLES
            and new_p95 > old_p95 * (1 + gates["max_latency_increase"] / 100)
        ):
            failed.append("latency")
            reasons.append(
                f"p95 {new_p95:g} ms is more than {gates['max_latency_increase']:g} % over "
                f"{reference.version}'s {old_p95:g} ms"
            )
    if failed:
        return Verdict("failed", reasons, failed, share, tasks)
    return Verdict("passed", ["every gate passed"], [], share, tasks)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
