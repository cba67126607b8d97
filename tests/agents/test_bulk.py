"""Bulk operations through the service layer, with real agent processes on the local runtime:
previews, bounded parallelism (measured), dependency order, partial failure, retry, roll-back,
cancel, the one-bulk-per-agent guard, the machine-wide ceiling and resuming after a crash."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, connection, transaction

from agents import bulk, services
from agents.models import (
    Agent,
    AgentTransition,
    BulkItem,
    BulkOperation,
    Operation,
    State,
)
from portal import work
from portal.actors import Actor
from portal.models import AuditEntry
from tests.concurrency import at_once

COMMAND = Actor.command("test")
CRASH_ON_START = {"faults": {"crash_after_seconds": 0, "crash_exit_code": 3}}


def _set(slug: str, **fields) -> None:
    """Put an agent in a state for a planning test (no processes involved)."""
    Agent.objects.filter(slug=slug).update(**fields)


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end and a start at the same instant do not
    overlap)."""
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = current = 0
    for _, delta in points:
        current += delta
        best = max(best, current)
    return best


def _run(action: str, actor: Actor = COMMAND, **kwargs) -> BulkOperation:
    created = bulk.create_bulk_operation(action, actor, enqueue=False, **kwargs)
    finished = bulk.run_bulk_operation(created.pk)
    assert finished is not None
    return finished


def _items(operation: BulkOperation) -> dict[str, BulkItem]:
    return {item.agent.slug: item for item in operation.items.select_related("agent")}


# --- previews and input ------------------------------------------------------------------------


def test_preview_says_what_changes_what_is_skipped_and_why(seeded) -> None:
    _set("wow-event", state=State.RUNNING)
    _set("wow-cache", state=State.STOPPED)
    _set("wow-security", state=State.ERRORED)
    _set("wow-communication", state=State.STOPPED, pending_action="start")
    slugs = [
        "wow-domain",
        "wow-memory",
        "wow-event",
        "wow-cache",
        "wow-security",
        "wow-communication",
    ]

    plan = bulk.preview_bulk("deploy_and_start", COMMAND, targets=slugs)

    by_slug = {item.agent.slug: item for item in plan.items}
    assert by_slug["wow-cache"].steps == ["start"]
    assert by_slug["wow-memory"].steps == ["provision", "deploy", "start"]
    # WowDomain needs WowMemory, which this operation brings up first.
    assert by_slug["wow-domain"].steps == ["provision", "deploy", "start"]
    assert (by_slug["wow-event"].code, by_slug["wow-event"].message) == (
        "already",
        "WowEvent is already RUNNING.",
    )
    assert by_slug["wow-security"].code == "illegal"
    assert "restart it instead" in by_slug["wow-security"].message
    assert by_slug["wow-communication"].code == "busy"
    order = [item.agent.slug for item in plan.items]
    assert order.index("wow-cache") < order.index("wow-memory") < order.index("wow-domain")
    assert {i.agent.slug for i in plan.changing} == {"wow-cache", "wow-memory", "wow-domain"}
    assert plan.confirmation_phrase == ""
    # A preview changes nothing.
    assert not BulkOperation.objects.exists() and not Operation.objects.exists()

    # Without WowMemory in the selection, WowDomain cannot run: skipped, saying what to add.
    alone = bulk.preview_bulk("deploy_and_start", COMMAND, targets=["wow-domain"])
    assert alone.items[0].code == "dependencies"
    assert "WowMemory (DRAFT)" in alone.items[0].message
    assert "add it to the selection" in alone.items[0].message


