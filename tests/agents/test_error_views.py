"""The error pages: an agent's error panel (what happened, root cause, evidence, ranked fixes,
attempts), one-click recovery and ignore from it, the Errors page (list and filters, patterns,
counts, the automatic-recovery switch), the dashboard's open errors and the live pushes.
Errors are recorded through ``agents.errors.record_error`` or by real agents failing."""

from __future__ import annotations

import asyncio
import html
import os
import re
import signal

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from agents import errors, services
from agents.models import Agent, AgentError, RecoveryAttempt, RecoverySwitch, State
from portal.actors import Actor
from portal.asgi import application
from portal.models import AuditEntry

HTMX = {"HX-Request": "true"}
COMMAND = Actor.command("test")
HOLDER = {"description": "nginx (pid 4242)"}
PORT_LOG = [
    '{"level": "info", "message": "agentd starting"}',
    '{"level": "error", "message": "cannot bind 127.0.0.1:8080: address already in use"}',
]


def _text(response) -> str:
    return html.unescape(response.content.decode())


def _flat(markup: str) -> str:
    """The words of some markup as a person reads them: tags gone, spaces squeezed."""
    words = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", markup))).strip()
    return re.sub(r" ([,.:;])", r"\1", words)


def _error_item(response, error_id: int) -> str:
    match = re.search(
        rf'<article class="error-item [^"]*" id="error-{error_id}".*?</article>',
        response.content.decode(),
        re.S,
    )
    assert match, f"error #{error_id} is not on the page"
    return match.group(0)


def _buttons(markup: str) -> list[tuple[str, str]]:
    """(recovery, words) of every one-click button."""
    return [
        (action, _flat(words))
        for action, words in re.findall(
            r'<button [^>]*data-recover="(\w+)"[^>]*>(.*?)</button>', markup, re.S
        )
    ]


def _toasts(response) -> list[tuple[str, str]]:
    found = re.findall(
        r'<div class="toast toast-(\w+)" role="(?:status|alert)"><span>(.*?)</span>',
        response.content.decode(),
        re.S,
    )
    return [(level, html.unescape(text)) for level, text in found]


def _port_error(slug: str = "wow-cache", port: int = 8080) -> AgentError:
    """The failure the local runtime reports when a start finds the agent's port taken."""
    agent = Agent.objects.get(slug=slug)
    with transaction.atomic():  # record_error runs inside the change's transaction
        return errors.record_error(
            agent,
            "action",
            f"{agent.name} could not start: port {port} is in use",
            {"reason": "port_in_use", "port": port, "holder": HOLDER, "log_lines": PORT_LOG},
            action="start",
        )


@pytest.fixture
def port_error(seeded) -> AgentError:
    return _port_error()


# --- the panel on the agent page -----------------------------------------------------------------


def test_an_operator_sees_the_open_error_with_cause_evidence_and_ranked_fixes(
    port_error, as_operator
) -> None:
    response = as_operator.get("/agents/wow-cache/")
    assert response.status_code == 200
    item = _error_item(response, port_error.pk)
    words = _flat(item)
    assert "WowCache could not start: port 8080 is in use" in words
    assert 'class="badge error-class class-resource"' in item and "Resource" in words
    assert 'data-status="open"' in item
    assert "Root cause Port 8080 is held by nginx (pid 4242), so WowCache cannot listen" in words
    assert "once, " in words and "port 8080" in words.split("Root cause")[0]
    # Evidence: the log lines, monospace, open while the error is.
    assert re.search(r'<details class="evidence" open>', item)
    assert "Evidence: the last 2 log lines before it" in words
    assert "cannot bind 127.0.0.1:8080: address already in use" in words
    # The fixes in rank order: one-click ones as buttons (the first is the primary one), the
    # manual step as text.
    assert _buttons(item) == [
        ("pick_new_port", "Pick another port and start"),
        ("restart", "Restart"),
    ]
    assert 'class="button button-small button-primary" data-recover="pick_new_port"' in item
    steps = re.findall(r'<li class="suggestion (one-click|manual)">(.*?)</li>', item, re.S)
    assert [kind for kind, _ in steps] == ["one-click", "manual", "one-click"]
    assert _flat(steps[1][1]).startswith("Free the port Stop nginx (pid 4242)")
    assert "data-ignore" in item
    assert "Recovery attempts" not in words
    # The panel sits on the page, polls only while the socket is down, and links to the list.
    content = response.content.decode()
    assert 'id="agent-errors"' in content
    assert 'hx-get="/agents/wow-cache/errors/"' in content
    assert 'href="/agents/errors/?agent=wow-cache"' in content
    assert "1 open" in _flat(content)


