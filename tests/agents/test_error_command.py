"""``manage.py agents errors | error | recover | auto-recovery``: tables and JSON (the API's shape),
filters, one error in full, patterns and stats, one-click recovery inline and through a real
Celery worker with its exit statuses (0 fixed, 1 did not help, 2 refused), and the switch.
Real agent processes with a real bad config where a recovery runs."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from django.core.management import CommandError, call_command
from django.db import transaction

from agents import errors, services
from agents.models import Agent, AgentError, RecoveryAttempt, State
from portal.actors import Actor
from portal.celery import app as celery_app
from portal.models import AuditEntry

ROOT = Path(__file__).resolve().parents[2]
RUNS_AGENTS = pytest.mark.django_db(transaction=True)  # agent processes and their threads


@pytest.fixture(autouse=True)
def quick(settings):
    settings.AGENT_READY_TIMEOUT_SECONDS = 5
    settings.AGENT_RECOVERY_VERIFY_SECONDS = 3
    settings.AGENT_AUTO_RECOVERY = True


def agents(*args: str) -> tuple[str, str]:
    """Run ``manage.py agents ...`` in this process; returns (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("agents", *[str(arg) for arg in args], stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def agents_fails(*args: str) -> tuple[CommandError, str, str]:
    """Run a command that must end in a CommandError: (the error, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as failure:
        call_command("agents", *[str(arg) for arg in args], stdout=out, stderr=err)
    return failure.value, out.getvalue(), err.getvalue()


def table_rows(out: str) -> dict[str, list[str]]:
    """Rows of a printed table by their first column (a number), split on 2+ spaces."""
    return {
        cells[0]: cells
        for line in out.splitlines()
        if (cells := re.split(r"\s{2,}", line.strip()))[0].isdigit()
    }


@pytest.fixture
def recorded(seeded) -> dict[str, AgentError]:
    """A port conflict, a crash and a dependency down, recorded as the services record them."""
    return _record_three(seeded)


@transaction.atomic  # record_error is called inside the change's transaction
def _record_three(seeded) -> dict[str, AgentError]:
    port = errors.record_error(
        seeded["wow-cache"], "action", "WowCache cannot listen on port 8080: it is in use.",
        {"reason": "port_in_use", "port": 8080, "holder": {"description": "nginx (pid 42)"},
         "log_lines": ["agentd starting", "bind [::]:8080: address already in use"]},
        action="start",
    )  # fmt: skip
    crash = errors.record_error(
        seeded["wow-event"], "crash", "WowEvent exited with code 1.",
        {"exit_code": 1, "log_lines": ["Traceback (most recent call last):", "KeyError: 'x'"]},
    )  # fmt: skip
    dependency = errors.record_error(
        seeded["wow-memory"], "health", "WowMemory is not ready.", {"log_lines": ["waiting"]}
    )
    return {"port": port, "crash": crash, "dependency": dependency}


def break_config(agent: Agent, *configs: dict) -> Agent:
    """Change the agent's config as an Admin does in the admin, one change after another."""
    for config in configs:
        agent = Agent.objects.get(pk=agent.pk)
        agent.config = config
        services.update_agent_settings(agent, ["config"], Actor.command("test"))
    return Agent.objects.get(pk=agent.pk)


@pytest.fixture
def config_error(seeded, bring_up, act) -> AgentError:
    """A running agent restarted with a config agentd refuses: a real configuration error."""
    cache = break_config(bring_up(seeded["wow-cache"]), {"task_max_failures": -1})
    assert act(cache, "restart").status == "failed"
    return AgentError.objects.get(agent=cache)


# --- reading ----------------------------------------------------------------------------------


def test_errors_lists_newest_first_with_the_one_click_fixes(recorded) -> None:
    out, _ = agents("errors")
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID", "LAST", "SEEN", "AGENT", "CLASS", "STATUS", "TIMES", "WHAT", "HAPPENED",
        "ONE-CLICK", "FIXES",
    ]  # fmt: skip
    rows = table_rows(out)
    port, crash, dependency = (str(recorded[key].pk) for key in ("port", "crash", "dependency"))
    assert list(rows) == [dependency, crash, port]
    assert rows[port][2:] == [
        "wow-cache", "resource", "open", "1", "WowCache cannot listen on port 8080: it is in use.",
        "pick_new_port, restart",
    ]  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows[port][1])
    assert rows[dependency][2:4] == ["wow-memory", "dependency"]
    assert rows[dependency][-1] == "start_dependencies, restart_with_dependencies"


