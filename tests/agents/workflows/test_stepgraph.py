"""The step graph: a definition's steps and dependencies as a ``portal.graphs.Graph``, coloured
by each step's current attempt on a run, with the compensations of a roll-back after it, and
plain (kind, median duration, what undoes what) for the definitions page."""

from __future__ import annotations

import json

import pytest

from agents.workflows import registry, services
from agents.workflows.definitions import Definition, Retry, Step
from agents.workflows.models import StepRun, WorkflowRun
from agents.workflows.stepgraph import definition_graph, step_graph
from portal.graphs import graph_data, graph_fragments

pytestmark = pytest.mark.django_db(transaction=True)


def rows(run: WorkflowRun) -> list[StepRun]:
    return list(StepRun.objects.filter(run=run))


def diamond(wf, *, fail: str = "") -> Definition:
    """a → (b, c) → d; ``fail`` names a step that fails for good."""
    return wf.define(
        Definition(
            name="t-graph-diamond", version=1, title="Diamond",
            steps=(
                Step("a", "test_echo", title="Provision"),
                Step("b", "test_flaky", after=("a",), inputs={"failures": 1},
                     retry=Retry(attempts=2, backoff_seconds=0.05)),
                Step("c", "test_echo", after=("a",), inputs={"fail": fail == "c"}),
                Step("d", "test_echo", after=("b", "c")),
            ),
        )
    )  # fmt: skip


def edges(graph) -> set[tuple[str, str]]:
    return {(edge.source, edge.target) for edge in graph.edges}


def test_the_graph_of_a_run_colours_each_step_by_its_current_attempt(wf) -> None:
    definition = diamond(wf, fail="c")
    run = wf.drive(services.start(wf.command, "t-graph-diamond"))
    assert run.status == "failed"
    graph = step_graph(run, rows(run), definition)
    assert graph.direction == "RIGHT"
    assert graph.label == f"Steps of Diamond #{run.pk} and their status"
    assert [node.id for node in graph.nodes] == ["a", "b", "c", "d"]
    assert {node.id: node.status for node in graph.nodes} == {
        "a": "succeeded", "b": "succeeded", "c": "failed", "d": "pending"
    }  # fmt: skip
    assert edges(graph) == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}
    a, b, c = graph.node("a"), graph.node("b"), graph.node("c")
    assert (a.label, a.kind, a.href) == ("Provision", "step", "#step-a")
    assert a.sublabel.startswith("succeeded · ") and a.sublabel.endswith(" ms")
    assert b.sublabel.endswith(" · attempt 2")  # its first attempt failed
    assert c.sublabel.startswith("failed · ")
    assert c.title.startswith("C: failed, ") and "c was told to fail" in c.title
    # An edge leaving a step that is through takes its status; one leaving a failed step none.
    by_ends = {(edge.source, edge.target): edge.status for edge in graph.edges}
    assert by_ends[("a", "b")] == "succeeded" and by_ends[("c", "d")] == ""
    # It draws: the shape graph.js reads, with is-<status> classes.
    data = graph_data(graph)
    assert [node["status"] for node in data["nodes"]][:3] == ["succeeded", "succeeded", "failed"]
    json.dumps(data)
    assert set(graph_fragments(graph, "steps")) == {"steps-data", "steps-list"}


def test_a_run_still_going_shows_running_and_pending_steps(wf) -> None:
    wf.define(Definition(name="t-graph-running", version=1, title="Running", steps=(
        Step("first", "test_echo"),
        Step("wait", "test_slow", after=("first",)),  # never ends by itself
        Step("last", "test_echo", after=("wait",)),
    )))  # fmt: skip
    run = services.start(wf.command, "t-graph-running")
    run = wf.drive(run, until=lambda r: wf.statuses(r)["wait"] == "running")
    graph = step_graph(run, rows(run), registry.get("t-graph-running"))
    assert [(n.id, n.status) for n in graph.nodes] == [
        ("first", "succeeded"), ("wait", "running"), ("last", "pending")
    ]  # fmt: skip
    assert graph.node("last").sublabel == "pending"
    assert graph.node("wait").title.startswith("Wait: running, ")
    services.cancel(run, wf.command)


