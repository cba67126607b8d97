"""The agents app's part of the audit walk (``tests/audit_kit.py``): the registry, actions and
their undo, bulk operations, errors and recoveries, probes, live config, reconciliation and
workflows, each called for real by an Admin and by a Viewer. Nothing here starts an agent:
actions are recorded for a worker (``enqueue=False``) and finished runs are set up by hand."""

from __future__ import annotations

from django.utils import timezone

from agents import bulk, errors, services
from agents.models import Agent, BulkItem, BulkOperation
from agents.probes.services import set_probes
from agents.services.registry import NewAgent
from agents.workflows import services as workflows
from agents.workflows.definitions import Definition, Step
from tests.agents.workflows.conftest import define, drive
from tests.audit_kit import Walk

walk = Walk()

NOT_WALKED = {
    "agents.services.actions.record_transition": "a step of an operation the worker runs, "
    "recorded as it goes; request_action is walked",
    "agents.services.registry.seed_step": "manage.py setup's step: seed_platform_agents, walked",
    "agents.workflows.engine.create_run": "a step of starting a run (workflows.start, the "
    "factory, servicing and the help desk), each audited by its caller",
}


def _agent(w, slug: str = "wow-cache") -> Agent:
    return w.fixture("seeded")[slug]


def _leaf(w) -> Agent:
    """An agent nothing depends on, with the whole fleet RUNNING (in the registry only): a stop
    of it and a start again plan alone."""
    w.fixture("seeded")
    Agent.objects.update(state="RUNNING")
    return Agent.objects.filter(dependents__isnull=True).order_by("slug").first()


# --- the registry -------------------------------------------------------------------------------


@walk("agents.services.registry.seed_platform_agents")
def _(w, actor):
    services.seed_platform_agents(actor)


@walk("agents.services.registry.register_agent")
def _(w, actor):
    services.register_agent(NewAgent(slug="walk-new", name="Walk New"), actor)


@walk("agents.services.registry.release_agent")
def _(w, actor):
    services.release_agent(_agent(w, "wow-search"), actor, "walk")


@walk("agents.services.registry.update_agent_settings")
def _(w, actor):
    agent = _agent(w)
    agent.description = "Walked."
    services.update_agent_settings(agent, ["description"], actor)


@walk("agents.services.registry.set_memory_limit")
def _(w, actor):
    agent = _agent(w)
    services.set_memory_limit(agent, agent.memory_mb + 64, actor)


@walk("agents.services.registry.pick_new_ports")
def _(w, actor):
    agent = _agent(w)
    w.fixture("act")(agent, "provision")  # ports are the local runtime's, reserved at provision
    services.pick_new_ports(agent, actor)


@walk("agents.services.liveconfig.patch_config")
def _(w, actor):
    services.patch_config(_agent(w), {"task_max_failures": 5}, actor)


@walk("agents.services.liveconfig.roll_back_config")
def _(w, actor):
    services.patch_config(_agent(w), {"task_max_failures": 5}, w.admin)
    services.roll_back_config(Agent.objects.get(slug="wow-cache"), actor)


@walk("agents.services.registry.rollback_config")
def _(w, actor):
    services.patch_config(_agent(w), {"task_max_failures": 5}, w.admin)
    services.rollback_config(Agent.objects.get(slug="wow-cache"), actor)


@walk("agents.probes.services.set_probes")
def _(w, actor):
    set_probes(_agent(w), {}, actor)


@walk("agents.services.supervision.reconcile_agent")
def _(w, actor):
    services.reconcile_agent(_agent(w), actor)


# --- actions and their undo ---------------------------------------------------------------------


@walk("agents.services.actions.request_action")
def _(w, actor):
    services.request_action(_agent(w), "provision", actor, enqueue=False)


@walk("agents.services.undo.undo_operation")
def _(w, actor):
    agent = _leaf(w)
    operation = services.request_action(agent, "stop", w.admin, confirm=True, enqueue=False)
    services.undo_operation(operation, actor)


# --- bulk operations ----------------------------------------------------------------------------


@walk("agents.bulk.operations.create_bulk_operation")
def _(w, actor):
    _agent(w)
    bulk.create_bulk_operation("deploy", actor, targets=["wow-cache"], enqueue=False)


