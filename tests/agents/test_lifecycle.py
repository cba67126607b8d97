"""The lifecycle state machine and the services that drive it, with real agent processes."""

from __future__ import annotations

import urllib.request

import pytest
from django.core.exceptions import PermissionDenied
from django_fsm import TransitionNotAllowed

from agents import services
from agents.models import ACTIONS, Agent, AgentTransition, Operation, State
from portal.actors import Actor
from portal.models import AuditEntry
from tests.concurrency import at_once

LEGAL = {
    State.DRAFT: {"provision", "revoke"},
    State.PROVISIONED: {"deploy", "revoke"},
    State.DEPLOYED: {"start", "revoke"},
    State.RUNNING: {"stop", "suspend", "restart", "revoke"},
    State.SUSPENDED: {"stop", "resume", "revoke"},
    State.STOPPED: {"deploy", "start", "revoke"},
    State.ERRORED: {"stop", "restart", "revoke"},
    State.REVOKED: set(),
}


def _detached(state: str) -> Agent:
    agent = Agent(slug=f"t-{state.lower()}", name=f"T {state}")
    agent.__dict__["state"] = state
    return agent


@pytest.mark.parametrize("state", State.values)
def test_each_state_allows_exactly_the_designed_actions(state: str) -> None:
    agent = _detached(state)
    assert set(agent.legal_actions()) == LEGAL[state]


@pytest.mark.parametrize("state", State.values)
@pytest.mark.parametrize("action", ACTIONS)
def test_illegal_transitions_raise_and_leave_state_alone(state: str, action: str) -> None:
    if action in LEGAL[state]:
        return
    agent = _detached(state)
    with pytest.raises(TransitionNotAllowed):
        getattr(agent, action)()
    assert agent.state == state


def test_fail_only_from_live_states() -> None:
    for state in State.values:
        agent = _detached(state)
        if state in (State.DEPLOYED, State.RUNNING, State.SUSPENDED):
            agent.fail()
            assert agent.state == State.ERRORED
        else:
            with pytest.raises(TransitionNotAllowed):
                agent.fail()


def test_state_cannot_be_assigned_directly(seeded) -> None:
    agent = seeded["wow-cache"]
    with pytest.raises(AttributeError):
        agent.state = State.RUNNING


def test_history_rows_are_append_only(seeded, act) -> None:
    act(seeded["wow-cache"], "provision")
    row = AgentTransition.objects.get()
    row.reason = "edited"
    with pytest.raises(ValueError, match="append-only"):
        row.save()
    with pytest.raises(ValueError, match="append-only"):
        row.delete()


# --- the services --------------------------------------------------------------------------


def test_operator_takes_wowcache_and_wowmemory_to_running_with_real_processes(
    seeded, act, operator_actor
) -> None:
    cache, memory, event = seeded["wow-cache"], seeded["wow-memory"], seeded["wow-event"]
    for agent in (cache, event, memory):
        for action in ("provision", "deploy", "start"):
            operation = act(agent, action, operator_actor, reason="bring up")
            assert operation.status == Operation.Status.SUCCEEDED, operation.error
        assert agent.state == State.RUNNING
        for port in agent.runtime_details["ports"]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:
                assert response.status == 200

    history = list(
        memory.transitions.order_by("at").values_list("action", "from_state", "to_state", "actor")
    )
    assert history == [
        ("provision", "DRAFT", "PROVISIONED", "user:otto"),
        ("deploy", "PROVISIONED", "DEPLOYED", "user:otto"),
        ("start", "DEPLOYED", "RUNNING", "user:otto"),
    ]
    assert memory.transitions.first().operation.status == Operation.Status.SUCCEEDED
    assert (
        AuditEntry.objects.filter(action="agent.start", target="wow-memory").count() == 2
    )  # requested, completed


def test_suspend_resume_restart_stop_and_revoke(seeded, bring_up, act) -> None:
    cache = bring_up(seeded["wow-cache"])
    port = cache.runtime_details["ports"][0]
    first_pid = cache.runtime_details["pids"][0]

    assert act(cache, "suspend").status == "succeeded" and cache.state == State.SUSPENDED
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
    assert act(cache, "resume").status == "succeeded" and cache.state == State.RUNNING
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3).status == 200

    assert act(cache, "restart").status == "succeeded" and cache.state == State.RUNNING
    assert cache.runtime_details["pids"][0] != first_pid

    assert act(cache, "stop").status == "succeeded" and cache.state == State.STOPPED
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)

    assert act(cache, "revoke", confirm=True).status == "succeeded" and cache.state == State.REVOKED
    assert cache.runtime_details == {}
    with pytest.raises(services.ActionRefused, match="revoked agent cannot be changed"):
        services.request_action(cache, "start", Actor.command("test"))


def test_illegal_action_is_refused_with_what_to_do_and_changes_nothing(seeded, act) -> None:
    cache = seeded["wow-cache"]
    act(cache, "provision")
    act(cache, "deploy")
    with pytest.raises(services.ActionRefused) as refused:
        services.request_action(cache, "suspend", Actor.command("test"))
    assert refused.value.message == "WowCache is DEPLOYED; start it before suspending."
    cache.refresh_from_db()
    assert cache.state == State.DEPLOYED and cache.pending_action == ""
    assert not Operation.objects.filter(action="suspend").exists()
    assert AuditEntry.objects.filter(action="agent.suspend", outcome="refused").count() == 1


