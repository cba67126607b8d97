"""Workflow runs in the Django admin: listed and filtered, read with every step attempt inline,
never added, changed or deleted; step runs have no admin of their own. Only Admins get in."""

from __future__ import annotations

import pytest

from agents.workflows import services
from agents.workflows.definitions import Definition, Step
from agents.workflows.models import StepRun, WorkflowRun

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/agents/workflowrun/"


def flaky_run(wf) -> WorkflowRun:
    wf.define(Definition(name="t-admin", version=1, title="Admin run", steps=(
        Step("one", "test_echo"),
        Step("two", "test_echo", after=("one",), inputs={"fail": True}),
    )))  # fmt: skip
    run = wf.drive(services.start(wf.command, "t-admin"))
    services.retry(run, wf.command)
    return wf.drive(run)


def test_the_list_shows_runs_with_progress_and_filters(wf, as_admin) -> None:
    run = flaky_run(wf)
    response = as_admin.get(CHANGELIST)
    assert response.status_code == 200
    content = response.content.decode()
    assert "Admin run" in content and "1/2 (50%)" in content
    assert f'href="{CHANGELIST}{run.pk}/change/' in content
    assert "Add workflow run" not in content and "delete_selected" not in content
    assert (
        "1 workflow run" in as_admin.get(CHANGELIST, {"status__exact": "failed"}).content.decode()
    )
    assert (
        "0 workflow runs" in as_admin.get(CHANGELIST, {"status__exact": "running"}).content.decode()
    )
    by_definition = as_admin.get(CHANGELIST, {"definition": "t-admin"}).content.decode()
    assert "1 workflow run" in by_definition


def test_a_run_is_read_with_every_attempt_and_cannot_be_changed(wf, as_admin) -> None:
    run = flaky_run(wf)
    url = f"{CHANGELIST}{run.pk}/change/"
    response = as_admin.get(url)
    assert response.status_code == 200
    content = response.content.decode()
    assert content.count("two was told to fail") == 3  # two attempts and the run's error
    assert 'name="_save"' not in content
    assert StepRun.objects.filter(run=run).count() == 3
    # A post changes nothing (no change permission), and add and delete are refused.
    assert as_admin.post(url, {"status": "succeeded"}).status_code == 403
    assert as_admin.get(f"{CHANGELIST}add/").status_code == 403
    assert as_admin.post(f"{CHANGELIST}{run.pk}/delete/", {"post": "yes"}).status_code == 403
    run.refresh_from_db()
    assert run.status == "failed" and WorkflowRun.objects.count() == 1


def test_step_runs_have_no_admin_of_their_own(as_admin) -> None:
    assert as_admin.get("/admin/agents/steprun/").status_code == 404
    assert "steprun" not in as_admin.get("/admin/agents/").content.decode()


@pytest.mark.parametrize("client_name", ["as_operator", "as_viewer"])
def test_only_admins_get_in(request, client_name) -> None:
    client = request.getfixturevalue(client_name)
    assert client.get(CHANGELIST).status_code == 302  # to the admin's sign-in
