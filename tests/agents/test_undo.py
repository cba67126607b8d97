"""Undo of an action with an inverse (issue 13, item 14): withdrawn if no worker has begun it,
else its inverse through the services; permission-checked, audited, only for a short while.
Every door: the services, the JSON API, the page's endpoint, the command."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import CommandError, call_command

from agents import services
from agents.models import Agent, Operation, State
from agents.services import actions
from portal.actors import Actor
from portal.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def running(seeded, bring_up) -> Agent:
    return bring_up(seeded["wow-event"])


@pytest.fixture(autouse=True)
def empty_queue():
    from portal.celery import app

    app.control.purge()
    yield
    app.control.purge()


def test_an_action_no_worker_has_begun_is_withdrawn(running, operator_actor) -> None:
    operation = services.request_action(running, "stop", operator_actor)  # queued, no worker here
    undone = services.undo_operation(operation, operator_actor)

    assert undone.operation is None
    assert undone.message == "Stop of WowEvent withdrawn before it ran; WowEvent is still RUNNING."
    operation.refresh_from_db()
    assert (operation.status, operation.error_reason) == ("failed", "undone")
    agent = Agent.objects.get(pk=running.pk)
    assert (agent.state, agent.pending_action) == (State.RUNNING, "")
    assert AuditEntry.objects.filter(action="agent.stop", detail__phase="undone").count() == 1
    # A second Undo (another tab, a double click) says it was done already.
    with pytest.raises(services.ActionRefused, match="already withdrawn by an earlier Undo"):
        services.undo_operation(operation, operator_actor)
    # The task, when a worker gets to it, finds it finished and does nothing.
    assert services.run_operation(str(operation.pk)).status == "failed"
    assert Agent.objects.get(pk=running.pk).state == State.RUNNING


def test_a_finished_action_is_undone_by_its_inverse(running, operator_actor, act) -> None:
    stop = act(running, "stop", operator_actor)
    assert stop.status == "succeeded" and running.state == State.STOPPED

    undone = services.undo_operation(stop, operator_actor)
    assert undone.message == "Undo: starting WowEvent again…"
    start = undone.operation
    assert (start.action, start.reason) == ("start", "undo of the stop requested by user:otto")
    assert services.run_operation(str(start.pk)).status == "succeeded"
    assert Agent.objects.get(pk=running.pk).state == State.RUNNING
    assert AuditEntry.objects.filter(
        action="agent.start", detail__reason="undo of the stop requested by user:otto"
    ).exists()


@pytest.mark.parametrize(
    ("action", "code", "message"),
    [
        ("restart", "no_undo", "Restart cannot be undone from here"),
        ("stop", "too_late", "Undo is offered for 10 s after an action"),
    ],
)
def test_undo_is_refused_without_an_inverse_or_once_the_window_has_passed(
    running, operator_actor, act, settings, action, code, message
) -> None:
    settings.ACTION_UNDO_SECONDS = 10
    operation = act(running, action, operator_actor)
    if code == "too_late":
        Operation.objects.filter(pk=operation.pk).update(
            requested_at=operation.requested_at - timedelta(seconds=16)
        )
        operation.refresh_from_db()
    state = Agent.objects.get(pk=running.pk).state
    with pytest.raises(services.ActionRefused, match=message) as refused:
        services.undo_operation(operation, operator_actor)
    assert refused.value.code == code
    assert Agent.objects.get(pk=running.pk).state == state
    assert AuditEntry.objects.filter(
        action=f"agent.{action}", outcome="refused", detail__phase="undo"
    ).exists()


def test_a_failed_action_has_nothing_to_undo_and_a_viewer_may_not_undo(
    running, operator_actor, viewer_actor
) -> None:
    stop = services.request_action(running, "stop", operator_actor, enqueue=False)
    with pytest.raises(PermissionDenied):
        services.undo_operation(stop, viewer_actor)
    assert Operation.objects.get(pk=stop.pk).status == "pending"

    # The way a worker records a runtime failure.
    actions._finish_failed(stop, "the runtime did not answer", "engine_unreachable", {})
    with pytest.raises(services.ActionRefused, match="failed, so there is nothing to undo"):
        services.undo_operation(Operation.objects.get(pk=stop.pk), operator_actor)
    assert Agent.objects.get(pk=running.pk).state == State.RUNNING


def test_undo_through_the_api_the_page_and_the_command(
    running, operator, as_operator, as_viewer, operator_actor, act
) -> None:
    stop = act(running, "stop", operator_actor)

    response = as_viewer.post(f"/api/platform/operations/{stop.pk}/undo")
    assert response.status_code == 403
    response = as_operator.post(f"/api/platform/operations/{stop.pk}/undo")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["detail"] == "Undo: starting WowEvent again…"
    assert body["undone"] == str(stop.pk)
    assert body["operation"]["action"] == "start"
    assert as_operator.post(f"/api/platform/operations/{stop.pk}/undo").status_code == 409
    response = as_operator.post(
        "/api/platform/operations/5b7c1d1e-0000-4000-8000-000000000000/undo"
    )
    assert response.status_code == 404
    services.run_operation(body["operation"]["id"])

    # The page's endpoint (the toast's Undo button), as htmx posts it.
    suspend = act(Agent.objects.get(pk=running.pk), "suspend", operator_actor)
    response = as_operator.post(f"/agents/wow-event/undo/{suspend.pk}/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "Undo: resuming WowEvent again…" in response.content.decode()
    resume = Operation.objects.filter(agent=running, action="resume").get()
    services.run_operation(str(resume.pk))

    # The command.
    stop = act(Agent.objects.get(pk=running.pk), "stop", operator_actor)
    out = io.StringIO()
    call_command("agents", "undo", str(stop.pk), stdout=out)
    assert out.getvalue().startswith("Undo: starting WowEvent again…\n→ operation ")
    with pytest.raises(CommandError, match="There is no operation 'nope'"):
        call_command("agents", "undo", "nope")


def test_an_action_offers_undo_in_its_toast_only_when_it_has_an_inverse(
    running, as_operator, settings
) -> None:
    settings.ACTION_UNDO_SECONDS = 10
    response = as_operator.post(
        "/agents/wow-event/actions/stop/run/", {"from": "card"}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    stop = Operation.objects.get(agent=running, action="stop")
    assert f'hx-post="/agents/wow-event/undo/{stop.pk}/"' in html
    assert 'data-undo-seconds="10"' in html
    services.run_operation(str(stop.pk))

    settings.ACTION_UNDO_SECONDS = 0
    response = as_operator.post(
        "/agents/wow-event/actions/start/run/", {"from": "card"}, HTTP_HX_REQUEST="true"
    )
    assert "/undo/" not in response.content.decode()


def test_a_burst_of_undos_at_the_real_server_asks_for_the_inverse_once(
    running, operator, operator_actor, act, portal_server
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from portal import services as portal_services

    stop = act(running, "stop", operator_actor)
    _, token = portal_services.create_api_token(operator, Actor.command("test"), name="burst")
    url = f"{portal_server}/api/platform/operations/{stop.pk}/undo"

    def undo(_: int) -> int:
        return requests.post(
            url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = sorted(pool.map(undo, range(20)))
    assert statuses == [202] + [409] * 19, statuses
    assert Operation.objects.filter(agent=running, reason__startswith="undo of").count() == 1