def test_preview_of_taking_agents_down_names_affected_dependents_and_asks_for_typing(
    seeded,
) -> None:
    for slug in ("wow-event", "wow-cache", "wow-memory", "wow-communication"):
        _set(slug, state=State.RUNNING)

    stop_event = bulk.preview_bulk("stop", COMMAND, targets=["wow-event", "wow-cache"])
    assert [a.slug for a in stop_event.affected_dependents] == ["wow-communication", "wow-memory"]
    # Dependents go down before what they depend on.
    assert stop_event.items[-1].agent.slug in ("wow-event", "wow-cache")
    assert stop_event.confirmation_phrase == ""

    stop_all = bulk.preview_bulk("stop", COMMAND, filter={"state": "running"})
    assert len(stop_all.changing) == 4
    assert stop_all.confirmation_phrase == "stop 4"
    assert stop_all.affected_dependents == []
    order = [item.agent.slug for item in stop_all.items]
    assert order.index("wow-memory") < order.index("wow-cache")
    assert order.index("wow-communication") < order.index("wow-event")

    revoke = bulk.preview_bulk("revoke", COMMAND, targets=["wow-vision", "wow-scaling"])
    assert revoke.confirmation_phrase == "revoke 2"

    with pytest.raises(bulk.BulkRefused, match="type “stop 4” to confirm") as refused:
        bulk.create_bulk_operation("stop", COMMAND, filter={"state": "RUNNING"}, enqueue=False)
    assert refused.value.code == "confirm"
    assert not BulkOperation.objects.exists()
    refusal = AuditEntry.objects.get(action="bulk.stop")
    assert refusal.outcome == AuditEntry.Outcome.REFUSED


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"targets": ["wow-nope"]}, "There is no agent 'wow-nope'"),
        ({"filter": {"state": "sleeping"}}, "'sleeping' is not a state"),
        ({"filter": {"tier": "gold"}}, "'gold' is not a tier"),
        ({"filter": {"colour": "red"}}, "Unknown filter colour"),
        ({}, "Choose the agents"),
        ({"targets": ["wow-cache"], "filter": {"all": True}}, "not both"),
        ({"targets": ["wow-cache"], "parallelism": 0}, "give a whole number from 1 to 10"),
        ({"targets": ["wow-cache"], "parallelism": 11}, "give a whole number from 1 to 10"),
        ({"targets": ["wow-cache"], "parallelism": "two"}, "give a whole number from 1 to 10"),
        ({"filter": {"state": "ERRORED"}}, "No agent matches state ERRORED"),
    ],
)
def test_bad_input_is_refused_with_a_reason_and_changes_nothing(seeded, kwargs, message) -> None:
    with pytest.raises(bulk.BulkRefused, match=message):
        bulk.create_bulk_operation("deploy", COMMAND, enqueue=False, **kwargs)
    assert not BulkOperation.objects.exists()


def test_unknown_action_and_nothing_to_do_are_refused(seeded) -> None:
    with pytest.raises(bulk.BulkRefused, match="'explode' is not a bulk action"):
        bulk.create_bulk_operation("explode", COMMAND, filter={"all": True}, enqueue=False)
    with pytest.raises(bulk.BulkRefused, match="Nothing to do") as refused:
        bulk.create_bulk_operation("stop", COMMAND, filter={"all": True}, enqueue=False)
    assert refused.value.code == "empty"
    assert len(refused.value.details["plan"]["items"]) == 14
    assert not BulkOperation.objects.exists()


def test_viewers_may_not_preview_run_cancel_retry_or_roll_back(seeded, viewer_actor) -> None:
    with pytest.raises(PermissionDenied, match="needs the Operator role"):
        bulk.preview_bulk("deploy", viewer_actor, filter={"all": True})
    with pytest.raises(PermissionDenied):
        bulk.create_bulk_operation("deploy", viewer_actor, filter={"all": True}, enqueue=False)
    created = bulk.create_bulk_operation("deploy", COMMAND, targets=["wow-cache"], enqueue=False)
    with pytest.raises(PermissionDenied):
        bulk.cancel_bulk_operation(created, viewer_actor)
    with pytest.raises(PermissionDenied):
        bulk.retry_failed(created, viewer_actor)
    with pytest.raises(PermissionDenied):
        bulk.roll_back(created, viewer_actor)
    assert BulkOperation.objects.count() == 1
    assert (
        AuditEntry.objects.filter(
            outcome=AuditEntry.Outcome.REFUSED, action__startswith="bulk."
        ).count()
        == 4
    )


