"""Deadlines while a run goes: the predicted finish from past runs' median step durations along
the critical path, "at risk" before the deadline and "late" after it, one alert per run through
the rule engine, and the automatic roll-back a definition may ask for."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from agents.workflows import deadlines, services
from agents.workflows.definitions import Definition, Parameter, Step
from agents.workflows.models import StepRun, WorkflowRun

pytestmark = pytest.mark.django_db(transaction=True)


def forked(wf, name: str, **options) -> Definition:
    """start → (short, long) → end."""
    return wf.define(
        Definition(
            name=name, version=1, title="Forked", deadline_seconds=options.pop("deadline", 60),
            steps=(
                Step("start", "test_echo"),
                Step("short", "test_echo", after=("start",)),
                Step("long", "test_slow", after=("start",), inputs={"seconds": 10**6}),
                Step("end", "test_echo", after=("short", "long"),
                     compensation=Step("undo-end", "test_echo")),
            ),
            **options,
        )
    )  # fmt: skip


def history(name: str, durations: dict[str, float], runs: int = 3) -> None:
    """Past successful attempts of ``name``'s steps, each taking ``durations[step]`` seconds."""
    now = timezone.now()
    for _ in range(runs):
        run = WorkflowRun.objects.create(
            definition=name, version=1, title="past", actor_kind="system", actor="system:test",
            status="succeeded",
        )  # fmt: skip
        for position, (step_id, seconds) in enumerate(durations.items()):
            started = now - timedelta(hours=1)
            StepRun.objects.create(
                run=run, definition=name, step_id=step_id, position=position, kind="test_echo",
                title=step_id, status="succeeded", started_at=started,
                finished_at=started + timedelta(seconds=seconds),
            )  # fmt: skip


def test_the_prediction_follows_the_critical_path_of_median_durations(wf) -> None:
    forked(wf, "t-predict")
    history("t-predict", {"start": 1, "short": 2, "long": 30, "end": 4})
    run = services.start(wf.command, "t-predict")
    wf.drive(run, until=lambda r: wf.statuses(r)["long"] == "running")
    run.refresh_from_db()
    now = timezone.now()
    prediction = deadlines.predict(run, now=now)
    assert prediction.critical_path == ["start", "long", "end"]
    assert prediction.medians["long"] == pytest.approx(30)
    long_started = wf.current(run)["long"].started_at
    expected = long_started + timedelta(seconds=30 + 4)
    assert abs((prediction.finish_at - expected).total_seconds()) < 0.5
    assert prediction.state == "on_time"  # 34 s of a 60-s deadline


def test_a_run_is_at_risk_before_its_deadline_then_late_with_one_alert(wf, seeded) -> None:
    from observability import alerts
    from observability.models import Alert, AlertRule

    seeded_rules = alerts.ensure_default_rules(wf.command)
    assert seeded_rules and AlertRule.objects.filter(kind="workflow").count() == 1
    forked(wf, "t-late", deadline=20, subject_kind="agent", subject_parameter="agent",
           parameters=(Parameter("agent"),))  # fmt: skip
    history("t-late", {"start": 1, "short": 1, "long": 60, "end": 1})
    run = services.start(wf.command, "t-late", {"agent": "wow-cache"})
    wf.drive(run, until=lambda r: wf.statuses(r)["long"] == "running")
    now = timezone.now()
    assert deadlines.check_deadlines(now)["at_risk"] == 1
    run.refresh_from_db()
    assert run.deadline_state == "at_risk" and run.predicted_finish_at > run.deadline_at
    alerts.evaluate(now)
    alerts.evaluate(now + timedelta(seconds=5))  # evaluated again: still one alert
    alert = Alert.objects.get(subject=f"workflow:{run.pk}")
    assert alert.status == "firing" and "is at risk" in alert.summary
    assert alert.agent.slug == "wow-cache" and alert.summary.endswith("(wow-cache)")
    later = run.deadline_at + timedelta(seconds=1)
    assert deadlines.check_deadlines(later)["late"] == 1
    alerts.evaluate(later)
    alert.refresh_from_db()
    assert Alert.objects.filter(subject=f"workflow:{run.pk}").count() == 1
    assert "is late" in alert.summary and alert.value >= 1
    services.cancel(run, wf.command)
    alerts.evaluate(later)
    alert.refresh_from_db()
    assert alert.status == "resolved" and alert.resolution.startswith("The run finished")


def test_a_definition_may_roll_back_by_itself_when_late(wf) -> None:
    forked(wf, "t-late-rollback", deadline=1, roll_back_on_deadline=True)
    run = services.start(wf.command, "t-late-rollback")
    wf.drive(run, until=lambda r: wf.statuses(r)["long"] == "running")
    counts = deadlines.check_deadlines(timezone.now() + timedelta(seconds=2))
    assert counts["rolled_back"] == 1
    run = wf.drive(run)
    assert run.status == "rolled_back" and "Missed its deadline" in run.error
    assert wf.statuses(run) == {"start": "succeeded", "short": "succeeded", "long": "cancelled",
                                "end": "skipped"}  # fmt: skip


def test_steps_past_their_own_deadline_are_flagged_late(wf) -> None:
    wf.define(Definition(name="t-step-deadline", version=1, title="Step deadline", steps=(
        Step("slow", "test_slow", inputs={"seconds": 10**6}, deadline_seconds=1),
    )))  # fmt: skip
    run = services.start(wf.command, "t-step-deadline")
    wf.drive(run, until=lambda r: wf.statuses(r)["slow"] == "running")
    deadlines.check_deadlines(timezone.now() + timedelta(seconds=2))
    assert wf.current(run)["slow"].late
