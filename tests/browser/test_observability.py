"""The agent context, Logs, Events and Alerts in a real browser.

Done when: WowCache is chosen in the header's switcher (typed and chosen with the keyboard), and
Logs, Events, Alerts (and Metrics) then show only WowCache, on every page and after a reload; a
live tail shows the lines WowCache writes as it writes them; an alert fires when WowCache is made
to fail and is acknowledged and resolved in the browser, with its toast.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from agents import services
from agents.models import Agent, State
from agents.monitor import Monitor
from agents.runtimes import LogLine
from observability import alerts, events, logs
from observability.models import Alert, AlertRule, Event
from portal.actors import Actor
from tests.browser.conftest import _kill_processes_under

ROOT = Path(__file__).resolve().parents[2]
COMMAND = Actor.command("test")
MOBILE = {"width": 375, "height": 812}
DESKTOP = {"width": 1366, "height": 860}


@pytest.fixture
def fleet(transactional_db):
    services.seed_platform_agents(COMMAND)
    alerts.ensure_default_rules(COMMAND)


def _log(slug: str, message: str, level: str = "info", **fields) -> None:
    agent = Agent.objects.get(slug=slug)
    record = {"ts": timezone.now().isoformat().replace("+00:00", "Z"), "level": level,
              "message": message, **fields}  # fmt: skip
    logs.ingest(agent.pk, [LogLine(slug, 0, "", json.dumps(record))])


def _history() -> None:
    """Lines, events and alerts of several agents, so a filtered page has something to hide."""
    for slug, name in (
        ("wow-cache", "WowCache"),
        ("wow-search", "WowSearch"),
        ("wow-event", "WowEvent"),
    ):
        agent = Agent.objects.get(slug=slug)
        _log(slug, f"{name} warmed up", event="ready")
        _log(slug, f"{name} slow lookup", level="warning", took_ms=812, key="user:42")
        events.record(Event.Kind.HEALTH, f"{name} is degraded: slow answers", agent=agent,
                      severity="warning", actor="system:monitor")  # fmt: skip
        events.record(Event.Kind.TRANSITION, f"{name}: start STOPPED → RUNNING", agent=agent,
                      actor="user:otto")  # fmt: skip
    rule = AlertRule.objects.get(name="Agent errored")
    for slug in ("wow-cache", "wow-search"):
        Alert.objects.create(rule=rule, agent=Agent.objects.get(slug=slug), severity="critical",
                             summary=f"{slug} is ERRORED: exited with code 1",
                             fired_at=timezone.now() - timedelta(minutes=3))  # fmt: skip


def _open_switcher_and_choose(page, typed: str) -> None:
    page.locator("#ctx-button").click()
    search = page.get_by_role("combobox", name="Search agents")
    expect(search).to_be_focused()
    search.press_sequentially(typed, delay=30)


def test_choosing_wowcache_in_the_switcher_filters_every_page_and_survives_a_reload(
    page, sign_in_as, viewer, fleet, portal_server, screenshot
) -> None:
    _history()
    sign_in_as(viewer)
    page.goto("/logs/")
    expect(page.locator("#ctx-button")).to_contain_text("All agents")
    expect(page.locator("[data-showing]")).to_have_text(re.compile(r"Showing:\s+All agents"))
    expect(page.locator("#log-lines")).to_contain_text("WowSearch slow lookup")

    # Type to search, move with the keyboard, Enter to choose.
    _open_switcher_and_choose(page, "cach")
    listbox = page.get_by_role("listbox", name="Agents")
    expect(listbox.get_by_role("option", name=re.compile("WowCache"))).to_be_visible()
    expect(listbox.get_by_role("option", name=re.compile("WowSearch"))).to_be_hidden()
    expect(page.locator("#ctx-opt-wow-cache")).to_have_class(re.compile("is-active"))
    screenshot(page, "context-switcher-open")
    page.keyboard.press("Escape")
    expect(page.locator("#ctx-popover")).to_be_hidden()
    expect(page.locator("#ctx-button")).to_be_focused()

    page.keyboard.press("Enter")  # the focused button opens it again
    search = page.get_by_role("combobox", name="Search agents")
    expect(search).to_be_focused()
    search.press_sequentially("wow", delay=20)
    # ↓ through the matches to WowCache (alphabetical: WowAgentFactory, WowAnalytics, WowCache…)
    while page.locator("#ctx-opt-wow-cache.is-active").count() == 0:
        search.press("ArrowDown")
    search.press("Enter")
    page.wait_for_url(re.compile(r"/logs/\?agent=wow-cache$"))
    expect(page.locator("#ctx-button")).to_contain_text("WowCache")
    expect(page.locator("[data-showing]")).to_contain_text("WowCache")
    lines = page.locator("#log-lines")
    expect(lines).to_contain_text("WowCache slow lookup")
    expect(lines).not_to_contain_text("WowSearch")
    screenshot(page, "logs-wowcache")

    def shows_only_wowcache(path: str, region: str, text: str) -> None:
        expect(page).to_have_url(re.compile(rf"{path}\?agent=wow-cache"))
        expect(page.locator("[data-showing]")).to_contain_text("WowCache")
        expect(page.locator(region)).to_contain_text(text)
        expect(page.locator(region)).not_to_contain_text("WowSearch")
        expect(page.locator(region)).not_to_contain_text("wow-search")

    page.locator(".sidebar").get_by_role("link", name="Events").click()
    shows_only_wowcache("/events/", "#timeline", "WowCache is degraded")
    screenshot(page, "events-wowcache")
    page.locator(".sidebar").get_by_role("link", name=re.compile("^Alerts")).click()
    shows_only_wowcache("/alerts/", "#alert-results", "wow-cache is ERRORED")
    screenshot(page, "alerts-wowcache")
    page.reload()
    shows_only_wowcache("/alerts/", "#alert-results", "wow-cache is ERRORED")
    page.goto("/logs/")
    shows_only_wowcache("/logs/", "#log-lines", "WowCache warmed up")
    page.goto("/events/")
    shows_only_wowcache("/events/", "#timeline", "WowCache: start STOPPED → RUNNING")
    if _has_metrics_page(portal_server, page):
        page.goto("/metrics/")
        expect(page).to_have_url(re.compile(r"/metrics/\?agent=wow-cache"))
        expect(page.locator("#ctx-button")).to_contain_text("WowCache")
        screenshot(page, "metrics-wowcache")

    # On a small screen the switcher still opens, filters and chooses.
    page.goto("/events/")
    page.set_viewport_size(MOBILE)
    page.wait_for_timeout(300)
    _open_switcher_and_choose(page, "sea")
    expect(page.locator("#ctx-opt-wow-search")).to_be_visible()
    expect(page.locator("#ctx-opt-wow-cache")).to_be_hidden()
    screenshot(page, "context-switcher-open-mobile")
    page.locator("#ctx-search").fill("")
    page.locator("#ctx-opt-wow-cache").click()
    page.wait_for_url(re.compile(r"/events/\?agent=wow-cache$"))
    screenshot(page, "events-wowcache-mobile")

    # The chip's ✕ goes back to the whole fleet, and that is remembered too.
    page.set_viewport_size(DESKTOP)
    page.get_by_role("link", name="Show all agents").click()
    page.wait_for_url(re.compile(r"/events/\?agent=all$"))
    expect(page.locator("#timeline")).to_contain_text("WowSearch")
    page.goto("/logs/")
    expect(page).to_have_url(re.compile(r"/logs/$"))
    expect(page.locator("#ctx-button")).to_contain_text("All agents")


def _has_metrics_page(base: str, page) -> bool:
    """Whether the Metrics page is built yet (another part of the issue); asked without
    ``?agent=``, which would change the remembered context."""
    response = page.request.get(f"{base}/metrics/", max_redirects=0)
    return response.status == 302 or "coming soon" not in response.text()


# --- an alert fires on a real failure, and is handled in the browser --------------------------


@pytest.fixture
def local_agents(settings, tmp_path_factory):
    """Agents run by this test process (real processes), killed afterwards."""
    root = tmp_path_factory.mktemp("obs-agents")
    settings.AGENT_ROOT = root
    yield root
    _kill_processes_under(root)


def _bring_up(slug: str) -> Agent:
    agent = Agent.objects.get(slug=slug)
    for action in ("provision", "deploy", "start"):
        operation = services.request_action(agent, action, COMMAND, enqueue=False)
        assert services.run_operation(str(operation.pk)).status == "succeeded"
    return Agent.objects.get(slug=slug)


def _wait_for(predicate, timeout: float = 15, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"waited {timeout} s for {what}")


def test_an_alert_fires_when_wowcache_is_killed_and_is_acknowledged_and_resolved(
    page, sign_in_as, operator, fleet, local_agents, screenshot
) -> None:
    Agent.objects.filter(slug="wow-cache").update(restart_policy="never")
    cache = _bring_up("wow-cache")
    sign_in_as(operator)
    page.goto("/alerts/?agent=all")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    expect(page.locator(".alert-empty")).to_contain_text("No open alerts")
    expect(page.locator("#nav-alerts-count")).to_be_hidden()
    page.evaluate("window.sameDocument = true")

    monitor = Monitor(probe_interval=1)
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        os.kill(cache.runtime_details["pids"][0], signal.SIGKILL)
        _wait_for(lambda: Agent.objects.get(slug="wow-cache").state == State.ERRORED,
                  what="the monitor to mark WowCache ERRORED")  # fmt: skip
    finally:
        monitor.stop()
        thread.join(timeout=10)
    assert alerts.evaluate()["fired"] == 1  # what beat runs every ALERT_EVALUATION_INTERVAL

    alert = Alert.objects.get(agent__slug="wow-cache")
    toast = page.locator(f'[data-alert-toast="{alert.pk}"]')
    expect(toast).to_contain_text("Alert critical: WowCache is ERRORED")
    expect(toast).to_have_class(re.compile("toast-error"))
    expect(toast.get_by_role("link", name="View alert")).to_have_attribute(
        "href", f"/alerts/{alert.pk}/"
    )
    item = page.locator(f"#alert-{alert.pk}")
    expect(item).to_have_attribute("data-status", "firing")
    expect(item).to_contain_text("Agent errored: agent is ERRORED")
    expect(page.locator("#nav-alerts-count")).to_have_text("1")
    assert page.evaluate("window.sameDocument") is True
    screenshot(page, "alerts-firing")
    page.set_viewport_size(MOBILE)
    page.wait_for_timeout(300)
    screenshot(page, "alerts-firing-mobile")
    page.set_viewport_size(DESKTOP)

    item.get_by_role("button", name="Acknowledge").click()
    expect(item).to_have_attribute("data-status", "acknowledged")
    expect(item.locator("[data-acknowledged]")).to_contain_text("Acknowledged by user:otto")
    expect(page.locator("#toasts")).to_contain_text(f"Alert #{alert.pk} acknowledged")

    item.get_by_label(f"Resolution note for alert {alert.pk}").fill("Killed on purpose in a test.")
    item.get_by_role("button", name="Resolve").click()
    expect(page.locator("#toasts")).to_contain_text(
        "Alert resolved by user:otto: Agent errored on WowCache (Killed on purpose in a test.)."
    )
    expect(page.locator("#nav-alerts-count")).to_be_hidden()
    # The Open tab no longer lists it; the Resolved tab says who resolved it and why.
    expect(page.locator(f"#alert-{alert.pk}")).to_have_count(0)
    page.locator(".tab", has_text="Resolved").click()
    resolved = page.locator(f"#alert-{alert.pk}")
    expect(resolved.locator("[data-resolved]")).to_contain_text(
        "Resolved by user:otto just now: Killed on purpose in a test."
    )
    screenshot(page, "alerts-resolved")
    alert.refresh_from_db()
    assert (alert.status, alert.acknowledged_by, alert.resolved_by) == (
        "resolved", "user:otto", "user:otto",
    )  # fmt: skip


# --- the live tail: lines appear as WowCache writes them ------------------------------------


@pytest.fixture
def collector(local_agents, test_database_url, redis_url, tmp_path_factory):
    """``manage.py collect`` (as ``make run`` starts it) on the test database and Redis, reading
    the logs of the agents this test starts; it stores their lines and pushes the new ones to
    the live tail."""
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url,
        "REDIS_URL": redis_url,
        "AGENT_REDIS_URL": redis_url,
        "AGENT_ROOT": str(local_agents),
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    log = open(tmp_path_factory.mktemp("collect") / "collect.log", "w+")  # noqa: SIM115 (open while it runs)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "collect"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    time.sleep(1)
    if process.poll() is not None:
        log.seek(0)
        pytest.fail(f"manage.py collect did not start:\n{log.read()[-3000:]}")
    yield process
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
    log.close()


def _queue_failing_tasks(slug: str, count: int, job: str) -> None:
    """Tasks that ask to fail: agentd logs each failed attempt (and, at last, a dead letter)."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.AGENT_REDIS_URL)
    for number in range(count):
        client.xadd(f"agents:{slug}:tasks", {"job": f"{job}-{number}", "fail": "1"})
    client.close()


