"""The Workflows pages through Django's test client: the list with its filters and keyset pages
(a bad filter answers 400 saying why), starting a run from the form (each wrong parameter said),
a run's page in every status with the controls a role may use, the retry and roll-back
previews changing nothing, the controls through the page, definitions, and missing runs."""

from __future__ import annotations

import html

import pytest

from agents.workflows import services
from agents.workflows.definitions import Definition, Parameter, Step
from agents.workflows.models import StepRun, WorkflowRun
from portal.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)


def html_text(response) -> str:
    return html.unescape(response.content.decode())


@pytest.fixture
def saga(wf):
    return wf.define(Definition(
        name="t-page-saga", version=1, title="Page saga",
        parameters=(Parameter("customer_name"), Parameter("fail", "bool", required=False, default=False)),
        subject_kind="customer", subject_parameter="customer_name",
        steps=(
            Step("one", "test_echo", compensation=Step("undo-one", "test_echo")),
            Step("two", "test_echo", after=("one",), inputs={"fail": "${params.fail}"},
                 compensation=Step("undo-two", "test_echo")),
        ),
    ))  # fmt: skip


def test_the_list_filters_and_pages_by_keyset(client_for, wf, saga, viewer) -> None:
    runs = [
        services.start(wf.command, "t-page-saga", {"customer_name": f"Co {i}"}) for i in range(3)
    ]
    for run in runs:
        wf.drive(run)
    client = client_for(viewer)
    page = client.get("/workflows/")
    assert page.status_code == 200
    html = page.content.decode()
    assert all(f'id="wf-run-{run.pk}"' in html for run in runs)
    assert 'name="run"' not in html  # a Viewer selects nothing: no bulk actions
    only = client.get("/workflows/?q=Co 1").content.decode()
    assert f'id="wf-run-{runs[1].pk}"' in only and f'id="wf-run-{runs[0].pk}"' not in only
    older = client.get(f"/workflows/?before={runs[2].pk}").content.decode()
    assert f'id="wf-run-{runs[2].pk}"' not in older and f'id="wf-run-{runs[1].pk}"' in older
    for query, says in [
        ("status=asleep", "status='asleep' is not a run status"),
        ("definition=nope", "definition='nope' is not a workflow definition"),
        ("before=-3", "before= is the number of a run"),
        ("q=" + "x" * 200, "at most 100 characters"),
        ("q=a%00b", "contains a NUL character"),
    ]:
        bad = client.get(f"/workflows/?{query}")
        assert bad.status_code == 400, query
        assert says in html_text(bad), query


def test_starting_from_the_form_says_what_is_wrong_and_then_runs(
    client_for, wf, saga, operator, viewer
) -> None:
    client = client_for(operator)
    form = client.get("/workflows/start/?definition=t-page-saga").content.decode()
    assert 'name="customer_name"' in form and 'type="checkbox" id="param-fail"' in form
    refused = client.post("/workflows/start/", {"definition": "t-page-saga", "customer_name": ""})
    assert refused.status_code == 400
    assert "customer_name is required" in refused.content.decode()
    assert WorkflowRun.objects.count() == 0
    started = client.post(
        "/workflows/start/", {"definition": "t-page-saga", "customer_name": "Acme Corp"}
    )
    run = WorkflowRun.objects.get()
    assert started.status_code == 302 and started["Location"] == f"/workflows/{run.pk}/"
    assert run.subject == "Acme Corp" and run.parameters["fail"] is False
    as_viewer = client_for(viewer).post(
        "/workflows/start/", {"definition": "t-page-saga", "customer_name": "Acme Corp"}
    )
    assert as_viewer.status_code == 403 and WorkflowRun.objects.count() == 1
    assert client.get("/workflows/start/?definition=nope").status_code == 404


