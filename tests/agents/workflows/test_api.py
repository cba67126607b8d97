"""The workflow API under /api/platform/orchestration: the list and a run's detail, start, every
control at every role (Viewer 403, Operator ok, Admin-only mark), dry-runs that change nothing,
and bad input answered 4xx with a sentence, nothing changed."""

from __future__ import annotations

import json

import pytest

from agents.workflows import services
from agents.workflows.definitions import Definition, Parameter, Step
from agents.workflows.models import StepRun, WorkflowRun
from portal.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/platform/orchestration"


def post(client, path: str, body: object = None, *, raw: str | None = None):
    data = raw if raw is not None else json.dumps(body if body is not None else {})
    return client.post(f"{API}{path}", data=data, content_type="application/json")


def saga(wf, name: str = "t-api-saga", *, fail_at: str = "") -> Definition:
    """one → two → three, each with a compensation; ``fail_at`` fails."""
    steps: list[Step] = []
    for step_id in ("one", "two", "three"):
        steps.append(
            Step(
                step_id, "test_echo", after=(steps[-1].id,) if steps else (),
                inputs={"fail": step_id == fail_at, "who": "${params.customer}"},
                compensation=Step(f"undo-{step_id}", "test_echo", inputs={"undoes": step_id}),
            )
        )  # fmt: skip
    return wf.define(
        Definition(
            name=name, version=1, title="API saga", steps=tuple(steps),
            parameters=(Parameter("customer"), Parameter("seats", "int", required=False,
                                                          default=1, maximum=100)),
            subject_kind="customer", subject_parameter="customer",
        )
    )  # fmt: skip


def slow(wf) -> Definition:
    return wf.define(
        Definition(name="t-api-slow", version=1, title="Slow", steps=(
            Step("nap", "test_slow", inputs={"seconds": 60}),
            Step("after", "test_echo", after=("nap",)),
        ))
    )  # fmt: skip


def snapshot() -> tuple[int, int, int, list]:
    """What a refused or dry-run request must leave as it was."""
    return (
        WorkflowRun.objects.count(),
        StepRun.objects.count(),
        AuditEntry.objects.count(),
        list(WorkflowRun.objects.order_by("id").values_list("id", "status", "retries")),
    )


# --- reading ---------------------------------------------------------------------------------


def test_list_answers_each_run_with_its_tasks_and_filters(wf, as_viewer) -> None:
    saga(wf)
    done = wf.drive(services.start(wf.command, "t-api-saga", {"customer": "Acme Corp"}))
    failed = wf.drive(
        services.start(wf.command, saga(wf, "t-api-fail", fail_at="two").name, {"customer": "Zed"})
    )
    response = as_viewer.get(f"{API}/workflows")
    assert response.status_code == 200, response.content
    rows = {row["workflow_id"]: row for row in response.json()}
    assert list(rows) == [failed.pk, done.pk]  # newest first
    row = rows[done.pk]
    assert row["workflow_name"] == "API saga"
    assert row["customer_name"] == "Acme Corp"
    assert (row["status"], row["progress"], row["total_tasks"], row["completed_tasks"]) == (
        "succeeded", 100, 3, 3,
    )  # fmt: skip
    assert [t["task_id"] for t in row["tasks"]] == ["one", "two", "three"]
    task = row["tasks"][0]
    assert set(task) >= {"task_id", "task_name", "status", "attempt", "duration_ms",
                         "started_at", "completed_at"}  # fmt: skip
    assert task["status"] == "succeeded" and task["duration_ms"] is not None
    assert rows[failed.pk]["failed_tasks"] == 1

    only_failed = as_viewer.get(f"{API}/workflows", {"status": "failed"}).json()
    assert [r["workflow_id"] for r in only_failed] == [failed.pk]
    by_definition = as_viewer.get(f"{API}/workflows", {"definition": "t-api-saga"}).json()
    assert [r["workflow_id"] for r in by_definition] == [done.pk]
    by_subject = as_viewer.get(f"{API}/workflows", {"subject": "Zed"}).json()
    assert [r["workflow_id"] for r in by_subject] == [failed.pk]
    page = as_viewer.get(f"{API}/workflows", {"limit": 1}).json()
    assert [r["workflow_id"] for r in page] == [failed.pk]
    after = as_viewer.get(f"{API}/workflows", {"limit": 1, "before": failed.pk}).json()
    assert [r["workflow_id"] for r in after] == [done.pk]


