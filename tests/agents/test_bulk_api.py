"""The bulk operations JSON API: preview, start, progress, cancel, retry failed, roll back, and
who may do what. No worker runs here: where a job must run, the test runs it as a worker would
(``bulk.run_bulk_operation``), with real agent processes on the local runtime."""

from __future__ import annotations

import pytest
from django.test import Client

from agents import bulk
from agents.models import Agent, BulkOperation, Operation, State
from portal import services as portal_services
from portal.actors import Actor

RUNS_AGENTS = pytest.mark.django_db(transaction=True)  # the runner's threads have connections


@pytest.fixture
def operator_token(operator) -> str:
    return portal_services.create_api_token(operator, Actor.command("test"))[1]


@pytest.fixture
def viewer_token(viewer) -> str:
    return portal_services.create_api_token(viewer, Actor.command("test"))[1]


@pytest.fixture(autouse=True)
def quick_failures(settings):
    """An agent that dies at start is noticed at once; a short timeout bounds the rest."""
    settings.AGENT_READY_TIMEOUT_SECONDS = 5


def api(client: Client, method: str, path: str, token: str, **data):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    if method == "get":
        return client.get(f"/api/platform{path}", data, **headers)
    return client.post(f"/api/platform{path}", data, content_type="application/json", **headers)


def states(*slugs: str) -> dict[str, str]:
    return dict(Agent.objects.filter(slug__in=slugs).values_list("slug", "state"))


def break_start(agent: Agent) -> None:
    """The agent's process exits as soon as it starts: its start fails for real."""
    agent.config = {"faults": {"crash_after_seconds": 0}}
    agent.save()


# --- preview ------------------------------------------------------------------------------------


def test_dry_run_orders_dependencies_first_and_says_why_agents_are_skipped(
    client, seeded, operator_token
) -> None:
    response = api(
        client, "post", "/bulk", operator_token, action="deploy_and_start", dry_run=True,
        targets=["wow-search", "wow-memory", "wow-cache"], parallelism=2,
    )  # fmt: skip
    assert response.status_code == 200
    plan = response.json()
    assert (plan["action"], plan["parallelism"], plan["will_change"], plan["skipped"]) == (
        "deploy_and_start", 2, 1, 2,
    )  # fmt: skip
    assert plan["confirmation_required"] is False and plan["confirmation_phrase"] is None
    cache, memory, search = plan["items"]
    assert cache == {
        "agent": "wow-cache", "name": "WowCache", "state": "DRAFT", "will_change": True,
        "steps": ["provision", "deploy", "start"], "to_state": "RUNNING", "skip_code": None,
        "skip_reason": None, "affected_dependents": [],
    }  # fmt: skip
    assert (memory["agent"], memory["will_change"], memory["skip_code"]) == (
        "wow-memory", False, "dependencies",
    )  # fmt: skip
    assert memory["skip_reason"].startswith("WowMemory needs WowEvent")
    assert "add it to the selection or start it first" in memory["skip_reason"]
    assert search["agent"] == "wow-search" and search["skip_code"] == "dependencies"
    assert not BulkOperation.objects.exists() and not Operation.objects.exists()


def test_dry_run_names_running_dependents_and_skips_what_is_already_there(
    client, seeded, operator_token, bring_up
) -> None:
    for slug in ("wow-event", "wow-cache", "wow-memory"):
        bring_up(seeded[slug])
    response = api(
        client, "post", "/bulk", operator_token, action="stop", dry_run=True,
        targets=["wow-cache", "wow-search"],
    )  # fmt: skip
    plan = response.json()
    assert response.status_code == 200
    assert plan["affected_dependents"] == ["wow-memory"]
    by_agent = {item["agent"]: item for item in plan["items"]}
    assert by_agent["wow-cache"]["steps"] == ["stop"]
    assert by_agent["wow-cache"]["affected_dependents"] == ["wow-memory"]
    assert by_agent["wow-search"]["skip_code"] == "illegal"
    assert "DRAFT" in by_agent["wow-search"]["skip_reason"]
    assert plan["confirmation_phrase"] is None  # not every running agent

    everything = api(
        client, "post", "/bulk", operator_token, action="stop", dry_run=True,
        filter={"state": "running"},
    ).json()  # fmt: skip
    assert everything["confirmation_required"] is True
    assert everything["confirmation_phrase"] == "stop 3"
    assert everything["affected_dependents"] == []  # they all go together
    # Stopping dependents first: memory before what it needs.
    assert [item["agent"] for item in everything["items"]][0] == "wow-memory"

    again = api(
        client, "post", "/bulk", operator_token, action="start", dry_run=True,
        targets=["wow-cache"],
    ).json()  # fmt: skip
    assert again["items"][0]["skip_code"] == "already"
    assert again["items"][0]["skip_reason"] == "WowCache is already RUNNING."
    assert states("wow-event", "wow-cache", "wow-memory") == dict.fromkeys(
        ("wow-event", "wow-cache", "wow-memory"), State.RUNNING
    )
    assert not BulkOperation.objects.exists()