def test_filters_and_json_as_the_api_answers(recorded, operator, as_viewer) -> None:
    errors.ignore_error(recorded["crash"], Actor(kind="user", user=operator), "known flake")
    port, crash, dependency = (str(recorded[key].pk) for key in ("port", "crash", "dependency"))
    assert list(table_rows(agents("errors", "--open")[0])) == [dependency, port]
    assert list(table_rows(agents("errors", "--status", "ignored")[0])) == [crash]
    assert list(table_rows(agents("errors", "--agent", "wow-cache")[0])) == [port]
    assert list(table_rows(agents("errors", "--class", "dependency")[0])) == [dependency]
    assert list(table_rows(agents("errors", "--limit", "1")[0])) == [dependency]
    assert agents("errors", "--open", "--agent", "wow-event")[0] == "No open errors.\n"

    listed = json.loads(agents("errors", "--json")[0])
    assert listed == as_viewer.get("/api/platform/errors").json()
    assert [row["status"] for row in listed] == ["open", "ignored", "open"]
    shown = json.loads(agents("errors", "show", port, "--json")[0])
    assert shown == as_viewer.get(f"/api/platform/errors/{port}").json()
    assert json.loads(agents("error", port, "--json")[0]) == shown


def test_bad_input_is_a_command_error(recorded) -> None:
    cases = [
        (("errors", "--status", "fixed"), "--status 'fixed' is not an error status; use one of"),
        (("errors", "--class", "fatal"), "--class 'fatal' is not a classification; use one of"),
        (("errors", "--agent", "wow-nothing"), "There is no agent 'wow-nothing'"),
        (("errors", "show", "4242"), "There is no error #4242; `manage.py agents errors` lists"),
        (("error", "4242"), "There is no error #4242"),
        (("errors", "show", "many"), "invalid int value: 'many'"),
        (("errors", "patterns", "--days", "0"), "--days 0 is out of range"),
        (("auto-recovery", "maybe"), "invalid choice: 'maybe'"),
    ]
    for args, expected in cases:
        error, out, _ = agents_fails(*args)
        assert expected in str(error), (args, str(error))
        assert out == ""


def test_show_prints_the_cause_evidence_and_how_to_recover(recorded) -> None:
    port = recorded["port"]
    out, _ = agents("errors", "show", port.pk)
    lines = out.splitlines()
    assert lines[0] == f"Error #{port.pk} on wow-cache (WowCache): open, resource, 1 time"
    assert lines[1].startswith("First seen ") and lines[1].endswith(
        "; source action, rule port_in_use"
    )
    assert lines[2] == "What happened: WowCache cannot listen on port 8080: it is in use."
    assert lines[3] == (
        "Root cause:    Port 8080 is held by nginx (pid 42), so WowCache cannot listen on it."
    )
    assert lines[4:7] == [
        "Evidence (the last log lines before it):",
        "  agentd starting",
        "  bind [::]:8080: address already in use",  # brackets printed, not taken as markup
    ]
    assert lines[7] == "Suggestions:"
    assert lines[8] == (
        f"  1. Pick another port and start  `manage.py agents recover {port.pk} pick_new_port`"
    )
    assert lines[9] == "     Give the agent a free port and start it there."
    assert lines[10] == "  2. Free the port"
    assert lines[12] == f"  3. Restart  `manage.py agents recover {port.pk} restart`"
    assert agents("error", port.pk)[0] == out


