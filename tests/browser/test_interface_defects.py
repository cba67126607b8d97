"""Interface defects found in Chromium at 1440 × 900 and 375 px: the Actions menu after a search,
a dialog taller than the window, the Errors page in the sidebar and on a focused dashboard, the
sidebar's background on long pages, and an errored or stopped card's footer, CPU figure and
error evidence."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from playwright.sync_api import expect

from agents import errors, services
from agents.models import Agent, RecoverySwitch, State
from observability.models import MetricSample
from portal.actors import Actor

COMMAND = Actor.command("test")
DESKTOP = {"width": 1440, "height": 900}
MOBILE = {"width": 375, "height": 812}


@pytest.fixture
def fleet(transactional_db):
    services.seed_platform_agents(COMMAND)


def _agent_list_requests(page) -> list[str]:
    """Every request the page makes for the agent list (a search or a redraw of the cards)."""
    seen: list[str] = []
    page.on(
        "request",
        lambda request: (
            seen.append(request.url) if re.search(r"/agents/(\?|$)", request.url) else None
        ),
    )
    return seen


# --- 7: the Actions menu after typing in the search ------------------------------------------


def test_first_click_on_a_cards_actions_menu_after_a_search_opens_it(
    page, sign_in_as, operator, fleet, screenshot
) -> None:
    sign_in_as(operator)
    page.set_viewport_size(DESKTOP)
    page.goto("/agents/")
    search = page.locator("#agent-search")
    with page.expect_response(re.compile(r"/agents/\?q=cache")):
        search.fill("cache")
    card = page.locator("#agent-wow-cache")
    expect(card).to_be_visible()
    requests = _agent_list_requests(page)

    # Leaving the search box for the menu must not send the same search again.
    card.locator("details.menu summary").click()
    page.wait_for_timeout(1200)

    assert requests == []
    expect(card.locator("details.menu")).to_have_attribute("open", "")
    expect(card.locator(".menu-items")).to_be_visible()
    screenshot(page, "actions-menu-after-search")


def test_a_search_for_the_same_words_again_does_not_redraw_the_cards(
    page, sign_in_as, operator, fleet
) -> None:
    sign_in_as(operator)
    page.goto("/agents/")
    search = page.locator("#agent-search")
    with page.expect_response(re.compile(r"/agents/\?q=cache")):
        search.fill("cache")
    requests = _agent_list_requests(page)

    search.press("End")
    search.press("x")
    search.press("Backspace")  # within the delay: the query is "cache" again
    search.blur()
    page.wait_for_timeout(1200)

    assert requests == []


# --- 9: a dialog taller than the window ----------------------------------------------------------


@pytest.mark.parametrize("viewport", [DESKTOP, MOBILE], ids=["1440x900", "375px"])
def test_stop_all_fourteen_dialog_keeps_its_buttons_in_the_window(
    page, sign_in_as, operator, fleet, screenshot, viewport
) -> None:
    Agent.objects.update(state=State.RUNNING)
    sign_in_as(operator)
    page.set_viewport_size(viewport)
    page.goto("/agents/")
    page.locator('[data-shortcut="stop-running"]').click()
    dialog = page.locator("#bulk-dialog")
    expect(dialog).to_contain_text("Stop 14 of 14 agents?")
    run = dialog.locator("[data-run]")
    cancel = dialog.get_by_role("button", name="Cancel")
    expect(run).to_have_text("Stop 14 agents")

    dialog_box = dialog.bounding_box()
    assert dialog_box["y"] >= 0 and dialog_box["y"] + dialog_box["height"] <= viewport["height"]
    # The list scrolls inside the dialog, which it needs at this size; the buttons stay in view.
    assert dialog.evaluate("d => d.scrollHeight > d.clientHeight")
    screenshot(page, f"stop-14-dialog-{viewport['width']}")
    for scrolled in ("top", "middle", "bottom"):
        dialog.evaluate(
            "(d, where) => { d.scrollTop = {top: 0, middle: d.scrollHeight / 2,"
            " bottom: d.scrollHeight}[where]; }",
            scrolled,
        )
        page.wait_for_timeout(100)
        for button in (run, cancel):
            _assert_shown_whole(button, dialog_box)


def _assert_shown_whole(button, dialog_box: dict) -> None:
    """The button lies inside the dialog's box and nothing covers it: a click would reach it."""
    box = button.bounding_box()
    assert box is not None
    assert box["y"] >= dialog_box["y"], (box, dialog_box)
    assert box["y"] + box["height"] <= dialog_box["y"] + dialog_box["height"], (box, dialog_box)
    assert box["x"] >= dialog_box["x"]
    assert box["x"] + box["width"] <= dialog_box["x"] + dialog_box["width"]
    # Points just inside its edges (its rounded corners are not its own to hit).
    reached = button.evaluate(
        "b => { const r = b.getBoundingClientRect(), x = (r.left + r.right) / 2,"
        " y = (r.top + r.bottom) / 2;"
        " return [[r.left + 8, y], [r.right - 8, y], [x, r.top + 3], [x, r.bottom - 3]]"
        ".every(([px, py]) => b.contains(document.elementFromPoint(px, py))); }"
    )
    assert reached


