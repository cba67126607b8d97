"""``manage.py workflows``: list and show (tables and --json as the API answers), start, the
controls, the retry and roll-back previews that change nothing, mark and approve, bad input as
exit status 2, and --follow on runs a real Celery worker carries out (exit 0 succeeded, 1 not).

The worker is a separate process: it learns this module's definition (built-in kinds only)
through WORKFLOW_DEFINITION_MODULES, as an app's definitions would be loaded."""

from __future__ import annotations

import getpass
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from agents.workflows import registry, services
from agents.workflows.definitions import Definition, Parameter, Step
from agents.workflows.models import StepRun, WorkflowRun
from portal.actors import Actor
from portal.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[3]

WORKER_DEFINITION = registry.register(
    Definition(
        name="t-cmd-worker", version=1, title="Worker run",
        parameters=(Parameter("customer"),), subject_kind="customer", subject_parameter="customer",
        steps=(
            Step("first", "wait", inputs={"seconds": 0.4},
                 compensation=Step("undo-first", "noop", inputs={"undoes": "first"})),
            Step("second", "noop", after=("first",), inputs={"who": "${params.customer}"},
                 compensation=Step("undo-second", "noop", inputs={"undoes": "second"})),
        ),
    )
)  # fmt: skip
LONG_DEFINITION = registry.register(Definition(name="t-cmd-long", version=1, title="Long", steps=(
    Step("nap", "wait", inputs={"seconds": 30}),
)))  # fmt: skip


def workflows(*args: str, stdin: io.StringIO | None = None) -> tuple[str, str]:
    """``manage.py workflows ...`` in this process: (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("workflows", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def workflows_fail(*args: str) -> tuple[int, str, str]:
    """A command that must end in a CommandError: (exit status, message, stdout)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as error:
        call_command("workflows", *args, stdout=out, stderr=err)
    return error.value.returncode, str(error.value), out.getvalue()


def failing(wf, name: str = "t-cmd-fail") -> Definition:
    return wf.define(Definition(name=name, version=1, title="Fails at two", steps=(
        Step("one", "test_echo", compensation=Step("undo-one", "test_echo")),
        Step("two", "test_echo", after=("one",), inputs={"fail": True}),
        Step("three", "test_echo", after=("two",)),
    )))  # fmt: skip


def snapshot() -> tuple[int, int, int, list]:
    return (
        WorkflowRun.objects.count(),
        StepRun.objects.count(),
        AuditEntry.objects.count(),
        list(WorkflowRun.objects.order_by("id").values_list("id", "status", "retries")),
    )


# --- reading ---------------------------------------------------------------------------------


def test_list_and_show_print_tables_and_json_as_the_api(wf, as_viewer) -> None:
    failing(wf)
    run = wf.drive(services.start(wf.command, "t-cmd-fail"))
    out, _ = workflows("list")
    assert f"{run.pk}" in out and "Fails at two" in out and "failed" in out and "1/3" in out
    out, _ = workflows("list", "--json", "--status", "failed")
    api = as_viewer.get("/api/platform/orchestration/workflows", {"status": "failed"}).json()
    assert json.loads(out) == api
    out, _ = workflows("list", "--json", "--status", "succeeded")
    assert json.loads(out) == []
    out, _ = workflows("show", str(run.pk))
    assert "two was told to fail" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "succeeded" in lines["one"] and "failed" in lines["two"] and "pending" in lines["three"]
    out, _ = workflows("show", str(run.pk), "--json")
    detail = json.loads(out)
    api_detail = as_viewer.get(f"/api/platform/orchestration/workflows/{run.pk}").json()
    assert detail["tasks"] == api_detail["tasks"] and detail["status"] == "failed"
    out, _ = workflows("definitions")
    assert "customer-onboarding" in out and "customer_name:str" in out
    out, _ = workflows("definitions", "--json")
    assert "t-cmd-fail" in {d["name"] for d in json.loads(out)}


@pytest.mark.parametrize(
    "args, says",
    [
        (("show", "999999"), "There is no workflow run #999999."),
        (("show", "1" + "0" * 30), "is not a run number"),
        (("show", "a\x00b"), "is not a run number"),
        (("list", "--status", "asleep"), "--status 'asleep' is not a run status"),
        (("list", "--limit", "500"), "limit='500'"),
        (("start", "t-nope"), "the definitions are: "),
        (("start", "t-cmd-worker", "-p", "nonsense"), "write a parameter as name=value"),
        (("start", "t-cmd-worker", "-p", "colour=red"), "'colour' is not a parameter"),
        (("resume", "999999"), "There is no workflow run"),
    ],
)
def test_bad_input_exits_2_with_a_sentence_and_changes_nothing(wf, args, says) -> None:
    before = snapshot()
    status, message, _ = workflows_fail(*args)
    assert status == 2
    assert says in message
    assert snapshot()[:2] == before[:2]