# --- running -------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_all_fourteen_come_up_within_the_parallelism_and_in_dependency_order(
    seeded, operator_actor
) -> None:
    operation = _run("deploy_and_start", operator_actor, filter={"all": True}, parallelism=3)

    assert operation.status == BulkOperation.Status.SUCCEEDED, bulk.bulk_summary(operation)
    assert (operation.total, operation.succeeded, operation.failed, operation.skipped) == (
        14,
        14,
        0,
        0,
    )
    assert Agent.objects.filter(state=State.RUNNING).count() == 14
    items = _items(operation)
    # Parallelism, measured from what happened: never more than 3 agents at once, and more
    # than one at once (it did run in parallel).
    overlap = _max_overlap(
        [(i.started_at.timestamp(), i.finished_at.timestamp()) for i in items.values()]
    )
    assert 2 <= overlap <= 3
    runtime_calls = Operation.objects.filter(reason=f"bulk operation #{operation.pk}")
    assert runtime_calls.count() == 14 * 3
    assert (
        _max_overlap([(o.started_at.timestamp(), o.finished_at.timestamp()) for o in runtime_calls])
        <= 3
    )
    # Dependencies first: nothing started before everything it depends on was up.
    for agent in Agent.objects.prefetch_related("dependencies"):
        for dependency in agent.dependencies.all():
            assert items[agent.slug].started_at >= items[dependency.slug].finished_at, (
                f"{agent.slug} began before its dependency {dependency.slug} was up"
            )
    # Each agent went through provision, deploy, start exactly once, recorded as the operator.
    for slug, item in items.items():
        history = list(AgentTransition.objects.filter(agent__slug=slug).order_by("at", "id"))
        assert [t.action for t in history] == ["provision", "deploy", "start"], slug
        assert {t.actor for t in history} == {operator_actor.label}
        assert item.steps_done == 3 and len(item.operation_ids) == 3
    audit = AuditEntry.objects.filter(action="bulk.deploy_and_start").order_by("at")
    assert [entry.detail["phase"] for entry in audit] == ["requested", "completed"]
    assert audit[1].detail["succeeded"] == 14

    # And down again, dependents first, with the typed confirmation.
    plan = bulk.preview_bulk("stop", operator_actor, filter={"state": "RUNNING"})
    stopped = _run(
        "stop", operator_actor, filter={"state": "RUNNING"}, confirm=plan.confirmation_phrase
    )
    assert stopped.status == BulkOperation.Status.SUCCEEDED
    assert Agent.objects.filter(state=State.STOPPED).count() == 14
    items = _items(stopped)
    for agent in Agent.objects.prefetch_related("dependents"):
        for dependent in agent.dependents.all():
            assert items[agent.slug].started_at >= items[dependent.slug].finished_at


@pytest.mark.django_db(transaction=True)
def test_the_machine_wide_ceiling_holds_across_concurrent_bulk_jobs(seeded, settings) -> None:
    settings.AGENT_MAX_CONCURRENT_ACTIONS = 2
    first = bulk.create_bulk_operation(
        "deploy", COMMAND, targets=["wow-event", "wow-cache", "wow-memory", "wow-security"],
        parallelism=3, enqueue=False,
    )  # fmt: skip
    second = bulk.create_bulk_operation(
        "deploy", COMMAND, targets=["wow-search", "wow-domain", "wow-vision", "wow-support"],
        parallelism=3, enqueue=False,
    )  # fmt: skip

    def run(pk: int) -> None:
        try:
            bulk.run_bulk_operation(pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(op.pk,)) for op in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    items = BulkItem.objects.filter(bulk__in=[first, second])
    assert {item.status for item in items} == {BulkItem.Status.SUCCEEDED}
    overlap = _max_overlap([(i.started_at.timestamp(), i.finished_at.timestamp()) for i in items])
    assert overlap <= 2
    assert overlap == 2  # both slots were used


@pytest.mark.django_db(transaction=True)
def test_a_failed_dependency_skips_its_dependents_with_the_reason(seeded, settings) -> None:
    settings.AGENT_READY_TIMEOUT_SECONDS = 5
    _set("wow-event", config=CRASH_ON_START)

    operation = _run(
        "deploy_and_start",
        targets=["wow-event", "wow-cache", "wow-communication", "wow-notification"],
    )

    items = _items(operation)
    assert operation.status == BulkOperation.Status.PARTIAL
    assert items["wow-event"].status == BulkItem.Status.FAILED
    assert items["wow-event"].message.startswith("Start failed: ")
    assert items["wow-event"].to_state == State.DEPLOYED
    assert items["wow-cache"].status == BulkItem.Status.SUCCEEDED
    assert items["wow-communication"].status == BulkItem.Status.SKIPPED
    assert items["wow-communication"].code == "dependency_failed"
    assert items["wow-communication"].message == (
        "Not started: WowEvent did not come up in this operation."
    )
    # Transitively: WowNotification needs WowCommunication, which was skipped.
    assert items["wow-notification"].code == "dependency_failed"
    assert Agent.objects.get(slug="wow-communication").state == State.DRAFT
    assert (operation.succeeded, operation.failed, operation.skipped) == (1, 1, 2)