def test_the_live_tail_shows_wowcache_lines_as_it_writes_them_and_pause_loses_nothing(
    page, sign_in_as, viewer, fleet, local_agents, collector, screenshot
) -> None:
    Agent.objects.filter(slug="wow-cache").update(
        config={"task_max_failures": 2, "task_retry_ms": 300}
    )
    cache = _bring_up("wow-cache")
    _wait_for(lambda: logs.search(agent=cache, limit=1).entries, what="WowCache's first lines")
    sign_in_as(viewer)
    page.goto("/logs/?agent=wow-cache")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    toggle = page.locator("[data-live-toggle]")
    expect(toggle).to_have_text("Live")
    lines = page.locator("#log-lines")
    page.evaluate("window.sameDocument = true")
    rows_before = lines.locator("tr").count()

    # WowCache works on tasks that fail: agentd writes a line per failed attempt.
    _queue_failing_tasks("wow-cache", 2, "report")
    _wait_for(lambda: logs.search(agent=cache, text="will retry", limit=1).entries,
              what="agentd's lines about the failing tasks, stored by the collector")  # fmt: skip
    first = lines.locator("tr").first
    expect(first).to_contain_text("will retry: the task asked to fail", timeout=15_000)
    expect(lines.locator("tr.log-warning").first).to_contain_text("moved to agents:wow-cache:dlq",
                                                                 timeout=15_000)  # fmt: skip
    assert lines.locator("tr").count() > rows_before
    assert page.evaluate("window.sameDocument") is True
    # Newest first: the top row is the newest line.
    ids = [
        int(i)
        for i in lines.locator("tr[data-id]").evaluate_all("rows => rows.map(r => r.dataset.id)")
    ]
    assert ids == sorted(ids, reverse=True)
    first_failure = lines.locator("tr", has_text="will retry").first
    first_failure.locator("details.log-fields summary").click()
    expect(first_failure.locator(".log-fields dl")).to_contain_text("task_id")
    screenshot(page, "logs-live-tail")
    page.set_viewport_size(MOBILE)
    page.wait_for_timeout(300)
    screenshot(page, "logs-live-tail-mobile")
    page.set_viewport_size(DESKTOP)

    # Paused: new lines wait (and are counted); Resume shows every one of them, in order.
    toggle.click()
    expect(toggle).to_have_text("Paused")
    shown = lines.locator("tr").count()
    _queue_failing_tasks("wow-cache", 2, "paused")
    note = page.locator("[data-tail-note]")
    expect(note).to_contain_text("since you paused", timeout=15_000)
    # Two more dead letters (four in all) mean agentd has written every line about them.
    _wait_for(lambda: len(logs.search(agent=cache, text="moved to", limit=10).entries) >= 4,
              what="the lines written while paused, stored by the collector")  # fmt: skip
    page.wait_for_timeout(500)
    assert lines.locator("tr").count() == shown
    screenshot(page, "logs-live-tail-paused")
    toggle.click()
    expect(toggle).to_have_text("Live")
    stored = [entry.id for entry in logs.search(agent=cache, limit=500).entries]
    expect(lines.locator("tr[data-id]")).to_have_count(len(stored), timeout=10_000)
    ids = [
        int(i)
        for i in lines.locator("tr[data-id]").evaluate_all("rows => rows.map(r => r.dataset.id)")
    ]
    assert ids == stored  # every line, none twice, newest first
    assert page.evaluate("window.sameDocument") is True


