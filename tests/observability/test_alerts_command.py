"""``manage.py alerts`` and ``manage.py events``: tables and JSON (the API's shape), filters,
acknowledging, resolving and silencing (audited, as the command), evaluating the rules once,
the rules, and the exit statuses: 0 done, 1 refused or already done, 2 bad input or no such
alert. Alerts are fired by ``alerts.evaluate()`` on agents taken through the real services."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from agents import services
from agents.models import Agent, State
from observability import alerts
from observability.models import Alert, AlertRule, Event
from portal.actors import Actor
from portal.models import AuditEntry
from tests.agents import conftest as agents_conftest

ROOT = Path(__file__).resolve().parents[2]

# The agents' fixtures: a private agent root per test, the seeded registry, actions run here.
agent_root, seeded, act = agents_conftest.agent_root, agents_conftest.seeded, agents_conftest.act


@pytest.fixture(autouse=True)
def default_rules(db):
    alerts.ensure_default_rules(Actor.command("test"))


@pytest.fixture
def fleet(seeded, act) -> dict:
    """WowCache deployed then crashed (ERRORED), WowEvent deployed but not started and watched
    by a warning rule an Admin added; one evaluation fires an alert for each."""
    cache, event = seeded["wow-cache"], seeded["wow-event"]
    for agent in (cache, event):
        for action in ("provision", "deploy"):
            assert act(agent, action).status == "succeeded"
    assert services.record_crash(cache, {"exit_code": 1, "replica": 0})
    AlertRule.objects.create(
        name="Deployed, not started", kind="state", state=State.DEPLOYED, severity="warning"
    )
    assert alerts.evaluate() == {"fired": 2, "resolved": 0}
    return {"critical": Alert.objects.get(agent=cache), "warning": Alert.objects.get(agent=event)}


def run(command: str, *args) -> tuple[str, str]:
    """``manage.py <command> ...`` in this process; returns (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command(command, *[str(arg) for arg in args], stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def fails(command: str, *args) -> tuple[CommandError, str]:
    """A command that must end in a CommandError: (the error, stdout)."""
    out = io.StringIO()
    with pytest.raises(CommandError) as failure:
        call_command(command, *[str(arg) for arg in args], stdout=out, stderr=io.StringIO())
    return failure.value, out.getvalue()


def table_rows(out: str) -> dict[str, list[str]]:
    """Rows of a printed table by their first column (a number), split on 2+ spaces."""
    return {
        cells[0]: cells
        for line in out.splitlines()
        if (cells := re.split(r"\s{2,}", line.strip()))[0].isdigit()
    }


# --- alerts list and show ---------------------------------------------------------------------


def test_list_shows_the_open_alerts_newest_first(fleet) -> None:
    critical, warning = fleet["critical"], fleet["warning"]
    out, _ = run("alerts", "list")
    assert out.splitlines()[0].split() == [
        "ID", "SEVERITY", "STATUS", "AGENT", "SUMMARY", "FIRED", "BY",
    ]  # fmt: skip
    rows = table_rows(out)
    assert list(rows) == [str(warning.pk), str(critical.pk)]
    assert rows[str(critical.pk)][1:5] == [
        "critical", "firing", "wow-cache", "WowCache is ERRORED: process exited with code 1",
    ]  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows[str(critical.pk)][5])
    assert rows[str(critical.pk)][6] == "-"


def test_list_filters_and_whom_it_shows(fleet, operator) -> None:
    critical, warning = fleet["critical"], fleet["warning"]
    alerts.acknowledge(warning, Actor(kind="user", user=operator, source="127.0.0.1"))
    alerts.resolve(critical, Actor.command("test"), "fixed the disk")

    rows = table_rows(run("alerts", "list")[0])
    assert list(rows) == [str(warning.pk)]
    assert rows[str(warning.pk)][2] == "acknowledged" and rows[str(warning.pk)][6] == "user:otto"
    assert list(table_rows(run("alerts", "list", "--status", "all")[0])) == [
        str(warning.pk), str(critical.pk),
    ]  # fmt: skip
    resolved = table_rows(run("alerts", "list", "--status", "resolved")[0])
    assert list(resolved) == [str(critical.pk)]
    assert resolved[str(critical.pk)][6].startswith("command:")
    assert list(table_rows(run("alerts", "list", "--status", "firing")[0])) == []
    assert run("alerts", "list", "--status", "firing")[0] == "No alerts.\n"
    assert list(
        table_rows(run("alerts", "list", "--status", "all", "--agent", "wow-cache")[0])
    ) == [str(critical.pk)]
    assert list(
        table_rows(run("alerts", "list", "--status", "all", "--severity", "WARNING")[0])
    ) == [str(warning.pk)]


def test_list_json_is_what_the_api_answers(fleet, as_viewer) -> None:
    listed = json.loads(run("alerts", "list", "--json")[0])
    answered = as_viewer.get("/api/platform/alerts", {"status": "open"}).json()["alerts"]
    assert [row["id"] for row in listed] == [row["id"] for row in answered]
    # The same fields and values; the API writes times to the millisecond.
    for mine, theirs in zip(listed, answered, strict=True):
        assert set(mine) == set(theirs)
        assert {k: v for k, v in mine.items() if not k.endswith("_at")} == {
            k: v for k, v in theirs.items() if not k.endswith("_at")
        }


def test_show_prints_one_alert_in_full(fleet) -> None:
    critical = fleet["critical"]
    alerts.silence(critical, Actor.command("test"), timedelta(minutes=30))
    out, _ = run("alerts", "show", critical.pk)
    assert (
        out.splitlines()[0]
        == f"Alert #{critical.pk} on wow-cache (WowCache): critical, firing (silenced)"
    )
    assert "Rule:      Agent errored (agent is ERRORED)" in out
    assert "Silenced by command:" in out
    assert json.loads(run("alerts", "show", critical.pk, "--json")[0])["silenced"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("list", "--status", "burning"), "--status 'burning' is not an alert status; use one of open,"),
        (("list", "--agent", "wow-nothing"), "No agent called 'wow-nothing': use a slug such as wow-cache."),
        (("list", "--severity", "loud"), "Unknown severity 'loud': choose one of info, warning, critical."),
        (("list", "--limit", "0"), "--limit must be at least 1."),
        (("show", "4242"), "There is no alert #4242; `manage.py alerts list --status all` lists them."),
        (("ack", "4242"), "There is no alert #4242"),
        (("resolve", "4242"), "There is no alert #4242"),
        (("silence", "4242", "10"), "There is no alert #4242"),
    ],
)  # fmt: skip
def test_bad_input_exits_two(db, args, message) -> None:
    error, out = fails("alerts", *args)
    assert error.returncode == 2 and str(error).startswith(message) and out == ""


