"""``manage.py factory``: the templates (a table, and --json as the API answers), validate printing
each error as ``field: message`` (exit 2), a sandbox run here against a real agent (exit 1 when
a test fails), create (--dry-run makes nothing; --follow watches the workflow to a RUNNING
agent), --as acting with a user's role, and bad input as exit status 2."""

from __future__ import annotations

import io
import json
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from agents.models import Agent, State
from agents.workflows.models import WorkflowRun
from factory.models import Draft, SandboxRun
from factory.services import templates
from portal.actors import Actor

from .conftest import drive

pytestmark = pytest.mark.django_db(transaction=True)


def factory(*args: str) -> tuple[str, str]:
    """``manage.py factory ...`` in this process: (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("factory", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def factory_fails(*args: str) -> tuple[int, str, str]:
    """A command that must end in a CommandError: (exit status, message, stdout)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as error:
        call_command("factory", *args, stdout=out, stderr=err)
    return error.value.returncode, str(error.value), out.getvalue()


def made() -> tuple[int, int, int, int]:
    return (
        Agent.objects.count(),
        Draft.objects.count(),
        SandboxRun.objects.count(),
        WorkflowRun.objects.count(),
    )


def test_templates_print_a_table_and_json_as_the_api_answers(catalog, as_viewer) -> None:
    out, _ = factory("templates")
    assert "MONTHLY COST" in out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert list(lines) == ["memory", "orchestration", "api", "data", "monitoring", "blank"]
    assert " Memory " in lines["memory"] and "USD" in lines["memory"]
    printed, _ = factory("templates", "--json")
    assert json.loads(printed) == as_viewer.get("/api/platform/factory/templates").json()


def test_validate_prints_each_error_with_its_field_and_exits_2(catalog) -> None:
    before = made()
    status, message, out = factory_fails(
        "validate", "--template", "memory", "--name", "WowCache", "--set", "slug=wow-cache",
        "--set", "settings.default_ttl_seconds=0", "--set", "resources.replicas=11",
    )  # fmt: skip
    assert status == 2 and message.startswith("The configuration does not check out: ")
    lines = out.splitlines()
    assert any(line.startswith("slug: wow-cache is taken") for line in lines), out
    assert any(line.startswith("settings.default_ttl_seconds: ") for line in lines), out
    assert "resources.replicas: Pick a whole number from 1 to 10." in lines
    assert any(line.startswith("owner: ") for line in lines)

    status, _, out = factory_fails(
        "validate", "--template", "memory", "--name", "Acme Mem", "--set", "slug=acme-mem",
        "--set", "owner=Acme", "--set", "dependencies=acme-mem",
    )  # fmt: skip
    assert (status, out) == (
        2,
        "dependencies: acme-mem cannot depend on itself: that is a cycle.\n",
    )
    status, _, out = factory_fails("validate", "--template", "memory", "--json")
    answer = json.loads(out)
    assert status == 2 and answer["valid"] is False
    assert {"name", "slug", "owner"} <= {error["field"] for error in answer["errors"]}
    assert made() == before


def test_a_configuration_that_checks_out_exits_0(catalog) -> None:
    out, _ = factory(
        "validate", "--template", "memory", "--name", "Acme Memory", "--set", "owner=Acme",
        "--set", "settings.max_keys=500", "--set", "resources.replicas=2",
        "--set", "secrets=API_KEY=x;OTHER_KEY=y", "--set", "capabilities=memory-storage,cache",
        "--set", 'dependencies=["wow-cache"]',
    )  # fmt: skip
    assert out.startswith("The configuration checks out: Acme Memory (acme-memory), ")
    printed, _ = factory("validate", "--template", "blank", "--name", "B", "--set", "owner=123",
                         "--json")  # fmt: skip
    assert json.loads(printed) == {"valid": True, "errors": []}  # owner stays text


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ("validate", "--template", "gold"),
            "No template 'gold'; templates: memory, orchestration",
        ),
        (("create", "--template", "", "--name", "X"), "'' is not a template id; templates: memory"),
        (("validate", "--template", "memory", "--set", "owner"), "write a field as FIELD=VALUE"),
        (("create", "--template", "blank", "--name", "X", "--as", "nobody"), "No user 'nobody'"),
    ],
)
def test_bad_input_exits_2_with_a_sentence(catalog, args, says) -> None:
    before = made()
    status, message, _ = factory_fails(*args)
    assert status == 2 and says in message
    assert made() == before


def test_acting_as_a_user_takes_their_role(catalog, viewer, operator) -> None:
    before = made()
    status, message, _ = factory_fails(
        "create", "--template", "blank", "--name", "Acme Echo", "--set", "owner=Acme",
        "--as", viewer.username,
    )  # fmt: skip
    assert status == 2 and "needs the Operator role and you are Viewer" in message
    status, message, _ = factory_fails("sandbox", "--template", "blank", "--as", viewer.username)
    assert status == 2 and "run sandboxes" in message
    assert made() == before
    factory("create", "--template", "blank", "--name", "Acme Echo", "--set", "owner=Acme",
            "--as", operator.username)  # fmt: skip
    assert Draft.objects.get().actor.endswith(f"as {operator.username}")


