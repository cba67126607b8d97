"""Upgrades end to end on the local runtime, with real agentd processes and a load of tasks
running throughout: canary, blue-green and rolling; a gate that trips and rolls back at once,
pinning the version; promote, pause, abort, roll back by hand; a roll-back that restores the
data snapshot; scaling. Every task sent is answered exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from servicing.models import UpgradeStatus
from servicing.services import ServicingRefused
from servicing.upgrades import requests, traffic
from tests.servicing.upgrade_kit import drive, versions_running

QUICK = {"min_tasks": 60, "min_step_seconds": 1, "verify_seconds": 2}


def test_a_canary_moves_traffic_by_its_steps_measures_both_versions_and_finishes(
    running, publish, load, operator_actor
):
    cache = running("wow-cache")
    publish("1.1.0")
    tasks = load(cache, "canary")

    upgrade = requests.request_upgrade(
        operator_actor, cache, "1.1.0", "canary", steps=[10, 50, 100],
        gate_settings={**QUICK, "min_tasks": 200},
    )  # fmt: skip
    upgrade = drive(upgrade)
    answers = tasks.settle()

    assert upgrade.status == UpgradeStatus.SUCCEEDED, upgrade.outcome
    cache.refresh_from_db()
    assert cache.version == "1.1.0" and not cache.pending_action
    assert versions_running(cache) == {0: "1.1.0"}
    assert traffic.current_route(cache) is None
    steps = [row for row in upgrade.measurements if row.get("verdict") == "passed"]
    assert [row["step"] for row in steps][:3] == ["10 %", "50 %", "100 %"]
    for row in steps[:2]:
        assert row["tasks"] >= 200
        assert abs(row["share"] - row["weight"]) <= 5, row  # measured, not assumed
        assert row["old"]["processed"] > 0 and row["new"]["processed"] > 0
        assert row["new"]["p95_ms"] is not None
    by_version = tasks.check_exactly_once(answers)
    assert by_version["1.0.0"] > 0 and by_version["1.1.0"] > 0
    assert all(a["status"] == "succeeded" for a in answers)


def test_an_error_gate_trips_at_the_first_step_rolls_back_and_pins_the_version(
    running, publish, load, operator_actor
):
    cache = running("wow-cache")
    # A share of tasks fails; with five attempts each, the smoke tasks still pass (they are
    # retried), and the error rate over the canary's attempts is what trips.
    bad = publish("1.2.0", {"faults": {"fail_rate": 0.2}, "task_max_failures": 5})
    tasks = load(cache, "bad")

    upgrade = requests.request_upgrade(
        operator_actor, cache, "1.2.0", "canary", gate_settings=QUICK
    )
    upgrade = drive(upgrade)
    answers = tasks.settle()

    assert upgrade.status == UpgradeStatus.ROLLED_BACK
    assert "error_rate" in upgrade.outcome and "10 %" in upgrade.outcome
    tripped = next(row for row in upgrade.measurements if row.get("verdict") == "tripped")
    assert tripped["weight"] == 10 and tripped["new"]["error_rate"] > 5
    switch = next(row for row in upgrade.measurements if row.get("step") == "roll-back")
    assert switch["switch_seconds"] < 5
    cache.refresh_from_db()
    assert cache.version == "1.0.0" and not cache.pending_action
    assert versions_running(cache) == {0: "1.0.0"}
    bad.refresh_from_db()
    assert bad.pinned and "rolled back" in bad.pinned_reason
    tasks.check_exactly_once(answers)  # none lost: failed ones were dead-lettered and answered
    with pytest.raises(ServicingRefused, match="pinned"):
        requests.request_upgrade(operator_actor, cache, "1.2.0", "canary")


def test_blue_green_tests_privately_switches_at_once_and_loses_nothing(
    running, publish, load, operator_actor
):
    running("wow-cache")
    running("wow-event")
    memory = running("wow-memory")
    publish("1.1.0")
    tasks = load(memory, "bg")

    upgrade = requests.request_upgrade(
        operator_actor, memory, "1.1.0", "blue-green", gate_settings=QUICK
    )
    upgrade = drive(upgrade)
    answers = tasks.settle()

    assert upgrade.status == UpgradeStatus.SUCCEEDED, upgrade.outcome
    assert versions_running(memory) == {0: "1.1.0"}
    by_version = tasks.check_exactly_once(answers)
    assert by_version["1.0.0"] > 0 and by_version["1.1.0"] > 0
    assert all(a["status"] == "succeeded" for a in answers)


def test_rolling_replaces_replicas_one_at_a_time(running, publish, load, operator_actor):
    cache = running("wow-cache", replicas=2)
    publish("1.1.0")
    tasks = load(cache, "rolling")

    upgrade = requests.request_upgrade(
        operator_actor, cache, "1.1.0", "rolling", gate_settings=QUICK
    )
    upgrade = drive(upgrade)
    answers = tasks.settle()

    assert upgrade.status == UpgradeStatus.SUCCEEDED, upgrade.outcome
    assert versions_running(cache) == {0: "1.1.0", 1: "1.1.0"}
    tasks.check_exactly_once(answers)
    assert all(a["status"] == "succeeded" for a in answers)


def test_abort_mid_canary_goes_back_without_pinning(running, publish, load, operator_actor):
    cache = running("wow-cache")
    release = publish("1.1.0")
    tasks = load(cache, "abort")
    upgrade = requests.request_upgrade(
        operator_actor, cache, "1.1.0", "canary", gate_settings={**QUICK, "min_tasks": 100000}
    )
    upgrade = drive(upgrade, until=lambda u: u.weight == 10)
    requests.command(operator_actor, upgrade, "abort", "wrong day")
    upgrade = drive(upgrade)
    answers = tasks.settle()

    assert upgrade.status == UpgradeStatus.ABORTED
    assert versions_running(cache) == {0: "1.0.0"}
    release.refresh_from_db()
    assert not release.pinned
    tasks.check_exactly_once(answers)


def test_a_finished_upgrade_rolls_back_with_its_data_restored(
    running, publish, load, operator_actor, roots
):
    cache = running("wow-cache")
    publish("1.1.0")
    tasks = load(cache, "restore", rate=50)
    data = Path(roots) / "wow-cache" / "replica-0" / "data"
    (data / "state.txt").write_text("before")
    upgrade = drive(
        requests.request_upgrade(
            operator_actor, cache, "1.1.0", "rolling", gate_settings={**QUICK, "min_tasks": 1}
        )  # fmt: skip
    )
    assert upgrade.status == UpgradeStatus.SUCCEEDED, upgrade.outcome
    (data / "state.txt").write_text("after")
    cache.refresh_from_db()

    back = requests.rollback_agent(
        operator_actor, cache, "bad data", restore_data=True, gate_settings=QUICK
    )
    assert back.downgrade and back.to_version == "1.0.0"
    upgrade.release.refresh_from_db()
    assert upgrade.release.pinned  # the version rolled back from is pinned
    back = drive(back)

    assert back.status == UpgradeStatus.SUCCEEDED, back.outcome
    assert versions_running(cache) == {0: "1.0.0"}
    assert (data / "state.txt").read_text() == "before"
    tasks.check_exactly_once(tasks.settle())


def test_a_config_change_rolls_out_like_a_version_replica_by_replica(
    running, publish, load, operator_actor
):
    cache = running("wow-cache", replicas=2)
    publish("1.1.0")  # (not used: the version stays)
    tasks = load(cache, "config")
    before = {number: port for number, port in enumerate(cache.runtime_details["ports"])}

    upgrade = requests.rollout_config(
        operator_actor, cache, {"task_retry_ms": 1500}, gate_settings=QUICK
    )
    assert upgrade.from_version == upgrade.to_version == "1.0.0"
    upgrade = drive(upgrade)
    answers = tasks.settle()

    assert upgrade.status == UpgradeStatus.SUCCEEDED, upgrade.outcome
    cache.refresh_from_db()
    assert cache.config["task_retry_ms"] == 1500
    assert cache.previous_config.get("task_retry_ms") != 1500  # kept for a one-click roll-back
    for port in before.values():  # each replica was replaced and runs the new config
        assert live_config(port)["task_retry_ms"] == 1500
    tasks.check_exactly_once(answers)
    with pytest.raises(ServicingRefused, match="runs this config already"):
        requests.rollout_config(operator_actor, cache, {"task_retry_ms": 1500})


def live_config(port: int) -> dict:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=3) as answer:
        return json.loads(answer.read())
