"""Errors in a real browser: an agent refuses a bad config value on restart; an Operator opens
its page, reads the classification, root cause and evidence, clicks "Roll back the config" and
watches the panel report the fix (carried out by the real Celery worker) without a reload. The
dashboard's open errors, the Errors page with its patterns, filters and live list, and the
Admin's kill switch."""

from __future__ import annotations

import re
import time

import pytest
from django.db import transaction
from playwright.sync_api import expect

from agents import errors, services
from agents.models import Agent, AgentError, Operation, RecoveryAttempt, State
from portal.actors import Actor

COMMAND = Actor.command("test")
# From the click to the panel saying "Fixed": roll back, restart, verify, push.
RECOVERY_TIMEOUT_MS = 60_000
MOBILE = {"width": 375, "height": 812}
DESKTOP = {"width": 1366, "height": 860}


@pytest.fixture
def fleet(transactional_db):
    services.seed_platform_agents(COMMAND)


def _by_the_worker(agent: Agent, action: str, timeout: float = 60) -> Operation:
    """An action carried out by the worker (whose agent root holds the processes)."""
    operation = services.request_action(agent, action, COMMAND)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        operation.refresh_from_db()
        if operation.is_finished:
            agent.refresh_from_db()
            return operation
        time.sleep(0.1)
    raise AssertionError(f"{action} of {agent.slug} did not finish in {timeout} s")


def _record(slug: str, message: str, details: dict, **kwargs) -> AgentError:
    with transaction.atomic():
        return errors.record_error(
            Agent.objects.get(slug=slug), "action", message, details, **kwargs
        )


def _port_conflict(slug: str) -> AgentError:
    name = Agent.objects.get(slug=slug).name
    return _record(
        slug,
        f"{name} could not start: port 8080 is in use",
        {
            "reason": "port_in_use",
            "port": 8080,
            "holder": {"description": "nginx (pid 4242)"},
            "log_lines": [
                '{"level": "info", "message": "agentd starting"}',
                '{"level": "error", "message": "cannot bind 127.0.0.1:8080: address in use"}',
            ],
        },
        action="start",
    )


def test_operator_rolls_back_a_bad_config_by_one_click_and_sees_it_fixed(
    page, sign_in_as, operator, fleet, agent_worker, screenshot
) -> None:
    cache = Agent.objects.get(slug="wow-cache")
    for action in ("provision", "deploy", "start"):
        assert _by_the_worker(cache, action).status == Operation.Status.SUCCEEDED
    # Someone edits the config in the admin: a value agentd refuses. The next restart fails.
    cache.config = {**cache.config, "task_max_failures": -1}
    services.update_agent_settings(cache, ["config"], COMMAND)
    assert _by_the_worker(cache, "restart").status == Operation.Status.FAILED
    error = AgentError.objects.get(agent=cache)
    assert cache.state == State.ERRORED

    sign_in_as(operator)
    page.goto("/agents/wow-cache/")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    item = page.locator(f"#error-{error.pk}")
    expect(item).to_have_attribute("data-status", "open")
    expect(item.locator(".error-class")).to_have_text("Configuration")
    expect(item.locator(".root-cause")).to_contain_text("WowCache refused its configuration")
    expect(item.locator(".root-cause")).to_contain_text("Its config was changed")
    evidence = item.locator(".evidence .evidence-lines")
    expect(evidence).to_be_visible()
    expect(evidence).to_contain_text("task_max_failures must be an integer from 1 to 1000, got -1")
    expect(item.locator(".suggestion.manual")).to_contain_text("Correct the config")
    expect(page.locator("#agent-status [data-open-errors]")).to_have_text(
        "1 open error: the cause and what to do"
    )
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    item.scroll_into_view_if_needed()
    screenshot(page, "errors-panel-open")
    page.set_viewport_size(MOBILE)
    page.wait_for_timeout(300)  # the sidebar slides away
    item.scroll_into_view_if_needed()
    screenshot(page, "errors-panel-open-mobile")
    page.set_viewport_size(DESKTOP)

    item.get_by_role("button", name="Roll back the config").click()
    recovering = item.locator("[data-recovering]")
    expect(recovering).to_contain_text("Recovering… Roll back the config, by user:otto")
    recovering.scroll_into_view_if_needed()
    screenshot(page, "errors-panel-recovering")
    expect(item).to_have_attribute("data-status", "resolved", timeout=RECOVERY_TIMEOUT_MS)
    expect(item.locator("[data-resolution]")).to_contain_text(
        "Fixed by user:otto", timeout=RECOVERY_TIMEOUT_MS
    )
    expect(item.locator("[data-resolution]")).to_contain_text("verified: RUNNING and healthy")
    expect(item.locator('.attempt[data-outcome="fixed"]')).to_contain_text("Roll back the config")
    expect(item.get_by_role("button")).to_have_count(0)
    expect(page.locator("#agent-errors .no-open-errors")).to_be_visible()
    expect(page.locator("#agent-status .badge.state")).to_have_text("RUNNING")
    expect(page.locator("#agent-status [data-open-errors]")).to_have_count(0)
    expect(page.locator("#toasts")).to_contain_text("Roll back the config (WowCache): fixed")
    assert page.evaluate("window.sameDocument") is True
    item.scroll_into_view_if_needed()
    screenshot(page, "errors-panel-fixed")
    page.set_viewport_size(MOBILE)
    page.wait_for_timeout(300)
    item.scroll_into_view_if_needed()
    screenshot(page, "errors-panel-fixed-mobile")

    error.refresh_from_db()
    cache.refresh_from_db()
    assert (error.status, error.resolved_by) == (AgentError.Status.RESOLVED, "user:otto")
    assert RecoveryAttempt.objects.get(error=error).outcome == RecoveryAttempt.Outcome.FIXED
    assert cache.state == State.RUNNING and "task_max_failures" not in cache.config