def test_revoke_preview_asks_for_the_typed_phrase(client, seeded, operator_token) -> None:
    plan = api(
        client, "post", "/bulk", operator_token, action="revoke", dry_run=True,
        filter={"tier": "platform"},
    ).json()  # fmt: skip
    assert plan["will_change"] == 14
    assert plan["confirmation_phrase"] == "revoke 14"


# --- running ------------------------------------------------------------------------------------


@RUNS_AGENTS
def test_bulk_answers_202_then_get_shows_every_agent_finished(
    client, seeded, operator_token
) -> None:
    response = api(
        client, "post", "/bulk", operator_token, action="deploy_and_start",
        targets=["wow-cache", "wow-event"], parallelism=2, reason="api test",
    )  # fmt: skip
    assert response.status_code == 202
    accepted = response.json()
    assert accepted == {
        "id": accepted["id"], "action": "deploy_and_start", "kind": "run", "status": "pending",
        "url": f"/api/platform/bulk/{accepted['id']}",
    }  # fmt: skip
    pending = api(client, "get", f"/bulk/{accepted['id']}", operator_token).json()
    assert pending["status"] == "pending"
    assert pending["counts"] == {
        "total": 2,
        "succeeded": 0,
        "failed": 0,
        "skipped": 0,
        "pending": 2,
    }
    assert [item["status"] for item in pending["items"]] == ["pending", "pending"]

    bulk.run_bulk_operation(accepted["id"])  # what the worker does with it

    body = api(client, "get", accepted["url"].removeprefix("/api/platform"), operator_token).json()
    assert body["status"] == "succeeded"
    assert body["actor"] == "token:" + operator_token.split("_")[1] + " (otto)"
    assert body["parallelism"] == 2 and body["targets"] == ["wow-cache", "wow-event"]
    assert body["counts"] == {"total": 2, "succeeded": 2, "failed": 0, "skipped": 0, "pending": 0}
    assert body["estimate_seconds_left"] is None
    assert body["started_at"] and body["finished_at"] and body["duration_seconds"] > 0
    for item in body["items"]:
        assert item["status"] == "succeeded", item
        assert (item["from_state"], item["to_state"]) == ("DRAFT", "RUNNING")
        assert item["steps"] == ["provision", "deploy", "start"] and item["steps_done"] == 3
        assert len(item["operations"]) == 3 and item["message"] is None
        assert item["duration_seconds"] > 0
    assert states("wow-cache", "wow-event") == {"wow-cache": "RUNNING", "wow-event": "RUNNING"}

    listed = api(client, "get", "/bulk", operator_token).json()
    assert [(row["id"], row["status"]) for row in listed] == [(accepted["id"], "succeeded")]
    assert listed[0]["counts"]["succeeded"] == 2 and listed[0]["url"] == accepted["url"]
    assert api(client, "get", "/bulk", operator_token, status="failed").json() == []
    bad = api(client, "get", "/bulk", operator_token, status="done")
    assert bad.status_code == 400 and "not a bulk status" in bad.json()["detail"]


def test_bulk_list_is_newest_first_and_limited(
    client, seeded, operator_token, django_assert_max_num_queries
) -> None:
    actor = Actor.command("test")
    ids = [
        bulk.create_bulk_operation("deploy", actor, targets=[slug], enqueue=False).pk
        for slug in ("wow-cache", "wow-event", "wow-security")
    ]
    with django_assert_max_num_queries(6):  # not one query per operation
        listed = api(client, "get", "/bulk", operator_token, limit=2).json()
    assert [row["id"] for row in listed] == ids[::-1][:2]
    assert [row["status"] for row in listed] == ["pending", "pending"]