@pytest.mark.django_db(transaction=True)
def test_partial_failure_then_retry_failed_only_then_roll_back(
    seeded, bring_up, act, settings
) -> None:
    settings.AGENT_READY_TIMEOUT_SECONDS = 5
    agents = {
        slug: Agent.objects.get(slug=slug)
        for slug in ("wow-event", "wow-cache", "wow-communication")
    }
    for agent in agents.values():
        bring_up(agent)
    for agent in reversed(agents.values()):
        act(agent, "stop", confirm=True)
    _set("wow-cache", config=CRASH_ON_START)

    first = _run("start", targets=list(agents))

    assert first.status == BulkOperation.Status.PARTIAL
    items = _items(first)
    assert items["wow-cache"].status == BulkItem.Status.FAILED
    assert "WowCache" in items["wow-cache"].message
    assert Agent.objects.get(slug="wow-cache").state == State.STOPPED

    # Fix the cause, then retry the failed agent only.
    _set("wow-cache", config={})
    retry = bulk.retry_failed(first, COMMAND, enqueue=False)
    assert (retry.kind, retry.follows_id, retry.targets) == ("retry", first.pk, ["wow-cache"])
    retry = bulk.run_bulk_operation(retry.pk)
    assert retry.status == BulkOperation.Status.SUCCEEDED
    assert Agent.objects.get(slug="wow-cache").state == State.RUNNING
    with pytest.raises(bulk.BulkRefused, match="no failed agent to retry"):
        bulk.retry_failed(retry, COMMAND, enqueue=False)

    # Roll back the first operation: the two it started go back to STOPPED (WowCache was
    # started by the retry, so it stays), dependents first.
    preview = bulk.plan_rollback(first)
    assert [(i.agent.slug, i.steps) for i in preview.changing] == [
        ("wow-communication", ["stop"]),
        ("wow-event", ["stop"]),
    ]
    rollback = bulk.run_bulk_operation(bulk.roll_back(first, COMMAND, enqueue=False).pk)
    assert (rollback.kind, rollback.action, rollback.status) == (
        "rollback",
        "rollback",
        "succeeded",
    )
    states = dict(Agent.objects.filter(slug__in=agents).values_list("slug", "state"))
    assert states == {
        "wow-event": State.STOPPED,
        "wow-communication": State.STOPPED,
        "wow-cache": State.RUNNING,
    }
    items = _items(rollback)
    assert items["wow-event"].started_at >= items["wow-communication"].finished_at
    with pytest.raises(bulk.BulkRefused, match="is a roll-back itself"):
        bulk.roll_back(rollback, COMMAND, enqueue=False)
    with pytest.raises(bulk.BulkRefused, match="Nothing can be rolled back"):
        bulk.roll_back(first, COMMAND, enqueue=False)


def test_roll_back_cannot_undo_a_deployment_and_says_so(seeded) -> None:
    done = bulk.create_bulk_operation("deploy", COMMAND, targets=["wow-cache"], enqueue=False)
    with pytest.raises(bulk.BulkRefused, match="still pending"):
        bulk.roll_back(done, COMMAND, enqueue=False)
    BulkItem.objects.filter(bulk=done).update(status=BulkItem.Status.SUCCEEDED)
    BulkOperation.objects.filter(pk=done.pk).update(status=BulkOperation.Status.SUCCEEDED)
    _set("wow-cache", state=State.DEPLOYED)
    done.refresh_from_db()
    assert not bulk.can_roll_back(done)
    with pytest.raises(bulk.BulkRefused, match="cannot undo a deployment"):
        bulk.roll_back(done, COMMAND, enqueue=False)