def test_compensations_appear_after_a_roll_back_with_dashed_edges_from_their_steps(wf) -> None:
    steps = []
    for step_id in ("one", "two", "three"):
        steps.append(
            Step(step_id, "test_echo", after=(steps[-1].id,) if steps else (),
                 inputs={"fail": step_id == "three"},
                 compensation=Step(f"undo-{step_id}", "test_echo"))
        )  # fmt: skip
    definition = wf.define(Definition(name="t-graph-saga", version=1, title="Saga",
                                      steps=tuple(steps)))  # fmt: skip
    run = wf.drive(services.start(wf.command, "t-graph-saga"))
    assert run.status == "failed"
    before = step_graph(run, rows(run), definition)
    assert [node.id for node in before.nodes] == ["one", "two", "three"]  # nothing undone yet
    services.rollback(run, wf.command, "test")
    run = wf.drive(run)
    assert run.status == "rolled_back"
    graph = step_graph(run, rows(run), definition)
    assert [node.id for node in graph.nodes] == [
        "one", "two", "three", "compensation:two", "compensation:one"
    ]  # fmt: skip
    undo = graph.node("compensation:two")
    assert (undo.kind, undo.status, undo.label, undo.href) == (
        "compensation", "succeeded", "Undo two", "#compensation-two"
    )  # fmt: skip
    dashed = [(e.source, e.target) for e in graph.edges if e.status == "compensation"]
    assert dashed == [("two", "compensation:two"), ("one", "compensation:one")]
    assert graph_data(graph)["nodes"][3]["kind"] == "compensation"


def test_a_run_whose_definition_is_gone_is_drawn_from_its_rows(wf) -> None:
    definition = diamond(wf)
    run = wf.drive(services.start(wf.command, "t-graph-diamond"))
    graph = step_graph(run, rows(run), None)
    assert [node.id for node in graph.nodes] == ["a", "b", "c", "d"]
    assert graph.edges == ()
    assert graph.node("a").label == "Provision" and graph.node("d").status == "succeeded"
    assert len(step_graph(run, rows(run), definition).edges) == 4


def test_the_graph_of_a_definition_names_kinds_medians_and_what_undoes_what(wf) -> None:
    definition = wf.define(Definition(name="t-graph-def", version=1, title="Onboard", steps=(
        Step("provision", "test_echo", compensation=Step("deprovision", "test_echo",
                                                         title="Tear down")),
        Step("test", "test_flaky", after=("provision",), retry=Retry(attempts=3)),
    )))  # fmt: skip
    graph = definition_graph(definition, {"provision": 2.5})
    assert graph.label == "Steps of Onboard" and graph.direction == "RIGHT"
    assert [(n.id, n.kind, n.status) for n in graph.nodes] == [
        ("provision", "step", ""), ("compensation:provision", "compensation", ""),
        ("test", "step", ""),
    ]  # fmt: skip
    assert graph.node("provision").sublabel == "test_echo · median 2.5 s"
    assert graph.node("test").sublabel == "test_flaky"
    assert graph.node("test").title == (
        "Test (test_flaky): times out after 5 min, tried up to 3 times, after provision"
    )
    assert graph.node("compensation:provision").label == "Tear down"
    assert [(e.source, e.target, e.status) for e in graph.edges] == [
        ("provision", "compensation:provision", "compensation"), ("provision", "test", ""),
    ]  # fmt: skip
    plain = definition_graph(definition, compensations=False)
    assert [n.id for n in plain.nodes] == ["provision", "test"]
    assert plain.node("provision").sublabel == "test_echo"


def test_the_built_in_definitions_all_draw() -> None:
    for definition in registry.definitions():
        graph = definition_graph(definition)
        steps = [n for n in graph.nodes if n.kind == "step"]
        assert len(steps) == len(definition.steps)
        assert sum(len(s.after) for s in definition.steps) == len(
            [e for e in graph.edges if e.status != "compensation"]
        )