def test_bad_input_is_400_with_the_reason_and_creates_nothing(
    client, seeded, operator_token, settings
) -> None:
    ceiling = settings.BULK_MAX_PARALLELISM
    cases = [
        ({"action": "explode", "targets": ["wow-cache"]}, "unknown", "'explode' is not a bulk action"),
        ({"action": "start", "targets": ["wow-cache", "wow-nothing"]}, "unknown",
         "There is no agent 'wow-nothing'"),
        ({"action": "deploy", "targets": ["wow-cache"], "parallelism": ceiling + 1}, "invalid",
         f"Parallelism {ceiling + 1} is not allowed: give a whole number from 1 to {ceiling}"),
        ({"action": "deploy", "targets": ["wow-cache"], "parallelism": 0}, "invalid",
         "Parallelism 0 is not allowed"),
        ({"action": "deploy", "targets": ["wow-cache"], "parallelism": "lots"}, "invalid",
         "Parallelism 'lots' is not allowed"),
        ({"action": "deploy", "targets": ["wow-cache"], "filter": {"all": True}}, "invalid",
         "either a list of agents or a filter, not both"),
        ({"action": "deploy"}, "invalid", "Choose the agents"),
        ({"targets": ["wow-cache"]}, "unknown", "'' is not a bulk action; use one of deploy_and_start"),
        ({"action": "deploy", "filter": {"state": "asleep"}}, "invalid", "'asleep' is not a state"),
        ({"action": "deploy", "filter": {"colour": "red"}}, "invalid", "Unknown filter colour"),
    ]  # fmt: skip
    for body, code, detail in cases:
        for dry_run in (False, True):
            response = api(client, "post", "/bulk", operator_token, dry_run=dry_run, **body)
            assert response.status_code == 400, (body, response.json())
            assert response.json()["code"] == code
            assert detail in response.json()["detail"], response.json()
    assert not BulkOperation.objects.exists()
    assert not Agent.objects.exclude(pending_action="").exists()


def test_missing_or_wrong_confirmation_is_409_with_the_phrase(
    client, seeded, operator_token
) -> None:
    request = {"action": "revoke", "targets": ["wow-cache", "wow-event"]}
    for confirm in ("", "revoke 3", "yes"):
        response = api(client, "post", "/bulk", operator_token, confirm=confirm, **request)
        assert response.status_code == 409
        body = response.json()
        assert body["code"] == "confirm" and body["confirmation_phrase"] == "revoke 2"
        assert body["detail"] == "This revoke changes 2 agents; type “revoke 2” to confirm it."
    assert not BulkOperation.objects.exists()
    confirmed = api(client, "post", "/bulk", operator_token, confirm=" Revoke 2 ", **request)
    assert confirmed.status_code == 202
    assert BulkOperation.objects.get().action == "revoke"


def test_nothing_to_do_is_409(client, seeded, operator_token) -> None:
    none_running = api(
        client, "post", "/bulk", operator_token, action="stop", filter={"state": "RUNNING"}
    )
    assert none_running.status_code == 409
    assert none_running.json()["code"] == "empty"
    assert none_running.json()["detail"] == "No agent matches state RUNNING."
    all_skipped = api(client, "post", "/bulk", operator_token, action="stop", targets=["wow-cache"])
    assert all_skipped.status_code == 409 and all_skipped.json()["code"] == "empty"
    assert all_skipped.json()["detail"].startswith(
        "Nothing to do: every chosen agent would be skipped"
    )
    assert all_skipped.json()["plan"]["items"][0]["skip_code"] == "illegal"
    assert not BulkOperation.objects.exists()


def test_an_agent_busy_in_another_bulk_operation_is_skipped(client, seeded, operator_token) -> None:
    first = api(client, "post", "/bulk", operator_token, action="deploy", targets=["wow-cache"])
    assert first.status_code == 202
    again = api(client, "post", "/bulk", operator_token, action="deploy", targets=["wow-cache"])
    assert again.status_code == 409 and again.json()["code"] == "empty"
    assert f"in bulk operation #{first.json()['id']}" in again.json()["detail"]
    assert BulkOperation.objects.count() == 1


