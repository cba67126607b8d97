"""The Help Desk pages and the customer API: search as you type (the fragment for htmx, the
whole page otherwise), the customer overview, the empty state, bad input and roles."""

from __future__ import annotations

import pytest

from helpdesk.models import Customer


@pytest.fixture
def directory(acme):
    from tests.helpdesk.conftest import make_customer

    make_customer("globex", "Globex Corporation")
    return acme


def test_an_empty_desk_says_how_to_load_the_demo(db, as_viewer):
    response = as_viewer.get("/helpdesk/")

    assert response.status_code == 200
    assert b"No customers yet" in response.content
    assert b"helpdesk load-demo" in response.content


def test_search_as_you_type_answers_only_the_results(directory, as_viewer):
    response = as_viewer.get("/helpdesk/?q=acme", headers={"HX-Request": "true"})

    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="hd-results"' in body
    assert "Acme Corp" in body and "Globex" not in body
    assert "<html" not in body
    assert "HX-Request" in response["Vary"]


def test_the_search_page_works_without_javascript(directory, as_viewer):
    response = as_viewer.get("/helpdesk/?q=globex")

    body = response.content.decode()
    assert "<html" in body and "Globex Corporation" in body
    assert "/helpdesk/customers/globex/" in body


@pytest.mark.parametrize("q", ["a\x00b", "x" * 150])
def test_bad_search_text_is_answered_400_with_the_reason(directory, as_viewer, q):
    for headers in ({}, {"HX-Request": "true"}):
        response = as_viewer.get("/helpdesk/", {"q": q}, headers=headers)
        assert response.status_code == 400
        # NUL is refused by the portal's middleware for every page; length by the search.
        assert b"NUL" in response.content or b"at most 100" in response.content


def test_the_customer_page_shows_profile_agents_and_timeline(directory, as_viewer):
    response = as_viewer.get("/helpdesk/customers/acme-corp/")

    assert response.status_code == 200
    body = response.content.decode()
    for text in ("Acme Corp", "wile@acme.com", "Agents", "Activity, last 30 days", "hd-timeline"):
        assert text in body


def test_the_timeline_fragment_filters_failures(directory, as_viewer):
    response = as_viewer.get(
        "/helpdesk/customers/acme-corp/?part=timeline&failures=1", headers={"HX-Request": "true"}
    )

    assert response.status_code == 200
    assert b'id="hd-timeline"' in response.content and b"<html" not in response.content
    assert b"Show all" in response.content


def test_an_unknown_customer_is_404(db, as_viewer):
    assert as_viewer.get("/helpdesk/customers/nobody/").status_code == 404


def test_someone_without_a_role_cannot_see_the_desk(directory, as_outsider):
    assert as_outsider.get("/helpdesk/").status_code == 403
    assert as_outsider.get("/helpdesk/customers/acme-corp/").status_code == 403


def test_the_search_api_answers_the_seed_shape(directory, as_viewer):
    response = as_viewer.get("/api/platform/helpdesk/customers/search?q=acme")

    assert response.status_code == 200
    [first, *_] = response.json()["customers"]
    assert {"customer_id", "company_name", "email", "agents_count", "status"} <= set(first)
    assert first["customer_id"] == "acme-corp"


@pytest.mark.parametrize(
    "query", ["q=a%00b", "q=" + "x" * 101, "q=acme&limit=0", "q=acme&limit=abc"]
)
def test_the_search_api_refuses_bad_input_with_400(directory, as_viewer, query):
    response = as_viewer.get(f"/api/platform/helpdesk/customers/search?{query}")

    assert response.status_code == 400
    assert response.json()["detail"].startswith(("q:", "limit:"))


def test_the_overview_api_answers_customer_agents_and_recent_issues(directory, as_viewer):
    response = as_viewer.get("/api/platform/helpdesk/customers/acme-corp/overview")

    assert response.status_code == 200
    data = response.json()
    assert data["customer"]["customer_id"] == "acme-corp"
    assert {"customer", "agents", "recent_issues", "interactions", "events", "activity"} <= set(
        data
    )
    assert len(data["activity"]) == 30


def test_the_overview_api_refuses_a_flag_that_is_not_one(directory, as_viewer):
    response = as_viewer.get("/api/platform/helpdesk/customers/acme-corp/overview?failures=maybe")

    assert response.status_code == 400
    assert response.json()["detail"] == "failures: say true or false, not 'maybe'."
    only = as_viewer.get("/api/platform/helpdesk/customers/acme-corp/overview?failures=true")
    assert only.status_code == 200


def test_the_overview_api_404s_an_unknown_customer(db, as_viewer):
    response = as_viewer.get("/api/platform/helpdesk/customers/nobody/overview")

    assert response.status_code == 404
    assert "No customer has the id" in response.json()["detail"]


def test_the_api_refuses_someone_without_a_role(directory, as_outsider):
    assert as_outsider.get("/api/platform/helpdesk/customers/search?q=a").status_code == 401
    assert Customer.objects.count() == 2


def test_a_customer_with_many_agents_lists_those_needing_attention_first_and_shows_all_on_request(
    acme, as_operator
):
    from agents.choices import Health
    from agents.models import Agent
    from helpdesk.models import CustomerAgent
    from helpdesk.overview import AGENTS_SHOWN

    count = AGENTS_SHOWN + 5
    agents = Agent.objects.bulk_create(
        Agent(slug=f"acme-{n:02d}", name=f"Acme agent {n:02d}", tier="customer",
              state="DEPLOYED", health=Health.UNHEALTHY if n == count - 1 else Health.UNKNOWN)
        for n in range(count)
    )  # fmt: skip
    CustomerAgent.objects.bulk_create(CustomerAgent(customer=acme, agent=a) for a in agents)

    body = as_operator.get("/helpdesk/customers/acme-corp/").content.decode()
    table = body.split('class="table compact hd-agents"')[1].split("</table>")[0]
    actions = body.split('class="table compact hd-action-table"')[1].split("</table>")[0]
    assert table.count("<tr data-agent=") == AGENTS_SHOWN == actions.count("<tr data-agent=")
    # The unhealthy one, last by name, comes first; the last five by name wait for "show all".
    assert table.index(f'data-agent="acme-{count - 1}"') < table.index('data-agent="acme-00"')
    assert f'data-agent="acme-{count - 2}"' not in table
    assert f'data-agents-hidden="{count - AGENTS_SHOWN}"' in body
    assert f"Show all {count}" in body

    everything = as_operator.get("/helpdesk/customers/acme-corp/?agents=all").content.decode()
    assert everything.count('<tr data-agent="acme-') == 2 * count  # the table and the actions
    assert "data-agents-hidden" not in everything
    overview = as_operator.get("/api/platform/helpdesk/customers/acme-corp/overview").json()
    assert len(overview["agents"]) == count  # the API answers every one
