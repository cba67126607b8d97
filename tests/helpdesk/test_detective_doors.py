"""The Issue Detective's doors: the API, ``manage.py helpdesk diagnose|diagnoses|verdict`` and the
overview's panel with its htmx views; each role, bad input refused with nothing saved, the fix
applied once through the quick actions."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.template.loader import render_to_string
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from helpdesk.detective import panel, services
from helpdesk.models import Customer, Diagnosis, SubscriptionStatus
from portal.models import AuditEntry
from tests.helpdesk import detective_kit as kit

API = "/api/platform/helpdesk"
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def broken(db, redis_client):
    """A customer whose worker crashed three times."""
    owner = kit.customer("broken-co", "Broken Co")
    worker = kit.agent(owner, "broken-worker")
    kit.traffic(owner, worker, count=30)
    kit.idle_stream(redis_client, worker)
    kit.crash(worker, times=3)
    return owner


@pytest.fixture
def expired(db, redis_client):
    """A customer whose trial ran out yesterday: its fix (reset the trial) needs no runtime."""
    return kit.customer("late-co", "Late Co", status=SubscriptionStatus.TRIALING,
                        trial_ends_at=timezone.now() - timedelta(days=1))  # fmt: skip


def post(client, url: str, body: object, **extra):
    return client.post(url, json.dumps(body), content_type="application/json", **extra)


# --- API ---------------------------------------------------------------------------------------


def test_an_operator_diagnoses_through_the_api(broken, as_operator):
    answer = post(
        as_operator, f"{API}/customers/broken-co/diagnose", {"symptom": "agent not responding"}
    )
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["causes"][0]["cause"] == "crash"
    assert set(body["causes"][0]) >= {"cause", "title", "confidence", "evidence", "fix"}
    assert body["causes"][0]["fix"]["action"] == "restart-agent"
    assert body["elapsed_ms"] >= 0 and isinstance(body["similar"], list)
    saved = Diagnosis.objects.get(pk=body["diagnosis_id"])
    assert (saved.top_cause, saved.actor) == ("crash", "user:otto")
    assert AuditEntry.objects.filter(action="helpdesk.diagnose", target="broken-co").count() == 1


def test_viewers_read_diagnoses_but_may_not_make_one(broken, as_viewer, operator_actor):
    made = services.diagnose(operator_actor, broken, "agent not responding")
    refused = post(as_viewer, f"{API}/customers/broken-co/diagnose", {"symptom": "down"})
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert Diagnosis.objects.count() == 1
    listing = as_viewer.get(f"{API}/customers/broken-co/diagnoses").json()
    assert [d["diagnosis_id"] for d in listing["diagnoses"]] == [made.pk]
    one = as_viewer.get(f"{API}/diagnoses/{made.pk}")
    assert one.status_code == 200 and one.json()["top_cause"] == "crash"


def test_an_outsider_learns_nothing(broken, as_outsider, operator_actor):
    made = services.diagnose(operator_actor, broken, "agent not responding")
    for answer in (
        as_outsider.get(f"{API}/customers/broken-co/diagnoses"),
        as_outsider.get(f"{API}/customers/nobody/diagnoses"),
        as_outsider.get(f"{API}/diagnoses/{made.pk}"),
        post(as_outsider, f"{API}/customers/broken-co/diagnose", {"symptom": "down"}),
    ):
        assert answer.status_code in (401, 403)  # the API lets in no one without a role
    assert Diagnosis.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"symptom": ""}, "describe what the customer sees"),
        ({"symptom": "   "}, "describe what the customer sees"),
        ({"symptom": "down\x00"}, "NUL"),
        ({"symptom": "x" * 10_000}, "10,000 characters is too long"),
        ({"symptom": "down", "category": "weather"}, "category: 'weather' is not one"),
    ],
)
def test_bad_symptoms_are_refused_and_nothing_saved(broken, as_operator, body, says):
    answer = post(as_operator, f"{API}/customers/broken-co/diagnose", body)
    assert answer.status_code == 400
    assert says in answer.json()["detail"]
    assert Diagnosis.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"symptom": ["down"]}, "symptom: describe the problem as text"),
        ({"symptom": 5}, "symptom: describe the problem as text"),
        ({"symptom": "down", "category": 3}, "category: '3' is not one"),
    ],
)
def test_a_wrong_type_is_refused(broken, as_operator, body, says):
    answer = post(as_operator, f"{API}/customers/broken-co/diagnose", body)
    assert answer.status_code == 400 and says in answer.json()["detail"]
    assert answer.json()["code"] == "invalid"
    assert Diagnosis.objects.count() == 0


def test_a_category_alone_is_a_symptom(broken, as_operator):
    answer = post(as_operator, f"{API}/customers/broken-co/diagnose",
                  {"symptom": "", "category": "agent_not_responding"})  # fmt: skip
    assert answer.status_code == 200
    assert answer.json()["symptom"] == "Agent not responding"


def test_unknown_customers_and_diagnoses_are_404(db, as_operator):
    assert (
        post(as_operator, f"{API}/customers/nobody/diagnose", {"symptom": "down"}).status_code
        == 404
    )
    assert as_operator.get(f"{API}/customers/nobody/diagnoses").status_code == 404
    for bad in ("999999", "abc", "1" * 40):
        assert as_operator.get(f"{API}/diagnoses/{bad}").status_code == 404
        assert (
            post(as_operator, f"{API}/diagnoses/{bad}/verdict", {"verdict": "right"}).status_code
            == 404
        )


def test_a_bad_limit_is_400(broken, as_viewer):
    for bad in ("0", "1000", "x"):
        assert (
            400
            <= as_viewer.get(f"{API}/customers/broken-co/diagnoses?limit={bad}").status_code
            < 500
        )


def test_a_verdict_is_recorded_once(broken, as_operator, as_viewer, operator_actor):
    made = services.diagnose(operator_actor, broken, "agent not responding")
    url = f"{API}/diagnoses/{made.pk}/verdict"
    assert post(as_viewer, url, {"verdict": "right"}).status_code == 403
    for _ in range(2):
        answer = post(as_operator, url, {"verdict": "right"})
        assert answer.status_code == 200
    assert (answer.json()["verdict"], answer.json()["actual_cause"]) == ("right", "crash")
    verdicts = AuditEntry.objects.filter(action="helpdesk.diagnosis_verdict")
    assert verdicts.filter(outcome="success").count() == 1  # the same verdict again: no change
    assert verdicts.get(outcome="refused").actor == "user:vera"
    wrong = post(as_operator, url, {"verdict": "wrong", "actual_cause": "out_of_memory"})
    assert wrong.json()["actual_cause"] == "out_of_memory"
    for body in ({"verdict": "maybe"}, {"verdict": "wrong", "actual_cause": "gremlins"},
                 {"verdict": "right", "actual_cause": "queue_backlog"}, {"verdict": ["right"]},
                 {"verdict": "wrong", "actual_cause": 7}, {}):  # fmt: skip
        assert post(as_operator, url, body).status_code == 400
    made.refresh_from_db()
    assert made.verdict == "wrong"


def test_the_fix_is_applied_once_through_the_quick_actions(
    expired, as_operator, as_viewer, operator_actor
):
    made = services.diagnose(operator_actor, expired, "trial not activating")
    assert made.causes[0]["fix"]["action"] == "reset-trial"
    url = f"{API}/diagnoses/{made.pk}/apply"
    assert post(as_viewer, url, {"index": 0}).status_code == 403
    assert post(as_operator, url, {"index": 7}).status_code == 400
    for index in (2**70, "first", None, True, -1, [0]):
        assert post(as_operator, url, {"index": index}).status_code == 400
    answer = post(as_operator, url, {"index": 0})
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["ok"] is True and body["action"] == "reset-trial"
    assert body["diagnosis"]["applied_fix"]["status"] == "done"
    assert Customer.objects.get(pk=expired.pk).trial_ends_at > timezone.now() + timedelta(days=13)
    again = post(as_operator, url, {"index": 0})
    assert again.status_code == 409 and "applied already" in again.json()["detail"]
    applied = AuditEntry.objects.filter(action="helpdesk.diagnosis_apply")
    assert applied.filter(outcome="success").count() == 1
    assert set(applied.filter(outcome="refused").values_list("actor", flat=True)) <= {"user:vera"}


def test_a_refused_fix_leaves_the_diagnosis_as_it_was(broken, as_operator, operator_actor):
    made = services.diagnose(operator_actor, broken, "agent not responding")
    made.causes[0]["fix"]["agent"] = "someone-elses"
    made.save()
    kit.agent(None, "someone-elses")
    answer = post(as_operator, f"{API}/diagnoses/{made.pk}/apply", {"index": 0})
    assert 400 <= answer.status_code < 500
    made.refresh_from_db()
    assert made.applied_fix == {}


# --- the command -------------------------------------------------------------------------------


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("helpdesk", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_the_command_prints_ranked_causes_with_evidence_and_fix(broken, operator):
    text = run("diagnose", "broken-co", "agent not responding", "--as", operator.username)
    assert "0. Broken Worker crashed repeatedly  [crash]  confidence" in text
    assert "3 crash(es) in the last hour" in text
    assert "fix: Restart Broken Worker  (--apply 0)" in text
    data = json.loads(
        run("diagnose", "broken-co", "agent down", "--json", "--as", operator.username)
    )
    assert data["causes"][0]["cause"] == "crash" and data["diagnosis_id"]
    listing = json.loads(run("diagnoses", "broken-co", "--json"))
    assert len(listing["diagnoses"]) == 2
    judged = json.loads(run("verdict", str(data["diagnosis_id"]), "right", "--json"))
    assert judged["verdict"] == "right"


def test_the_command_applies_a_fix(expired, operator):
    data = json.loads(
        run("diagnose", "late-co", "trial", "--apply", "0", "--json", "--as", operator.username)
    )
    assert data["ok"] is True and data["diagnosis"]["applied_fix"]["action"] == "reset-trial"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("diagnose", "nobody", "down"), "No customer has the id 'nobody'"),
        (("diagnose", "broken-co", ""), "describe what the customer sees"),
        (("diagnose", "broken-co", "x" * 10_000), "too long"),
        (("verdict", "424242", "right"), "No diagnosis has the id"),
    ],
)
def test_the_command_refuses_bad_input_with_status_2(broken, args, says):
    with pytest.raises(CommandError) as error:
        run(*args)
    assert error.value.returncode == 2 and says in str(error.value)
    assert Diagnosis.objects.count() == 0


def test_a_viewer_may_not_diagnose_from_the_shell(broken, viewer):
    with pytest.raises(CommandError) as error:
        run("diagnose", "broken-co", "down", "--as", viewer.username)
    assert error.value.returncode == 2
    assert (
        json.loads(run("diagnoses", "broken-co", "--json", "--as", viewer.username))["diagnoses"]
        == []
    )


# --- the panel and its views -------------------------------------------------------------------


def test_the_panel_costs_the_same_with_one_diagnosis_or_many(
    broken, operator_actor, django_assert_num_queries
):
    services.diagnose(operator_actor, broken, "agent not responding")
    with CaptureQueriesContext(connection) as first:
        panel.panel_context(operator_actor, broken)
    for _ in range(5):
        services.diagnose(operator_actor, broken, "agent not responding")
    with django_assert_num_queries(len(first)):
        context = panel.panel_context(operator_actor, broken)
    html = render_to_string("helpdesk/detective/_panel.html",
                            {**context, "customer": broken, "can_operate": True})  # fmt: skip
    assert 'id="hd-detective"' in html and "Apply: Restart Broken Worker" in html
    assert "Earlier diagnoses (5)" in html
    viewer_html = render_to_string("helpdesk/detective/_panel.html",
                                   {**context, "customer": broken, "can_operate": False})  # fmt: skip
    assert "Apply:" not in viewer_html and "Operators can diagnose" in viewer_html


def test_diagnosing_from_the_page_answers_the_fragment(broken, as_operator):
    answer = as_operator.post(
        "/helpdesk/customers/broken-co/diagnose/", {"symptom": "agent not responding"}, **HX
    )
    assert answer.status_code == 200
    html = answer.content.decode()
    assert html.startswith('<div id="hd-diagnosis"') and 'data-cause="crash"' in html
    assert "hx-confirm=" in html and "Most likely: Broken Worker crashed" in html
    plain = as_operator.post("/helpdesk/customers/broken-co/diagnose/", {"symptom": "down"})
    made = Diagnosis.objects.order_by("-pk").first()
    assert plain.status_code == 302 and plain["Location"] == f"/helpdesk/diagnoses/{made.pk}/"


def test_the_diagnosis_page_and_its_roles(broken, as_viewer, as_outsider, operator_actor):
    made = services.diagnose(operator_actor, broken, "agent not responding")
    page = as_viewer.get(f"/helpdesk/diagnoses/{made.pk}/")
    assert page.status_code == 200 and b"Diagnosis #" in page.content
    assert b"Apply:" not in page.content  # a viewer sees the fix, not its button
    assert as_outsider.get(f"/helpdesk/diagnoses/{made.pk}/").status_code == 403
    assert as_viewer.get("/helpdesk/diagnoses/424242/").status_code == 302  # back, with a message
    assert as_viewer.post(f"/helpdesk/diagnoses/{made.pk}/").status_code == 405


def test_a_viewer_posting_gets_a_403_toast_and_nothing_changes(broken, as_viewer, operator_actor):
    made = services.diagnose(operator_actor, broken, "agent not responding")
    for url, data in (
        ("/helpdesk/customers/broken-co/diagnose/", {"symptom": "down"}),
        (f"/helpdesk/diagnoses/{made.pk}/verdict/", {"verdict": "right"}),
        (f"/helpdesk/diagnoses/{made.pk}/apply/", {"index": "0"}),
    ):
        answer = as_viewer.post(url, data, **HX)
        assert answer.status_code == 403 and answer["HX-Reswap"] == "none"
    made.refresh_from_db()
    assert (Diagnosis.objects.count(), made.verdict, made.applied_fix) == (1, "open", {})


def test_verdict_and_apply_from_the_page(expired, as_operator, operator_actor):
    made = services.diagnose(operator_actor, expired, "trial not activating")
    verdict = as_operator.post(
        f"/helpdesk/diagnoses/{made.pk}/verdict/", {"verdict": "right"}, **HX
    )
    assert verdict.status_code == 200 and b'data-verdict="right"' in verdict.content
    applied = as_operator.post(f"/helpdesk/diagnoses/{made.pk}/apply/", {"index": "0"}, **HX)
    assert applied.status_code == 200 and b'data-applied="done"' in applied.content
    again = as_operator.post(f"/helpdesk/diagnoses/{made.pk}/apply/", {"index": "0"}, **HX)
    assert again.status_code == 409
    bad = as_operator.post("/helpdesk/customers/late-co/diagnose/", {"symptom": "a\x00b"}, **HX)
    assert bad.status_code == 400 and b"NUL" in bad.content


def test_applying_the_top_fix_asks_for_the_restart(broken, as_operator, operator_actor):
    from agents.models import Operation

    made = services.diagnose(operator_actor, broken, "agent not responding")
    answer = post(as_operator, f"{API}/diagnoses/{made.pk}/apply", {"index": 0})
    assert answer.status_code == 200, answer.content
    assert answer.json()["action"] == "restart-agent" and answer.json()["ok"] is True
    operation = Operation.objects.get(agent__slug="broken-worker")
    assert (operation.action, operation.actor) == ("restart", "user:otto")
    assert AuditEntry.objects.filter(action="helpdesk.action.restart-agent").count() == 1


def test_the_api_documents_the_detective(as_viewer):
    paths = as_viewer.get("/api/platform/openapi.json").json()["paths"]
    assert {
        "/api/platform/helpdesk/customers/{customer_id}/diagnose",
        "/api/platform/helpdesk/customers/{customer_id}/diagnoses",
        "/api/platform/helpdesk/diagnoses/{diagnosis_id}",
        "/api/platform/helpdesk/diagnoses/{diagnosis_id}/verdict",
        "/api/platform/helpdesk/diagnoses/{diagnosis_id}/apply",
    } <= set(paths)
