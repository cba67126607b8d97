"""Live updates in real browsers: another person's change and a crash appear without a reload;
with Redis stopped the page says so and keeps current by polling, then reconnects."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from agents import services
from agents.models import Agent
from agents.monitor import Monitor
from portal import embedded
from portal.actors import Actor

ROOT = Path(__file__).resolve().parents[2]


def _signed_in_context(browser, base_url: str, user, password: str):
    from django.contrib.auth.hashers import make_password

    user.password = make_password(password, hasher="pbkdf2_sha256")
    user.save(update_fields=["password"])
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto("/login/")
    page.get_by_label("Email or username").fill(user.get_username())
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url("**/")
    return context, page


def _bring_up(slug: str) -> Agent:
    agent = Agent.objects.get(slug=slug)
    for action in ("provision", "deploy", "start"):
        operation = services.request_action(agent, action, Actor.command("test"), enqueue=False)
        assert services.run_operation(str(operation.pk)).status == "succeeded"
    agent.refresh_from_db()
    return agent


def test_a_change_by_one_person_and_a_crash_show_up_for_another_without_reload(
    browser, portal_server, transactional_db, operator, viewer, password, agents_root, screenshot
) -> None:
    services.seed_platform_agents(Actor.command("test"))
    _, operator_page = _signed_in_context(browser, portal_server, operator, password)
    _, viewer_page = _signed_in_context(browser, portal_server, viewer, password)
    for page in (operator_page, viewer_page):
        page.goto("/agents/")
        expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")

    # The operator provisions WowCache (the API a script would use; same services as the page).
    started = time.monotonic()
    cache = Agent.objects.get(slug="wow-cache")
    operation = services.request_action(
        cache, "provision", Actor(kind="user", user=operator), enqueue=False
    )
    services.run_operation(str(operation.pk))
    card = viewer_page.locator("#agent-wow-cache .badge.state")
    expect(card).to_have_text("PROVISIONED", timeout=2000)
    seen_after = time.monotonic() - started
    assert seen_after < 1.0, f"the viewer saw the change after {seen_after:.2f} s"
    expect(operator_page.locator("#toasts")).to_contain_text("Provision WowCache: done")
    expect(viewer_page.locator("#toasts")).not_to_contain_text("Provision WowCache")

    # A crash of the agent's process, found by the monitor, shows up too.
    services.request_action(cache, "deploy", Actor.command("test"), enqueue=False)
    services.run_operation(str(cache.operations.first().pk))
    services.request_action(cache, "start", Actor.command("test"), enqueue=False)
    services.run_operation(str(cache.operations.first().pk))
    cache.refresh_from_db()
    expect(card).to_have_text("RUNNING")
    monitor = Monitor(probe_interval=1)
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        os.kill(cache.runtime_details["pids"][0], signal.SIGKILL)
        expect(card).to_have_text("ERRORED", timeout=3000)
        screenshot(viewer_page, "live-crash-errored")
        expect(card).to_have_text("RUNNING", timeout=10_000)
    finally:
        monitor.stop()
        thread.join(timeout=10)


@pytest.fixture
def isolated_portal(portal_on_own_redis):
    """Daphne with a Redis of its own, which the test may stop and start again."""
    with portal_on_own_redis(LIVE_HEARTBEAT_SECONDS="1") as (base, redis_root):
        yield base, redis_root


def test_without_redis_the_page_says_reconnecting_polls_and_comes_back(
    browser, isolated_portal, transactional_db, viewer, password, screenshot
) -> None:
    base, redis_root = isolated_portal
    services.seed_platform_agents(Actor.command("test"))
    _, page = _signed_in_context(browser, base, viewer, password)
    indicator = page.locator("#live-indicator")
    expect(indicator).to_have_attribute("data-state", "live")

    embedded.stop_redis(redis_root)
    expect(indicator).to_have_attribute(
        "data-state", re.compile("reconnecting|offline"), timeout=15_000
    )
    expect(indicator).to_contain_text("updated")
    screenshot(page, "live-reconnecting")

    # Changed while the socket is down: the fleet region's polling brings it in.
    cache = Agent.objects.get(slug="wow-cache")
    operation = services.request_action(cache, "provision", Actor.command("test"), enqueue=False)
    services.run_operation(str(operation.pk))
    expect(page.locator("#agent-wow-cache .badge.state")).to_have_text(
        "PROVISIONED", timeout=10_000
    )

    embedded.start_redis(redis_root, persistent=False)
    expect(indicator).to_have_attribute("data-state", "live", timeout=40_000)
    expect(page.locator("#agent-wow-cache .badge.state")).to_have_text("PROVISIONED")


def test_a_change_made_while_the_page_loads_still_reaches_it(
    page, sign_in_as, operator, transactional_db
) -> None:
    """The socket is held back until WowCache has been provisioned: the page was rendered with
    WowCache in DRAFT and no push reached it, yet its card turns PROVISIONED without a reload."""
    services.seed_platform_agents(Actor.command("test"))
    sign_in_as(operator)
    cache = Agent.objects.get(slug="wow-cache")

    def hold_back(socket) -> None:
        operation = services.request_action(cache, "provision", Actor.command("test"),
                                            enqueue=False)  # fmt: skip
        assert services.run_operation(str(operation.pk)).status == "succeeded"
        socket.connect_to_server()

    page.route_web_socket(re.compile(r".*/ws/live/$"), hold_back)
    page.goto("/agents/?q=cache")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    expect(page.locator("#agent-wow-cache .badge.state")).to_have_text("PROVISIONED")
