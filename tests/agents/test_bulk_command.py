"""``manage.py agents bulk``: preview, typed confirmation, an inline run with a progress bar and a
summary table, exit status non-zero when an agent fails, retry, roll back, show, list, cancel.
Real agent processes on the local runtime; a real Celery worker where the command hands the job
to one, ``--inline`` elsewhere."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from django.core.management import CommandError, call_command

from agents.models import Agent, BulkOperation, Operation, State
from portal.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[2]
RUNS_AGENTS = pytest.mark.django_db(transaction=True)  # the runner's threads have connections


@pytest.fixture(autouse=True)
def quick_failures(settings):
    settings.AGENT_READY_TIMEOUT_SECONDS = 5


def bulk_command(*args: str) -> tuple[str, str]:
    """Run ``manage.py agents bulk ...`` in this process; returns (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("agents", "bulk", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def bulk_command_fails(*args: str) -> tuple[str, str, str]:
    """Run a bulk command that must end in a CommandError: (message, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as error:
        call_command("agents", "bulk", *args, stdout=out, stderr=err)
    return str(error.value), out.getvalue(), err.getvalue()


def states(*slugs: str) -> dict[str, str]:
    return dict(Agent.objects.filter(slug__in=slugs).values_list("slug", "state"))


def table_rows(out: str) -> dict[str, list[str]]:
    """Rows of a printed table by their first column (an agent's slug), split on 2+ spaces."""
    return {
        cells[0]: cells
        for line in out.splitlines()
        if (cells := re.split(r"\s{2,}", line.strip()))[0].startswith("wow-")
    }


class Terminal(io.StringIO):
    """Standard input that is a terminal someone types into."""

    def isatty(self) -> bool:
        return True


# --- preview --------------------------------------------------------------------------------


def test_dry_run_prints_the_preview_and_changes_nothing(seeded) -> None:
    out, _ = bulk_command("deploy-and-start", "wow-search", "wow-memory", "wow-cache", "--dry-run")
    lines = out.splitlines()
    assert lines[0] == "Deploy and start: 1 will change, 2 skipped; parallelism 5."
    assert lines[1].split() == ["AGENT", "STATE", "STEPS", "RESULT", "AFFECTED", "DEPENDENTS"]
    rows = table_rows(out)
    assert list(rows) == ["wow-cache", "wow-memory", "wow-search"]  # dependencies first
    assert rows["wow-cache"] == [
        "wow-cache", "DRAFT", "provision → deploy → start", "→ RUNNING", "-",
    ]  # fmt: skip
    assert rows["wow-memory"][3].startswith("skip (dependencies): WowMemory needs WowEvent")
    assert not BulkOperation.objects.exists() and not Operation.objects.exists()
    assert set(states(*rows).values()) == {State.DRAFT}

    as_json, _ = bulk_command("deploy_and_start", "--all", "--dry-run", "--json", "--parallel", "3")
    plan = json.loads(as_json)
    assert plan["action"] == "deploy_and_start" and plan["parallelism"] == 3
    assert plan["will_change"] == 14 and plan["items"][0]["steps"] == [
        "provision",
        "deploy",
        "start",
    ]
    assert not BulkOperation.objects.exists()


def test_dry_run_shows_the_confirmation_phrase_and_affected_dependents(seeded, bring_up) -> None:
    for slug in ("wow-event", "wow-cache", "wow-memory"):
        bring_up(seeded[slug])
    out, _ = bulk_command("stop", "wow-cache", "--dry-run")
    assert table_rows(out)["wow-cache"][-1] == "wow-memory"
    assert "Running agents that lose a dependency: wow-memory." in out
    everything, _ = bulk_command("stop", "--state", "running", "--dry-run")
    assert "Needs typed confirmation: “stop 3” (or --yes)." in everything
    assert list(table_rows(everything))[0] == "wow-memory"  # dependents first going down
    assert set(states("wow-event", "wow-cache", "wow-memory").values()) == {State.RUNNING}
    assert not BulkOperation.objects.exists()


# --- running --------------------------------------------------------------------------------


@RUNS_AGENTS
def test_inline_run_exits_zero_with_a_summary_table(seeded) -> None:
    out, err = bulk_command(
        "deploy_and_start", "wow-cache", "wow-event", "--inline", "--parallel", "2",
        "--reason", "on call",
    )  # fmt: skip
    operation = BulkOperation.objects.get()
    assert operation.status == BulkOperation.Status.SUCCEEDED and operation.parallelism == 2
    assert operation.options["reason"] == "on call"
    assert out.splitlines()[0].split() == [
        "AGENT", "RESULT", "STEPS", "STATE", "SECONDS", "ERROR", "/", "SKIP", "REASON",
    ]  # fmt: skip
    rows = table_rows(out)
    for slug in ("wow-cache", "wow-event"):
        assert rows[slug][:4] == [slug, "succeeded", "provision → deploy → start", "RUNNING"]
        assert re.fullmatch(r"\d+\.\d", rows[slug][4])
    assert re.search(
        rf"^#{operation.pk} Deploy and start: succeeded; 2 succeeded, 0 failed, 0 skipped of 2 "
        r"in \d+\.\d s\.$",
        out,
        re.M,
    )
    assert f"#{operation.pk} Deploy and start: succeeded" in err  # the progress bar, on stderr
    cache = Agent.objects.get(slug="wow-cache")
    port = cache.runtime_details["ports"][0]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:
        assert response.status == 200

    shown, _ = bulk_command("show", str(operation.pk), "--json")
    summary = json.loads(shown)
    assert summary["status"] == "succeeded" and summary["estimate_seconds_left"] is None
    assert summary["actor"].startswith("command:")
    assert [item["status"] for item in summary["items"]] == ["succeeded", "succeeded"]
    text, _ = bulk_command("show", str(operation.pk))
    assert table_rows(text)["wow-event"][1] == "succeeded"
    listed, _ = bulk_command("list")
    assert re.search(
        rf"^\s*{operation.pk}\s+deploy_and_start\s+run\s+succeeded\s+2/2\s+0\s+0", listed, re.M
    )


@RUNS_AGENTS
def test_by_default_a_worker_runs_it_while_the_command_waits(seeded, redis_client) -> None:
    with start_worker(celery_app, pool="solo", perform_ping_check=False):
        out, err = bulk_command("deploy", "wow-cache", "wow-event")
    operation = BulkOperation.objects.get()
    assert (operation.status, operation.runs) == (BulkOperation.Status.SUCCEEDED, 1)
    assert re.search(rf"^#{operation.pk} Deploy: succeeded; 2 succeeded", out, re.M)
    assert f"#{operation.pk} Deploy: succeeded" in err
    assert states("wow-cache", "wow-event") == {"wow-cache": "DEPLOYED", "wow-event": "DEPLOYED"}


@RUNS_AGENTS
def test_stop_every_running_agent_with_yes_then_roll_it_back(seeded, bring_up) -> None:
    for slug in ("wow-event", "wow-cache"):
        bring_up(seeded[slug])
    out, _ = bulk_command("stop", "--state", "RUNNING", "--inline", "--yes")
    stop = BulkOperation.objects.get()
    assert stop.status == BulkOperation.Status.SUCCEEDED
    assert sorted(table_rows(out)) == ["wow-cache", "wow-event"]
    assert states("wow-event", "wow-cache") == {"wow-event": "STOPPED", "wow-cache": "STOPPED"}

    preview, _ = bulk_command("rollback", str(stop.pk), "--dry-run")
    assert preview.splitlines()[0] == "Roll back: 2 will change, 0 skipped; parallelism 5."
    assert table_rows(preview)["wow-event"][1:4] == ["STOPPED", "start", "→ RUNNING"]
    assert BulkOperation.objects.count() == 1

    out, _ = bulk_command("rollback", str(stop.pk), "--inline")
    rollback = BulkOperation.objects.get(kind=BulkOperation.Kind.ROLLBACK)
    assert rollback.status == BulkOperation.Status.SUCCEEDED and rollback.follows_id == stop.pk
    assert f"#{rollback.pk} Roll back of #{stop.pk}: succeeded; 2 succeeded" in out
    assert states("wow-event", "wow-cache") == {"wow-event": "RUNNING", "wow-cache": "RUNNING"}


@RUNS_AGENTS
def test_a_failing_agent_makes_the_exit_status_non_zero_and_retry_fixes_it(seeded) -> None:
    cache = seeded["wow-cache"]
    cache.config = {"faults": {"crash_after_seconds": 0}}
    cache.save()
    message, out, _ = bulk_command_fails("deploy_and_start", "wow-event", "wow-cache", "--inline")
    operation = BulkOperation.objects.get()
    assert operation.status == BulkOperation.Status.PARTIAL
    assert message == (
        f"Bulk operation #{operation.pk} partly failed: 1 succeeded, 1 failed, 0 skipped of 2 in "
        f"{operation.duration_seconds:.1f} s. `manage.py agents bulk retry {operation.pk}` "
        "retries the failed ones."
    )
    rows = table_rows(out)
    assert rows["wow-event"][1] == "succeeded"
    assert rows["wow-cache"][1:3] == ["failed", "provision → deploy → start (2/3 done)"]
    assert rows["wow-cache"][-1].startswith("Start failed: ")
    assert f"#{operation.pk} Deploy and start: partial; 1 succeeded, 1 failed" in out

    cache.refresh_from_db()
    cache.config = {}
    cache.save()
    out, _ = bulk_command("retry", str(operation.pk), "--inline")
    retry = BulkOperation.objects.get(kind=BulkOperation.Kind.RETRY)
    assert retry.status == BulkOperation.Status.SUCCEEDED and retry.follows_id == operation.pk
    assert list(table_rows(out)) == ["wow-cache"]
    assert f"#{retry.pk} Deploy and start (retry of #{operation.pk}): succeeded;" in out
    assert states("wow-event", "wow-cache") == {"wow-event": "RUNNING", "wow-cache": "RUNNING"}
    message, _, _ = bulk_command_fails("retry", str(retry.pk))
    assert message == f"Bulk operation #{retry.pk} has no failed agent to retry."


@RUNS_AGENTS
def test_exit_status_of_a_real_process_is_one_when_an_agent_fails(
    seeded, test_database_url, redis_url, agent_root
) -> None:
    Agent.objects.filter(slug="wow-cache").update(config={"faults": {"crash_after_seconds": 0}})
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url,
        "REDIS_URL": redis_url,
        "AGENT_ROOT": str(agent_root),
        "AGENT_READY_TIMEOUT_SECONDS": "5",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "agents", "bulk", "deploy_and_start", "wow-cache", "--inline"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert re.search(
        r"CommandError: Bulk operation #\d+ failed: 0 succeeded, 1 failed", result.stderr
    )
    assert re.search(r"wow-cache\s+failed", result.stdout)
    assert BulkOperation.objects.get().status == BulkOperation.Status.FAILED


# --- confirmation, bad input, queueing -----------------------------------------------------------


def test_typed_confirmation_is_refused_without_yes(seeded, monkeypatch) -> None:
    message, _, _ = bulk_command_fails("revoke", "wow-cache", "wow-event")
    assert message == (
        "This revoke changes 2 agents and must be confirmed by typing “revoke 2”; run it at a "
        "terminal, or pass --yes. Nothing was done."
    )
    monkeypatch.setattr(sys, "stdin", Terminal("revoke 3\n"))
    message, out, err = bulk_command_fails("revoke", "wow-cache", "wow-event")
    assert message == "Not confirmed (“revoke 2” was not typed); nothing was done."
    assert "Type “revoke 2” to confirm:" in err and "Revoke: 2 will change" in err
    assert out == ""
    assert not BulkOperation.objects.exists()
    assert states("wow-cache", "wow-event") == {"wow-cache": "DRAFT", "wow-event": "DRAFT"}

    monkeypatch.setattr(sys, "stdin", Terminal("revoke 2\n"))
    out, _ = bulk_command("revoke", "wow-cache", "wow-event", "--no-wait")
    operation = BulkOperation.objects.get()
    assert out == f"{operation.pk}\n"
    assert operation.action == "revoke" and operation.status == BulkOperation.Status.PENDING


def test_bad_input_is_a_command_error_and_changes_nothing(seeded, settings) -> None:
    ceiling = settings.BULK_MAX_PARALLELISM
    cases = [
        (("start", "wow-cache", "wow-nothing"), "There is no agent 'wow-nothing'"),
        (("start", "--state", "asleep"), "'asleep' is not a state; use one of DRAFT"),
        (("start", "--tier", "gold"), "'gold' is not a tier"),
        (("deploy", "wow-cache", "--parallel", str(ceiling + 1)),
         f"Parallelism {ceiling + 1} is not allowed: give a whole number from 1 to {ceiling}"),
        (("deploy", "wow-cache", "--parallel", "many"), "invalid int value: 'many'"),
        (("deploy", "wow-cache", "--all"), "either a list of agents or a filter, not both"),
        (("deploy",), "Choose the agents"),
        (("explode", "--all"), "invalid choice: 'explode'"),
        (("stop", "--state", "RUNNING"), "No agent matches state RUNNING."),
        (("stop", "wow-cache"), "Nothing to do: every chosen agent would be skipped"),
        (("deploy", "wow-cache", "--inline", "--no-wait"), "--inline runs the operation in this"),
        (("show", "4242"), "There is no bulk operation #4242; `manage.py agents bulk list`"),
        (("retry", "4242"), "There is no bulk operation #4242"),
        (("list", "--status", "done"), "--status 'done' is not a bulk status"),
    ]  # fmt: skip
    for args, expected in cases:
        message, out, _ = bulk_command_fails(*args)
        assert expected in message, (args, message)
        assert out == ""
    assert not BulkOperation.objects.exists() and not Operation.objects.exists()


def test_no_wait_queues_it_and_cancel_skips_the_agents(seeded) -> None:
    out, err = bulk_command("deploy", "--tier", "platform", "--no-wait")
    operation = BulkOperation.objects.get()
    assert out == f"{operation.pk}\n"
    assert f"`manage.py agents bulk show {operation.pk}` follows it" in err
    assert operation.status == BulkOperation.Status.PENDING and operation.total == 14

    listed = json.loads(bulk_command("list", "--json", "--status", "pending")[0])
    assert [(row["id"], row["status"], row["total"]) for row in listed] == [
        (operation.pk, "pending", 14)
    ]
    out, _ = bulk_command("cancel", str(operation.pk))
    assert out == (
        f"Bulk operation #{operation.pk} cancelled: nothing was running it, its pending agents "
        "are skipped.\n"
    )
    operation.refresh_from_db()
    assert operation.status == BulkOperation.Status.CANCELLED and operation.skipped == 14
    message, _, _ = bulk_command_fails("cancel", str(operation.pk))
    assert message == f"Bulk operation #{operation.pk} has already finished (cancelled)."
    rollback, _, _ = bulk_command_fails("rollback", str(operation.pk), "--dry-run")
    assert (
        rollback
        == f"Bulk operation #{operation.pk} changed no agent; there is nothing to roll back."
    )
    assert not Operation.objects.exists()