def test_the_list_reads_in_a_fixed_number_of_queries(
    wf, as_viewer, django_assert_max_num_queries
) -> None:
    saga(wf)
    for n in range(6):
        wf.drive(services.start(wf.command, "t-api-saga", {"customer": f"C{n}"}))
    with django_assert_max_num_queries(8):  # session, user, role; runs; their steps
        response = as_viewer.get(f"{API}/workflows")
    assert len(response.json()) == 6


def test_a_run_answers_parameters_and_every_attempt(wf, as_viewer) -> None:
    saga(wf, "t-api-fail", fail_at="three")
    run = wf.drive(services.start(wf.command, "t-api-fail", {"customer": "Acme"}))
    services.retry(run, wf.command)
    run = wf.drive(run)
    response = as_viewer.get(f"{API}/workflows/{run.pk}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["parameters"] == {"customer": "Acme", "seats": 1}
    assert body["status"] == "failed" and "three was told to fail" in body["error"]
    three = next(t for t in body["tasks"] if t["task_id"] == "three")
    assert three["attempt"] == 2 and three["error"] == "three was told to fail"
    assert [a["attempt"] for a in three["attempts"]] == [1, 2]
    assert three["attempts"][1]["replaces"] is not None
    assert three["inputs"]["who"] == "Acme"
    one = next(t for t in body["tasks"] if t["task_id"] == "one")
    assert one["output"]["who"] == "Acme"
    assert "predicted_finish_at" in body and "critical_path" in body


def test_definitions_list_parameters_steps_and_medians(wf, as_viewer) -> None:
    saga(wf)
    wf.drive(services.start(wf.command, "t-api-saga", {"customer": "Acme"}))
    response = as_viewer.get(f"{API}/definitions")
    assert response.status_code == 200
    by_name = {d["name"]: d for d in response.json()}
    assert {"customer-onboarding", "fleet-restart", "drain-and-stop"} <= set(by_name)
    mine = by_name["t-api-saga"]
    assert [p["name"] for p in mine["parameters"]] == ["customer", "seats"]
    assert mine["parameters"][1] | {"help": ""} == {
        "name": "seats", "type": "int", "required": False, "default": 1, "choices": [],
        "help": "", "minimum": None, "maximum": 100.0,
    }  # fmt: skip
    two = mine["steps"][1]
    assert (two["kind"], two["after"], two["compensation"]["id"]) == ("test_echo", ["one"],
                                                                      "undo-two")  # fmt: skip
    assert two["retry"]["attempts"] == 1
    assert set(mine["median_seconds"]) == {"one", "two", "three"}


# --- starting --------------------------------------------------------------------------------


def test_operator_starts_a_run_and_gets_202_with_its_url(wf, as_operator) -> None:
    saga(wf)
    response = post(as_operator, "/workflows",
                    {"definition": "t-api-saga", "parameters": {"customer": "Acme"}})  # fmt: skip
    assert response.status_code == 202, response.content
    body = response.json()
    run = WorkflowRun.objects.get(pk=body["workflow_id"])
    assert body == {"workflow_id": run.pk, "status": run.status,
                    "url": f"{API}/workflows/{run.pk}"}  # fmt: skip
    assert run.subject == "Acme" and run.actor == "user:otto"
    assert AuditEntry.objects.filter(action="workflow.start").count() == 1


def test_viewer_cannot_start_and_nothing_changes(wf, as_viewer) -> None:
    saga(wf)
    before = snapshot()
    response = post(as_viewer, "/workflows",
                    {"definition": "t-api-saga", "parameters": {"customer": "Acme"}})  # fmt: skip
    assert response.status_code == 403
    assert "Operator" in response.json()["detail"]
    after = snapshot()
    assert after[:2] == before[:2] and after[3] == before[3]  # only the refusal is audited


def test_unknown_definition_is_404_naming_the_definitions(wf, as_operator) -> None:
    before = snapshot()
    response = post(as_operator, "/workflows", {"definition": "t-nope"})
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "not_found"
    assert "customer-onboarding" in body["detail"] and "fleet-restart" in body["detail"]
    assert snapshot()[:2] == before[:2]


def test_bad_parameters_are_400_with_every_problem(wf, as_operator) -> None:
    saga(wf)
    before = snapshot()
    response = post(as_operator, "/workflows", {"definition": "t-api-saga",
                                                 "parameters": {"seats": "lots", "colour": 1}})  # fmt: skip
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert body["problems"] == ["'colour' is not a parameter of API saga",
                                "customer is required", "seats must be a whole number"]  # fmt: skip
    assert snapshot()[:2] == before[:2]


@pytest.mark.parametrize(
    "raw",
    [
        '{"definition": "t-api-saga", "parameters": {"customer": "Ac',  # broken JSON
        '{"definition": ["t-api-saga"]}',  # wrong type
        '{"definition": "t-api-saga", "parameters": [1, 2]}',  # wrong type
        '{"definition": "t-api-saga", "parameters": {"customer": "A\\u0000cme"}}',  # NUL
        '{"definition": "t-api-saga\\u0000"}',  # NUL in the name
        '{"definition": "t-api-saga", "version": 1000000000000000000000000000000}',  # huge
        '{"definition": "t-api-saga", "parameters": {"customer": "A", "seats": 1e400}}',
    ],
)
def test_malformed_start_is_4xx_and_changes_nothing(wf, as_operator, raw) -> None:
    saga(wf)
    before = snapshot()
    response = post(as_operator, "/workflows", raw=raw)
    assert 400 <= response.status_code < 500, response.content
    assert response.json()["detail"]
    assert snapshot()[:2] == before[:2]


@pytest.mark.parametrize("run_id", ["1000000000000000000000000000000", "abc", "-1", "0", "1%00"])
def test_a_run_number_that_names_nothing_is_400(as_viewer, run_id) -> None:
    response = as_viewer.get(f"{API}/workflows/{run_id}")
    assert response.status_code == 400, response.content
    detail = response.json()["detail"]
    assert "not a run number" in detail or "NUL character" in detail


def test_a_missing_run_is_404(as_viewer, as_operator) -> None:
    assert as_viewer.get(f"{API}/workflows/999999").status_code == 404
    response = post(as_operator, "/workflows/999999/pause")
    assert response.status_code == 404
    assert response.json() == {"detail": "There is no workflow run #999999.", "code": "not_found"}


@pytest.mark.parametrize(
    "query",
    [{"status": "asleep"}, {"definition": "t-nope"}, {"limit": "0"}, {"limit": "201"},
     {"before": "10" * 20}, {"before": "x"}, {"subject": "a\x00b"}],
)  # fmt: skip
def test_bad_list_filters_are_400(as_viewer, query) -> None:
    response = as_viewer.get(f"{API}/workflows", query)
    assert response.status_code == 400, response.content
    assert response.json()["detail"]


# --- controls --------------------------------------------------------------------------------


def test_pause_resume_cancel_by_operator_and_409_when_illegal(wf, as_operator, as_viewer) -> None:
    slow(wf)
    run = services.start(wf.command, "t-api-slow")
    wf.drive(run, until=lambda r: wf.statuses(r)["nap"] == "running")
    for verb in ("pause", "resume", "cancel"):
        before = snapshot()
        denied = post(as_viewer, f"/workflows/{run.pk}/{verb}")
        assert denied.status_code == 403, verb
        assert snapshot()[3] == before[3]
    illegal = post(as_operator, f"/workflows/{run.pk}/resume")
    assert illegal.status_code == 409
    assert illegal.json()["detail"] == (
        f"Run #{run.pk} is running; only a paused run can be resumed."
    )
    assert post(as_operator, f"/workflows/{run.pk}/pause").json()["status"] == "paused"
    assert post(as_operator, f"/workflows/{run.pk}/pause").status_code == 409  # again: refused
    assert post(as_operator, f"/workflows/{run.pk}/resume").json()["status"] == "running"
    response = post(as_operator, f"/workflows/{run.pk}/cancel")
    assert (response.status_code, response.json()["status"]) == (202, "cancelled")
    assert wf.statuses(run) == {"nap": "cancelled", "after": "skipped"}
    assert post(as_operator, f"/workflows/{run.pk}/cancel").status_code == 409


def test_retry_dry_run_previews_and_changes_nothing_then_retry_runs(wf, as_operator) -> None:
    saga(wf, "t-api-fail", fail_at="two")
    run = wf.drive(services.start(wf.command, "t-api-fail", {"customer": "Acme"}))
    before = snapshot()
    preview = post(as_operator, f"/workflows/{run.pk}/retry", {"dry_run": True})
    assert preview.status_code == 200, preview.content
    plan = preview.json()
    assert [s["step"] for s in plan["will_run"]] == ["two", "three"]
    assert [s["step"] for s in plan["reused"]] == ["one"]
    assert snapshot() == before
    from_one = post(as_operator, f"/workflows/{run.pk}/retry",
                    {"mode": "from", "from_step": "one", "dry_run": True,
                     "parameters": {"customer": "Acme Ltd"}}).json()  # fmt: skip
    assert [s["step"] for s in from_one["will_run"]] == ["one", "two", "three"]
    assert from_one["changed_parameters"] == ["customer"]
    assert snapshot() == before
    response = post(as_operator, f"/workflows/{run.pk}/retry", {"mode": "failed"})
    assert (response.status_code, response.json()["status"]) == (202, "running")
    assert AuditEntry.objects.filter(action="workflow.retry").count() == 1


def test_retry_refusals(wf, as_operator, as_viewer) -> None:
    saga(wf, "t-api-fail", fail_at="two")
    run = wf.drive(services.start(wf.command, "t-api-fail", {"customer": "Acme"}))
    before = snapshot()
    assert post(as_viewer, f"/workflows/{run.pk}/retry", {}).status_code == 403
    bad_mode = post(as_operator, f"/workflows/{run.pk}/retry", {"mode": "sideways"})
    assert bad_mode.status_code == 400 and "retry mode" in bad_mode.json()["detail"]
    bad_step = post(as_operator, f"/workflows/{run.pk}/retry", {"mode": "from", "from_step": "x"})
    assert bad_step.status_code == 400 and "one, two, three" in bad_step.json()["detail"]
    bad_param = post(as_operator, f"/workflows/{run.pk}/retry",
                     {"parameters": {"seats": 101}, "dry_run": True})  # fmt: skip
    assert bad_param.status_code == 400
    assert bad_param.json()["problems"] == ["seats must be at most 100"]
    wrong_type = post(as_operator, f"/workflows/{run.pk}/retry", {"dry_run": "maybe"})
    assert wrong_type.status_code == 422
    after = snapshot()
    assert after[:2] == before[:2] and after[3] == before[3]
    services.retry(run, wf.command)
    running = post(as_operator, f"/workflows/{run.pk}/retry", {"dry_run": True})
    assert running.status_code == 409


def test_rollback_dry_run_then_rollback_runs_compensations(wf, as_operator, as_viewer) -> None:
    saga(wf)
    run = wf.drive(services.start(wf.command, "t-api-saga", {"customer": "Acme"}))
    before = snapshot()
    preview = post(as_viewer, f"/workflows/{run.pk}/rollback", {"dry_run": True})
    assert preview.status_code == 200
    assert [c["step"] for c in preview.json()["compensations"]] == ["three", "two", "one"]
    assert snapshot() == before
    assert post(as_viewer, f"/workflows/{run.pk}/rollback", {"reason": "x"}).status_code == 403
    response = post(as_operator, f"/workflows/{run.pk}/rollback", {"reason": "wrong customer"})
    assert response.status_code == 202, response.content
    run = wf.drive(run)
    assert run.status == "rolled_back"
    assert set(wf.statuses(run, "compensation").values()) == {"succeeded"}
    again = post(as_operator, f"/workflows/{run.pk}/rollback", {"dry_run": True})
    assert again.status_code == 409


def test_mark_is_admin_only(wf, as_operator, as_admin) -> None:
    saga(wf, "t-api-fail", fail_at="two")
    run = wf.drive(services.start(wf.command, "t-api-fail", {"customer": "Acme"}))
    body = {"status": "skipped", "reason": "done by hand"}
    before = snapshot()
    refused = post(as_operator, f"/workflows/{run.pk}/steps/two/mark", body)
    assert refused.status_code == 403 and "Admin" in refused.json()["detail"]
    no_reason = post(as_admin, f"/workflows/{run.pk}/steps/two/mark", {"status": "skipped",
                                                                         "reason": " "})  # fmt: skip
    assert no_reason.status_code == 400
    bad_status = post(as_admin, f"/workflows/{run.pk}/steps/two/mark",
                      {"status": "failed", "reason": "x"})  # fmt: skip
    assert bad_status.status_code == 400
    no_step = post(as_admin, f"/workflows/{run.pk}/steps/nine/mark", body)
    assert no_step.status_code == 400
    after = snapshot()
    assert after[:2] == before[:2] and after[3] == before[3]
    response = post(as_admin, f"/workflows/{run.pk}/steps/two/mark", body)
    assert response.status_code == 202, response.content
    run = wf.drive(run)
    assert run.status == "succeeded"
    assert wf.statuses(run) == {"one": "succeeded", "two": "skipped", "three": "succeeded"}


def test_approve_gives_the_decision_a_step_waits_for(wf, as_viewer, as_operator) -> None:
    wf.define(Definition(name="t-api-approve", version=1, title="Approve", steps=(
        Step("ok", "approval", inputs={"role": "Operator"}),
        Step("then", "test_echo", after=("ok",)),
    )))  # fmt: skip
    run = services.start(wf.command, "t-api-approve")
    wf.drive(run, until=lambda r: wf.statuses(r)["ok"] == "running")
    assert post(as_viewer, f"/workflows/{run.pk}/steps/ok/approve", {}).status_code == 403
    none = post(as_operator, f"/workflows/{run.pk}/steps/then/approve", {})
    assert none.status_code == 409
    response = post(as_operator, f"/workflows/{run.pk}/steps/ok/approve",
                    {"approved": True, "note": "fine"})  # fmt: skip
    assert response.status_code == 202, response.content
    assert wf.drive(run).status == "succeeded"


def test_bulk_cancels_the_selection_and_says_per_run(wf, as_operator, as_viewer) -> None:
    slow(wf)
    a = services.start(wf.command, "t-api-slow")
    b = services.start(wf.command, "t-api-slow")
    services.cancel(b, wf.command)
    body = {"action": "cancel", "ids": [a.pk, b.pk]}
    assert post(as_viewer, "/workflows/bulk", body).status_code == 403
    response = post(as_operator, "/workflows/bulk", body)
    assert response.status_code == 200, response.content
    outcomes = response.json()
    assert [(o["workflow_id"], o["ok"]) for o in outcomes] == [(a.pk, True), (b.pk, False)]
    assert "cancelled" in outcomes[1]["detail"]
    before = snapshot()
    for bad in ({"action": "explode", "ids": [a.pk]}, {"action": "cancel", "ids": []},
                {"action": "cancel", "ids": [10**30]}, {"action": "cancel", "ids": "1"}):  # fmt: skip
        refused = post(as_operator, "/workflows/bulk", bad)
        assert 400 <= refused.status_code < 500, bad
    assert snapshot() == before


def test_signed_out_and_roleless_callers_are_refused(as_outsider, client) -> None:
    assert client.get(f"{API}/workflows").status_code == 401
    assert as_outsider.get(f"{API}/workflows").status_code == 401


def test_a_bearer_token_acts_with_its_users_role(wf, operator, viewer) -> None:
    from django.test import Client

    from portal import services as portal_services
    from portal.actors import Actor

    saga(wf)
    operator_token = portal_services.create_api_token(operator, Actor.command("test"))[1]
    viewer_token = portal_services.create_api_token(viewer, Actor.command("test"))[1]
    client = Client()  # no session: the token alone
    body = json.dumps({"definition": "t-api-saga", "parameters": {"customer": "Acme"}})

    def start(token: str):
        return client.post(f"{API}/workflows", body, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip

    assert start(viewer_token).status_code == 403
    response = start(operator_token)
    assert response.status_code == 202, response.content
    run = WorkflowRun.objects.get()
    assert run.actor.startswith("token:")
    listed = client.get(f"{API}/workflows", HTTP_AUTHORIZATION=f"Bearer {viewer_token}")
    assert [r["workflow_id"] for r in listed.json()] == [run.pk]
    assert start("not-a-token").status_code == 401