def test_a_viewer_sees_the_same_error_without_any_button(port_error, as_viewer) -> None:
    response = as_viewer.get("/agents/wow-cache/")
    item = _error_item(response, port_error.pk)
    words = _flat(item)
    assert "Port 8080 is held by nginx (pid 4242)" in words
    assert "cannot bind 127.0.0.1:8080" in words
    assert _buttons(item) == []
    assert "<form" not in item and "data-ignore" not in item
    # The fixes are still listed, as words.
    assert "Pick another port and start (one click, for Operators)" in words
    assert "Free the port" in words


def test_an_agent_without_errors_says_so(seeded, as_viewer) -> None:
    response = as_viewer.get("/agents/wow-event/")
    panel = re.search(r'<section [^>]*id="agent-errors".*?</section>', _text(response), re.S)
    assert panel and "No open errors." in _flat(panel.group(0))


def test_the_same_failure_again_is_counted_on_the_open_error(port_error, as_viewer) -> None:
    again = _port_error()
    assert again.pk == port_error.pk
    words = _flat(_error_item(as_viewer.get("/agents/wow-cache/"), port_error.pk))
    assert "2 times, last" in words


def test_the_panel_alone_for_htmx_and_the_page_otherwise(port_error, as_viewer) -> None:
    fragment = as_viewer.get("/agents/wow-cache/errors/", headers=HTMX)
    assert fragment.status_code == 200
    assert "HX-Request" in fragment["Vary"]
    content = fragment.content.decode()
    assert content.lstrip().startswith('<section class="card panel error-panel" id="agent-errors"')
    assert "<html" not in content and f'id="error-{port_error.pk}"' in content

    page = as_viewer.get("/agents/wow-cache/errors/")
    assert page.status_code == 302
    assert page["Location"] == "/agents/wow-cache/#agent-errors"
    assert as_viewer.get("/agents/nobody/errors/", headers=HTMX).status_code == 404


def test_an_error_address_leads_to_its_place_on_the_agent_page(port_error, as_viewer) -> None:
    response = as_viewer.get(f"/agents/errors/{port_error.pk}/")
    assert response.status_code == 302
    assert response["Location"] == f"/agents/wow-cache/#error-{port_error.pk}"
    assert as_viewer.get("/agents/errors/999999/").status_code == 404


def test_someone_without_a_role_sees_no_errors(port_error, as_outsider) -> None:
    assert as_outsider.get("/agents/errors/").status_code == 403
    assert as_outsider.get("/agents/wow-cache/errors/", headers=HTMX).status_code == 403
    assert as_outsider.get(f"/agents/errors/{port_error.pk}/").status_code == 403


# --- one click -------------------------------------------------------------------------------------


