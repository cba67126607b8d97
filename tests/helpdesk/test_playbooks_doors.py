"""The playbooks' doors: the API (library, dry run, run, runs), the ``helpdesk playbook``
command, the overview panel's htmx posts, and the admin (an edit is a new version)."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from agents.workflows.models import WorkflowRun
from helpdesk.models import Playbook, PlaybookRun, SubscriptionStatus
from helpdesk.playbooks import panel, services
from portal.actors import Actor

API = "/api/platform/helpdesk"


@pytest.fixture
def seeded(db):
    return services.seed_playbooks(Actor.command("test"))


@pytest.fixture
def expired(acme):
    acme.status = SubscriptionStatus.EXPIRED
    acme.trial_ends_at = timezone.now() - timedelta(days=1)
    acme.save()
    return acme


def post(client, path: str, body: object = None):
    return client.post(path, data=json.dumps(body or {}), content_type="application/json")


# --- API -----------------------------------------------------------------------------------------


def test_api_lists_the_library(seeded, as_viewer, as_outsider):
    body = as_viewer.get(f"{API}/playbooks").json()
    slugs = [p["slug"] for p in body["playbooks"]]
    assert "agent-not-responding" in slugs and len(slugs) == 7
    first = next(p for p in body["playbooks"] if p["slug"] == "crash-loop")
    assert first["steps"][1]["approval"] is True and first["steps"][1]["target"] == "crashing"
    assert as_outsider.get(f"{API}/playbooks").status_code in (401, 403)


def test_api_dry_run_then_run_selected_steps(seeded, expired, as_operator, as_viewer):
    dry = post(as_viewer, f"{API}/customers/acme-corp/playbooks/trial-not-activating/dry-run")
    assert dry.status_code == 200, dry.content
    assert dry.json()["dry_run"] is True and dry.json()["plan"][0]["ok"] is False

    refused = post(as_viewer, f"{API}/customers/acme-corp/playbooks/trial-not-activating/run")
    started = post(as_operator, f"{API}/customers/acme-corp/playbooks/trial-not-activating/run",
                   {"steps": ["trial", "reset-trial"]})  # fmt: skip

    assert refused.status_code == 403
    assert started.status_code == 201, started.content
    body = started.json()
    run = WorkflowRun.objects.get(pk=body["workflow_run"])
    assert body["workflow_url"] == reverse("workflows:run", args=[run.pk])
    assert [s["id"] for s in body["plan"]] == ["trial", "reset-trial"]
    assert run.subject == "acme-corp" and run.parameters["steps"] == "trial,reset-trial"
    runs = as_viewer.get(f"{API}/customers/acme-corp/playbooks/runs").json()["runs"]
    assert [r["dry_run"] for r in runs] == [False, True]


@pytest.mark.parametrize(
    ("path", "body", "status", "detail"),
    [
        ("customers/nobody/playbooks/crash-loop/dry-run", {}, 404, "No customer has the id"),
        ("customers/acme-corp/playbooks/nope/dry-run", {}, 404, "There is no playbook 'nope'"),
        ("customers/acme-corp/playbooks/crash-loop/run", {"steps": "crashing,zzz"}, 400, "Crash loop has no step 'zzz'"),
        ("customers/acme-corp/playbooks/crash-loop/run", {"steps": {"a": 1}}, 400, "steps is a list of step ids"),
        ("customers/acme-corp/playbooks/crash-loop/run", {"steps": ["x\x00"]}, 400, "steps[0]: contains a NUL"),
    ],
)  # fmt: skip
def test_api_bad_input(seeded, acme, as_operator, path, body, status, detail):
    response = post(as_operator, f"{API}/{path}", body)
    assert response.status_code == status, response.content
    assert detail in response.json()["detail"]
    assert not WorkflowRun.objects.exists()


# --- command -------------------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("helpdesk", *args, stdout=out)
    except CommandError as error:
        return error.returncode, str(error)
    return 0, out.getvalue()


def test_command_lists_dry_runs_and_runs(seeded, expired, operator, viewer):
    status, listing = run("playbook", "list")
    assert status == 0 and "trial-not-activating v1: Trial not activating" in listing
    status, dry = run("playbook", "dry-run", "acme-corp", "trial-not-activating")
    assert status == 0 and "trial: NOT OK  The trial is active" in dry
    status, refused = run(
        "playbook", "run", "acme-corp", "trial-not-activating", "--as", viewer.username
    )
    assert status == 2 and "needs the Operator role" in refused
    status, started = run("playbook", "run", "acme-corp", "trial-not-activating", "--steps", "trial",
                          "--as", operator.username, "--json")  # fmt: skip
    assert status == 0 and json.loads(started)["plan"] == [
        {"id": "trial", "kind": "check", "title": "The trial is active", "approval": False}
    ]
    status, missing = run("playbook", "run", "acme-corp")
    assert status == 1 and "needs CUSTOMER and SLUG" in missing


# --- the overview panel --------------------------------------------------------------------------


def test_panel_context_costs_two_queries(seeded, acme, operator_actor, django_assert_num_queries):
    services.dry_run(operator_actor, acme, services.get_playbook("crash-loop"))
    panel.panel_context(operator_actor, acme)  # the actor's role is read once, then kept
    with django_assert_num_queries(2):
        context = panel.panel_context(operator_actor, acme)
    assert len(context["playbooks"]) == 7 and len(context["playbook_runs"]) == 1


def test_panel_dry_run_shows_the_plan_inline_and_runs_the_checked_steps(
    seeded, expired, as_operator, as_viewer
):
    dry_url = reverse("helpdesk:playbook-dry-run", args=["acme-corp", "trial-not-activating"])
    run_url = reverse("helpdesk:playbook-run", args=["acme-corp", "trial-not-activating"])

    dry = as_viewer.post(dry_url, HTTP_HX_REQUEST="true")
    html = dry.content.decode()
    assert dry.status_code == 200 and 'data-dry-run-result="trial-not-activating"' in html
    assert "The trial is not active" in html and 'data-run="trial-not-activating"' not in html
    operator_html = as_operator.post(dry_url, HTTP_HX_REQUEST="true").content.decode()
    assert 'data-run="trial-not-activating"' in operator_html and "hx-confirm=" in operator_html

    started = as_operator.post(run_url, {"steps": ["trial", "welcome"]}, HTTP_HX_REQUEST="true")
    assert started.status_code == 200
    record = PlaybookRun.objects.get(dry_run=False)
    assert f"workflow run #{record.workflow_run_id}" in started.content.decode()
    assert [s["id"] for s in record.plan] == ["trial", "welcome"]
    assert as_viewer.post(run_url, HTTP_HX_REQUEST="true").status_code == 403
    assert as_operator.get(run_url).status_code == 405
    plain = as_operator.post(dry_url)
    assert plain.status_code == 302


# --- admin ---------------------------------------------------------------------------------------


def test_admin_edit_saves_a_new_version(seeded, as_admin):
    old = Playbook.objects.get(slug="payment-failures")
    url = reverse("admin:helpdesk_playbook_change", args=[old.pk])
    form = {"slug": old.slug, "title": "Payment failures", "description": "Edited in the admin.",
            "category": "payment", "steps": json.dumps(old.steps)}  # fmt: skip

    bad = as_admin.post(url, {**form, "steps": json.dumps([{"id": "x", "kind": "nope"}])})
    response = as_admin.post(url, form)

    assert bad.status_code == 200 and "kind is check or action" in bad.content.decode()
    assert response.status_code == 302, response.content.decode()[:2000]
    versions = list(Playbook.objects.filter(slug="payment-failures").order_by("version"))
    assert [(p.version, p.active) for p in versions] == [(1, False), (2, True)]
    assert versions[0].description != "Edited in the admin." == versions[1].description
    assert as_admin.get(reverse("admin:helpdesk_playbookrun_changelist")).status_code == 200


def test_admin_adds_a_playbook_and_only_admins_edit(seeded, as_admin, as_operator):
    steps = [
        {"id": "trial", "kind": "check", "title": "Trial", "check": "trial_active", "expect": True}
    ]
    form = {"slug": "my-playbook", "title": "Mine", "description": "", "category": "trial",
            "steps": json.dumps(steps)}  # fmt: skip

    response = as_admin.post(reverse("admin:helpdesk_playbook_add"), form)

    assert response.status_code == 302, response.content.decode()[:2000]
    assert Playbook.objects.get(slug="my-playbook").version == 1
    assert as_operator.get(reverse("admin:helpdesk_playbook_changelist")).status_code in (302, 403)


def test_the_customer_page_carries_both_panels(seeded, acme, as_operator, as_viewer):
    from tests.helpdesk.actions_kit import link_agent

    link_agent(acme, "acme-bot")
    operator_page = as_operator.get("/helpdesk/customers/acme-corp/").content.decode()
    viewer_page = as_viewer.get("/helpdesk/customers/acme-corp/").content.decode()

    for page in (operator_page, viewer_page):
        assert 'id="hd-actions"' in page and 'id="hd-playbooks"' in page
        assert 'data-playbook="agent-not-responding"' in page
    assert 'data-action="restart-agent"' in operator_page
    assert 'data-action="restart-agent"' not in viewer_page