def test_dashboard_and_errors_page_show_open_errors_patterns_and_the_switch(
    page, sign_in_as, admin, fleet, screenshot
) -> None:
    first = [_port_conflict(slug) for slug in ("wow-cache", "wow-event", "wow-cache")][0]
    _port_conflict("wow-communication")
    crash = _record("wow-memory", "process exited with code 1", {"exit_code": 1, "log_lines": []})

    sign_in_as(admin)
    page.goto("/")
    region = page.locator("#dashboard-errors")
    expect(region.locator(".open-error")).to_have_count(4)
    expect(region.locator('[data-rate="open"]')).to_have_text("4")
    cache_item = region.locator(f'.open-error[data-error="{first.pk}"]')
    expect(cache_item).to_contain_text("2 times")
    expect(cache_item).to_contain_text("Port 8080 is held by nginx (pid 4242)")
    screenshot(page, "errors-dashboard")
    page.set_viewport_size(MOBILE)
    page.wait_for_timeout(300)
    region.scroll_into_view_if_needed()
    screenshot(page, "errors-dashboard-mobile")
    page.set_viewport_size(DESKTOP)

    region.get_by_role("link", name="All errors and patterns").click()
    page.wait_for_url("**/agents/errors/")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    pattern = page.locator('.pattern[data-signature="port_in_use:port 8080 in use"]')
    expect(pattern.locator(".pattern-name")).to_have_text("port 8080 in use")
    expect(pattern.locator(".pattern-count")).to_have_text("4 times this week on 3 agents · 3 open")
    expect(page.locator(".error-table tbody tr")).to_have_count(4)
    expect(page.locator('.counts-table tr[data-agent="wow-cache"]')).to_contain_text("2")

    # A failure elsewhere shows up in the list without a reload.
    page.evaluate("window.sameDocument = true")
    _port_conflict("wow-security")
    expect(page.locator(".error-table tbody tr")).to_have_count(5, timeout=5000)
    expect(pattern.locator(".pattern-count")).to_have_text("5 times this week on 4 agents · 4 open")
    expect(page.locator('#error-rate [data-rate="open"]')).to_have_text("5")
    assert page.evaluate("window.sameDocument") is True

    # Filters swap the list in place.
    page.get_by_label("Class", exact=True).select_option("dependency")
    expect(page.locator(".error-table tbody tr")).to_have_count(1)
    expect(page.locator(f"#error-row-{crash.pk}")).to_be_visible()
    page.get_by_label("Class", exact=True).select_option("")
    expect(page.locator(".error-table tbody tr")).to_have_count(5)
    screenshot(page, "errors-page")

    # The Admin switches automatic recovery off.
    switch = page.locator("#automatic-recovery")
    expect(switch.locator(".switch-state")).to_have_text("On")
    switch.get_by_role("button", name="Switch off").click()
    expect(switch.locator(".switch-state")).to_have_text("Off")
    expect(switch).to_contain_text("Switched off by user:ada")
    assert errors.automatic_recovery_on() is False
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "errors-page-switched-off")

    page.set_viewport_size(MOBILE)
    page.wait_for_timeout(300)
    screenshot(page, "errors-page-mobile")
    page.locator(".error-table").scroll_into_view_if_needed()
    screenshot(page, "errors-page-list-mobile")
    page.locator(".patterns").scroll_into_view_if_needed()
    screenshot(page, "errors-page-patterns-mobile")
    page.set_viewport_size(DESKTOP)
    page.locator(".patterns").scroll_into_view_if_needed()
    screenshot(page, "errors-page-patterns")
    assert re.search(r"/agents/errors/", page.url)
