"""The gates' arithmetic: figures per version since a baseline, and the verdicts (no data never
passes or fails; each threshold trips on its own)."""

from __future__ import annotations

import pytest

from observability.metrics import Scrape
from servicing.upgrades import gates
from servicing.upgrades.gates import ReplicaReading, VersionFigures, figures_since, judge

BOUNDS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf")


def histogram(latency: float, count: int) -> dict[str, float]:
    return {le: (count if le == "+Inf" or float(le) >= latency else 0) for le in BOUNDS}


def figures(version, processed, failed=0, dead=0, latency=0.02) -> VersionFigures:
    return VersionFigures(version, 1, processed, failed, dead, 0, 0,
                          histogram(latency, processed + failed))  # fmt: skip


GATES = gates.parse_gates({})


def test_no_tasks_is_inconclusive_never_passed_or_failed():
    verdict = judge(GATES, figures("1.0.0", 10), figures("1.1.0", 2))
    assert verdict.outcome == "inconclusive"
    assert "12 of 200 tasks" in verdict.reasons[0]
    assert judge(GATES, None, None).outcome == "inconclusive"


def test_enough_healthy_tasks_pass_with_the_measured_share():
    verdict = judge(GATES, figures("1.0.0", 180), figures("1.1.0", 20))
    assert verdict.outcome == "passed"
    assert verdict.share == 10.0 and verdict.tasks == 200


def test_an_error_rate_over_the_limit_fails_naming_it():
    verdict = judge(GATES, figures("1.0.0", 180), figures("1.1.0", 20, failed=4))
    assert verdict.outcome == "failed" and verdict.failed_gates == ["error_rate"]
    assert "16.7 %" in verdict.reasons[0]


def test_an_error_rate_at_the_limit_passes():
    verdict = judge(GATES, figures("1.0.0", 181), figures("1.1.0", 19, failed=1))
    assert verdict.outcome == "passed"  # 1 of 20 attempts: exactly 5 %


def test_any_dead_letter_fails():
    verdict = judge(GATES, figures("1.0.0", 180), figures("1.1.0", 20, dead=1))
    assert verdict.failed_gates == ["dead_letters"]


def test_p95_more_than_half_again_slower_fails():
    slow = judge(GATES, figures("1.0.0", 180, latency=0.02), figures("1.1.0", 40, latency=0.2))
    assert slow.failed_gates == ["latency"]
    same = judge(GATES, figures("1.0.0", 180, latency=0.02), figures("1.1.0", 40, latency=0.02))
    assert same.outcome == "passed"


def test_unhealthy_replicas_fail_even_without_tasks():
    verdict = judge(GATES, None, None, unhealthy=["replica 1"])
    assert verdict.outcome == "failed" and verdict.failed_gates == ["health"]


def test_figures_are_differences_from_the_baseline_and_a_restart_counts_from_zero():
    def reading(replica, version, processed):
        return ReplicaReading(replica, 1, version, True, True,
                              Scrape(processed=processed, buckets=histogram(0.02, processed)))  # fmt: skip

    baseline = {"0": {"version": "1.0.0", "processed": 100, "failed": 0, "dead_lettered": 0,
                      "cpu_seconds": 0, "buckets": histogram(0.02, 100)},
                "1": {"version": "1.1.0", "processed": 50, "failed": 0, "dead_lettered": 0,
                      "cpu_seconds": 0, "buckets": histogram(0.02, 50)}}  # fmt: skip
    # replica 1 restarted: its counter went down, so all 7 are new
    found = figures_since(baseline, [reading(0, "1.0.0", 130), reading(1, "1.1.0", 7)])
    assert found["1.0.0"].processed == 30 and found["1.1.0"].processed == 7
    assert found["1.0.0"].buckets["+Inf"] == 30


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"max_error_rate": "5"}, "gates.max_error_rate must be a number"),
        ({"max_error_rate": 101}, "use a number from 0 to 100"),
        ({"min_tasks": 0}, "use a number from 1"),
        ({"nope": 1}, "unknown gate 'nope'"),
        ([1], "gates must be an object"),
        ({"failure_limit": float("nan")}, "must be a number"),
        ({"verify_seconds": True}, "must be a number"),
    ],
)
def test_bad_gate_settings_are_refused_naming_the_gate(raw, message):
    with pytest.raises(gates.GateError, match=message):
        gates.parse_gates(raw)


def test_once_the_old_version_takes_nothing_its_earlier_latency_is_the_reference():
    earlier = figures("1.0.0", 180, latency=0.02)
    idle = VersionFigures("1.0.0")
    slow = judge(GATES, idle, figures("1.1.0", 240, latency=0.2), latency_baseline=earlier)
    assert slow.failed_gates == ["latency"] and "1.0.0's" in slow.reasons[0]
    assert slow.share == 100.0  # the share is what each version did now, not a step before
    fine = judge(GATES, idle, figures("1.1.0", 240, latency=0.02), latency_baseline=earlier)
    assert fine.outcome == "passed"