# --- 11: the Errors page in the sidebar and on a focused dashboard ----------------------------------


def test_sidebar_links_the_errors_page_and_marks_it_current(
    page, sign_in_as, viewer, fleet, screenshot
) -> None:
    sign_in_as(viewer)
    page.set_viewport_size(DESKTOP)
    errors_link = page.locator("#sidebar").get_by_role("link", name="Errors", exact=True)
    expect(errors_link).to_have_attribute("href", "/agents/errors/")
    errors_link.click()
    page.wait_for_url("**/agents/errors/")
    current = page.locator('#sidebar [aria-current="page"]')
    expect(current).to_have_text("Errors")
    screenshot(page, "sidebar-errors-1440")


def test_dashboard_focused_on_an_agent_still_links_to_its_errors(
    page, sign_in_as, viewer, fleet, screenshot
) -> None:
    sign_in_as(viewer)
    page.set_viewport_size(DESKTOP)
    page.goto("/?agent=wow-cache")
    focus_links = page.locator(".focus-links")
    expect(focus_links).to_be_visible()
    link = focus_links.locator('[data-link="errors"]')
    expect(link).to_have_attribute("href", "/agents/errors/?agent=wow-cache")
    screenshot(page, "dashboard-focused-1440")
    link.click()
    page.wait_for_url("**/agents/errors/?agent=wow-cache")
    expect(page.locator('#sidebar [aria-current="page"]')).to_have_text("Errors")


# --- 12: the sidebar's background on a long page -----------------------------------------------------


def test_sidebar_background_reaches_the_bottom_of_a_long_page(
    page, sign_in_as, viewer, fleet, screenshot
) -> None:
    sign_in_as(viewer)
    page.set_viewport_size(DESKTOP)
    page.goto("/agents/?view=table")
    expect(page.locator("#agent-results tbody tr")).to_have_count(14)
    page_height = page.evaluate("document.documentElement.scrollHeight")
    assert page_height > DESKTOP["height"] * 1.3, "the page must be long for this test"
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.wait_for_timeout(100)

    sidebar = page.locator("#sidebar")
    top, height, color = sidebar.evaluate(
        "s => { const r = s.getBoundingClientRect();"
        " return [r.top + window.scrollY, r.height, getComputedStyle(s).backgroundColor]; }"
    )
    assert top == 0
    assert height >= page_height - 1, (height, page_height)
    assert color not in ("rgba(0, 0, 0, 0)", "transparent")
    # Its links still stay in view while the page scrolls.
    expect(page.locator("#sidebar .brand")).to_be_in_viewport()
    shot = screenshot(page, "sidebar-long-page-scrolled")
    page.screenshot(path=str(shot.with_name("sidebar-long-page-full.png")), full_page=True)


# --- 13: an errored or stopped card, and error evidence --------------------------------------------


def test_errored_card_says_choose_a_fix_when_automatic_recovery_is_off(
    page, sign_in_as, operator, fleet, screenshot
) -> None:
    RecoverySwitch.objects.update_or_create(pk=1, defaults={"automatic": False})
    Agent.objects.filter(slug="wow-cache").update(state=State.RUNNING)
    agent = Agent.objects.get(slug="wow-cache")
    assert services.record_crash(agent, {"signal": 9, "exit_code": None, "replica": 0})
    agent.refresh_from_db()
    assert agent.state == State.ERRORED and not agent.restart_gave_up
    assert agent.next_restart_at is None

    sign_in_as(operator)
    page.set_viewport_size(DESKTOP)
    page.goto("/agents/?q=cache")
    footer = page.locator("#agent-wow-cache .agent-card-foot")
    expect(footer.locator(".restart-note")).to_have_text("No automatic restart: choose a fix")
    expect(footer.get_by_role("link", name="choose a fix")).to_have_attribute(
        "href", "/agents/wow-cache/#agent-errors"
    )
    screenshot(page, "errored-card-auto-recovery-off")