@pytest.mark.django_db(transaction=True)
def test_cancel_lets_the_running_item_finish_and_skips_the_pending(seeded) -> None:
    slugs = ["wow-event", "wow-cache", "wow-security", "wow-communication", "wow-memory"]
    operation = bulk.create_bulk_operation(
        "deploy_and_start", COMMAND, targets=slugs, parallelism=1, enqueue=False
    )
    runner = threading.Thread(
        target=lambda: (bulk.run_bulk_operation(operation.pk), connection.close())
    )
    runner.start()
    deadline = time.monotonic() + 60
    while not operation.items.filter(status=BulkItem.Status.SUCCEEDED).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    operator = Actor.command("on-call")
    bulk.cancel_bulk_operation(operation, operator)
    runner.join(timeout=60)

    operation.refresh_from_db()
    assert operation.status == BulkOperation.Status.CANCELLED
    items = list(operation.items.all())
    assert not [item for item in items if not item.is_finished]
    succeeded = [item for item in items if item.status == BulkItem.Status.SUCCEEDED]
    cancelled = [item for item in items if item.code == "cancelled"]
    assert succeeded and cancelled and len(succeeded) + len(cancelled) == 5
    assert all("cancelled by command:" in item.message for item in cancelled)
    for item in cancelled:
        assert Agent.objects.get(pk=item.agent_id).state == State.DRAFT
    for item in succeeded:
        assert Agent.objects.get(pk=item.agent_id).state == State.RUNNING
    assert AuditEntry.objects.filter(
        action="bulk.deploy_and_start", detail__phase="cancel"
    ).exists()
    with pytest.raises(bulk.BulkRefused, match="already finished"):
        bulk.cancel_bulk_operation(operation, operator)


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_queued_operation_nobody_runs_finishes_it_at_once(seeded) -> None:
    operation = bulk.create_bulk_operation("deploy", COMMAND, filter={"all": True}, enqueue=False)
    operation = bulk.cancel_bulk_operation(operation, COMMAND)
    assert operation.status == BulkOperation.Status.CANCELLED
    assert operation.skipped == 14
    # The agents are free for another bulk operation.
    again = bulk.create_bulk_operation("deploy", COMMAND, filter={"all": True}, enqueue=False)
    assert again.total == 14 and again.skipped == 0


def test_an_agent_is_in_one_unfinished_bulk_operation_at_a_time(seeded) -> None:
    first = bulk.create_bulk_operation(
        "deploy", COMMAND, targets=["wow-cache", "wow-event"], enqueue=False
    )
    second = bulk.create_bulk_operation(
        "deploy", COMMAND, targets=["wow-cache", "wow-memory"], enqueue=False
    )
    items = _items(second)
    assert items["wow-cache"].status == BulkItem.Status.SKIPPED
    assert items["wow-cache"].message == (
        f"WowCache is in bulk operation #{first.pk}, which has not finished."
    )
    assert items["wow-memory"].status == BulkItem.Status.PENDING
    # The database holds the rule too, whatever a racing request does.
    with pytest.raises(IntegrityError), transaction.atomic():
        BulkItem.objects.create(
            bulk=second, agent=Agent.objects.get(slug="wow-event"), position=9,
            from_state=State.DRAFT, steps=["provision"],
        )  # fmt: skip


# --- crash safety ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_runners_at_once_do_the_work_once(seeded) -> None:
    operation = bulk.create_bulk_operation(
        "deploy_and_start", COMMAND, targets=["wow-event", "wow-cache"], enqueue=False
    )
    results = at_once(lambda: bulk.run_bulk_operation(operation.pk), 2, timeout=60)
    assert sorted(r is None for r in results) == [False, True]  # one ran, one found it taken
    assert AgentTransition.objects.filter(action="start").count() == 2
    operation.refresh_from_db()
    assert (operation.status, operation.runs) == (BulkOperation.Status.SUCCEEDED, 1)
    # Delivered once more later (a Celery redelivery): nothing happens.
    again = bulk.run_bulk_operation(operation.pk)
    assert again.finished_at == operation.finished_at and again.runs == 1
    assert AgentTransition.objects.count() == 6


