"""Servicing's API: an agent's versions at /api/platform/agents/{slug}/versions (beside the
agents app's own routes under the same path), and the releases under /api/platform/servicing:
listing (all, or those of an agent), publishing (Admin), marking bad (Operator), pinning and
unpinning (Admin), each role refused where it must be, bad input a 4xx sentence with nothing
changed."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from agents.models import Operation
from portal import services as portal_services
from portal.actors import Actor
from portal.models import AuditEntry
from servicing import services
from servicing.models import Release

pytestmark = pytest.mark.django_db

API = "/api/platform"
RELEASES = f"{API}/servicing/releases"
SHELL = Actor.command("test")


def post(client, path: str, body: object = None, **headers):
    data = json.dumps(body if body is not None else {})
    return client.post(path, data=data, content_type="application/json", **headers)


@pytest.fixture
def released(fleet) -> dict[str, Release]:
    """1.0.0 for the fleet, 1.1.0 for the fleet, 1.2.0 for WowCache only."""
    services.register_first_release(SHELL)
    return {
        "1.0.0": Release.objects.get(version="1.0.0"),
        "1.1.0": services.publish(SHELL, "1.1.0", "waooaw/agentd:1.1.0", changelog="Faster."),
        "1.2.0": services.publish(SHELL, "1.2.0", "local", agent=fleet["wow-cache"]),
    }


# --- an agent's versions ---------------------------------------------------------------------


def test_a_viewer_reads_an_agents_versions(released, as_viewer) -> None:
    response = as_viewer.get(f"{API}/agents/wow-cache/versions")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["current_version"] == "1.0.0"
    assert body["available_versions"] == ["1.2.0", "1.1.0"]
    assert [entry["version"] for entry in body["changelog"]] == ["1.2.0", "1.1.0", "1.0.0"]
    assert body["changelog"][1]["changelog"] == "Faster." and body["pinned"] == []
    assert "published_at" in body["changelog"][0]


def test_the_versions_route_lives_beside_the_agents_routes(released, as_operator) -> None:
    # The agents app's routes under /agents/{slug}/... still answer as before.
    assert as_operator.get(f"{API}/agents/wow-cache").json()["slug"] == "wow-cache"
    assert as_operator.get(f"{API}/agents/wow-cache/history").status_code == 200
    assert as_operator.get(f"{API}/agents/wow-cache/versions").status_code == 200
    unknown_action = post(as_operator, f"{API}/agents/wow-cache/explode")
    assert (
        unknown_action.status_code == 404 and "is not an action" in unknown_action.json()["detail"]
    )
    provisioning = post(as_operator, f"{API}/agents/wow-cache/provision")
    assert provisioning.status_code == 202 and Operation.objects.count() == 1


def test_a_pinned_version_is_not_available(released, as_viewer) -> None:
    services.mark_bad(SHELL, released["1.1.0"], "broken")
    body = as_viewer.get(f"{API}/agents/wow-memory/versions").json()
    assert body["available_versions"] == []
    assert body["pinned"][0]["version"] == "1.1.0" and body["pinned"][0]["bad"] is True


def test_an_unknown_agents_versions_are_404(fleet, as_viewer) -> None:
    response = as_viewer.get(f"{API}/agents/no-such-agent/versions")
    assert response.status_code == 404
    assert response.json() == {
        "detail": "There is no agent 'no-such-agent'; `manage.py agents list` lists them.",
        "code": "not_found",
    }


def test_without_a_role_nothing_is_answered(released, as_outsider) -> None:
    assert as_outsider.get(f"{API}/agents/wow-cache/versions").status_code == 401
    assert as_outsider.get(RELEASES).status_code == 401
    assert Client().get(RELEASES).status_code == 401


# --- listing ---------------------------------------------------------------------------------


def test_releases_are_listed_newest_version_first(released, as_viewer) -> None:
    response = as_viewer.get(RELEASES)
    assert response.status_code == 200
    rows = response.json()["releases"]
    assert [(row["version"], row["scope"], row["agent"]) for row in rows] == [
        ("1.2.0", "agent", "wow-cache"),
        ("1.1.0", "fleet", None),
        ("1.0.0", "fleet", None),
    ]
    first = rows[2]
    assert first["artifact"] == "waooaw/agentd:1.0.0" and first["changelog"] == "The first release."
    assert first["published_by"] == "command:" + SHELL.name and first["pinned"] is False


def test_releases_of_one_agent(released, as_viewer) -> None:
    rows = as_viewer.get(RELEASES, {"agent": "wow-memory"}).json()["releases"]
    assert [row["version"] for row in rows] == ["1.1.0", "1.0.0"]


def test_an_agent_filter_naming_no_agent_is_bad_input(released, as_viewer) -> None:
    for value in ("no-such-agent", "wow\x00cache", "x" * 5000):
        response = as_viewer.get(RELEASES, {"agent": value})
        assert response.status_code == 400, value
        assert response.json()["detail"].startswith("agent: ")


def test_one_release(released, as_viewer) -> None:
    release = released["1.1.0"]
    response = as_viewer.get(f"{RELEASES}/{release.pk}")
    assert response.status_code == 200 and response.json()["version"] == "1.1.0"
    for bad_id in ("999999", "abc", "99999999999999999999", "-1"):
        assert as_viewer.get(f"{RELEASES}/{bad_id}").status_code == 404, bad_id


# --- publishing ------------------------------------------------------------------------------


def test_an_admin_publishes_a_release(fleet, as_admin) -> None:
    body = {
        "version": "1.1.0",
        "artifact": "waooaw/agentd:1.1.0",
        "changelog": "Faster.",
        "config_changes": {"task_block_ms": 500},
    }
    response = post(as_admin, RELEASES, body)
    assert response.status_code == 201, response.content
    answer = response.json()
    release = Release.objects.get()
    assert answer["id"] == release.pk and answer["scope"] == "fleet"
    assert (
        answer["config_changes"] == {"task_block_ms": 500} and answer["published_by"] == "user:ada"
    )
    # The same again is a conflict, nothing more published.
    again = post(as_admin, RELEASES, body)
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    assert Release.objects.count() == 1


def test_a_release_for_an_agent_or_a_template(fleet, as_admin) -> None:
    own = post(as_admin, RELEASES, {"version": "1.1.0", "artifact": "local", "agent": "wow-cache"})
    assert own.status_code == 201 and own.json()["agent"] == "wow-cache"
    body = {"version": "1.1.0", "artifact": "local", "template": "memory"}
    for_template = post(as_admin, RELEASES, body)
    assert for_template.status_code == 201 and for_template.json()["scope"] == "template"
    unknown = post(as_admin, RELEASES, {"version": "1.1.0", "artifact": "local", "agent": "nope"})
    assert unknown.status_code == 400 and unknown.json()["detail"].startswith("agent: There is no")
    assert Release.objects.count() == 2


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"version": "1.2", "artifact": "local"}, 400, "'1.2' is not a version; use MAJOR.MINOR"),
        ({"version": "1.1.0", "artifact": ""}, 400, "artifact is required."),
        ({"version": "1.1.0", "artifact": "local", "config_changes": [1]}, 400, "config_changes"),
        (
            {"version": "1.1.0", "artifact": "local", "config_changes": {"task_block_ms": -1}},
            400,
            "config_changes: task_block_ms",
        ),
        (
            {"version": "1.1.0", "artifact": "local", "agent": "wow-cache", "template": "memory"},
            400,
            "A release is for one agent or one template, not both",
        ),
        ({"artifact": "local"}, 422, ""),
    ],
)
def test_bad_releases_are_refused(fleet, as_admin, body, status, detail) -> None:
    response = post(as_admin, RELEASES, body)
    assert response.status_code == status, response.content
    if detail:
        assert detail in response.json()["detail"]
    assert not Release.objects.exists()


@pytest.mark.parametrize("client_fixture", ["as_operator", "as_viewer"])
def test_only_an_admin_publishes(fleet, request, client_fixture) -> None:
    client = request.getfixturevalue(client_fixture)
    response = post(client, RELEASES, {"version": "1.1.0", "artifact": "local", "agent": "nope"})
    assert response.status_code == 403
    assert "publish a release: it needs the Admin role" in response.json()["detail"]
    assert not Release.objects.exists()


def test_a_bearer_token_publishes_with_its_users_role(fleet, admin, viewer) -> None:
    admin_token = portal_services.create_api_token(admin, SHELL)[1]
    viewer_token = portal_services.create_api_token(viewer, SHELL)[1]
    client = Client()
    body = {"version": "1.1.0", "artifact": "local"}
    assert (
        post(client, RELEASES, body, HTTP_AUTHORIZATION=f"Bearer {viewer_token}").status_code == 403
    )
    response = post(client, RELEASES, body, HTTP_AUTHORIZATION=f"Bearer {admin_token}")
    assert response.status_code == 201 and response.json()["published_by"].startswith("token:")


def test_publishing_needs_the_csrf_token_in_a_browser(fleet, admin) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    assert post(client, RELEASES, {"version": "1.1.0", "artifact": "local"}).status_code == 403
    assert not Release.objects.exists()


def test_listing_does_not_take_a_post_to_one_release(released, as_admin) -> None:
    assert post(as_admin, f"{RELEASES}/{released['1.1.0'].pk}").status_code == 405


# --- bad, pin, unpin -------------------------------------------------------------------------


def test_an_operator_marks_a_release_bad(released, as_operator) -> None:
    release = released["1.1.0"]
    response = post(as_operator, f"{RELEASES}/{release.pk}/bad", {"reason": "error rate 12 %"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["bad"], body["bad_reason"], body["pinned"]) == (True, "error rate 12 %", True)
    assert body["pinned_by"] == "user:otto"
    again = post(as_operator, f"{RELEASES}/{release.pk}/bad", {"reason": "still"})
    assert again.status_code == 409
    assert AuditEntry.objects.filter(action="servicing.release.bad").count() == 1


def test_a_viewer_cannot_mark_a_release_bad(released, as_viewer) -> None:
    release = released["1.1.0"]
    response = post(as_viewer, f"{RELEASES}/{release.pk}/bad", {"reason": "broken"})
    assert response.status_code == 403
    release.refresh_from_db()
    assert not release.bad


def test_an_admin_pins_and_unpins(released, as_admin) -> None:
    release = released["1.1.0"]
    pinned = post(as_admin, f"{RELEASES}/{release.pk}/pin", {"reason": "wait for 1.1.1"})
    assert pinned.status_code == 200 and pinned.json()["pinned_reason"] == "wait for 1.1.1"
    assert post(as_admin, f"{RELEASES}/{release.pk}/pin", {"reason": "x"}).status_code == 409
    no_reason = post(as_admin, f"{RELEASES}/{release.pk}/unpin", {})
    assert no_reason.status_code == 400 and no_reason.json()["detail"] == "reason is required."
    unpinned = post(as_admin, f"{RELEASES}/{release.pk}/unpin", {"reason": "1.1.1 is not coming"})
    assert unpinned.status_code == 200 and unpinned.json()["pinned"] is False
    assert post(as_admin, f"{RELEASES}/{release.pk}/unpin", {"reason": "x"}).status_code == 409
    actions = list(
        AuditEntry.objects.filter(action__in=["servicing.release.pin", "servicing.release.unpin"])
        .order_by("at")
        .values_list("action", flat=True)
    )
    assert actions == ["servicing.release.pin", "servicing.release.unpin"]


@pytest.mark.parametrize("action", ["pin", "unpin"])
def test_an_operator_cannot_pin_or_unpin(released, as_operator, action) -> None:
    release = released["1.1.0"]
    if action == "unpin":
        services.pin(SHELL, release, "held")
    response = post(as_operator, f"{RELEASES}/{release.pk}/{action}", {"reason": "because"})
    assert response.status_code == 403
    assert "it needs the Admin role" in response.json()["detail"]
    release.refresh_from_db()
    assert release.pinned is (action == "unpin")


@pytest.mark.parametrize("action", ["bad", "pin", "unpin"])
def test_acting_on_an_unknown_release_is_404(fleet, as_admin, action) -> None:
    response = post(as_admin, f"{RELEASES}/424242/{action}", {"reason": "x"})
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_the_routes_are_in_the_openapi_document(fleet, as_viewer) -> None:
    paths = as_viewer.get(f"{API}/openapi.json").json()["paths"]
    assert "get" in paths["/api/platform/agents/{slug}/versions"]
    assert {"get", "post"} <= set(paths["/api/platform/servicing/releases"])
    for action in ("bad", "pin", "unpin"):
        assert "post" in paths[f"/api/platform/servicing/releases/{{release_id}}/{action}"]