def test_a_click_on_a_fix_records_the_attempt_and_shows_recovering(port_error, as_operator) -> None:
    response = as_operator.post(
        f"/agents/errors/{port_error.pk}/recover/", {"action": "pick_new_port"}, headers=HTMX
    )

    assert response.status_code == 200
    attempt = RecoveryAttempt.objects.get()
    assert (attempt.error_id, attempt.action, attempt.outcome, attempt.actor, attempt.automatic) == (
        port_error.pk, "pick_new_port", RecoveryAttempt.Outcome.RUNNING, "user:otto", False,
    )  # fmt: skip
    port_error.refresh_from_db()
    assert port_error.status == AgentError.Status.RECOVERING
    # The answer is the panel as it is now: recovering, the buttons disabled, no Ignore.
    content = response.content.decode()
    assert content.lstrip().startswith('<section class="card panel error-panel" id="agent-errors"')
    item = _error_item(response, port_error.pk)
    assert 'data-status="recovering"' in item and "data-recovering" in item
    assert "Recovering… Pick another port and start, by user:otto, running for" in _flat(item)
    assert all("disabled" in tag for tag in re.findall(r"<button [^>]*data-recover[^>]*>", item))
    assert "data-ignore" not in item
    assert "Recovery attempts (1)" in _flat(item)
    assert re.search(r'data-outcome="running"', item)
    assert _toasts(response) == [("info", "Pick another port and start (WowCache): recovering…")]
    assert AuditEntry.objects.filter(
        action="agent.recover", target="wow-cache", outcome=AuditEntry.Outcome.SUCCESS
    ).exists()


def test_a_click_without_javascript_goes_back_to_the_error_with_a_message(
    port_error, as_operator
) -> None:
    response = as_operator.post(
        f"/agents/errors/{port_error.pk}/recover/", {"action": "restart"}, follow=True
    )
    assert response.redirect_chain == [(f"/agents/wow-cache/#error-{port_error.pk}", 302)]
    assert "Restart (WowCache): recovering…" in _text(response)
    assert RecoveryAttempt.objects.get().action == "restart"


def test_a_second_click_while_a_recovery_runs_is_refused_and_changes_nothing(
    port_error, as_operator
) -> None:
    url = f"/agents/errors/{port_error.pk}/recover/"
    as_operator.post(url, {"action": "pick_new_port"}, headers=HTMX)
    again = as_operator.post(url, {"action": "restart"}, headers=HTMX)

    assert again.status_code == 200
    assert _toasts(again) == [
        ("error", f"A recovery of error #{port_error.pk} is already running; wait for its result.")
    ]
    assert "data-recovering" in _error_item(again, port_error.pk)
    assert list(RecoveryAttempt.objects.values_list("action", flat=True)) == ["pick_new_port"]
    port_error.refresh_from_db()
    assert (port_error.status, port_error.retry_count) == (AgentError.Status.RECOVERING, 1)


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("raise_memory", "Raise the memory limit and restart is not a fix for this error"),
        ("explode", "'explode' is not a recovery"),
        ("", "'' is not a recovery"),
    ],
)
def test_a_fix_not_offered_is_refused_with_the_reason(
    port_error, as_operator, action, message
) -> None:
    response = as_operator.post(
        f"/agents/errors/{port_error.pk}/recover/", {"action": action}, headers=HTMX
    )
    assert response.status_code == 200
    [(level, text)] = _toasts(response)
    assert level == "error" and text.startswith(message)
    assert not RecoveryAttempt.objects.exists()
    port_error.refresh_from_db()
    assert port_error.status == AgentError.Status.OPEN
    assert AuditEntry.objects.filter(
        action="agent.recover", outcome=AuditEntry.Outcome.REFUSED
    ).exists()


def test_a_closed_error_cannot_be_recovered(port_error, operator_actor, as_operator) -> None:
    errors.ignore_error(port_error, operator_actor, "known")
    response = as_operator.post(
        f"/agents/errors/{port_error.pk}/recover/", {"action": "restart"}, follow=True
    )
    assert f"Error #{port_error.pk} is ignored; there is nothing to recover." in _text(response)
    assert not RecoveryAttempt.objects.exists()


def test_a_viewer_cannot_recover_and_is_told_why(port_error, as_viewer) -> None:
    url = f"/agents/errors/{port_error.pk}/recover/"
    page = as_viewer.post(url, {"action": "restart"})
    assert page.status_code == 403
    assert "You cannot recover agents: it needs the Operator role" in _text(page)

    fragment = as_viewer.post(url, {"action": "restart"}, headers=HTMX)
    assert fragment.status_code == 403
    assert fragment["HX-Reswap"] == "none"
    [(level, text)] = _toasts(fragment)
    assert level == "error" and text.startswith("You cannot recover agents")

    assert not RecoveryAttempt.objects.exists()
    port_error.refresh_from_db()
    assert port_error.status == AgentError.Status.OPEN
    assert (
        AuditEntry.objects.filter(
            action="agent.recover", actor="user:vera", outcome=AuditEntry.Outcome.REFUSED
        ).count()
        == 2
    )


