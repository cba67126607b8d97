"""The engine's own step kinds other than the agent task (tested with real agentd elsewhere):
sub-workflows, waits for a time and for a condition, lifecycle actions on real processes with
their compensation, and the dependency waves of a fleet restart."""

from __future__ import annotations

import pytest

from agents.models import Agent, Operation
from agents.workflows import services
from agents.workflows.definitions import Definition, Parameter, Step
from agents.workflows.models import StepRun, WorkflowRun
from agents.workflows.steps import waves

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_sub_workflow_runs_as_a_child_run_and_answers_its_outputs(wf) -> None:
    wf.define(Definition(name="t-child", version=1, title="Child",
        parameters=(Parameter("who"),),
        steps=(Step("greet", "test_echo", inputs={"hello": "${params.who}"}),)))  # fmt: skip
    wf.define(Definition(name="t-parent", version=1, title="Parent", steps=(
        Step("child", "workflow", inputs={"definition": "t-child", "parameters": {"who": "acme"}}),
        Step("after", "test_echo", after=("child",),
             inputs={"greeted": "${steps.child.output.outputs.greet.hello}"}),
    )))  # fmt: skip
    parent = services.start(wf.command, "t-parent")

    def drive_both(run):
        child = WorkflowRun.objects.filter(parent_step__run=parent).first()
        if child is not None and not child.is_finished:
            wf.drive(child)
        return False

    parent = wf.drive(parent, until=lambda r: drive_both(r) or r.is_finished)
    assert parent.status == "succeeded"
    child = WorkflowRun.objects.get(parent_step__run=parent)
    assert child.status == "succeeded" and child.parameters == {"who": "acme"}
    assert wf.current(parent)["after"].inputs == {"greeted": "acme"}
    assert wf.current(parent)["child"].output["run"] == child.pk


def test_cancelling_a_parent_cancels_its_running_child(wf) -> None:
    wf.define(Definition(name="t-slow-child", version=1, title="Slow child", steps=(
        Step("sleep", "test_slow", inputs={"seconds": 60}),
    )))  # fmt: skip
    wf.define(Definition(name="t-slow-parent", version=1, title="Slow parent", steps=(
        Step("child", "workflow", inputs={"definition": "t-slow-child"}),
    )))  # fmt: skip
    parent = services.start(wf.command, "t-slow-parent")
    wf.drive(parent, until=lambda r: WorkflowRun.objects.filter(parent_step__run=r).exists())
    child = WorkflowRun.objects.get(parent_step__run=parent)
    wf.drive(child, until=lambda r: wf.statuses(r)["sleep"] == "running")
    services.cancel(parent, wf.command)
    child.refresh_from_db()
    assert child.status == "cancelled" and "its parent run was cancelled" in child.error
    assert wf.current(parent)["child"].reason.endswith(f"Sub-workflow #{child.pk} cancelled.")


def test_a_wait_for_a_time_and_for_a_healthy_agent(wf, seeded) -> None:
    wf.define(Definition(name="t-waits", version=1, title="Waits", steps=(
        Step("pause", "wait", inputs={"seconds": 0.3}),
        Step("healthy", "wait", after=("pause",), inputs={"until": "agent_healthy",
                                                          "agent": "wow-cache", "every": 0.1}),
    )))  # fmt: skip
    run = services.start(wf.command, "t-waits")
    wf.drive(run, until=lambda r: wf.statuses(r)["healthy"] == "running")
    pause = wf.current(run)["pause"]
    assert (pause.finished_at - pause.started_at).total_seconds() >= 0.3
    assert "Waiting for WowCache to be healthy (unknown)" in wf.current(run)["healthy"].detail
    Agent.objects.filter(slug="wow-cache").update(state="RUNNING", health="healthy")
    run = wf.drive(run)
    assert run.status == "succeeded"
    assert wf.current(run)["healthy"].output == {"agent": "wow-cache", "health": "healthy"}


def test_bad_wait_and_lifecycle_inputs_are_refused_when_the_definition_is_registered(wf) -> None:
    from agents.workflows.definitions import DefinitionError

    with pytest.raises(DefinitionError, match="until 'sunrise' is not one of"):
        wf.define(Definition(name="t-bad-wait", version=1, title="Bad", steps=(
            Step("w", "wait", inputs={"until": "sunrise"}),)))  # fmt: skip
    with pytest.raises(DefinitionError, match="action 'explode' is not one of"):
        wf.define(Definition(name="t-bad-action", version=1, title="Bad", steps=(
            Step("a", "lifecycle", inputs={"agent": "wow-cache", "action": "explode"}),)))  # fmt: skip
    with pytest.raises(DefinitionError, match="no step kind 'teleport'"):
        wf.define(Definition(name="t-bad-kind", version=1, title="Bad", steps=(
            Step("a", "teleport"),)))  # fmt: skip


def test_a_lifecycle_step_stops_a_real_agent_and_its_compensation_starts_it(
    wf, seeded, bring_up
) -> None:
    cache = bring_up(seeded["wow-cache"])
    run = services.start(wf.command, "drain-and-stop", {"agent": "wow-cache"})
    Agent.objects.filter(pk=cache.pk).update(health="healthy")  # as the monitor would say
    run = wf.drive(run, timeout=60)
    assert run.status == "succeeded", run.error
    cache.refresh_from_db()
    assert cache.state == "STOPPED"
    stop = wf.current(run)["stop"]
    assert stop.output["state"] == "STOPPED"
    operation = Operation.objects.get(pk=stop.output["operation"])
    assert operation.action == "stop" and operation.reason == f"workflow run #{run.pk}"
    services.rollback(run, wf.command)
    run = wf.drive(run, timeout=60)
    assert run.status == "rolled_back"
    cache.refresh_from_db()
    assert cache.state == "RUNNING"
    undo = StepRun.objects.get(run=run, role="compensation")
    assert undo.step_id == "stop" and undo.output["action"] == "start"


def test_the_fleet_restarts_in_dependency_waves(seeded) -> None:
    grouped = [[agent.slug for agent in wave] for wave in waves(list(Agent.objects.all()))]
    assert grouped[0] == ["wow-cache", "wow-event"]  # depend on nothing
    assert "wow-security" in grouped[1] and "wow-memory" in grouped[1]
    assert set(grouped[-1]) >= {"wow-vision", "wow-agent-factory", "wow-support"}
    position = {slug: index for index, wave in enumerate(grouped) for slug in wave}
    for agent in Agent.objects.prefetch_related("dependencies"):
        for dependency in agent.dependencies.all():
            assert position[dependency.slug] < position[agent.slug], (agent.slug, dependency.slug)
