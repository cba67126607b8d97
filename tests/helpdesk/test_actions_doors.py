"""The quick actions' doors: the API (the seed's ``POST .../actions/restart-agent``), the
``helpdesk action`` and ``helpdesk grants`` commands, and the overview panel's htmx posts."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from agents.models import Operation
from helpdesk.actions import panel
from helpdesk.models import AccessGrant, SubscriptionStatus
from portal.models import AuditEntry
from tests.helpdesk import actions_kit as kit
from tests.helpdesk.actions_kit import bring_up, link_agent, new_slug
from tests.helpdesk.conftest import make_customer

agent_root = kit.agent_root  # a fixture
API = "/api/platform/helpdesk/customers"


def post(client, path: str, body: object):
    return client.post(path, data=json.dumps(body), content_type="application/json")


# --- API -----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("agent_root")
def test_the_seeds_restart_agent_endpoint_restarts_the_customers_agent(
    acme, as_operator, redis_client
):
    agent = bring_up(link_agent(acme, new_slug("acme-bot")), redis_client)

    response = post(as_operator, f"{API}/acme-corp/actions/restart-agent", {"agent": agent.slug})

    assert response.status_code == 200, response.content
    body = response.json()
    operation = Operation.objects.get(agent=agent, action="restart")
    assert body == {
        "action": "restart-agent", "ok": True, "customer_id": "acme-corp", "agent": agent.slug,
        "message": f"Restarting {agent.name}: operation {operation.pk} runs now; its card shows "
        "when it is back.",
        "details": {"operation": str(operation.pk), "status": "pending"},
    }  # fmt: skip
    # Asked again while it runs: refused, nothing more recorded.
    again = post(as_operator, f"{API}/acme-corp/actions/restart-agent", {"agent": agent.slug})
    assert again.status_code == 409 and "already" in again.json()["detail"]
    assert Operation.objects.filter(agent=agent).count() == 4  # provision, deploy, start, restart


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("agent_root")
def test_the_action_with_the_customer_in_the_body_is_the_same_action(
    acme, as_operator, as_viewer, redis_client
):
    agent = bring_up(link_agent(acme, new_slug("acme-bot")), redis_client)
    body = {"customer_id": "acme-corp", "agent": agent.slug}

    response = post(as_operator, "/api/platform/helpdesk/actions/restart-agent", body)

    assert response.status_code == 200, response.content
    operation = Operation.objects.get(agent=agent, action="restart")
    assert response.json()["details"] == {"operation": str(operation.pk), "status": "pending"}
    assert response.json()["customer_id"] == "acme-corp"
    # A Viewer is refused on this door as on the other.
    assert post(as_viewer, "/api/platform/helpdesk/actions/restart-agent", body).status_code == 403


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"agent": "acme-bot"}, 400, "Name the customer"),
        ({"customer_id": 7, "agent": "acme-bot"}, 400, "Name the customer"),
        ({"customer_id": "nobody", "agent": "acme-bot"}, 404, "No customer has the id 'nobody'"),
        ({"customer_id": "acme-corp", "agent": "globex-bot"}, 403, "'globex-bot' is not one of Acme Corp's agents"),
    ],
)  # fmt: skip
def test_the_action_with_the_customer_in_the_body_refuses_bad_input(
    acme, as_operator, body, status, detail
):
    link_agent(acme, "acme-bot")
    link_agent(make_customer("globex", "Globex"), "globex-bot")

    response = post(as_operator, "/api/platform/helpdesk/actions/restart-agent", body)

    assert response.status_code == status, response.content
    assert response.json()["detail"].startswith(detail), response.json()
    assert not Operation.objects.exists()


def test_an_unknown_api_path_answers_json(as_operator):
    response = post(as_operator, "/api/platform/helpdesk/nothing-here", {})

    assert response.status_code == 404
    assert response.json() == {
        "detail": "There is no endpoint POST /api/platform/helpdesk/nothing-here; the endpoints "
        "are listed at /api/docs.",
        "code": "not_found",
    }
    page = as_operator.get("/helpdesk/nothing-here/")
    assert page.status_code == 404 and b"There is nothing at this address" in page.content


@pytest.mark.parametrize(
    ("path", "body", "status", "detail"),
    [
        ("nobody/actions/restart-agent", {"agent": "acme-bot"}, 404, "No customer has the id 'nobody'"),
        ("acme-corp/actions/explode", {}, 404, "'explode' is not a quick action"),
        ("acme-corp/actions/restart-agent", {"agent": "globex-bot"}, 403, "'globex-bot' is not one of Acme Corp's agents"),
        ("acme-corp/actions/restart-agent", {"agent": ["acme-bot"]}, 400, "Name the agent by its slug"),
        ("acme-corp/actions/scale-agent", {"agent": "acme-bot", "params": {"replicas": 10**30}}, 400, "replicas must be a whole number from 1 to 20"),
        ("acme-corp/actions/scale-agent", {"agent": "acme-bot", "params": [1]}, 400, "params is an object of names and values"),
        ("acme-corp/actions/reset-trial", {"params": {"days": "7\x00"}}, 400, "params.days: contains a NUL character"),
        ("acme-corp/actions/resend-email", {"params": {"kind": "welcome", "to": "x\x00@y"}}, 400, "params.to: contains a NUL character"),
    ],
)  # fmt: skip
def test_api_bad_input_answers_4xx_with_a_sentence(acme, as_operator, path, body, status, detail):
    link_agent(acme, "acme-bot")
    link_agent(make_customer("globex", "Globex"), "globex-bot")

    response = post(as_operator, f"{API}/{path}", body)

    assert response.status_code == status, response.content
    assert response.json()["detail"].startswith(detail), response.json()
    assert not Operation.objects.exists()


def test_api_roles(acme, as_viewer, as_outsider, client):
    link_agent(acme, "acme-bot")
    body = {"params": {"days": 3}}
    assert post(as_viewer, f"{API}/acme-corp/actions/reset-trial", body).status_code == 403
    assert post(as_outsider, f"{API}/acme-corp/actions/reset-trial", body).status_code in (401, 403)
    assert post(client, f"{API}/acme-corp/actions/reset-trial", body).status_code in (401, 403)
    assert as_outsider.get(f"{API}/acme-corp/grants").status_code in (401, 403)
    assert as_viewer.get(f"{API}/acme-corp/grants").status_code == 200


def test_api_grants_list_and_reset_trial(acme, as_operator, viewer):
    acme.status = SubscriptionStatus.TRIALING
    acme.save()
    grant = post(as_operator, f"{API}/acme-corp/actions/grant-access",
                 {"params": {"username": viewer.username, "hours": 3, "reason": "ZD-12"}})  # fmt: skip
    assert grant.status_code == 200, grant.content

    listed = as_operator.get(f"{API}/acme-corp/grants").json()

    assert listed["customer_id"] == "acme-corp"
    [row] = listed["grants"]
    assert (row["username"], row["role"], row["reason"], row["active"]) == (
        viewer.username, "Operator", "ZD-12", True,
    )  # fmt: skip
    assert as_operator.get(f"{API}/acme-corp/grants?all=maybe").status_code == 400
    trial = post(as_operator, f"{API}/acme-corp/actions/reset-trial", {"params": {"days": 5}})
    assert trial.status_code == 200 and trial.json()["details"]["trial_resets"] == 1


# --- command -------------------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("helpdesk", *args, stdout=out)
    except CommandError as error:
        return error.returncode, str(error)
    return 0, out.getvalue()


def test_command_takes_actions_dry_runs_and_refuses(acme, operator, viewer):
    acme.status = SubscriptionStatus.TRIALING
    acme.save()

    dry = run("action", "acme-corp", "reset-trial", "--param", "days=4", "--dry-run")
    done = run("action", "acme-corp", "reset-trial", "--param", "days=4", "--as", operator.username, "--json")  # fmt: skip
    viewer_refused = run("action", "acme-corp", "reset-trial", "--param", "days=4", "--as", viewer.username)  # fmt: skip
    bad = run("action", "acme-corp", "reset-trial", "--param", "days")
    wrong_agent = run("action", "acme-corp", "restart-agent", "--agent", "wow-cache")

    assert dry[0] == 0 and dry[1].startswith("Extend Acme Corp's trial by 4 day(s)")
    assert done[0] == 0 and json.loads(done[1])["details"]["trial_resets"] == 1
    assert viewer_refused[0] == 2 and "needs the Operator role" in viewer_refused[1]
    assert bad[0] == 1 and "write it as NAME=VALUE" in bad[1]
    assert wrong_agent[0] == 2 and "is not one of Acme Corp's agents" in wrong_agent[1]
    acme.refresh_from_db()
    assert acme.trial_resets == 1


def test_command_grants(acme, operator_actor, viewer):
    run("action", "acme-corp", "grant-access", "--param", f"username={viewer.username}", "--param", "hours=2")  # fmt: skip
    status, out = run("grants", "acme-corp", "--json")
    assert status == 0 and json.loads(out)["grants"][0]["username"] == viewer.username
    status, out = run("grants", "acme-corp")
    assert f"{viewer.username} Operator until" in out


# --- the overview panel --------------------------------------------------------------------------


def test_panel_context_costs_the_same_queries_whatever_the_agents_and_grants(
    acme, operator_actor, viewer, operator, admin, django_assert_num_queries
):
    link_agent(acme, "acme-bot")
    panel.panel_context(operator_actor, acme)  # the actor's role is read once, then kept
    with django_assert_num_queries(2):
        panel.panel_context(operator_actor, acme)
    for n in range(5):
        link_agent(acme, f"acme-bot-{n}")
    AccessGrant.objects.create(
        customer=acme, grantee=viewer, expires_at="2999-01-01T00:00Z", actor="x"
    )
    with django_assert_num_queries(2):
        context = panel.panel_context(operator_actor, acme)
    assert len(context["action_agents"]) == 6 and len(context["active_grants"]) == 1


def test_panel_post_answers_the_panel_and_a_toast(acme, as_operator, as_viewer):
    acme.status = SubscriptionStatus.TRIALING
    acme.save()
    url = reverse("helpdesk:action", args=["acme-corp", "reset-trial"])

    response = as_operator.post(url, {"days": "3"}, HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="hd-actions"' in html and "toast-success" in html and "trial runs until" in html
    refused = as_operator.post(url, {"days": "999"}, HTTP_HX_REQUEST="true")
    assert (
        refused.status_code == 400
        and "days must be a whole number from 1 to 30" in refused.content.decode()
    )
    viewer = as_viewer.post(url, {"days": "3"}, HTTP_HX_REQUEST="true")
    assert viewer.status_code == 403
    plain = as_operator.post(url, {"days": "3"})
    assert plain.status_code == 302 and plain["Location"] == reverse(
        "helpdesk:customer", args=["acme-corp"]
    )
    assert as_operator.get(url).status_code == 405
    assert AuditEntry.objects.filter(action="helpdesk.action.reset-trial", outcome="success").count() == 2  # fmt: skip


def test_panel_renders_buttons_for_operators_only(acme, operator_actor, viewer_actor, rf):
    from django.template.loader import render_to_string

    link_agent(acme, "acme-bot")
    base = {"customer": acme}
    operating = render_to_string(
        "helpdesk/actions/_panel.html",
        {**base, "can_operate": True, **panel.panel_context(operator_actor, acme)},
    )
    viewing = render_to_string(
        "helpdesk/actions/_panel.html",
        {**base, "can_operate": False, **panel.panel_context(viewer_actor, acme)},
    )
    assert 'data-action="restart-agent"' in operating and "hx-confirm=" in operating
    assert 'data-action="restart-agent"' not in viewing
    assert "Quick actions need the Operator role." in viewing


def test_a_viewer_with_a_grant_gets_the_restart_buttons_of_this_customer(
    acme, viewer, viewer_actor, operator_actor, as_viewer
):
    from django.template.loader import render_to_string

    link_agent(acme, "acme-bot")
    render = lambda: render_to_string(  # noqa: E731
        "helpdesk/actions/_panel.html",
        {"customer": acme, "can_operate": False, **panel.panel_context(viewer_actor, acme)},
    )
    assert 'data-action="restart-agent"' not in render()

    from helpdesk.actions.services import run_action

    run_action(
        operator_actor, acme, "grant-access", params={"username": viewer.username, "hours": 1}
    )

    html = render()
    assert 'data-action="restart-agent"' in html and 'data-action="reset-trial"' not in html
    # The restart itself is refused by the agent's state (DRAFT), not by the role.
    url = reverse("helpdesk:action", args=["acme-corp", "restart-agent"])
    answer = as_viewer.post(url, {"agent": "acme-bot"}, HTTP_HX_REQUEST="true")
    assert answer.status_code == 409 and "is DRAFT" in answer.content.decode()