# --- acting -----------------------------------------------------------------------------------


def test_ack_once_then_it_is_refused_with_status_one(fleet) -> None:
    critical = fleet["critical"]
    out, _ = run("alerts", "ack", critical.pk, "--note", "looking")
    critical.refresh_from_db()
    assert critical.status == "acknowledged" and critical.acknowledged_by.startswith("command:")
    assert out == f"Alert #{critical.pk} (wow-cache) acknowledged by {critical.acknowledged_by}.\n"
    entry = AuditEntry.objects.get(action="alert.acknowledge", outcome="success")
    assert entry.source == "manage.py alerts ack" and entry.detail["note"] == "looking"
    again, out = fails("alerts", "ack", critical.pk)
    assert again.returncode == 1 and out == ""
    assert (
        str(again)
        == f"Alert #{critical.pk} was already acknowledged by {critical.acknowledged_by}."
    )
    assert AuditEntry.objects.filter(action="alert.acknowledge", outcome="refused").count() == 1


def test_resolve_with_a_note_then_nothing_more_can_be_done(fleet) -> None:
    warning = fleet["warning"]
    out, _ = run("alerts", "resolve", warning.pk, "--note", "expected: not started on purpose")
    warning.refresh_from_db()
    assert (warning.status, warning.resolution) == ("resolved", "expected: not started on purpose")
    assert out == (
        f"Alert #{warning.pk} (wow-event) resolved by {warning.resolved_by}: "
        "expected: not started on purpose\n"
    )
    for args in (("resolve", warning.pk), ("ack", warning.pk), ("silence", warning.pk, 5)):
        refused, _ = fails("alerts", *args)
        assert refused.returncode == 1, args
        assert str(refused) == (
            f"Alert #{warning.pk} is already resolved by {warning.resolved_by}; there is nothing "
            f"to {'acknowledge' if args[0] == 'ack' else args[0]}."
        )


def test_silence_for_minutes(fleet) -> None:
    critical = fleet["critical"]
    before = timezone.now()
    out, _ = run("alerts", "silence", critical.pk, 45)
    critical.refresh_from_db()
    assert before + timedelta(minutes=45) <= critical.silenced_until
    assert critical.silenced_until <= timezone.now() + timedelta(minutes=45)
    shown = timezone.localtime(critical.silenced_until)
    assert out == f"Alert #{critical.pk} (wow-cache) silenced until {shown:%Y-%m-%d %H:%M:%S}.\n"
    assert AuditEntry.objects.get(action="alert.silence").detail["minutes"] == 45
    for minutes in (0, 10081):
        wrong, _ = fails("alerts", "silence", critical.pk, minutes)
        assert wrong.returncode == 2
        assert str(wrong) == "Silence an alert for between one minute and 7 days."


# --- evaluate and rules -----------------------------------------------------------------------