def test_viewer_is_refused_before_anything_happens(seeded, viewer_actor) -> None:
    with pytest.raises(PermissionDenied, match="needs the Operator role and you are Viewer"):
        services.request_action(seeded["wow-cache"], "provision", viewer_actor)
    assert not Operation.objects.exists()


def test_start_refused_while_dependencies_are_down_names_them(seeded, act) -> None:
    memory = seeded["wow-memory"]
    act(memory, "provision")
    act(memory, "deploy")
    with pytest.raises(services.ActionRefused) as refused:
        services.request_action(memory, "start", Actor.command("test"))
    assert refused.value.code == "dependencies"
    assert (
        "WowMemory depends on WowCache (DRAFT) and WowEvent (DRAFT), which are not running"
        in refused.value.message
    )
    assert "with its dependencies" in refused.value.message


def test_start_with_dependencies_brings_them_up_first_in_order(seeded, act) -> None:
    memory = seeded["wow-memory"]
    act(memory, "provision")
    act(memory, "deploy")
    operation = act(memory, "start", with_dependencies=True)
    assert operation.status == Operation.Status.SUCCEEDED, operation.error
    assert sorted(operation.result["dependencies"]) == ["wow-cache", "wow-event"]
    assert set(Agent.objects.filter(state=State.RUNNING).values_list("slug", flat=True)) == {
        "wow-cache", "wow-event", "wow-memory",
    }  # fmt: skip
    cache_started = seeded["wow-cache"].transitions.get(action="start").at
    memory_started = memory.transitions.get(action="start").at
    assert cache_started < memory_started


def test_stopping_an_agent_others_need_asks_for_confirmation(seeded, act, bring_up) -> None:
    cache, event, memory = seeded["wow-cache"], seeded["wow-event"], seeded["wow-memory"]
    for agent in (cache, event, memory):
        bring_up(agent)
    with pytest.raises(
        services.NeedsConfirmation, match="WowMemory depends on WowCache and is running"
    ):
        services.request_action(cache, "stop", Actor.command("test"))
    cache.refresh_from_db()
    assert cache.state == State.RUNNING and not cache.pending_action
    assert act(cache, "stop", confirm=True).status == Operation.Status.SUCCEEDED


def test_second_request_while_one_is_pending_is_a_conflict(seeded) -> None:
    cache = seeded["wow-cache"]
    services.request_action(cache, "provision", Actor.command("test"), enqueue=False)
    with pytest.raises(
        services.Conflict, match="WowCache is already provisioning; wait until that finishes"
    ):
        services.request_action(cache, "provision", Actor.command("test"), enqueue=False)
    with pytest.raises(services.Conflict):
        services.request_action(cache, "revoke", Actor.command("test"), enqueue=False)


def test_redelivered_operation_does_nothing_twice(seeded) -> None:
    cache = seeded["wow-cache"]
    operation = services.request_action(cache, "provision", Actor.command("test"), enqueue=False)
    first = services.run_operation(str(operation.pk))
    again = services.run_operation(str(operation.pk))
    assert first.status == again.status == Operation.Status.SUCCEEDED
    assert again.attempts == 1
    assert cache.transitions.count() == 1


def test_failed_start_is_reported_and_leaves_the_agent_deployed(seeded, act) -> None:
    cache = seeded["wow-cache"]
    cache.config = {"faults": {"fail_rate": 5}}
    cache.save()
    act(cache, "provision")
    act(cache, "deploy")
    operation = act(cache, "start")
    assert operation.status == Operation.Status.FAILED
    assert operation.error_reason == "bad_config"
    assert "fail_rate" in operation.error
    assert cache.state == State.DEPLOYED and cache.pending_action == ""
    assert AuditEntry.objects.filter(action="agent.start", outcome="failed").exists()


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_start_requests_exactly_one_wins(make_user, bring_up) -> None:
    services.seed_platform_agents(Actor.command("test"))
    cache = Agent.objects.get(slug="wow-cache")
    for action in ("provision", "deploy"):
        operation = services.request_action(cache, action, Actor.command("test"), enqueue=False)
        services.run_operation(str(operation.pk))
    operator = make_user("racer", "Operator")
    actor = Actor(kind="user", user=operator)

    def request() -> str:
        try:
            services.request_action(
                Agent.objects.get(slug="wow-cache"), "start", actor, enqueue=False
            )
        except services.Conflict:
            return "conflict"
        except services.ActionRefused as refused:
            return f"refused: {refused.message}"
        return "won"

    outcomes = at_once(request, 50)
    assert outcomes.count("won") == 1, outcomes
    assert outcomes.count("conflict") == 49
    operation = Operation.objects.get(action="start")
    assert services.run_operation(str(operation.pk)).status == Operation.Status.SUCCEEDED
    cache.refresh_from_db()
    assert cache.state == State.RUNNING
    assert list(cache.transitions.order_by("at").values_list("action", flat=True)) == [
        "provision",
        "deploy",
        "start",
    ]
