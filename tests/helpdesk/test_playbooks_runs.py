"""Playbooks: seeded as versioned data, dry-run against a customer (checks read real state,
actions described), and run on the workflow engine with an Operator's approval before a
destructive step, selected steps only, with real agents where an action needs one."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from agents.choices import Health
from agents.models import Agent, Operation
from agents.workflows import services as workflows
from agents.workflows.models import StepRun
from helpdesk.models import Interaction, Playbook, PlaybookRun, SubscriptionStatus
from helpdesk.playbooks import catalog, services
from helpdesk.refusals import HelpdeskRefused
from portal.actors import Actor
from portal.models import AuditEntry
from portal.startup import STARTUP_STEPS
from tests.agents.workflows.conftest import drive
from tests.helpdesk import actions_kit as kit
from tests.helpdesk.actions_kit import bring_up, link_agent, new_slug, run_pending_operations

agent_root, smtp_server = kit.agent_root, kit.smtp_server  # fixtures
SEEDER = Actor.command("test")


def statuses(run) -> dict[str, str]:
    return {r.step_id: r.status for r in StepRun.objects.filter(run=run, current=True)}


def expired_trial(customer):
    customer.status = SubscriptionStatus.EXPIRED
    customer.trial_ends_at = timezone.now() - timedelta(days=2)
    customer.save()


# --- the library ---------------------------------------------------------------------------------


def test_the_seed_has_the_issues_five_and_more_and_is_idempotent(db, monkeypatch):
    assert services.seed_step in STARTUP_STEPS

    first = services.seed_playbooks(SEEDER)
    again = services.seed_playbooks(SEEDER)

    slugs = {p.slug for p in first}
    assert {"agent-not-responding", "slow-performance", "authentication-errors",
            "trial-not-activating", "payment-failures", "crash-loop",
            "dead-letter-storm"} <= slugs  # fmt: skip
    assert again == [] and Playbook.objects.count() == len(catalog.SEED)
    # A changed definition is a new version; the old one stays for the runs that used it.
    changed = [dict(d) for d in catalog.SEED]
    changed[0] = {**changed[0], "description": "Changed."}
    monkeypatch.setattr(catalog, "SEED", tuple(changed))
    [new] = services.seed_playbooks(SEEDER)
    assert (new.slug, new.version, new.active) == (changed[0]["slug"], 2, True)
    assert not Playbook.objects.get(slug=new.slug, version=1).active
    assert services.get_playbook(new.slug).version == 2


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ([], "steps is a list of 1 to 30 steps"),
        ([{"id": "A", "kind": "check", "title": "x", "check": "agents_running", "expect": True}], "step 1: id is unique"),
        ([{"id": "a", "kind": "check", "title": "x", "check": "nope", "expect": True}], "step 'a': check is one of"),
        ([{"id": "a", "kind": "check", "title": "x", "check": "queue_backlog", "expect": True}], 'step \'a\': check queue_backlog expects {"max": N}'),
        ([{"id": "a", "kind": "action", "title": "x", "action": "restart-agent", "params": {}}], "step 'a': restart-agent acts on agents"),
        ([{"id": "a", "kind": "action", "title": "x", "action": "reset-trial", "params": {"speed": 1}}], "step 'a': params of reset-trial are days"),
        ([{"id": "a", "kind": "action", "title": "x", "action": "reset-trial", "when": "b"}], "step 'a': when names an earlier check"),
        ([{"id": "a", "kind": "check", "title": "x\x00", "check": "trial_active", "expect": True}], "step 'a': title is text"),
    ],
)  # fmt: skip
def test_bad_steps_are_refused_naming_the_step(steps, problem):
    with pytest.raises(ValueError) as refused:
        catalog.check_steps(steps)
    assert str(refused.value).startswith(problem), str(refused.value)


def test_an_admin_edit_is_a_new_version_and_others_may_not(db, admin_actor, operator_actor):
    services.seed_playbooks(SEEDER)
    old = services.get_playbook("payment-failures")
    data = {"title": "Payment failures", "description": "Edited.", "category": "payment",
            "steps": old.steps[:1]}  # fmt: skip

    with pytest.raises(PermissionDenied):
        services.save_version(operator_actor, "payment-failures", data)
    edited = services.save_version(admin_actor, "payment-failures", data)
    with pytest.raises(HelpdeskRefused, match="The steps cannot be saved"):
        services.save_version(admin_actor, "payment-failures", {**data, "steps": [{"id": "x"}]})

    assert (edited.version, edited.created_by) == (2, f"user:{admin_actor.user.username}")
    assert services.get_playbook("payment-failures").pk == edited.pk
    # Seeding again leaves the Admin's version the active one.
    assert services.seed_playbooks(SEEDER) == []
    assert services.get_playbook("payment-failures").pk == edited.pk


# --- dry run -------------------------------------------------------------------------------------


def test_a_dry_run_evaluates_checks_on_real_state_and_describes_actions(
    acme, operator_actor, viewer_actor
):
    services.seed_playbooks(SEEDER)
    expired_trial(acme)
    playbook = services.get_playbook("trial-not-activating")

    run = services.dry_run(viewer_actor, acme, playbook)

    assert run.dry_run and run.workflow_run is None
    rows = {row["id"]: row for row in run.plan}
    assert rows["trial"]["ok"] is False
    assert rows["trial"]["would"].startswith(
        "The trial is not active: the subscription is trial expired"
    )
    assert rows["running"]["ok"] is False and rows["running"]["would"] == "Acme Corp has no agents."
    assert rows["reset-trial"]["approval"] is True
    assert rows["reset-trial"]["would"].startswith("Extend Acme Corp's trial by 7 day(s)")
    assert rows["welcome"]["would"] == "Send the welcome email again to wile@acme.com."
    acme.refresh_from_db()
    assert acme.status == SubscriptionStatus.EXPIRED and acme.trial_resets == 0  # nothing changed
    assert AuditEntry.objects.filter(action="helpdesk.playbook.dry_run").count() == 1


def test_a_dry_run_reads_auth_errors_from_recent_failing_interactions(acme, operator_actor):
    services.seed_playbooks(SEEDER)
    agent = link_agent(acme, "acme-bot")
    now = timezone.now()
    for n, error in enumerate(["HTTP 401 Unauthorized from crm", "timeout", "invalid token"]):
        Interaction.objects.create(
            customer=acme, agent=agent, agent_slug=agent.slug, message_id=f"1-{n}",
            outcome="dead_lettered", error=error, at=now - timedelta(minutes=n),
        )  # fmt: skip

    run = services.dry_run(operator_actor, acme, services.get_playbook("authentication-errors"))

    rows = {row["id"]: row for row in run.plan}
    assert rows["auth"]["ok"] is False and rows["auth"]["agents"] == ["acme-bot"]
    assert rows["auth"]["would"].startswith("2 failed task(s) with an authentication error in 24 h")
    assert (
        rows["rollback-config"]["would"] == "Nothing: AcmeBot has no earlier config to go back to."
    )


def test_selected_steps_must_be_the_playbooks(acme, operator_actor):
    services.seed_playbooks(SEEDER)
    playbook = services.get_playbook("trial-not-activating")
    with pytest.raises(HelpdeskRefused, match="has no step 'nope'; its steps: trial, running"):
        services.run_playbook(operator_actor, acme, playbook, ["trial", "nope"])
    with pytest.raises(HelpdeskRefused, match="steps is a list of step ids"):
        services.run_playbook(operator_actor, acme, playbook, [1, 2])
    assert not PlaybookRun.objects.exists()


# --- real runs -----------------------------------------------------------------------------------


def test_a_run_waits_for_approval_then_resets_the_trial_and_sends_the_email(
    acme, operator_actor, viewer_actor, smtp_server
):
    services.seed_playbooks(SEEDER)
    expired_trial(acme)
    playbook = services.get_playbook("trial-not-activating")
    with pytest.raises(PermissionDenied):
        services.run_playbook(viewer_actor, acme, playbook)

    record = services.run_playbook(operator_actor, acme, playbook)

    run = drive(
        record.workflow_run, until=lambda r: statuses(r).get("reset-trial-approval") == "running"
    )
    assert statuses(run)["trial"] == "succeeded" and statuses(run)["reset-trial"] == "pending"
    acme.refresh_from_db()
    assert acme.trial_resets == 0  # nothing until an Operator approves
    with pytest.raises(PermissionDenied):
        workflows.approve(run, "reset-trial-approval", viewer_actor, approved=True)
    workflows.approve(run, "reset-trial-approval", operator_actor, approved=True, note="ZD-1")
    run = drive(run)

    assert run.status == "succeeded", statuses(run)
    acme.refresh_from_db()
    assert acme.status == SubscriptionStatus.TRIALING and acme.trial_resets == 1
    [message] = smtp_server.messages
    assert message["To"] == "wile@acme.com" and message["Subject"] == "Welcome to WAOOAW, Acme Corp"
    output = StepRun.objects.get(run=run, step_id="reset-trial", current=True).output
    assert output["results"]["customer"]["ok"] is True
    assert record.plan[0]["id"] == "trial" and record.workflow_run.subject == "acme-corp"
    assert AuditEntry.objects.filter(action="helpdesk.action.reset-trial", actor=f"user:{operator_actor.user.username}").exists()  # fmt: skip


def test_a_rejected_approval_stops_the_run_and_nothing_changes(acme, operator_actor):
    services.seed_playbooks(SEEDER)
    expired_trial(acme)
    record = services.run_playbook(
        operator_actor, acme, services.get_playbook("trial-not-activating")
    )
    run = drive(
        record.workflow_run, until=lambda r: statuses(r).get("reset-trial-approval") == "running"
    )

    workflows.approve(run, "reset-trial-approval", operator_actor, approved=False, note="no")
    run = drive(run)

    assert run.status == "failed"
    acme.refresh_from_db()
    assert acme.trial_resets == 0


def test_selected_steps_only_runs_just_those(acme, operator_actor, smtp_server):
    services.seed_playbooks(SEEDER)
    expired_trial(acme)

    record = services.run_playbook(
        operator_actor, acme, services.get_playbook("trial-not-activating"), "trial,welcome"
    )
    run = drive(record.workflow_run)

    assert run.status == "succeeded"
    assert statuses(run) == {"trial": "succeeded", "welcome": "succeeded"}
    assert [s["id"] for s in record.plan] == ["trial", "welcome"]
    assert len(smtp_server.messages) == 1
    acme.refresh_from_db()
    assert acme.trial_resets == 0  # the reset was not selected


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("agent_root")
def test_agent_not_responding_restarts_the_unhealthy_agent_after_approval(
    acme, operator_actor, redis_client
):
    services.seed_playbooks(SEEDER)
    sick = bring_up(link_agent(acme, new_slug("acme-bot")), redis_client)
    well = bring_up(link_agent(acme, new_slug("acme-aux")), redis_client)
    Agent.objects.filter(pk=sick.pk).update(health=Health.UNHEALTHY)
    Agent.objects.filter(pk=well.pk).update(health=Health.HEALTHY)

    record = services.run_playbook(
        operator_actor, acme, services.get_playbook("agent-not-responding"),
        ["healthy", "restart"],
    )  # fmt: skip
    run = drive(
        record.workflow_run, until=lambda r: statuses(r).get("restart-approval") == "running"
    )
    workflows.approve(run, "restart-approval", operator_actor, approved=True)

    def worker(r) -> bool:  # carry out the restart as the agents' worker would
        run_pending_operations(sick)
        return False

    run = drive(run, 60, until=lambda r: worker(r) or r.is_finished)

    assert run.status == "succeeded", statuses(run)
    [restart] = Operation.objects.filter(action="restart")
    assert restart.agent_id == sick.pk and restart.status == Operation.Status.SUCCEEDED
    output = StepRun.objects.get(run=run, step_id="restart", current=True).output
    assert list(output["results"]) == [sick.slug]
    assert not Operation.objects.filter(agent=well, action="restart").exists()


def test_a_worker_that_never_saw_the_playbook_registers_its_definition_before_a_step(
    acme, operator_actor
):
    from celery.signals import task_prerun

    from agents.workflows import engine, registry

    services.seed_playbooks(SEEDER)
    expired_trial(acme)
    record = services.run_playbook(
        operator_actor, acme, services.get_playbook("trial-not-activating"), ["trial"]
    )
    run = record.workflow_run
    registry._DEFINITIONS.pop(run.definition)  # as in a fresh worker process
    assert engine.definition_of(run) is None

    class Task:
        name = engine.RUN_STEP_TASK

    step = StepRun.objects.filter(run=run).first()
    task_prerun.send(sender=Task, task_id="t", task=Task, args=(step.pk,), kwargs={})

    assert engine.definition_of(run).title == "Playbook: Trial not activating v1 (selected steps)"
    assert drive(run).status == "succeeded"