def test_recover_and_ignore_take_only_posts(port_error, as_operator) -> None:
    assert as_operator.get(f"/agents/errors/{port_error.pk}/recover/").status_code == 405
    assert as_operator.get(f"/agents/errors/{port_error.pk}/ignore/").status_code == 405
    assert (
        as_operator.post("/agents/errors/999999/recover/", {"action": "restart"}).status_code == 404
    )


# --- ignore ------------------------------------------------------------------------------------------


def test_ignore_closes_the_error_with_who_and_why(port_error, as_operator) -> None:
    response = as_operator.post(
        f"/agents/errors/{port_error.pk}/ignore/", {"why": "nginx is moving hosts"}, headers=HTMX
    )

    assert response.status_code == 200
    port_error.refresh_from_db()
    assert (port_error.status, port_error.resolved_by, port_error.resolution) == (
        AgentError.Status.IGNORED, "user:otto", "nginx is moving hosts",
    )  # fmt: skip
    assert _toasts(response) == [("info", f"Error #{port_error.pk} on WowCache ignored.")]
    # Just closed: still in view, with who and why, and no more buttons.
    item = _error_item(response, port_error.pk)
    assert "Ignored by user:otto" in _flat(item) and "nginx is moving hosts" in _flat(item)
    assert _buttons(item) == [] and "data-ignore" not in item
    assert "No open errors; the ones below are closed." in _text(response)
    assert AuditEntry.objects.filter(action="agent.error.ignore", target="wow-cache").exists()


def test_ignoring_twice_changes_nothing_the_second_time(port_error, as_operator) -> None:
    url = f"/agents/errors/{port_error.pk}/ignore/"
    as_operator.post(url, {"why": "first"}, headers=HTMX)
    port_error.refresh_from_db()
    closed_at = port_error.resolved_at

    again = as_operator.post(url, {"why": "second"}, headers=HTMX)
    assert _toasts(again) == [
        ("error", f"Error #{port_error.pk} is ignored; there is nothing to ignore.")
    ]
    port_error.refresh_from_db()
    assert (port_error.resolution, port_error.resolved_at) == ("first", closed_at)


def test_an_error_being_recovered_cannot_be_ignored(port_error, as_operator) -> None:
    errors.request_recovery(port_error, "restart", COMMAND, enqueue=False)
    response = as_operator.post(
        f"/agents/errors/{port_error.pk}/ignore/", {"why": "x"}, follow=True
    )
    assert f"A recovery of error #{port_error.pk} is running; wait for its result." in _text(
        response
    )
    port_error.refresh_from_db()
    assert port_error.status == AgentError.Status.RECOVERING


def test_a_viewer_cannot_ignore(port_error, as_viewer) -> None:
    response = as_viewer.post(f"/agents/errors/{port_error.pk}/ignore/", {"why": "meh"})
    assert response.status_code == 403
    port_error.refresh_from_db()
    assert port_error.status == AgentError.Status.OPEN