# --- controls --------------------------------------------------------------------------------


def test_start_pause_resume_cancel_and_409s(wf) -> None:
    wf.define(Definition(name="t-cmd-slow", version=1, title="Slow", steps=(
        Step("nap", "test_slow", inputs={"seconds": 60}),
        Step("after", "test_echo", after=("nap",)),
    )))  # fmt: skip
    out, _ = workflows("start", "t-cmd-slow", "--json")
    body = json.loads(out)
    run = WorkflowRun.objects.get(pk=body["workflow_id"])
    assert body["url"] == f"/api/platform/orchestration/workflows/{run.pk}"
    assert run.actor == f"command:{getpass.getuser()}"
    assert AuditEntry.objects.get(action="workflow.start").source == "manage.py workflows"
    wf.drive(run, until=lambda r: wf.statuses(r)["nap"] == "running")
    status, message, _ = workflows_fail("resume", str(run.pk))
    assert (status, message) == (2, f"Run #{run.pk} is running; only a paused run can be resumed.")
    out, _ = workflows("pause", str(run.pk))
    assert out.startswith(f"Paused run #{run.pk}")
    assert workflows("resume", str(run.pk))[0].startswith(f"Resumed run #{run.pk}")
    workflows("cancel", str(run.pk))
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert workflows_fail("cancel", str(run.pk))[0] == 2
    actions = list(AuditEntry.objects.filter(target=f"workflow:{run.pk}")
                   .order_by("id").values_list("action", "outcome"))  # fmt: skip
    assert [a for a, _ in actions] == ["workflow.start", "workflow.resume", "workflow.pause",
                                       "workflow.resume", "workflow.cancel", "workflow.cancel"]  # fmt: skip


def test_retry_dry_run_prints_the_preview_and_changes_nothing(wf) -> None:
    failing(wf)
    run = wf.drive(services.start(wf.command, "t-cmd-fail"))
    before = snapshot()
    out, _ = workflows("retry", str(run.pk), "--dry-run")
    assert "runs again" in out and "output reused" in out and "Repeats: Two" in out
    out, _ = workflows("retry", str(run.pk), "--from", "one", "--dry-run", "--json")
    plan = json.loads(out)
    assert [s["step"] for s in plan["will_run"]] == ["one", "two", "three"]
    assert snapshot() == before
    # Without --yes and with no terminal to ask at, nothing is done.
    status, message, out = workflows_fail("retry", str(run.pk))
    assert status == 2 and "pass --yes" in message and "runs again" in out
    assert snapshot() == before
    out, _ = workflows("retry", str(run.pk), "--yes")
    assert f"Retrying run #{run.pk}." in out
    run.refresh_from_db()
    assert (run.status, run.retries) == ("running", 1)


class Terminal(io.StringIO):
    """Standard input that is a terminal someone types into."""

    def isatty(self) -> bool:
        return True


def test_at_a_terminal_retry_asks_after_the_preview(wf, monkeypatch) -> None:
    failing(wf)
    run = wf.drive(services.start(wf.command, "t-cmd-fail"))
    before = snapshot()
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    status, message, out = workflows_fail("retry", str(run.pk))
    assert (status, message) == (2, "Not confirmed; nothing was done.")
    assert "runs again" in out
    assert snapshot() == before
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    out, err = workflows("retry", str(run.pk))
    assert f"Retry run #{run.pk}? [y/N]" in err and f"Retrying run #{run.pk}." in out
    run.refresh_from_db()
    assert run.retries == 1