def test_new_events_appear_at_the_top_of_the_timeline_without_a_reload(
    page, sign_in_as, viewer, fleet, screenshot
) -> None:
    _history()
    sign_in_as(viewer)
    page.goto("/events/?agent=wow-cache")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    page.evaluate("window.sameDocument = true")
    cache = Agent.objects.get(slug="wow-cache")
    operation = services.request_action(cache, "provision", COMMAND, enqueue=False)
    services.run_operation(str(operation.pk))
    top = page.locator("#timeline .timeline-item").first
    expect(top).to_contain_text("WowCache: provision DRAFT → PROVISIONED")
    expect(top).to_contain_text("by command:")
    # Another agent's event is not WowCache's: it stays off this timeline.
    search = Agent.objects.get(slug="wow-search")
    services.run_operation(
        str(services.request_action(search, "provision", COMMAND, enqueue=False).pk)
    )
    cache = Agent.objects.get(slug="wow-cache")
    services.run_operation(str(services.request_action(cache, "deploy", COMMAND, enqueue=False).pk))
    expect(top).to_contain_text("WowCache: deploy PROVISIONED → DEPLOYED")
    # The header's switcher follows WowCache's state too.
    expect(page.locator("#ctx-button [data-ctx-state]")).to_have_text("DEPLOYED")
    expect(page.locator("#ctx-state-wow-search")).to_have_text("PROVISIONED")
    expect(page.locator("#timeline")).not_to_contain_text("WowSearch")
    expect(page.locator("#timeline .timeline-day")).to_have_count(1)
    assert page.evaluate("window.sameDocument") is True
    screenshot(page, "events-live")

    # A custom range that ends before it starts is answered in the page, not with a blank.
    page.get_by_label("Time range").select_option("custom")
    page.get_by_label("From", exact=True).fill("2026-01-02T10:00")
    page.get_by_label("To", exact=True).fill("2026-01-01T10:00")
    expect(page.locator("[data-problem]")).to_contain_text(
        "The start of the time range is not before its end: swap them."
    )
    page.get_by_label("To", exact=True).fill("2026-01-03T10:00")
    expect(page.locator("[data-problem]")).to_have_count(0)
    expect(page.locator("[data-no-events]")).to_contain_text("match these filters")
    assert "range=custom" in page.url