def test_closed_errors_older_than_a_few_minutes_are_listed_collapsed(
    port_error, operator_actor, as_viewer
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    errors.ignore_error(port_error, operator_actor, "known flake")
    AgentError.objects.filter(pk=port_error.pk).update(
        resolved_at=timezone.now() - timedelta(hours=2)
    )
    content = as_viewer.get("/agents/wow-cache/").content.decode()
    closed = re.search(
        r'<details class="closed-errors">(.*?)</details>\s*</section>', content, re.S
    )
    assert closed, "no collapsed list of closed errors"
    assert _flat(closed.group(1)).startswith("Resolved and ignored earlier (1)")
    assert f'id="error-{port_error.pk}"' in closed.group(1)
    assert "Ignored by user:otto 2 hours ago: known flake" in _flat(closed.group(1))
    assert "No open errors; the ones below are closed." in _flat(content)


# --- with real agents ----------------------------------------------------------------------------------


def _bad_config_restart(agent: Agent, act) -> AgentError:
    """A config value agentd refuses, set the way the admin sets it, then a restart."""
    agent.refresh_from_db()
    agent.config = {**agent.config, "task_max_failures": -1}
    services.update_agent_settings(agent, ["config"], COMMAND)
    operation = act(agent, "restart")
    assert operation.status == "failed", "agentd took a config it should refuse"
    return AgentError.objects.get(agent=agent, status=AgentError.Status.OPEN)


@pytest.mark.django_db(transaction=True)
def test_roll_back_config_by_one_click_fixes_a_bad_config_and_the_panel_says_so(
    seeded, bring_up, act, as_operator
) -> None:
    cache = bring_up(Agent.objects.get(slug="wow-cache"))
    error = _bad_config_restart(cache, act)
    before = as_operator.get("/agents/wow-cache/")
    item = _error_item(before, error.pk)
    words = _flat(item)
    assert "class-configuration" in item
    assert "WowCache refused its configuration" in words and "config was changed" in words
    assert "task_max_failures must be an integer from 1 to 1000, got -1" in words
    assert _buttons(item) == [("rollback_config", "Roll back the config")]
    assert "Correct the config" in words

    clicked = as_operator.post(
        f"/agents/errors/{error.pk}/recover/", {"action": "rollback_config"}, headers=HTMX
    )
    assert "data-recovering" in _error_item(clicked, error.pk)
    # The worker's part, done here.
    attempt = errors.run_recovery(RecoveryAttempt.objects.get(error=error).pk)
    assert attempt.outcome == RecoveryAttempt.Outcome.FIXED, attempt.detail

    after = as_operator.get("/agents/wow-cache/errors/", headers=HTMX)
    item = _error_item(after, error.pk)
    words = _flat(item)
    assert 'data-status="resolved"' in item
    assert "Fixed by user:otto" in words
    assert "Roll back the config: verified: RUNNING and healthy" in words
    assert re.search(r'<li class="attempt" [^>]*data-outcome="fixed"', item)
    assert "Fixed Roll back the config user:otto" in words
    assert _buttons(item) == [] and "data-ignore" not in item
    cache.refresh_from_db()
    assert cache.state == State.RUNNING
    assert "task_max_failures" not in cache.config


@pytest.mark.django_db(transaction=True)
def test_a_fix_that_fails_leaves_the_error_open_with_what_happened(
    seeded, bring_up, act, as_operator
) -> None:
    cache = bring_up(Agent.objects.get(slug="wow-cache"))
    os.kill(cache.runtime_details["pids"][0], signal.SIGKILL)
    services.record_crash(cache, {"exit_code": None, "signal": signal.SIGKILL})
    crash = AgentError.objects.get(agent=cache)
    # Meanwhile someone sets a value agentd refuses, behind the admin's back (no earlier config
    # to go back to): a restart cannot work.
    Agent.objects.filter(pk=cache.pk).update(config={"task_max_failures": -1})

    as_operator.post(f"/agents/errors/{crash.pk}/recover/", {"action": "restart"}, headers=HTMX)
    attempt = errors.run_recovery(RecoveryAttempt.objects.get(error=crash).pk)
    assert attempt.outcome == RecoveryAttempt.Outcome.FAILED

    item = _error_item(as_operator.get("/agents/wow-cache/"), crash.pk)
    words = _flat(item)
    assert 'data-status="open"' in item and 'data-last-result="failed"' in item
    assert "Restart failed: WowCache refused its configuration" in words
    assert re.search(r'<li class="attempt" [^>]*data-outcome="failed"', item)
    # Open again: the fixes are offered again.
    assert ("restart", "Restart") in _buttons(item)


# --- the Errors page ------------------------------------------------------------------------------------


def _error_rows(response) -> list[tuple[str, str]]:
    """(agent slug, status) of the rows of the errors list, in order."""
    rows = re.findall(
        r'<tr id="error-row-\d+" data-error="\d+" data-status="(\w+)">\s*<td data-label="Agent">'
        r'<a href="/agents/([a-z-]+)/">',
        response.content.decode(),
    )
    return [(slug, status) for status, slug in rows]


@pytest.fixture
def several_errors(seeded, operator_actor) -> dict[str, AgentError]:
    """Port 8080 taken on two agents (twice on one), a dependency error, and an ignored one."""
    found = {"cache": _port_error(), "event": _port_error("wow-event")}
    _port_error()
    memory = Agent.objects.get(slug="wow-memory")
    found["memory"] = errors.record_error(
        memory, "crash", "process exited with code 1", {"exit_code": 1}
    )
    search = Agent.objects.get(slug="wow-search")
    old = errors.record_error(search, "crash", "process exited with code 3", {"exit_code": 3})
    found["search"] = errors.ignore_error(old, operator_actor, "known")
    return found


def test_the_errors_page_lists_open_errors_first_with_patterns_and_counts(
    several_errors, as_viewer
) -> None:
    response = as_viewer.get("/agents/errors/")
    assert response.status_code == 200
    rows = _error_rows(response)
    assert len(rows) == 4
    assert rows[-1] == ("wow-search", "ignored")
    assert {slug for slug, status in rows[:3]} == {"wow-cache", "wow-event", "wow-memory"}
    content = _text(response)

    # Patterns: the port conflict, three times on two agents.
    pattern = re.search(
        r'<li class="pattern" data-signature="port_in_use:port 8080 in use">(.*?)</li>',
        content,
        re.S,
    )
    assert pattern, "no pattern for the port conflict"
    words = _flat(pattern.group(1))
    assert words.startswith("Resource port 8080 in use 3 times this week on 2 agents · 2 open")
    assert "first seen" in words and "last seen" in words
    assert 'href="/agents/errors/?signature=port_in_use%3Aport%208080%20in%20use"' in content

    # Counts per agent and class: WowCache 2 resource, WowEvent 1, WowMemory and WowSearch 1 each.
    table = re.search(r'<table class="table compact counts-table">(.*?)</table>', content, re.S)
    header = re.findall(r'<th class="num">([^<]+)</th>', table.group(1).split("</thead>")[0])
    assert header[-1] == "Total" and "Resource" in header
    cache_row = re.search(r'<tr data-agent="wow-cache">(.*?)</tr>', table.group(1), re.S)
    assert _flat(cache_row.group(1)).split()[-1] == "2"

    # The rate, and the switch as a Viewer sees it: its state, no button.
    assert re.search(r'data-rate="open">3<', content)
    assert re.search(r'data-rate="last-hour">5<', content)
    switch = re.search(r'<section [^>]*id="automatic-recovery".*?</section>', content, re.S).group(
        0
    )
    assert 'data-automatic="on"' in switch and "Only an Admin can switch it." in switch
    assert "data-switch" not in switch


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "active"}, {"wow-cache", "wow-event", "wow-memory"}),
        ({"status": "ignored"}, {"wow-search"}),
        ({"class": "resource"}, {"wow-cache", "wow-event"}),
        ({"agent": "wow-event"}, {"wow-event"}),
        ({"signature": "port_in_use:port 8080 in use"}, {"wow-cache", "wow-event"}),
        (
            {"status": "bogus", "class": "bogus"},
            {"wow-cache", "wow-event", "wow-memory", "wow-search"},
        ),
    ],
)
def test_the_errors_list_filters(several_errors, as_viewer, query, expected) -> None:
    response = as_viewer.get("/agents/errors/", query, headers=HTMX)
    assert response.status_code == 200
    assert "HX-Request" in response["Vary"]
    content = response.content.decode()
    assert content.lstrip().startswith('<div id="error-results"')
    assert "<html" not in content
    # The rate, patterns and counts come along out of band (for the live refresh).
    assert (
        '<section class="cards error-rate" id="error-rate" aria-label="Error rate" hx-swap-oob="true">'
        in content
    )
    assert (
        '<div class="detail-grid error-analysis" id="error-analysis" hx-swap-oob="true">' in content
    )
    assert {slug for slug, _ in _error_rows(response)} == expected


