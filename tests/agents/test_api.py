"""The agents JSON API: listing, detail, history, the eight actions, operations, metrics."""

from __future__ import annotations

import pytest
from django.test import Client

from agents import services
from agents.models import Agent, Operation, State
from portal import services as portal_services
from portal.actors import Actor


@pytest.fixture
def operator_token(operator) -> str:
    return portal_services.create_api_token(operator, Actor.command("test"))[1]


@pytest.fixture
def viewer_token(viewer) -> str:
    return portal_services.create_api_token(viewer, Actor.command("test"))[1]


def api(client: Client, method: str, path: str, token: str, **data):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    if method == "get":
        return client.get(f"/api/platform{path}", data, **headers)
    return client.post(f"/api/platform{path}", data, content_type="application/json", **headers)


def test_list_agents_with_filters(client, seeded, viewer_token) -> None:
    response = api(client, "get", "/agents", viewer_token)
    assert response.status_code == 200
    body = response.json()
    assert len(body) == 14
    memory = next(agent for agent in body if agent["slug"] == "wow-memory")
    assert memory["dependencies"] == ["wow-cache", "wow-event"]
    assert memory["state"] == "DRAFT" and memory["health"] == "unknown"
    assert [a["slug"] for a in api(client, "get", "/agents", viewer_token, q="vision").json()] == [
        "wow-vision"
    ]
    assert api(client, "get", "/agents", viewer_token, state="running").json() == []
    bad = api(client, "get", "/agents", viewer_token, state="ASLEEP")
    assert bad.status_code == 400 and "not a state" in bad.json()["detail"]


def test_agent_detail_and_404(client, seeded, viewer_token) -> None:
    assert api(client, "get", "/agents/wow-cache", viewer_token).json()["name"] == "WowCache"
    missing = api(client, "get", "/agents/wow-nothing", viewer_token)
    assert missing.status_code == 404
    assert "There is no agent 'wow-nothing'" in missing.json()["detail"]


def test_action_answers_202_with_operation_then_operation_reports_outcome(
    client, seeded, operator_token
) -> None:
    response = api(client, "post", "/agents/wow-cache/provision", operator_token, reason="api test")
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending" and body["url"] == f"/api/platform/operations/{body['id']}"
    assert Agent.objects.get(slug="wow-cache").pending_action == "provision"

    services.run_operation(body["id"])  # what the worker does with it
    operation = api(client, "get", f"/operations/{body['id']}", operator_token).json()
    assert operation["status"] == "succeeded"
    assert operation["actor"] == "token:" + operator_token.split("_")[1] + " (otto)"
    history = api(client, "get", "/agents/wow-cache/history", operator_token).json()
    assert [(h["action"], h["from_state"], h["to_state"], h["reason"]) for h in history] == [
        ("provision", "DRAFT", "PROVISIONED", "api test")
    ]


def test_illegal_action_is_409_with_the_reason(client, seeded, operator_token) -> None:
    response = api(client, "post", "/agents/wow-cache/start", operator_token)
    assert response.status_code == 409
    assert response.json() == {
        "detail": "WowCache is DRAFT; provision and deploy it first (or start it with its dependencies).",
        "code": "illegal",
    }
    assert not Operation.objects.exists()


def test_conflicting_action_is_409(client, seeded, operator_token) -> None:
    assert api(client, "post", "/agents/wow-cache/provision", operator_token).status_code == 202
    response = api(client, "post", "/agents/wow-cache/provision", operator_token)
    assert response.status_code == 409 and response.json()["code"] == "busy"


def test_viewer_gets_403_and_nothing_changes(client, seeded, viewer_token) -> None:
    response = api(client, "post", "/agents/wow-cache/provision", viewer_token)
    assert response.status_code == 403
    assert "needs the Operator role" in response.json()["detail"]
    assert Agent.objects.get(slug="wow-cache").pending_action == ""


def test_unknown_slug_or_action_is_404(client, seeded, operator_token) -> None:
    assert api(client, "post", "/agents/wow-nothing/start", operator_token).status_code == 404
    assert api(client, "post", "/agents/wow-cache/explode", operator_token).status_code == 404


def test_session_post_needs_csrf(seeded, operator) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    response = client.post(
        "/api/platform/agents/wow-cache/provision", {}, content_type="application/json"
    )
    assert response.status_code == 403
    assert Agent.objects.get(slug="wow-cache").pending_action == ""


def test_anonymous_gets_401(client, seeded) -> None:
    assert client.get("/api/platform/agents").status_code == 401


def test_metrics_count_by_state_and_health(client, seeded, viewer_token, act) -> None:
    act(Agent.objects.get(slug="wow-cache"), "provision")
    body = api(client, "get", "/metrics", viewer_token).json()
    assert body["total"] == 14
    assert body["by_state"][State.DRAFT] == 13 and body["by_state"][State.PROVISIONED] == 1
    assert body["by_health"]["unknown"] == 14
    assert body["pending"] == 0


def test_openapi_documents_the_actions(as_viewer) -> None:
    schema = as_viewer.get("/api/platform/openapi.json").json()
    assert "/api/platform/agents/{slug}/{action}" in schema["paths"]
    assert as_viewer.get("/api/docs").status_code == 200