def test_a_real_process_exits_2_when_refused(test_database_url, redis_url) -> None:
    env = {**os.environ, "DATABASE_URL": test_database_url, "REDIS_URL": redis_url,
           "LOG_LEVEL": "WARNING"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "manage.py", "workflows", "resume", "999999"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "CommandError: There is no workflow run #999999." in result.stderr


def test_rollback_dry_run_then_rollback(wf) -> None:
    failing(wf)
    run = wf.drive(services.start(wf.command, "t-cmd-fail"))
    before = snapshot()
    out, _ = workflows("rollback", str(run.pk), "--dry-run")
    assert "1. Undo one (undoes One)" in out
    assert json.loads(workflows("rollback", str(run.pk), "--dry-run", "--json")[0])[
        "compensations"][0]["step"] == "one"  # fmt: skip
    assert snapshot() == before
    workflows("rollback", str(run.pk), "--yes", "--reason", "wrong customer")
    assert wf.drive(run).status == "rolled_back"


def test_mark_and_approve(wf) -> None:
    failing(wf)
    run = wf.drive(services.start(wf.command, "t-cmd-fail"))
    status, message, _ = workflows_fail("mark", str(run.pk), "two", "--status", "skipped",
                                        "--reason", " ")  # fmt: skip
    assert status == 2 and "Say why" in message
    out, _ = workflows("mark", str(run.pk), "two", "--status", "skipped", "--reason", "by hand")
    assert out.strip() == f"Marked two of run #{run.pk} skipped."
    assert wf.drive(run).status == "succeeded"
    wf.define(Definition(name="t-cmd-approve", version=1, title="Approve", steps=(
        Step("ok", "approval", inputs={"role": "Admin"}),
    )))  # fmt: skip
    waiting = services.start(wf.command, "t-cmd-approve")
    wf.drive(waiting, until=lambda r: wf.statuses(r)["ok"] == "running")
    out, _ = workflows("approve", str(waiting.pk), "ok", "--reject", "--note", "not today")
    assert out.strip() == f"Rejected ok of run #{waiting.pk}."
    assert wf.drive(waiting).status == "failed"


def test_bulk_cancel_exits_2_when_a_run_refuses(wf) -> None:
    failing(wf)
    done = wf.drive(services.start(wf.command, "t-cmd-fail"))
    status, message, out = workflows_fail("bulk", "cancel", str(done.pk))
    assert status == 2 and "1 of 1 runs refused the cancel" in message
    assert f"#{done.pk} cancel: refused: Run #{done.pk} has failed" in out


# --- --follow with a real worker -------------------------------------------------------------


@pytest.fixture
def worker(test_database_url, redis_url, tmp_path, start_celery_worker):
    from portal.celery import app

    app.control.purge()
    env = {
        **os.environ, "DATABASE_URL": test_database_url, "REDIS_URL": redis_url,
        "LOG_LEVEL": "WARNING", "WORKFLOW_DEFINITION_MODULES": __name__,
    }  # fmt: skip
    log = tmp_path / "worker.log"
    process = start_celery_worker(env, f"wf-cmd-{os.getpid()}", log)
    yield log
    process.terminate()
    process.wait(timeout=15)
    app.control.purge()


def test_follow_watches_a_worker_run_to_success_then_a_roll_back_exits_1(worker) -> None:
    out, err = workflows("start", "t-cmd-worker", "-p", "customer=Acme Corp", "--follow")
    run = WorkflowRun.objects.get()
    assert run.status == "succeeded", worker.read_text()[-2000:]
    assert f"Started Worker run as run #{run.pk}." in out
    assert f"Run #{run.pk} succeeded after" in out
    # Each step's changes, as the watcher saw them.
    assert "first (First): running" in err and "first (First): succeeded" in err
    assert "second (Second): succeeded" in err
    assert StepRun.objects.get(run=run, step_id="second").output["who"] == "Acme Corp"

    status, message, out = workflows_fail("rollback", str(run.pk), "--yes", "--follow")
    run.refresh_from_db()
    assert (status, run.status) == (1, "rolled_back")
    assert message.startswith(f"Run #{run.pk} rolled back")
    assert f"Run #{run.pk} rolled back after" in out
    assert list(
        StepRun.objects.filter(run=run, role="compensation")
        .order_by("position")
        .values_list("step_id", "status")
    ) == [("second", "succeeded"), ("first", "succeeded")]  # newest first


def test_follow_json_answers_the_run_detail(worker) -> None:
    out, _ = workflows("start", "t-cmd-worker", "-p", "customer=Zed", "--follow", "--json")
    detail = json.loads(out)
    assert detail["status"] == "succeeded" and detail["customer_name"] == "Zed"
    assert [t["task_id"] for t in detail["tasks"]] == ["first", "second"]


def test_cancel_while_following_ends_with_exit_1(worker) -> None:
    run = services.start(Actor.command("test"), "t-cmd-long")
    result: dict[str, object] = {}

    def follow() -> None:
        try:
            workflows("resume", str(run.pk), "--follow")
        except CommandError as error:
            result["error"] = error
        finally:
            connection.close()  # this thread's own

    # Pause first so that resume --follow is legal, then cancel from here while it watches.
    services.pause(run, Actor.command("test"))
    watcher = threading.Thread(target=follow)
    watcher.start()
    try:
        deadline = 50
        while deadline and not StepRun.objects.filter(run=run, status="running").exists():
            threading.Event().wait(0.1)
            deadline -= 1
        workflows("cancel", str(run.pk))
    finally:
        watcher.join(timeout=20)
    error = result.get("error")
    assert isinstance(error, CommandError) and error.returncode == 1
    assert str(error).startswith(f"Run #{run.pk} cancelled")
    assert WorkflowRun.objects.get(pk=run.pk).status == "cancelled"