def test_a_filter_that_matches_nothing_says_so(several_errors, as_viewer) -> None:
    response = as_viewer.get("/agents/errors/", {"agent": "wow-vision"})
    assert "No error matches these filters." in _text(response)


def test_the_errors_page_costs_the_same_queries_for_more_errors(several_errors, as_viewer) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert as_viewer.get("/agents/errors/").status_code == 200
        return len(captured)

    before = queries()
    for slug in ("wow-domain", "wow-analytics", "wow-scaling", "wow-vision"):
        _port_error(slug, 9090)
    assert queries() == before


def test_the_agent_page_costs_the_same_queries_for_more_errors(port_error, as_viewer) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert as_viewer.get("/agents/wow-cache/").status_code == 200
        return len(captured)

    queries()  # the first visit also makes WowCache the viewer's agent context
    before = queries()
    agent = Agent.objects.get(slug="wow-cache")
    for code in (3, 4, 5):
        errors.record_error(agent, "crash", f"process exited with code {code}", {"exit_code": code})
    errors.request_recovery(port_error, "restart", COMMAND, enqueue=False)
    assert queries() == before


# --- the kill switch ---------------------------------------------------------------------------------


def test_an_admin_switches_automatic_recovery_off_and_sees_who_did(db, as_admin) -> None:
    page = as_admin.get("/agents/errors/")
    assert re.search(r"<button [^>]*data-switch>Switch off</button>", page.content.decode())

    response = as_admin.post("/agents/errors/automatic/", {"automatic": "off"}, headers=HTMX)

    assert response.status_code == 200
    assert errors.automatic_recovery_on() is False
    switch = RecoverySwitch.objects.get()
    assert (switch.automatic, switch.changed_by) == (False, "user:ada")
    content = _text(response)
    assert content.lstrip().startswith(
        '<section class="card panel auto-switch" id="automatic-recovery" data-automatic="off"'
    )
    assert "Switched off by user:ada" in _flat(content)
    assert re.search(r"data-switch>Switch on</button>", content)
    assert _toasts(response)[0][0] == "warning"
    assert AuditEntry.objects.filter(action="errors.automatic_recovery", actor="user:ada").exists()

    # The same request again leaves it off; then back on, without JavaScript.
    as_admin.post("/agents/errors/automatic/", {"automatic": "off"}, headers=HTMX)
    assert errors.automatic_recovery_on() is False
    back = as_admin.post("/agents/errors/automatic/", {"automatic": "on"}, follow=True)
    assert back.redirect_chain == [("/agents/errors/", 302)]
    assert errors.automatic_recovery_on() is True
    assert "Automatic recovery is on" in _text(back)