def test_patterns_and_stats(recorded, seeded) -> None:
    errors.record_error(
        seeded["wow-search"], "action", "in use", {"reason": "port_in_use", "port": 8080}
    )
    out, _ = agents("errors", "patterns")
    lines = out.splitlines()
    assert lines[0].split() == ["TIMES", "AGENTS", "OPEN", "CLASS", "PATTERN", "FIRST", "LAST"]
    assert re.split(r"\s{2,}", lines[1].strip())[:5] == [
        "2", "2", "2", "resource", "port 8080 in use",
    ]  # fmt: skip
    rows = json.loads(agents("errors", "patterns", "--agent", "wow-event", "--json")[0])
    assert [(row["pattern"], row["times"]) for row in rows] == [("exited (exit code 1)", 1)]
    assert agents("errors", "patterns", "--agent", "wow-vision")[0] == (
        "No errors in the last 7 days.\n"
    )

    out, _ = agents("errors", "stats")
    assert out.splitlines()[0] == (
        f"4 open; 4 seen in the last hour, {round(4 / 24, 2):g} an hour over the last 24 h."
    )
    assert re.search(r"^\s*wow-cache\s+resource\s+1\s*$", out, re.M)
    stats = json.loads(agents("errors", "stats", "--json")[0])
    assert (stats["open"], stats["last_hour"]) == (4, 4)
    assert {row["agent__slug"] for row in stats["by_agent_and_class"]} == {
        "wow-cache", "wow-event", "wow-memory", "wow-search",
    }  # fmt: skip


# --- recovering -------------------------------------------------------------------------------


@RUNS_AGENTS
def test_recover_inline_refuses_what_is_not_offered_then_fixes_and_exits_zero(
    config_error,
) -> None:
    error = config_error
    refused, out, _ = agents_fails("recover", error.pk, "restart", "--inline")
    assert refused.returncode == 2 and out == ""
    assert str(refused) == "Restart is not a fix for this error; offered: Roll back the config."
    assert not RecoveryAttempt.objects.exists()

    out, err = agents("recover", error.pk, "rollback_config", "--inline")
    assert re.fullmatch(
        rf"✓ Error #{error.pk} \(wow-cache\): Roll back the config: fixed in \d+\.\d s: "
        r"verified: RUNNING and healthy for \d+ s\n",
        out,
    )
    attempt = RecoveryAttempt.objects.get()
    assert (attempt.outcome, attempt.actor_kind) == ("fixed", "command")
    assert attempt.actor.startswith("command:")
    error.refresh_from_db()
    assert (error.status, error.resolved_by) == ("resolved", attempt.actor)
    cache = Agent.objects.get(slug="wow-cache")
    assert (cache.state, cache.health, cache.config) == (State.RUNNING, "healthy", {})
    assert AuditEntry.objects.filter(
        action="agent.recover", target="wow-cache", outcome="refused"
    ).exists()

    shown, _ = agents("errors", "show", error.pk)
    assert "Attempts:" in shown and re.search(r"rollback_config\s+command:\S+\s+fixed", shown)
    assert "`manage.py agents recover" not in shown  # nothing to click on a resolved error
    assert f"Resolved by {attempt.actor} at " in shown
    closed, _, _ = agents_fails("recover", error.pk, "rollback_config")
    assert closed.returncode == 2
    assert str(closed) == f"Error #{error.pk} is resolved; there is nothing to recover."


@RUNS_AGENTS
def test_a_recovery_that_does_not_help_exits_one(seeded, bring_up, act) -> None:
    """The config before the bad one was unhealthy too: rolling back starts the agent, but it does
    not become healthy within the verify time."""
    cache = break_config(
        bring_up(seeded["wow-cache"]), {"faults": {"unhealthy": True}}, {"task_max_failures": -1}
    )
    assert act(cache, "restart").status == "failed"
    error = AgentError.objects.get(agent=cache)
    failure, out, _ = agents_fails("recover", error.pk, "rollback_config", "--inline")
    assert failure.returncode == 1
    assert str(failure) == (
        f"Error #{error.pk} is still open; `manage.py agents errors show {error.pk}` shows the "
        "other suggestions."
    )
    assert re.fullmatch(
        rf"✗ Error #{error.pk} \(wow-cache\): Roll back the config: did not help in \d+\.\d s: "
        r"not RUNNING and healthy within 3 s: RUNNING but unhealthy .*\n",
        out,
    )
    error.refresh_from_db()
    assert (error.status, error.retry_count) == ("open", 1)
    assert RecoveryAttempt.objects.get().outcome == "did_not_help"


