"""Creation as a workflow: from a draft to a RUNNING agent with its first task done, with real
agentd processes; compensation when cancelled or failed."""

from __future__ import annotations

import pytest

from agents.models import Agent, AgentSecret, State, Tier
from agents.services.registry import NewAgent, register_agent
from agents.workflows.models import RunStatus
from factory.models import Draft
from factory.services import creation, drafts
from factory.services.refusals import FactoryRefused
from observability.models import AlertRule
from tests.concurrency import at_once

from .conftest import drive


def new_draft(template, actor, **fields):
    draft = drafts.create_draft(template, actor)
    errors = drafts.set_fields(draft, fields, actor)
    assert not errors, errors
    return draft


def test_a_blank_agent_is_created_running_with_its_first_task_done(
    catalog, operator_actor, redis_client
) -> None:
    draft = new_draft(
        catalog["blank"], operator_actor, name="Acme Echo", slug="acme-echo", owner="Acme",
        secrets="API_TOKEN=s3cret", environment="REGION=eu",
    )  # fmt: skip
    draft = creation.create(draft, operator_actor)
    assert draft.status == Draft.Status.CREATING and draft.run is not None
    run = drive(draft.run)
    assert run.status == RunStatus.SUCCEEDED, run.error
    agent = Agent.objects.get(slug="acme-echo")
    assert agent.state == State.RUNNING
    assert agent.template == "blank@1" and agent.environment == {"REGION": "eu"}
    assert AgentSecret.objects.get(agent=agent, name="API_TOKEN").value == "s3cret"
    assert AlertRule.objects.filter(agent=agent).count() == len(catalog["blank"].alert_rules)
    first = run.steps.get(step_id="first-task", current=True)
    assert first.output == {"hello": "world"}
    draft = creation.sync(Draft.objects.get(pk=draft.pk))
    assert draft.status == Draft.Status.CREATED and draft.secrets == {}


def test_an_invalid_configuration_is_refused_before_anything_is_created(
    catalog, operator_actor
) -> None:
    draft = drafts.create_draft(catalog["blank"], operator_actor)
    drafts.set_fields(draft, {"name": "WowCache", "slug": "wow-cache"}, operator_actor)
    with pytest.raises(FactoryRefused) as refused:
        creation.create(draft, operator_actor)
    fields = {error["field"] for error in refused.value.errors}
    assert {"name", "slug", "owner"} <= fields
    assert Agent.objects.count() == 14
    assert Draft.objects.get(pk=draft.pk).status == Draft.Status.EDITING


def test_cancelling_a_creation_undoes_what_it_made(catalog, operator_actor, redis_client) -> None:
    draft = new_draft(
        catalog["blank"], operator_actor, name="Acme Undo", slug="acme-undo", owner="Acme"
    )
    draft = creation.create(draft, operator_actor)
    drive(
        draft.run, until=lambda run: run.steps.filter(step_id="deploy", status="succeeded").exists()
    )
    assert Agent.objects.get(slug="acme-undo").state == State.DEPLOYED
    creation.cancel(Draft.objects.get(pk=draft.pk), operator_actor)
    run = drive(draft.run)
    assert run.status == RunStatus.ROLLED_BACK, run.error
    assert not Agent.objects.filter(slug="acme-undo").exists()
    revoked = Agent.objects.get(slug__startswith="acme-undo-undone-")
    assert revoked.state == State.REVOKED and not revoked.secrets.exists()
    assert not AlertRule.objects.filter(agent=revoked).exists()
    assert not list(redis_client.scan_iter(match="agents:acme-undo:*"))
    assert creation.sync(Draft.objects.get(pk=draft.pk)).status == Draft.Status.CANCELLED


def test_a_slug_being_created_is_refused_to_a_second_creation(catalog, operator_actor) -> None:
    first = new_draft(
        catalog["blank"], operator_actor, name="Acme Twin", slug="acme-twin", owner="Acme"
    )
    second = new_draft(
        catalog["blank"], operator_actor, name="Acme Twin", slug="acme-twin", owner="Acme"
    )
    run = creation.create(first, operator_actor).run
    with pytest.raises(FactoryRefused) as refused:
        creation.create(second, operator_actor)
    assert refused.value.errors == [
        {
            "field": "slug",
            "message": f"acme-twin is being created already (workflow #{run.pk}); pick another "
            "slug, or wait for that creation to end.",
        }
    ]
    assert Draft.objects.get(pk=second.pk).status == Draft.Status.EDITING
    assert drive(run).status == RunStatus.SUCCEEDED
    assert Agent.objects.filter(slug="acme-twin").count() == 1