@pytest.mark.parametrize("who", ["as_operator", "as_viewer"])
def test_only_an_admin_may_switch_automatic_recovery(db, request, who) -> None:
    client = request.getfixturevalue(who)
    page = client.get("/agents/errors/").content.decode()
    assert 'data-automatic="on"' in page and "data-switch" not in page
    assert client.post("/agents/errors/automatic/", {"automatic": "off"}).status_code == 403
    refused = client.post("/agents/errors/automatic/", {"automatic": "off"}, headers=HTMX)
    assert refused.status_code == 403
    assert "You cannot switch automatic recovery on or off" in _toasts(refused)[0][1]
    assert errors.automatic_recovery_on() is True
    assert not RecoverySwitch.objects.exists()
    assert client.get("/agents/errors/automatic/").status_code == 405


# --- the dashboard -----------------------------------------------------------------------------------


def test_the_dashboard_shows_open_errors_and_the_error_rate(several_errors, as_viewer) -> None:
    response = as_viewer.get("/")
    content = response.content.decode()
    region = re.search(r'<section [^>]*id="dashboard-errors".*?</section>', content, re.S).group(0)
    listed = re.findall(r'<li class="open-error" data-error="(\d+)"', region)
    cache, event, memory = (several_errors[key].pk for key in ("cache", "event", "memory"))
    assert sorted(map(int, listed)) == sorted([cache, event, memory])
    assert str(several_errors["search"].pk) not in listed, "ignored errors are not open"
    item = re.search(rf'<li class="open-error" data-error="{cache}".*?</li>', region, re.S).group(0)
    words = _flat(item)
    assert words.startswith("WowCache Resource 2 times, last")
    assert "WowCache could not start: port 8080 is in use" in words
    assert "Port 8080 is held by nginx (pid 4242)" in words
    assert f'href="/agents/wow-cache/#error-{cache}"' in item
    assert re.search(r'data-rate="open">3<', region)
    assert re.search(r'data-rate="last-hour">5<', region)
    assert 'href="/agents/errors/"' in region
    # The same region comes with the fleet when the page polls or resyncs.
    fragment = as_viewer.get("/", headers=HTMX).content.decode()
    assert 'id="dashboard-errors"' in fragment and f'data-error="{cache}"' in fragment