def test_a_dry_run_prints_what_would_be_made_and_its_cost_and_makes_nothing(catalog) -> None:
    before = made()
    out, _ = factory(
        "create", "--template", "memory", "--name", "Acme Memory", "--set", "owner=Acme",
        "--set", "secrets=API_KEY=hunter2", "--dry-run",
    )  # fmt: skip
    assert "would make (nothing was made)" in out
    assert "agents:acme-memory:tasks" in out and "Data volume" in out
    assert "Acme Memory: error rate" in out and "API_KEY" in out and "hunter2" not in out
    assert "Monthly cost: " in out and "CPU: " in out
    printed, _ = factory("create", "--template", "memory", "--name", "Acme Memory", "--set",
                         "owner=Acme", "--dry-run", "--json")  # fmt: skip
    plan = json.loads(printed)
    assert plan["values"]["slug"] == "acme-memory" and plan["cost"]["monthly_total"]
    status, _, out = factory_fails("create", "--template", "memory", "--name", "WowCache",
                                   "--dry-run")  # fmt: skip
    assert status == 2 and "name: WowCache is taken by the agent wow-cache" in out
    assert made() == before


def test_create_starts_the_workflow_and_an_invalid_one_creates_nothing(catalog) -> None:
    before = made()
    status, _, out = factory_fails(
        "create", "--template", "memory", "--name", "Acme Memory", "--set", "settings.max_keys=x"
    )
    assert status == 2 and "settings.max_keys: " in out and "owner: " in out
    assert made() == before

    out, _ = factory("create", "--template", "blank", "--name", "Acme Echo", "--set", "owner=Acme",
                     "--keep-on-failure")  # fmt: skip
    run = WorkflowRun.objects.get()
    assert out.strip() == (
        f"Creating Acme Echo (acme-echo) as workflow run #{run.pk}: /workflows/{run.pk}/ "
        f"(`manage.py workflows show {run.pk}`)."
    )
    assert run.roll_back_on_failure is False and Draft.objects.get().status == "creating"
    printed, _ = factory("create", "--template", "blank", "--name", "Acme Two", "--set",
                         "owner=Acme", "--json")  # fmt: skip
    accepted = json.loads(printed)
    assert (accepted["agent_id"], accepted["status"]) == ("acme-two", "provisioning")
    assert accepted["workflow_url"] == f"/workflows/{accepted['workflow_id']}/"


def test_a_sandbox_runs_here_and_prints_each_test_and_the_logs(catalog, redis_client) -> None:
    out, _ = factory("sandbox", "--template", "blank", "--set", "secrets=TOKEN=abc")
    run = SandboxRun.objects.get()
    assert run.status == "passed" and run.torn_down_at is not None and run.secrets == {}
    lines = out.splitlines()
    assert lines[0].startswith("✓ pass  echoes its input  ") and lines[0].endswith(" ms")
    assert lines[1].startswith(f"Sandbox #{run.pk} passed: 1 of 1 test(s) passed; p50 ")
    assert "log lines:" in out and "info ready: connected to Redis" in out and "abc" not in out


def test_a_failing_sandbox_test_exits_1(catalog, redis_client) -> None:
    # An Admin's new version of the blank template whose test expects what the echo is not.
    templates.save_template(
        catalog["blank"],
        {"test_tasks": [{"name": "wants two", "payload": {"n": 1}, "expect": {"n": 2}}]},
        Actor.command("test"),
    )
    status, message, out = factory_fails("sandbox", "--template", "blank", "--json")
    assert status == 1 and "1 of 1 test(s) failed: wants two" in message
    answer = json.loads(out)
    assert answer["template_version"] == 2 and answer["status"] == "failed"
    assert answer["results"][0]["mismatch"] == ["output.n is 1, expected 2"]


def test_create_follow_watches_the_creation_to_a_running_agent(catalog, redis_client) -> None:
    """A worker's part played by a thread here (this test runs no Celery worker)."""
    worker_error: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(200):
                run = WorkflowRun.objects.first()
                if run is not None:
                    drive(run)
                    return
                threading.Event().wait(0.05)
        except BaseException as error:  # reported by the test
            worker_error.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        out, err = factory("create", "--template", "blank", "--name", "Acme Follow", "--set",
                           "owner=Acme", "--follow")  # fmt: skip
    finally:
        thread.join()
    assert not worker_error, worker_error
    run = WorkflowRun.objects.get()
    assert out.splitlines()[-1] == f"Created Acme Follow (acme-follow): run #{run.pk} succeeded."
    assert "register (Register the agent): succeeded" in err
    assert "first-task (First successful task): succeeded" in err
    assert Agent.objects.get(slug="acme-follow").state == State.RUNNING
    assert Draft.objects.get().status == "created"


def test_the_json_of_a_sandbox_is_what_the_api_answers(catalog, admin, redis_client) -> None:
    printed, _ = factory("sandbox", "--template", "blank", "--json")
    run = SandboxRun.objects.get()
    client = Client()
    client.force_login(admin)
    assert json.loads(printed) == client.get(f"/api/platform/factory/sandboxes/{run.pk}").json()