@pytest.mark.django_db(transaction=True)
def test_a_resumed_runner_finishes_the_step_in_flight_without_redoing_any(seeded, act) -> None:
    """What a worker killed mid-item leaves behind: an item RUNNING whose first step is done
    and whose second step's operation was recorded but never carried out."""
    operation = bulk.create_bulk_operation(
        "deploy_and_start", COMMAND, targets=["wow-cache"], enqueue=False
    )
    item = operation.items.get()
    cache = Agent.objects.get(slug="wow-cache")
    provision = act(cache, "provision")
    deploy = services.request_action(cache, "deploy", COMMAND, enqueue=False)
    BulkItem.objects.filter(pk=item.pk).update(
        status=BulkItem.Status.RUNNING, steps_done=0,
        operation_ids=[str(provision.pk), str(deploy.pk)], operation=deploy,
    )  # fmt: skip
    BulkOperation.objects.filter(pk=operation.pk).update(
        status=BulkOperation.Status.RUNNING, runs=1
    )

    finished = bulk.run_bulk_operation(operation.pk)

    assert finished.status == BulkOperation.Status.SUCCEEDED and finished.runs == 2
    item.refresh_from_db()
    assert item.steps_done == 3 and item.operation_ids[:2] == [str(provision.pk), str(deploy.pk)]
    history = [t.action for t in AgentTransition.objects.filter(agent=cache).order_by("at", "id")]
    assert history == ["provision", "deploy", "start"]
    assert Operation.objects.filter(agent=cache).count() == 3


@pytest.mark.django_db(transaction=True)
def test_stalled_operations_are_handed_back_only_when_their_runner_is_gone(seeded) -> None:
    operation = bulk.create_bulk_operation("deploy", COMMAND, targets=["wow-cache"], enqueue=False)
    BulkOperation.objects.filter(pk=operation.pk).update(status=BulkOperation.Status.RUNNING)
    # A live runner holds the lock (here: another connection of ours).
    with work.try_lease(bulk.RUNNER_LOCK, operation.pk) as held:
        assert held
        other: list[list[int]] = []
        thread = threading.Thread(
            target=lambda: (
                other.append(bulk.resume_stalled_bulk_operations(older_than=timedelta(0))),
                connection.close(),
            )
        )
        thread.start()
        thread.join()
        assert other == [[]]
    from portal.celery import app

    app.control.purge()
    assert bulk.resume_stalled_bulk_operations(older_than=timedelta(0)) == [operation.pk]
    app.control.purge()


@pytest.mark.django_db(transaction=True)
def test_cancelling_an_operation_whose_worker_died_mid_item_finishes_that_item(seeded) -> None:
    """A dead worker's half-done item is finished by a runner, not left active for ever."""
    from portal.celery import app

    operation = bulk.create_bulk_operation(
        "deploy", COMMAND, targets=["wow-cache", "wow-event"], enqueue=False
    )
    items = _items(operation)
    BulkOperation.objects.filter(pk=operation.pk).update(status=BulkOperation.Status.RUNNING)
    BulkItem.objects.filter(pk=items["wow-cache"].pk).update(status=BulkItem.Status.RUNNING)
    app.control.purge()

    operation = bulk.cancel_bulk_operation(operation, COMMAND)

    # Handed back to a worker (here: run as the worker would), which finishes the item in
    # flight and skips the rest.
    assert not operation.is_finished
    finished = bulk.run_bulk_operation(operation.pk)
    app.control.purge()
    items = _items(finished)
    assert finished.status == BulkOperation.Status.CANCELLED
    assert items["wow-cache"].status == BulkItem.Status.SUCCEEDED
    assert items["wow-event"].code == "cancelled"
    assert not BulkItem.objects.filter(status__in=BulkItem.ACTIVE).exists()
    assert Agent.objects.get(slug="wow-cache").state == State.DEPLOYED


def test_a_roll_back_promises_the_state_it_really_reaches(seeded) -> None:
    cache = Agent.objects.get(slug="wow-cache")
    for before, now, steps, reached in [
        (State.DEPLOYED, State.RUNNING, ["stop"], State.STOPPED),
        (State.STOPPED, State.RUNNING, ["stop"], State.STOPPED),
        (State.SUSPENDED, State.STOPPED, ["start", "suspend"], State.SUSPENDED),
        (State.RUNNING, State.SUSPENDED, ["resume"], State.RUNNING),
    ]:
        cache.__dict__["state"] = now
        assert bulk.rollback_steps(cache, before) == (steps, reached, "", "")
    cache.__dict__["state"] = State.RUNNING
    assert bulk.rollback_steps(cache, State.ERRORED)[2] == "irreversible"