def test_evaluate_runs_the_rules_once_and_says_what_changed(seeded, act) -> None:
    cache, event = seeded["wow-cache"], seeded["wow-event"]
    for agent in (cache, event):
        act(agent, "provision")
        act(agent, "deploy")
    assert run("alerts", "evaluate")[0] == "Evaluated 9 rules: 0 fired, 0 resolved.\n"
    assert services.record_crash(cache, {"exit_code": 1})
    assert services.record_crash(event, {"exit_code": 2})
    assert run("alerts", "evaluate")[0] == "Evaluated 9 rules: 2 fired, 0 resolved.\n"
    assert run("alerts", "evaluate")[0] == "Evaluated 9 rules: 0 fired, 0 resolved.\n"
    act(Agent.objects.get(pk=event.pk), "revoke", confirm=True)
    assert Agent.objects.get(pk=event.pk).state == State.REVOKED
    assert run("alerts", "evaluate")[0] == "Evaluated 9 rules: 0 fired, 1 resolved.\n"
    assert Alert.objects.get(agent=event).resolution == "The condition cleared."


def test_rules_lists_every_rule_with_its_condition_and_open_alerts(fleet) -> None:
    AlertRule.objects.filter(name="Memory near limit").update(enabled=False)
    out, _ = run("alerts", "rules")
    assert out.splitlines()[0].split() == [
        "NAME", "CONDITION", "SEVERITY", "AGENTS", "ENABLED", "OPEN",
    ]  # fmt: skip
    rows = {
        cells[0]: cells
        for line in out.splitlines()[1:]
        if (cells := re.split(r"\s{2,}", line.strip()))
    }
    assert rows["Agent errored"][1:] == ["agent is ERRORED", "critical", "all", "yes", "1"]
    assert rows["High error rate"][1:] == [
        "error rate (%) > 5 for 5 min",
        "warning",
        "all",
        "yes",
        "0",
    ]
    assert rows["Memory near limit"][4] == "no"
    assert rows["No heartbeat"][1] == "no heartbeat for 1 min"
    assert rows["Deployed, not started"][1:] == ["agent is DEPLOYED", "warning", "all", "yes", "1"]
    listed = json.loads(run("alerts", "rules", "--json")[0])
    assert [rule["name"] for rule in listed] == sorted(rows)
    errored = next(rule for rule in listed if rule["name"] == "Agent errored")
    assert (errored["kind"], errored["open_alerts"], errored["agent"]) == ("state", 1, None)


# --- events -----------------------------------------------------------------------------------


def test_events_prints_the_recent_events_newest_first(fleet) -> None:
    out, _ = run("events", "--limit", 3)
    lines = out.splitlines()
    assert lines[0].split() == ["WHEN", "SEVERITY", "KIND", "AGENT", "WHAT", "HAPPENED", "BY"]
    newest = list(Event.objects.order_by("-id")[:3])
    assert len(lines) == 4
    for line, event in zip(lines[1:], newest, strict=True):
        assert event.summary in line and event.kind in line
    crash = run("events", "--agent", "wow-cache", "--kind", "transition", "--severity", "critical")[
        0
    ]
    assert "WowCache DEPLOYED → ERRORED: process exited with code 1" in crash
    assert "system:monitor" in crash and len(crash.splitlines()) == 2
    rows = json.loads(run("events", "--kind", "alert", "--json")[0])
    assert {row["agent"] for row in rows} == {"wow-cache", "wow-event"}
    assert all(row["summary"].startswith("Alert fired") for row in rows)
    assert run("events", "--agent", "wow-vision")[0] == "No events.\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--kind", "party"), "Unknown event kind 'party': choose one of transition,"),
        (("--agent", "wow-nothing"), "No agent called 'wow-nothing'"),
        (("--limit", "0"), "--limit 0 is out of range; give a whole number from 1 to 500."),
    ],
)
def test_events_bad_input_exits_two(db, args, message) -> None:
    error, _ = fails("events", *args)
    assert error.returncode == 2 and str(error).startswith(message)


# --- a real process -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the subprocess reads what this test wrote
def test_exit_statuses_of_a_real_process(fleet, test_database_url, redis_url, agent_root):
    env = {**os.environ, "DATABASE_URL": test_database_url, "REDIS_URL": redis_url,
           "AGENT_ROOT": str(agent_root)}  # fmt: skip

    def manage(*args) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", "alerts", *[str(arg) for arg in args]],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    critical = fleet["critical"]
    acked = manage("ack", critical.pk)
    assert acked.returncode == 0, acked.stderr
    assert acked.stdout.startswith(f"Alert #{critical.pk} (wow-cache) acknowledged by command:")
    again = manage("ack", critical.pk)
    assert again.returncode == 1 and again.stdout == ""
    assert f"CommandError: Alert #{critical.pk} was already acknowledged by" in again.stderr
    missing = manage("resolve", 4242)
    assert missing.returncode == 2 and "CommandError: There is no alert #4242" in missing.stderr
