"""Bad input is answered 400 with the field and the reason at every door, never a 500."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from agents import services
from agents.models import Agent, Operation
from portal.actors import Actor


@pytest.fixture
def seeded(db, tmp_path, settings):
    settings.AGENT_ROOT = tmp_path
    services.seed_platform_agents(Actor.command("test"))


@pytest.mark.parametrize(
    "url",
    [
        "/api/platform/agents?q=wow%00",
        "/api/platform/agents/wow%00cache",
        "/api/platform/logs?q=abc%00",
        "/api/platform/events?agent=wow%00",
        "/api/platform/alerts?agent=wow%00",
    ],
)
def test_nul_in_an_api_query_or_path_is_400_with_the_field(seeded, as_operator, url) -> None:
    response = as_operator.get(url)
    assert response.status_code == 400
    body = response.json()
    assert "NUL" in body["detail"]
    assert body["field"] in ("q", "agent", "path")


@pytest.mark.parametrize(
    "url", ["/agents/?q=wow%00", "/agents/wow%00cache/", "/logs/?q=abc%00", "/events/?q=a%00"]
)
def test_nul_in_a_page_query_or_path_is_400_with_the_field(seeded, as_operator, url) -> None:
    response = as_operator.get(url)
    assert response.status_code == 400
    assert b"NUL" in response.content


def test_nul_in_a_reason_changes_nothing(seeded, as_operator) -> None:
    before = Operation.objects.count()
    response = as_operator.post(
        "/api/platform/agents/wow-security/restart",
        {"reason": "because\u0000"},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["field"] == "reason"
    assert Operation.objects.count() == before
    assert not Agent.objects.filter(pending_action__gt="").exists()


def test_nul_in_the_context_form_is_400(seeded, as_operator) -> None:
    response = as_operator.post("/context/", {"agent": "wow\u0000cache"})
    assert response.status_code == 400
    assert b"agent" in response.content


@pytest.mark.parametrize("path", ["/logs", "/events", "/alerts"])
def test_an_overflowing_age_is_400_on_the_api(seeded, as_operator, path) -> None:
    response = as_operator.get(f"/api/platform{path}?since=1000000000d")
    assert response.status_code == 400
    assert "since" in response.json()["detail"]


def test_an_overflowing_age_is_400_on_metric_series(seeded, as_operator) -> None:
    response = as_operator.get(
        "/api/platform/metrics/series?metric=cpu&agent=wow-cache&since=1000000000d"
    )
    assert response.status_code == 400
    assert "since" in response.json()["detail"]


@pytest.mark.parametrize("page", ["/logs/", "/events/", "/alerts/"])
def test_an_overflowing_age_is_400_on_pages(seeded, as_operator, page) -> None:
    response = as_operator.get(f"{page}?from=1000000000d")
    assert response.status_code in (200, 400)  # pages read 'from'; must never be a 500


def test_overflowing_silence_minutes_is_400(seeded, as_operator) -> None:
    response = as_operator.post(
        "/api/platform/alerts/999999999/silence",
        {"minutes": 10000000000000},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["field"] == "minutes"


def test_an_impossible_date_in_history_is_400(seeded, as_operator) -> None:
    response = as_operator.get("/agents/wow-security/history/?since=2024-13-45&format=csv")
    assert response.status_code == 400
    assert b"since" in response.content


def test_anonymous_with_nul_is_still_refused_without_a_500(db, client: Client) -> None:
    response = client.get("/api/platform/agents?q=wow%00")
    assert response.status_code in (400, 401)


@pytest.mark.parametrize(
    "argv",
    [
        ["logs", "search", "wow-cache", "--since", "1000000000d"],
        ["logs", "search", "wow-cache", "--text", "abc\x00"],
        ["logs", "search", "wow\x00cache"],
    ],
)
def test_the_logs_command_exits_2_on_bad_input(seeded, argv) -> None:
    with pytest.raises(CommandError) as refused:
        call_command(*argv)
    assert refused.value.returncode == 2


def test_the_openapi_document_says_what_the_server_accepts(as_viewer) -> None:
    schemas = as_viewer.get("/api/platform/openapi.json").json()["components"]["schemas"]
    assert "restart" in schemas["BulkIn"]["properties"]["action"]["enum"]
    minutes = schemas["SilenceIn"]["properties"]["minutes"]
    assert (minutes["minimum"], minutes["maximum"]) == (1, 10080)