def test_a_creation_rolled_back_frees_its_slug(catalog, operator_actor) -> None:
    draft = new_draft(catalog["blank"], operator_actor, name="Acme Again", slug="acme-again",
                      owner="Acme", dependencies="wow-cache")  # fmt: skip
    assert drive(creation.create(draft, operator_actor).run).status == RunStatus.ROLLED_BACK
    again = new_draft(
        catalog["blank"], operator_actor, name="Acme Again", slug="acme-again", owner="Acme"
    )
    assert drive(creation.create(again, operator_actor).run).status == RunStatus.SUCCEEDED


def test_concurrent_creations_of_one_slug_start_one_run(
    transactional_db, catalog, operator_actor
) -> None:
    def create() -> object:
        try:
            config = {"owner": "Acme"}
            return creation.create_from_config(
                operator_actor, catalog["blank"], "Acme Rush", config
            ).run_id
        except FactoryRefused as refused:
            return refused.errors[0]["message"]

    outcomes = at_once(create, 4)
    started = [outcome for outcome in outcomes if isinstance(outcome, int)]
    assert len(started) == 1, outcomes
    refusal = (
        f"acme-rush is being created already (workflow #{started[0]}); pick another slug, or "
        "wait for that creation to end."
    )
    assert outcomes.count(refusal) == 3, outcomes
    assert Draft.objects.filter(agent_slug="acme-rush").count() == 1


def test_an_agent_registered_mid_creation_fails_the_creation_and_is_left_alone(
    catalog, operator_actor
) -> None:
    draft = new_draft(
        catalog["blank"], operator_actor, name="Acme Twin", slug="acme-twin", owner="Acme"
    )
    run = creation.create(draft, operator_actor).run
    register_agent(
        NewAgent(slug="acme-twin", name="Twin By Hand", tier=Tier.CUSTOMER, owner_team="Acme"),
        operator_actor,
    )
    finished = drive(run)
    assert finished.status in (RunStatus.FAILED, RunStatus.ROLLED_BACK)
    assert "slug: acme-twin is taken by Twin By Hand" in finished.error
    assert Agent.objects.get(slug="acme-twin").name == "Twin By Hand"


def test_a_step_failing_for_good_undoes_the_creation_by_itself(catalog, operator_actor) -> None:
    # WowCache is only registered, not running: the new agent cannot start after it.
    draft = new_draft(catalog["blank"], operator_actor, name="Acme Needy", slug="acme-needy",
                      owner="Acme", dependencies="wow-cache")  # fmt: skip
    run = drive(creation.create(draft, operator_actor).run)
    assert run.status == RunStatus.ROLLED_BACK, run.error
    assert "Start failed" in run.error and "WowCache" in run.error
    assert not Agent.objects.filter(slug="acme-needy").exists()
    assert Agent.objects.get(slug__startswith="acme-needy-undone-").state == State.REVOKED


def test_keep_on_failure_leaves_what_was_made_for_debugging(catalog, operator_actor) -> None:
    draft = new_draft(catalog["blank"], operator_actor, name="Acme Kept", slug="acme-kept",
                      owner="Acme", dependencies="wow-cache")  # fmt: skip
    run = drive(creation.create(draft, operator_actor, keep_on_failure=True).run)
    assert run.status == RunStatus.FAILED
    agent = Agent.objects.get(slug="acme-kept")
    assert agent.state == State.DEPLOYED and AlertRule.objects.filter(agent=agent).exists()
    # Undone later by hand: the compensations run then.
    creation.cancel(creation.sync(Draft.objects.get(pk=draft.pk)), operator_actor)
    assert drive(run).status == RunStatus.ROLLED_BACK
    assert not Agent.objects.filter(slug="acme-kept").exists()


def test_a_customer_agent_is_linked_to_the_help_desk_customer_its_owner_names(
    catalog, operator_actor, redis_client
) -> None:
    from helpdesk.models import Customer, CustomerAgent

    acme = Customer.objects.create(key="acme-corp", company_name="Acme Corp")
    draft = new_draft(catalog["blank"], operator_actor, name="Acme Helper", slug="acme-helper",
                      tier="customer", owner="acme corp")  # fmt: skip
    run = drive(creation.create(draft, operator_actor).run)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert CustomerAgent.objects.get(agent__slug="acme-helper").customer == acme
    # An owner that names no customer makes an agent of nobody's.
    other = new_draft(catalog["blank"], operator_actor, name="Initech Helper",
                      slug="initech-helper", tier="customer", owner="Initech")  # fmt: skip
    assert drive(creation.create(other, operator_actor).run).status == RunStatus.SUCCEEDED
    assert not CustomerAgent.objects.filter(agent__slug="initech-helper").exists()
