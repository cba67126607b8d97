"""One read layer, three doors: a filter that names nothing gets the same sentence from the
agent list page (which still shows every agent), the API (400) and the ``agents`` command
(exit status 2), each spelling the parameter its own way."""

from __future__ import annotations

import html
import io
import json
import re

import pytest
from django.core.management import CommandError, call_command

from portal import services as portal_services
from portal.actors import Actor

SENTENCES = {
    "state": "'bogus' is not a state; use one of "
    "DRAFT, PROVISIONED, DEPLOYED, RUNNING, SUSPENDED, STOPPED, ERRORED, REVOKED.",
    "tier": "'bogus' is not a tier; use one of platform, customer.",
    "health": "'bogus' is not a health; use one of unknown, healthy, degraded, unhealthy.",
}


@pytest.fixture
def viewer_token(viewer) -> str:
    return portal_services.create_api_token(viewer, Actor.command("test"))[1]


@pytest.mark.parametrize("field", list(SENTENCES))
def test_the_page_names_a_bad_filter_and_shows_every_agent(seeded, as_viewer, field) -> None:
    response = as_viewer.get("/agents/", {field: "bogus"})
    assert response.status_code == 200
    page = response.content.decode()
    assert f"{field}={SENTENCES[field]}" in html.unescape(page)
    shown = re.findall(r'<article [^>]*id="agent-([a-z0-9-]+)"', page)
    assert sorted(shown) == sorted(seeded)  # the bad filter filters nothing


@pytest.mark.parametrize("field", list(SENTENCES))
def test_the_api_answers_a_bad_filter_400_with_the_same_sentence(
    client, seeded, viewer_token, field
) -> None:
    response = client.get(
        "/api/platform/agents", {field: "bogus"}, HTTP_AUTHORIZATION=f"Bearer {viewer_token}"
    )
    assert response.status_code == 400
    assert response.json()["detail"] == f"{field}={SENTENCES[field]}"


@pytest.mark.parametrize("field", list(SENTENCES))
def test_the_command_refuses_a_bad_filter_with_the_same_sentence(seeded, field) -> None:
    out = io.StringIO()
    with pytest.raises(CommandError) as refused:
        call_command("agents", "list", f"--{field}", "bogus", stdout=out, stderr=io.StringIO())
    assert str(refused.value) == f"--{field} {SENTENCES[field]}"
    # 2: a usage error, as argparse gives for an option it cannot parse.
    assert refused.value.returncode == 2
    assert out.getvalue() == ""


def test_good_filters_agree_at_every_door(seeded, as_viewer, client, viewer_token) -> None:
    """The same filters choose the same agents: the API and the command list the tier the
    page shows (case aside)."""
    api = client.get(
        "/api/platform/agents",
        {"tier": "Platform", "state": "draft"},
        HTTP_AUTHORIZATION=f"Bearer {viewer_token}",
    )
    out = io.StringIO()
    call_command("agents", "list", "--tier", "PLATFORM", "--state", "draft", "--json", stdout=out)
    assert sorted(agent["slug"] for agent in api.json()) == sorted(seeded)
    assert sorted(agent["slug"] for agent in json.loads(out.getvalue())) == sorted(seeded)


def test_a_bad_history_filter_is_named_at_the_page_and_refused_by_the_api(
    client, seeded, as_viewer, viewer_token
) -> None:
    sentence = "'bogus' is not a lifecycle action; use one of provision, deploy, start, stop"
    answer = client.get(
        "/api/platform/agents/wow-cache/history",
        {"action": "bogus"},
        HTTP_AUTHORIZATION=f"Bearer {viewer_token}",
    )
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith(f"action={sentence}")
    # The page names it and keeps showing the history, unfiltered.
    page = as_viewer.get("/agents/wow-cache/history/", {"action": "bogus"})
    assert page.status_code == 200
    assert f"action={sentence}" in html.unescape(page.content.decode())