# --- cancel, retry, roll back -----------------------------------------------------------------


def test_cancelling_a_queued_operation_skips_every_agent(client, seeded, operator_token) -> None:
    created = api(
        client, "post", "/bulk", operator_token, action="deploy",
        targets=["wow-cache", "wow-event"],
    ).json()  # fmt: skip
    response = api(client, "post", f"/bulk/{created['id']}/cancel", operator_token)
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled" and response.json()["id"] == created["id"]
    body = api(client, "get", f"/bulk/{created['id']}", operator_token).json()
    assert body["status"] == "cancelled" and body["cancel_requested"] is True
    assert body["counts"]["skipped"] == 2
    assert {(item["status"], item["code"]) for item in body["items"]} == {("skipped", "cancelled")}
    assert body["items"][0]["message"] == (
        "Not started: the operation was cancelled by token:"
        + operator_token.split("_")[1]
        + " (otto)."
    )
    assert states("wow-cache", "wow-event") == {"wow-cache": "DRAFT", "wow-event": "DRAFT"}

    twice = api(client, "post", f"/bulk/{created['id']}/cancel", operator_token)
    assert twice.status_code == 409 and twice.json()["code"] == "finished"
    assert "has already finished (cancelled)" in twice.json()["detail"]


@RUNS_AGENTS
def test_partial_failure_then_retry_failed_only(client, seeded, operator_token) -> None:
    break_start(seeded["wow-cache"])
    created = api(
        client, "post", "/bulk", operator_token, action="deploy_and_start",
        targets=["wow-event", "wow-cache"],
    ).json()  # fmt: skip
    not_yet = api(client, "post", f"/bulk/{created['id']}/retry", operator_token)
    assert not_yet.status_code == 409 and not_yet.json()["code"] == "busy"
    bulk.run_bulk_operation(created["id"])

    body = api(client, "get", f"/bulk/{created['id']}", operator_token).json()
    assert body["status"] == "partial"
    assert body["counts"] == {"total": 2, "succeeded": 1, "failed": 1, "skipped": 0, "pending": 0}
    failed = next(item for item in body["items"] if item["agent"] == "wow-cache")
    assert failed["status"] == "failed" and failed["steps_done"] == 2
    assert failed["message"].startswith("Start failed: ")
    assert failed["code"]

    too_many = api(client, "post", f"/bulk/{created['id']}/retry", operator_token, parallelism=99)
    assert (
        too_many.status_code == 400 and "Parallelism 99 is not allowed" in too_many.json()["detail"]
    )

    cache = Agent.objects.get(slug="wow-cache")
    cache.config = {}
    cache.save()
    retry = api(client, "post", f"/bulk/{created['id']}/retry", operator_token, parallelism=1)
    assert retry.status_code == 202
    assert retry.json()["kind"] == "retry" and retry.json()["id"] != created["id"]
    bulk.run_bulk_operation(retry.json()["id"])
    again = api(client, "get", f"/bulk/{retry.json()['id']}", operator_token).json()
    assert again["status"] == "succeeded" and again["follows"] == created["id"]
    assert [item["agent"] for item in again["items"]] == ["wow-cache"]  # the failed one only
    assert again["parallelism"] == 1
    assert states("wow-event", "wow-cache") == {"wow-event": "RUNNING", "wow-cache": "RUNNING"}

    nothing_failed = api(client, "post", f"/bulk/{retry.json()['id']}/retry", operator_token)
    assert nothing_failed.status_code == 409 and nothing_failed.json()["code"] == "empty"