@walk("agents.bulk.operations.cancel_bulk_operation")
def _(w, actor):
    _agent(w)
    created = bulk.create_bulk_operation("deploy", w.admin, targets=["wow-cache"], enqueue=False)
    bulk.cancel_bulk_operation(created, actor)


def _finished(w, action: str, item_status: str, agent: Agent) -> BulkOperation:
    created = bulk.create_bulk_operation(action, w.admin, targets=[agent.slug], confirm=agent.slug,
                                         enqueue=False)  # fmt: skip
    created.items.update(status=item_status, finished_at=timezone.now())
    BulkOperation.objects.filter(pk=created.pk).update(
        status=BulkOperation.Status.PARTIAL, finished_at=timezone.now()
    )
    created.refresh_from_db()
    return created


@walk("agents.bulk.operations.retry_failed")
def _(w, actor):
    failed = _finished(w, "deploy", BulkItem.Status.FAILED, _agent(w))
    bulk.retry_failed(failed, actor, enqueue=False)


@walk("agents.bulk.operations.roll_back")
def _(w, actor):
    agent = _leaf(w)
    stopped = _finished(w, "stop", BulkItem.Status.SUCCEEDED, agent)
    Agent.objects.filter(pk=agent.pk).update(state="STOPPED")
    bulk.roll_back(stopped, actor, enqueue=False)


# --- errors and recoveries ----------------------------------------------------------------------


def _error(w):
    from django.db import transaction

    with transaction.atomic():
        return errors.record_error(_agent(w, "wow-scaling"), "test", "it fell over")


@walk("agents.errors.record.ignore_error")
def _(w, actor):
    errors.ignore_error(_error(w), actor, "walk")


@walk("agents.errors.record.set_automatic_recovery")
def _(w, actor):
    errors.set_automatic_recovery(False, actor)


@walk("agents.errors.recovery.request_recovery")
def _(w, actor):
    error = _error(w)
    offered = next(s["action"] for s in error.suggestions if s.get("action"))
    errors.request_recovery(error, offered, actor, enqueue=False)


# --- workflows ----------------------------------------------------------------------------------


def _run(w, name: str, *steps: Step, until=None):
    define(Definition(name=name, version=1, title=name, steps=steps))
    run = workflows.start(w.admin, name)
    return drive(run, until=until)


def _failed(w):
    undo = Step("undo-a", "test_echo")
    return _run(w, "t-walk-fail", Step("a", "test_echo", compensation=undo),
                Step("b", "test_echo", inputs={"fail": True}, after=("a",)))  # fmt: skip


def _sleeping(w):
    return _run(w, "t-walk-slow", Step("s", "test_slow"),
                until=lambda run: run.status == "running")  # fmt: skip


@walk("agents.workflows.services.start")
def _(w, actor):
    define(Definition(name="t-walk-ok", version=1, title="Walk", steps=(Step("a", "test_echo"),)))
    workflows.start(actor, "t-walk-ok")


@walk("agents.workflows.services.pause")
def _(w, actor):
    workflows.pause(_sleeping(w), actor)


@walk("agents.workflows.services.resume")
def _(w, actor):
    run = _sleeping(w)
    workflows.pause(run, w.admin)
    workflows.resume(run, actor)


@walk("agents.workflows.services.cancel")
def _(w, actor):
    workflows.cancel(_sleeping(w), actor)


@walk("agents.workflows.services.retry")
def _(w, actor):
    workflows.retry(_failed(w), actor)


@walk("agents.workflows.services.rollback")
def _(w, actor):
    workflows.rollback(_failed(w), actor, reason="walk")


@walk("agents.workflows.services.mark")
def _(w, actor):
    workflows.mark(_failed(w), "b", "skipped", actor, "done by hand")


@walk("agents.workflows.services.bulk")
def _(w, actor):
    workflows.bulk(actor, "cancel", [_sleeping(w).pk])


@walk("agents.workflows.services.approve")
def _(w, actor):
    run = _run(w, "t-walk-approve", Step("ok", "approval", inputs={"role": "Operator"}),
               until=lambda run: run.steps.filter(step_id="ok", status="running").exists())  # fmt: skip
    workflows.approve(run, "ok", actor, approved=True, note="fine")


test_writes_an_audit_entry, test_a_viewers_refusal_is_audited = walk.tests()