@RUNS_AGENTS
def test_by_default_a_worker_carries_it_out_while_the_command_waits(
    config_error, redis_client
) -> None:
    with start_worker(celery_app, pool="solo", perform_ping_check=False):
        out, _ = agents("recover", config_error.pk, "rollback_config")
    assert out.startswith(f"✓ Error #{config_error.pk} (wow-cache): Roll back the config: fixed")
    config_error.refresh_from_db()
    assert config_error.status == "resolved"
    assert Agent.objects.get(slug="wow-cache").state == State.RUNNING


def test_no_wait_queues_it_and_a_second_request_is_refused(recorded) -> None:
    crash = recorded["crash"]
    out, err = agents("recover", crash.pk, "restart", "--no-wait")
    attempt = RecoveryAttempt.objects.get()
    assert out == f"{attempt.pk}\n"
    assert f"`manage.py agents errors show {crash.pk}` shows its outcome" in err
    crash.refresh_from_db()
    assert (crash.status, attempt.outcome) == ("recovering", "running")
    busy, _, _ = agents_fails("recover", crash.pk, "restart")
    assert busy.returncode == 2 and "is already running; wait for its result" in str(busy)
    for args, expected in [
        (("recover", crash.pk, "restart", "--inline", "--no-wait"), "drop --no-wait"),
        (("recover", crash.pk, "reboot"), "'reboot' is not a recovery; use one of restart,"),
        (("recover", "4242", "restart"), "There is no error #4242"),
    ]:
        refused, out, _ = agents_fails(*args)
        assert refused.returncode == 2 and expected in str(refused), args
        assert out == ""
    assert RecoveryAttempt.objects.count() == 1


@pytest.mark.django_db(transaction=True)  # the subprocess reads what this test wrote
def test_exit_statuses_of_a_real_process(recorded, test_database_url, redis_url, agent_root):
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url,
        "REDIS_URL": redis_url,
        "AGENT_ROOT": str(agent_root),
    }

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", "agents", *[str(arg) for arg in args]],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    listed = manage("errors", "--open", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["id"] for row in json.loads(listed.stdout)] == [
        recorded[key].pk for key in ("dependency", "crash", "port")
    ]
    refused = manage("recover", recorded["crash"].pk, "rollback_config")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "CommandError: Roll back the config is not a fix for this error" in refused.stderr
    missing = manage("errors", "show", "4242")
    assert missing.returncode == 1
    assert "CommandError: There is no error #4242" in missing.stderr


def test_ignore_closes_an_open_error_once(recorded) -> None:
    crash = recorded["crash"]
    out, _ = agents("errors", "ignore", crash.pk, "--reason", "a test run")
    assert out == f"Error #{crash.pk} (wow-event) ignored: a test run\n"
    crash.refresh_from_db()
    assert (crash.status, crash.resolution) == ("ignored", "a test run")
    assert crash.resolved_by.startswith("command:")
    again, out, _ = agents_fails("errors", "ignore", crash.pk)
    assert str(again) == f"Error #{crash.pk} is ignored; there is nothing to ignore." and out == ""
    missing, _, _ = agents_fails("errors", "ignore", "4242")
    assert "There is no error #4242" in str(missing)
    ignored = json.loads(agents("errors", "--status", "ignored", "--json")[0])
    assert [row["id"] for row in ignored] == [crash.pk]


# --- the automatic-recovery switch ----------------------------------------------------------------


def test_auto_recovery_on_off_and_status(db) -> None:
    assert agents("auto-recovery")[0] == (
        "Automatic recovery is on (the AGENT_AUTO_RECOVERY setting).\n"
    )
    out, _ = agents("auto-recovery", "off")
    assert re.fullmatch(
        r"Automatic recovery is off \(switched off by command:\S+ at [\d: -]+\)\.\n", out
    )
    assert errors.automatic_recovery_on() is False
    assert agents("auto-recovery", "status")[0] == out
    assert agents("auto-recovery", "on")[0].startswith("Automatic recovery is on (switched on by")
    assert errors.automatic_recovery_on() is True
    assert [entry.detail["on"] for entry in AuditEntry.objects.filter(
        action="errors.automatic_recovery"
    ).order_by("pk")] == [False, True]  # fmt: skip