@RUNS_AGENTS
def test_roll_back_returns_stopped_agents_to_running(
    client, seeded, operator_token, bring_up
) -> None:
    for slug in ("wow-event", "wow-cache"):
        bring_up(seeded[slug])
    stop = api(
        client, "post", "/bulk", operator_token, action="stop",
        targets=["wow-event", "wow-cache"], confirm="stop 2",
    ).json()  # fmt: skip
    early = api(client, "post", f"/bulk/{stop['id']}/rollback", operator_token, dry_run=True)
    assert early.status_code == 409 and early.json()["code"] == "busy"
    bulk.run_bulk_operation(stop["id"])
    assert states("wow-event", "wow-cache") == {"wow-event": "STOPPED", "wow-cache": "STOPPED"}

    preview = api(client, "post", f"/bulk/{stop['id']}/rollback", operator_token, dry_run=True)
    assert preview.status_code == 200
    plan = preview.json()
    assert plan["action"] == "rollback" and plan["will_change"] == 2
    assert [(i["agent"], i["steps"], i["to_state"]) for i in plan["items"]] == [
        ("wow-cache", ["start"], "RUNNING"),
        ("wow-event", ["start"], "RUNNING"),
    ]
    assert not BulkOperation.objects.filter(kind="rollback").exists()

    response = api(client, "post", f"/bulk/{stop['id']}/rollback", operator_token)
    assert response.status_code == 202 and response.json()["kind"] == "rollback"
    bulk.run_bulk_operation(response.json()["id"])
    body = api(client, "get", f"/bulk/{response.json()['id']}", operator_token).json()
    assert body["status"] == "succeeded" and body["follows"] == stop["id"]
    assert states("wow-event", "wow-cache") == {"wow-event": "RUNNING", "wow-cache": "RUNNING"}

    itself = api(client, "post", f"/bulk/{response.json()['id']}/rollback", operator_token)
    assert itself.status_code == 400 and "is a roll-back itself" in itself.json()["detail"]
    twice = api(client, "post", f"/bulk/{stop['id']}/rollback", operator_token)
    assert twice.status_code == 409 and twice.json()["code"] == "empty"


# --- who may ------------------------------------------------------------------------------------


def test_viewer_may_read_but_every_change_is_403(
    client, seeded, viewer_token, operator_token
) -> None:
    created = api(
        client, "post", "/bulk", operator_token, action="deploy", targets=["wow-cache"]
    ).json()
    path = f"/bulk/{created['id']}"
    assert api(client, "get", "/bulk", viewer_token).status_code == 200
    assert api(client, "get", path, viewer_token).json()["status"] == "pending"
    refused = [
        api(client, "post", "/bulk", viewer_token, action="deploy", targets=["wow-event"]),
        api(client, "post", "/bulk", viewer_token, action="deploy", targets=["wow-event"], dry_run=True),
        api(client, "post", f"{path}/cancel", viewer_token),
        api(client, "post", f"{path}/retry", viewer_token),
        api(client, "post", f"{path}/rollback", viewer_token),
        api(client, "post", f"{path}/rollback", viewer_token, dry_run=True),
    ]  # fmt: skip
    for response in refused:
        assert response.status_code == 403, response.json()
        assert response.json()["code"] == "forbidden"
        assert "needs the Operator role" in response.json()["detail"]
    assert BulkOperation.objects.count() == 1
    operation = BulkOperation.objects.get()
    assert operation.status == "pending" and operation.cancel_requested_at is None


def test_anonymous_gets_401(client, seeded) -> None:
    assert client.get("/api/platform/bulk").status_code == 401
    response = client.post(
        "/api/platform/bulk",
        {"action": "deploy", "targets": ["wow-cache"]},
        content_type="application/json",
    )
    assert response.status_code == 401
    assert not BulkOperation.objects.exists()


def test_unknown_bulk_operation_is_404(client, seeded, operator_token) -> None:
    for method, path in (
        ("get", "/bulk/424242"),
        ("post", "/bulk/424242/cancel"),
        ("post", "/bulk/424242/retry"),
        ("post", "/bulk/424242/rollback"),
    ):
        response = api(client, method, path, operator_token)
        assert response.status_code == 404
        assert response.json()["detail"] == (
            "There is no bulk operation #424242; GET /api/platform/bulk lists them."
        )


def test_openapi_documents_the_bulk_endpoints(as_viewer) -> None:
    paths = as_viewer.get("/api/platform/openapi.json").json()["paths"]
    for path in (
        "/api/platform/bulk",
        "/api/platform/bulk/{bulk_id}",
        "/api/platform/bulk/{bulk_id}/cancel",
        "/api/platform/bulk/{bulk_id}/retry",
        "/api/platform/bulk/{bulk_id}/rollback",
    ):
        assert path in paths