def test_the_dashboard_without_open_errors(seeded, as_viewer) -> None:
    region = re.search(
        r'<section [^>]*id="dashboard-errors".*?</section>',
        as_viewer.get("/").content.decode(),
        re.S,
    ).group(0)
    assert "No open errors." in region and "open-error-list" not in region


# --- live ------------------------------------------------------------------------------------------

ORIGIN = (b"origin", b"http://127.0.0.1")


def _session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def _connect(user, *topics: str) -> WebsocketCommunicator:
    cookie = await sync_to_async(_session_cookie)(user)
    communicator = WebsocketCommunicator(
        application, "/ws/live/", headers=[ORIGIN, (b"cookie", cookie)]
    )
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    if topics:
        await communicator.send_json_to({"subscribe": list(topics)})
    await asyncio.sleep(0.3)
    return communicator


async def _pushed(communicator, seconds: float = 1.5) -> str:
    found = []
    deadline = asyncio.get_running_loop().time() + seconds
    while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
        if await communicator.receive_nothing(timeout=min(remaining, 0.2)):
            continue
        found.append(await communicator.receive_from())
    return "".join(found)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_an_error_and_its_recovery_are_pushed_to_the_agent_page_and_the_dashboard(
    seeded, viewer, operator
) -> None:
    # What the agent's page, the dashboard's open errors and the Errors page subscribe to.
    topics = ("agent:wow-cache", "errors-overview", "errors-list")
    as_viewer = await _connect(viewer, *topics)
    as_operator = await _connect(operator, *topics)

    error = await sync_to_async(_port_error)()
    viewer_html, operator_html = await _pushed(as_viewer), await _pushed(as_operator)
    for pushed in (viewer_html, operator_html):
        assert 'id="agent-errors"' in pushed and f'id="error-{error.pk}"' in pushed
        assert 'id="dashboard-errors"' in pushed and 'id="errors-beat"' in pushed
    assert "data-recover=" in operator_html
    assert "data-recover=" not in viewer_html, "a Viewer gets no buttons"

    # The operator's click: its result reaches both pages, and a toast the operator alone.
    operator_actor = Actor(kind="user", user=operator)
    attempt = await sync_to_async(errors.request_recovery)(
        error, "restart", operator_actor, enqueue=False
    )
    await _pushed(as_viewer, 0.5), await _pushed(as_operator, 0.5)
    await sync_to_async(errors.run_recovery)(attempt.pk)
    viewer_html, operator_html = await _pushed(as_viewer, 3), await _pushed(as_operator, 3)
    assert re.search(
        rf'id="error-{error.pk}" data-error="{error.pk}" data-status="open"', viewer_html
    )
    assert 'data-last-result="failed"' in viewer_html
    assert "toast-recovery" not in viewer_html
    assert "Restart (WowCache) failed: WowCache is DRAFT" in html.unescape(operator_html)
    await as_viewer.disconnect()
    await as_operator.disconnect()