def test_a_failed_run_offers_retry_and_roll_back_after_previews(
    client_for, wf, saga, operator, viewer
) -> None:
    run = wf.drive(
        services.start(wf.command, "t-page-saga", {"customer_name": "Acme", "fail": "true"})
    )
    assert run.status == "failed"
    page = client_for(operator).get(f"/workflows/{run.pk}/").content.decode()
    assert 'data-control="retry"' in page and 'data-control="rollback"' in page
    assert 'data-control="pause"' not in page
    assert 'id="step-two" data-step="two" data-status="failed"' in page
    assert "two was told to fail" in page
    assert 'class="gantt"' in page and 'id="wf-step-graph-data"' in page
    for_viewer = client_for(viewer).get(f"/workflows/{run.pk}/").content.decode()
    assert "data-control=" not in for_viewer
    before = (StepRun.objects.count(), AuditEntry.objects.count())
    preview = (
        client_for(operator)
        .get(f"/workflows/{run.pk}/retry/preview/?mode=from&from_step=one")
        .content.decode()
    )
    assert "Will run again" in preview and "One" in preview and "echoes again" in preview
    rollback = client_for(operator).get(f"/workflows/{run.pk}/rollback/preview/").content.decode()
    assert "Undo one" in rollback or "undo-one" in rollback.lower()
    assert (
        StepRun.objects.count(),
        AuditEntry.objects.count(),
    ) == before  # previews change nothing
    denied = client_for(viewer).post(f"/workflows/{run.pk}/retry/", {"mode": "failed"})
    assert denied.status_code == 403
    client = client_for(operator)
    answer = client.post(f"/workflows/{run.pk}/rollback/", {"reason": "customer left"},
                         HTTP_HX_REQUEST="true")  # fmt: skip
    assert answer.status_code == 200 and "Rolling back run" in answer.content.decode()
    run = wf.drive(run)
    assert run.status == "rolled_back" and run.error == "Rolled back by user:otto: customer left"
    again = client.post(f"/workflows/{run.pk}/pause/", HTTP_HX_REQUEST="true")
    assert again.status_code == 409 and "only a running run can be paused" in again.content.decode()


def test_pause_and_resume_through_the_page(client_for, wf, operator) -> None:
    wf.define(Definition(name="t-page-slow", version=1, title="Slow", steps=(
        Step("sleep", "test_slow", inputs={"seconds": 60}), Step("after", "test_echo", after=("sleep",)),
    )))  # fmt: skip
    run = services.start(wf.command, "t-page-slow")
    wf.drive(run, until=lambda r: wf.statuses(r)["sleep"] == "running")
    client = client_for(operator)
    assert 'data-control="pause"' in client.get(f"/workflows/{run.pk}/").content.decode()
    assert client.post(f"/workflows/{run.pk}/pause/").status_code == 302
    run.refresh_from_db()
    assert run.status == "paused"
    page = client.get(f"/workflows/{run.pk}/").content.decode()
    assert 'data-control="resume"' in page and "still finishing Sleep" in page
    assert client.post(f"/workflows/{run.pk}/resume/").status_code == 302
    run.refresh_from_db()
    assert run.status == "running"
    assert client.post(f"/workflows/{run.pk}/explode/").status_code == 404


def test_definitions_and_missing_runs(client_for, wf, saga, viewer) -> None:
    client = client_for(viewer)
    listing = client.get("/workflows/definitions/").content.decode()
    assert "Customer onboarding" in listing and "Fleet restart in dependency waves" in listing
    detail = client.get("/workflows/definitions/customer-onboarding/").content.decode()
    assert "Deprovision" in detail and 'id="wf-definition-graph-data"' in detail
    assert client.get("/workflows/definitions/nope/").status_code == 404
    assert client.get("/workflows/999999/").status_code == 404
    assert client.get("/workflows/99999999999999999999/").status_code == 404


def test_bulk_retry_and_cancel_on_the_selection(client_for, wf, saga, operator, viewer) -> None:
    failed = [
        wf.drive(services.start(wf.command, "t-page-saga", {"customer_name": f"B{i}", "fail": "1"}))
        for i in range(2)
    ]
    ids = [str(run.pk) for run in failed]
    denied = client_for(viewer).post("/workflows/bulk/", {"action": "retry", "run": ids},
                                     HTTP_HX_REQUEST="true")  # fmt: skip
    assert denied.status_code == 403
    answer = client_for(operator).post("/workflows/bulk/", {"action": "cancel", "run": ids},
                                       HTTP_HX_REQUEST="true")  # fmt: skip
    assert "2 refused" in html_text(answer) and "has failed" in html_text(answer)
    answer = client_for(operator).post("/workflows/bulk/", {"action": "retry", "run": ids},
                                       HTTP_HX_REQUEST="true")  # fmt: skip
    assert "Retried 2 runs." in html_text(answer)
    assert {r.status for r in WorkflowRun.objects.filter(pk__in=ids)} == {"running"}
    nothing = client_for(operator).post("/workflows/bulk/", {"action": "retry"},
                                        HTTP_HX_REQUEST="true")  # fmt: skip
    assert nothing.status_code == 400 and "Select at least one run" in html_text(nothing)
