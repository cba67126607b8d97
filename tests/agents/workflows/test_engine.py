"""The workflow engine: DAG order, the parallel cap, retries with backoff, timeouts, pause and
resume, cancel, compensation order on roll-back, retry after a preview and its lineage, marks
and approvals, and bad input refused with nothing changed."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

from agents.workflows import services
from agents.workflows.definitions import Definition, Parameter, Retry, Step
from agents.workflows.models import StepRun, WorkflowRun
from portal.actors import Actor
from portal.models import AuditEntry
from portal.refusals import Refused

pytestmark = pytest.mark.django_db(transaction=True)


def diamond(wf, name: str = "t-diamond", **options) -> Definition:
    """a → (b, c, d) → e, at most two at once."""
    return wf.define(
        Definition(
            name=name, version=1, title="Diamond", max_parallel=options.pop("max_parallel", 2),
            parameters=(Parameter("who", required=False, default="x"),),
            steps=(
                Step("a", "test_echo", inputs={"who": "${params.who}"}),
                Step("b", "test_flaky", after=("a",),
                     inputs={"from_a": "${steps.a.output.who}", "failures": 0}),
                Step("c", "test_flaky", after=("a",), inputs={"failures": 0}),
                Step("d", "test_flaky", after=("a",), inputs={"failures": 0}),
                Step("e", "test_echo", after=("b", "c", "d")),
            ),
            **options,
        )
    )  # fmt: skip


def saga(wf, name: str, *, fail_at: str, **options) -> Definition:
    """one → two → three, each with a compensation; ``fail_at`` fails."""
    steps = []
    for step_id in ("one", "two", "three"):
        steps.append(
            Step(
                step_id, "test_echo", after=(steps[-1].id,) if steps else (),
                inputs={"fail": step_id == fail_at},
                compensation=Step(f"undo-{step_id}", "test_echo", inputs={"undoes": step_id}),
            )
        )  # fmt: skip
    return wf.define(Definition(name=name, version=1, title="Saga", steps=tuple(steps), **options))


def test_steps_run_in_dependency_order_within_the_parallel_cap(wf) -> None:
    diamond(wf)
    run = services.start(wf.command, "t-diamond", {"who": "acme"})
    assert run.status == "running"
    assert wf.statuses(run) == {"a": "queued", "b": "pending", "c": "pending", "d": "pending",
                                "e": "pending"}  # fmt: skip
    wf.drive(run, until=lambda r: wf.statuses(r)["a"] == "succeeded")
    # a done: b, c and d are ready, but only two may be busy at once.
    now = wf.statuses(run)
    assert (now["b"], now["c"], now["d"]) == ("queued", "queued", "pending")
    run = wf.drive(run)
    assert run.status == "succeeded"
    order = [step for _, step, _, _ in wf.calls]
    assert order[0] == "a" and order[-1] == "e" and sorted(order[1:4]) == ["b", "c", "d"]
    steps = wf.current(run)
    assert steps["b"].inputs["from_a"] == "acme"  # an earlier step's output as an input
    assert (run.total_steps, run.completed_steps, run.progress) == (5, 5, 100)


def test_a_failed_step_is_retried_with_backoff_and_each_attempt_is_kept(wf) -> None:
    wf.define(Definition(name="t-flaky", version=1, title="Flaky", steps=(
        Step("call", "test_flaky", inputs={"failures": 2},
             retry=Retry(attempts=3, backoff_seconds=0.2, factor=2)),
    )))  # fmt: skip
    run = wf.drive(services.start(wf.command, "t-flaky"))
    assert run.status == "succeeded"
    attempts = list(StepRun.objects.filter(run=run, step_id="call").order_by("attempt"))
    assert [(a.attempt, a.status, a.current) for a in attempts] == [
        (1, "failed", False), (2, "failed", False), (3, "succeeded", True)]  # fmt: skip
    # Lineage: each attempt names the one it replaced; the backoff doubled.
    assert attempts[1].replaces_id == attempts[0].pk and attempts[2].replaces_id == attempts[1].pk
    first_gap = (attempts[1].started_at - attempts[0].finished_at).total_seconds()
    second_gap = (attempts[2].started_at - attempts[1].finished_at).total_seconds()
    assert first_gap >= 0.2 and second_gap >= 0.4
    assert "Attempt 2 of 3" in attempts[1].reason and "attempt 1 failed" in attempts[1].reason


def test_a_step_past_its_timeout_fails_the_attempt(wf) -> None:
    wf.define(Definition(name="t-timeout", version=1, title="Timeout", steps=(
        Step("forever", "test_slow", timeout_seconds=1),
    )))  # fmt: skip
    run = wf.drive(services.start(wf.command, "t-timeout"))
    assert run.status == "failed"
    row = wf.current(run)["forever"]
    assert row.status == "failed" and row.error.startswith("Timed out after 1 s")
    assert 1.0 <= (row.finished_at - row.started_at).total_seconds() < 3
    assert run.error.startswith("Forever failed: Timed out")


def test_pause_starts_nothing_new_and_resume_goes_on(wf) -> None:
    diamond(wf, "t-pause", max_parallel=3)
    run = services.start(wf.command, "t-pause")
    wf.drive(run, until=lambda r: wf.statuses(r)["a"] == "succeeded")
    services.pause(run, wf.command)
    before = len(wf.calls)
    run = wf.drive(run, timeout=1)  # a paused run is not active: nothing is done
    assert run.status == "paused" and len(wf.calls) == before
    with pytest.raises(services.WorkflowRefused, match="only a running run can be paused"):
        services.pause(run, wf.command)
    services.resume(run, wf.command)
    assert wf.drive(run).status == "succeeded"
    actions = list(
        AuditEntry.objects.filter(target=f"workflow:{run.pk}")
        .order_by("pk")
        .values_list("action", flat=True)
    )
    assert actions == ["workflow.start", "workflow.pause", "workflow.pause", "workflow.resume"]


def test_cancel_skips_what_has_not_started(wf) -> None:
    wf.define(Definition(name="t-cancel", version=1, title="Cancel", steps=(
        Step("sleep", "test_slow", inputs={"seconds": 30}), Step("after", "test_echo", after=("sleep",)),
    )))  # fmt: skip
    run = services.start(wf.command, "t-cancel")
    wf.drive(run, until=lambda r: wf.statuses(r)["sleep"] == "running")
    services.cancel(run, wf.command)
    run.refresh_from_db()
    assert run.status == "cancelled" and run.finished_at is not None
    assert wf.statuses(run) == {"sleep": "cancelled", "after": "skipped"}
    with pytest.raises(services.WorkflowRefused, match="cancelled"):
        services.cancel(run, wf.command)


def test_a_failure_rolls_back_by_compensating_done_steps_newest_first(wf) -> None:
    saga(wf, "t-saga-auto", fail_at="three", roll_back_on_failure=True)
    run = wf.drive(services.start(wf.command, "t-saga-auto"))
    assert run.status == "rolled_back"
    compensations = list(
        StepRun.objects.filter(run=run, role="compensation").order_by("started_at")
    )
    assert [c.step_id for c in compensations] == ["two", "one"]  # three failed: nothing to undo
    assert all(c.status == "succeeded" for c in compensations)
    assert compensations[0].output["undoes"] == "two"
    assert "three failed" in run.error.lower()


def test_roll_back_by_hand_after_a_preview(wf) -> None:
    saga(wf, "t-saga", fail_at="none")
    run = wf.drive(services.start(wf.command, "t-saga"))
    assert run.status == "succeeded"
    plan = services.plan_rollback(run)
    assert [c["undoes"] for c in plan["compensations"]] == ["Three", "Two", "One"]
    services.rollback(run, wf.command, reason="customer left")
    run = wf.drive(run)
    assert run.status == "rolled_back"
    done = StepRun.objects.filter(run=run, role="compensation").order_by("finished_at")
    assert [c.step_id for c in done] == ["three", "two", "one"]
    with pytest.raises(services.WorkflowRefused, match="rolled back"):
        services.rollback(run, wf.command)


def test_retry_from_the_failed_step_after_a_preview_reuses_the_outputs_before_it(wf) -> None:
    wf.define(Definition(name="t-retry", version=1, title="Retry",
        parameters=(Parameter("fail", "bool"),),
        steps=(
            Step("first", "test_echo", inputs={"n": 1}),
            Step("second", "test_echo", after=("first",), inputs={"fail": "${params.fail}"}),
            Step("third", "test_echo", after=("second",)),
        )))  # fmt: skip
    run = wf.drive(services.start(wf.command, "t-retry", {"fail": "true"}))
    assert run.status == "failed" and run.error.startswith("Second failed: second was told to fail")
    assert wf.statuses(run) == {"first": "succeeded", "second": "failed", "third": "pending"}
    with pytest.raises(services.WorkflowRefused):  # nothing is changed by a preview
        services.plan_retry(run, "sideways")
    plan = services.plan_retry(run, "failed", parameters={"fail": "false"})
    preview = plan.as_dict()
    assert [s["step"] for s in preview["will_run"]] == ["second", "third"]
    assert [s["step"] for s in preview["reused"]] == ["first"]
    assert preview["changed_parameters"] == ["fail"]
    assert preview["side_effects"] == ["Second: echoes again"]  # it had started before
    first_before = wf.current(run)["first"].pk
    services.retry(run, wf.command, "failed", parameters={"fail": "false"})
    run = wf.drive(run)
    assert run.status == "succeeded" and run.retries == 1
    steps = wf.current(run)
    assert steps["first"].pk == first_before  # reused, not run again
    assert steps["second"].attempt == 2 and steps["second"].replaces.status == "failed"
    assert "Retried by" in steps["second"].reason


def test_retry_from_a_chosen_step_runs_it_and_everything_after_it(wf) -> None:
    diamond(wf, "t-from")
    run = wf.drive(services.start(wf.command, "t-from"))
    # A succeeded run is not retried (roll it back first).
    with pytest.raises(services.WorkflowRefused, match="only a failed"):
        services.plan_retry(run, "from", "b")
    WorkflowRun.objects.filter(pk=run.pk).update(status="failed")
    run.refresh_from_db()
    plan = services.plan_retry(run, "from", "b")
    assert [s.step_id for s in plan.rerun] == ["b", "e"] and {s.step_id for s in plan.reused} == {
        "a",
        "c",
        "d",
    }
    with pytest.raises(services.WorkflowRefused, match="'z' is not a step"):
        services.plan_retry(run, "from", "z")


def test_an_admin_marks_a_failed_step_and_the_run_goes_on(wf, operator, admin) -> None:
    wf.define(Definition(name="t-mark", version=1, title="Mark", steps=(
        Step("broken", "test_echo", inputs={"fail": True}), Step("next", "test_echo", after=("broken",)),
    )))  # fmt: skip
    run = wf.drive(services.start(wf.command, "t-mark"))
    assert run.status == "failed"
    with pytest.raises(PermissionDenied):
        services.mark(
            run, "broken", "succeeded", Actor(kind="user", user=operator), "fixed by hand"
        )
    with pytest.raises(services.WorkflowRefused, match="Say why"):
        services.mark(run, "broken", "succeeded", Actor(kind="user", user=admin), "  ")
    services.mark(
        run, "broken", "skipped", Actor(kind="user", user=admin), "the service is retired"
    )
    run = wf.drive(run)
    assert run.status == "succeeded"
    assert wf.current(run)["broken"].reason.startswith("Marked skipped by user:ada: the service")


def test_an_approval_waits_for_a_person_of_the_role(wf, viewer, operator) -> None:
    wf.define(Definition(name="t-approve", version=1, title="Approve", steps=(
        Step("ok", "approval", inputs={"role": "Operator"}), Step("go", "test_echo", after=("ok",)),
    )))  # fmt: skip
    run = services.start(wf.command, "t-approve")
    wf.drive(run, until=lambda r: wf.current(r)["ok"].status == "running")
    assert "Waiting for approval by an Operator" in wf.current(run)["ok"].detail
    with pytest.raises(PermissionDenied):
        services.approve(run, "ok", Actor(kind="user", user=viewer), approved=True)
    services.approve(
        run, "ok", Actor(kind="user", user=operator), approved=True, note="looks right"
    )
    run = wf.drive(run)
    assert run.status == "succeeded"
    assert wf.current(run)["ok"].output == {"approved_by": "user:otto", "note": "looks right"}


def test_bad_input_is_refused_and_changes_nothing(wf, viewer) -> None:
    diamond(wf, "t-bad")
    before = WorkflowRun.objects.count()
    with pytest.raises(Refused) as unknown:
        services.start(wf.command, "no-such-thing")
    assert unknown.value.status == 404 and "t-bad" in unknown.value.message
    with pytest.raises(Refused) as bad:
        services.start(wf.command, "t-bad", {"who": "x\x00y", "extra": 1})
    assert bad.value.status == 400
    assert bad.value.details["problems"] == [
        "'extra' is not a parameter of Diamond",
        "who contains a NUL character",
    ]
    with pytest.raises(PermissionDenied):
        services.start(Actor(kind="user", user=viewer), "t-bad")
    assert WorkflowRun.objects.count() == before
    refused = AuditEntry.objects.filter(action="workflow.start", outcome="refused").count()
    assert refused == 3
    run = services.start(wf.command, "t-bad")
    with pytest.raises(services.WorkflowRefused) as illegal:
        services.resume(run, wf.command)
    assert (
        illegal.value.status == 409 and "only a paused run can be resumed" in illegal.value.message
    )
    for bad_id in ("abc", "0", "-1", str(10**30), "1\x00"):
        with pytest.raises(services.WorkflowRefused) as missing:
            services.get_run(bad_id)
        assert missing.value.status == 400
    with pytest.raises(services.WorkflowRefused) as gone:
        services.get_run(run.pk + 1000)
    assert gone.value.status == 404


def test_redis_away_for_a_moment_is_not_a_failed_attempt(wf) -> None:
    import redis

    from agents.workflows.kinds import Done, StepKind, register_kind

    class RedisBlip(StepKind):
        name = "test_redis_blip"
        calls = 0

        def start(self, ctx):
            RedisBlip.calls += 1
            if RedisBlip.calls == 1:
                raise redis.exceptions.ConnectionError("Error 111 connecting: refused")
            return Done({"calls": RedisBlip.calls})

    register_kind(RedisBlip())
    wf.define(Definition(name="t-blip", version=1, title="Blip", steps=(
        Step("call", "test_redis_blip", retry=Retry(attempts=3, backoff_seconds=0.1)),
    )))  # fmt: skip
    run = services.start(wf.command, "t-blip")
    run = wf.drive(run, timeout=10)
    assert run.status == "succeeded"
    rows = list(StepRun.objects.filter(run=run))
    assert [(r.attempt, r.status) for r in rows] == [(1, "succeeded")]  # asked again, not retried
    assert rows[0].output == {"calls": 2}
