"""Workflow definitions are checked when declared: a DAG in declared order, references only to
parameters and to outputs of steps that come before, typed parameters checked at start."""

from __future__ import annotations

import pytest

from agents.workflows.definitions import (
    Definition,
    DefinitionError,
    Parameter,
    ParameterError,
    Retry,
    Step,
)


def onboarding(**changes) -> Definition:
    values = {
        "name": "customer-onboarding",
        "version": 1,
        "title": "Customer onboarding",
        "parameters": (Parameter("customer_name"), Parameter("seats", "int", required=False, default=5, minimum=1, maximum=500)),
        "steps": (
            Step("provision", "agent_task", inputs={"customer": "${params.customer_name}"},
                 compensation=Step("deprovision", "agent_task", inputs={"agent": "${steps.provision.output.agent}"})),
            Step("configure", "agent_task", after=("provision",), inputs={"agent": "${steps.provision.output.agent}"}),
            Step("deploy", "agent_task", after=("provision",)),
            Step("test", "agent_task", after=("configure", "deploy"), retry=Retry(attempts=3)),
            Step("activate", "agent_task", after=("test",), inputs={"seats": "${params.seats}"}),
        ),
    }  # fmt: skip
    values.update(changes)
    return Definition(**values)


def test_layers_put_parallel_branches_side_by_side() -> None:
    definition = onboarding()
    assert definition.layers() == [["provision"], ["configure", "deploy"], ["test"], ["activate"]]
    assert definition.ancestors("test") == {"provision", "configure", "deploy"}
    assert definition.key == "customer-onboarding@1"


@pytest.mark.parametrize(
    ("steps", "says"),
    [
        ((Step("a", "k", after=("b",)), Step("b", "k")), "'b', which is not declared before it"),
        ((Step("a", "k"), Step("a", "k")), "ids are unique"),
        (
            (Step("a", "k", inputs={"x": "${steps.b.output.y}"}), Step("b", "k")),
            "names no parameter",
        ),
        ((Step("a", "k", inputs={"x": ["${params.nope}"]}),), "names no parameter"),
        ((Step("a", "k", retry=Retry(attempts=0)),), "at least one attempt"),
        ((), "has no steps"),
    ],
)
def test_a_bad_definition_is_refused_when_declared(steps, says) -> None:
    with pytest.raises(DefinitionError, match=says):
        onboarding(steps=steps)


def test_a_compensation_may_read_its_own_steps_output_but_not_a_later_one() -> None:
    with pytest.raises(DefinitionError, match="names no parameter"):
        onboarding(
            steps=(
                Step("a", "k", compensation=Step("undo", "k", inputs={"x": "${steps.b.output.y}"})),
                Step("b", "k", after=("a",)),
            )
        )


def test_parameters_are_checked_and_every_problem_is_listed() -> None:
    definition = onboarding()
    assert definition.parse_parameters({"customer_name": "Acme Corp"}) == {
        "customer_name": "Acme Corp",
        "seats": 5,
    }
    with pytest.raises(ParameterError) as refused:
        definition.parse_parameters({"seats": "10000", "colour": "red"})
    assert refused.value.status == 400
    assert refused.value.details["problems"] == [
        "'colour' is not a parameter of Customer onboarding",
        "customer_name is required",
        "seats must be at most 500",
    ]
    with pytest.raises(ParameterError, match="NUL"):
        definition.parse_parameters({"customer_name": "a\x00b"})


def test_retry_backoff_grows_and_is_capped() -> None:
    retry = Retry(attempts=5, backoff_seconds=2, factor=3, max_backoff_seconds=30)
    assert [retry.delay(n) for n in (2, 3, 4, 5)] == [2, 6, 18, 30]