def _cpu_samples(slug: str, values: list[float]) -> None:
    agent = Agent.objects.get(slug=slug)
    now = timezone.now()
    MetricSample.objects.bulk_create(
        MetricSample(
            agent=agent,
            ts=now - timedelta(minutes=len(values) - index),
            up=1,
            cpu_percent=value,
        )
        for index, value in enumerate(values)
    )


def test_a_stopped_agents_card_shows_no_cpu_figure_a_running_one_does(
    page, sign_in_as, viewer, fleet, screenshot
) -> None:
    Agent.objects.filter(slug="wow-cache").update(state=State.STOPPED)
    Agent.objects.filter(slug="wow-event").update(state=State.RUNNING)
    _cpu_samples("wow-cache", [12.0, 30.0, 47.5])
    _cpu_samples("wow-event", [5.0, 6.0, 7.5])

    sign_in_as(viewer)
    page.set_viewport_size(DESKTOP)
    page.goto("/agents/")
    running = page.locator("#agent-wow-event .agent-spark")
    expect(running.locator(".sparkline-value")).to_have_text(re.compile(r"7\.5\s*%"))
    stopped = page.locator("#agent-wow-cache")
    expect(stopped.locator(".badge.state")).to_have_text("STOPPED")
    expect(stopped.locator(".sparkline-value")).to_have_count(0)
    assert "47.5" not in stopped.inner_text()
    expect(stopped.locator(".agent-spark svg")).to_have_attribute(
        "aria-label", re.compile(r"not running now")
    )
    screenshot(page, "stopped-card-no-cpu-figure")


def test_error_evidence_reads_as_time_level_and_message_with_the_json_behind_a_toggle(
    page, sign_in_as, operator, fleet, screenshot
) -> None:
    lines = [
        {"ts": "2026-12-03T12:00:01.250Z", "level": "info", "slug": "wow-cache", "replica": 0,
         "event": "started", "message": "WowCache listening on port 8101"},
        {"ts": "2026-12-03T12:00:29.900Z", "level": "error", "slug": "wow-cache", "replica": 0,
         "event": "task_failed", "message": "cache shard 3 did not answer"},
    ]  # fmt: skip
    raw = [json.dumps(line) for line in lines]
    with transaction.atomic():
        errors.record_error(
            Agent.objects.get(slug="wow-cache"),
            "crash",
            "process killed by SIGKILL (exit code 137)",
            {"signal": 9, "log_lines": [*raw, "Traceback (most recent call last):"]},
        )

    sign_in_as(operator)
    for viewport in (DESKTOP, MOBILE):
        page.set_viewport_size(viewport)
        page.goto("/agents/wow-cache/")
        evidence = page.locator("#agent-errors details.evidence").first
        rows = evidence.locator(".evidence-line")
        expect(rows).to_have_count(3)
        expect(rows.nth(0).locator(".evidence-time")).to_have_text("12:00:01.250")
        expect(rows.nth(0).locator(".evidence-level")).to_have_text("INFO")
        expect(rows.nth(0).locator(".evidence-message")).to_have_text(
            "WowCache listening on port 8101"
        )
        expect(rows.nth(1).locator(".evidence-level")).to_have_text("ERROR")
        expect(rows.nth(1).locator(".evidence-message")).to_have_text(
            "cache shard 3 did not answer"
        )
        expect(rows.nth(2)).to_have_text("Traceback (most recent call last):")
        raw_lines = evidence.locator(".evidence-raw .log-line")
        expect(raw_lines.first).to_be_hidden()
        expect(evidence.locator(".evidence-lines")).not_to_contain_text('"ts"')
        evidence.locator(".evidence-raw summary").scroll_into_view_if_needed()
        screenshot(page, f"error-evidence-{viewport['width']}")
        evidence.locator(".evidence-raw summary").click()
        expect(raw_lines.first).to_be_visible()
        expect(raw_lines.nth(1)).to_have_text(raw[1])
        screenshot(page, f"error-evidence-raw-{viewport['width']}")
