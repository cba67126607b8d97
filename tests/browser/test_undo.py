"""Undo from an action's toast in a real browser (issue 13, item 14): an Operator stops WowCache
from its card, clicks Undo in the toast, and the card comes back RUNNING; the Undo button goes
once its window has passed. A real Celery worker carries out both actions."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from agents.models import Agent, Operation, State
from portal.models import AuditEntry
from tests.browser.test_agents import ACTION_TIMEOUT_MS, fleet, take_action_from_the_card

__all__ = ["fleet"]  # the fixture, used by name


def test_undo_in_the_toast_starts_the_stopped_agent_again(
    page, sign_in_as, operator, fleet, agent_worker, screenshot
) -> None:
    sign_in_as(operator)
    page.goto("/agents/")
    badge = page.locator("#agent-wow-cache .badge.state")
    for label, state in (
        ("Provision", "PROVISIONED"),
        ("Deploy", "DEPLOYED"),
        ("Start", "RUNNING"),
    ):
        take_action_from_the_card(page, "wow-cache", label)
        expect(badge).to_have_text(state, timeout=ACTION_TIMEOUT_MS)
    # Start has an inverse too; its Undo goes after the window (10 s by default).
    start_toast = page.locator("#toasts .toast", has_text="Start WowCache")
    expect(start_toast.get_by_role("button", name="Undo")).to_have_count(0, timeout=15_000)

    take_action_from_the_card(page, "wow-cache", "Stop")
    toast = page.locator("#toasts .toast", has_text="Stop WowCache: stopping")
    undo = toast.get_by_role("button", name="Undo")
    expect(undo).to_be_visible()
    screenshot(page, "undo-offered")
    undo.click()
    expect(toast).to_have_count(0)  # the Undo it offered is used
    expect(page.locator("#toasts")).to_contain_text(
        re.compile(r"(Undo: starting WowCache again…|Stop of WowCache withdrawn before it ran)")
    )
    expect(badge).to_have_text("RUNNING", timeout=ACTION_TIMEOUT_MS)
    screenshot(page, "undo-done")

    agent = Agent.objects.get(slug="wow-cache")
    assert (agent.state, agent.pending_action) == (State.RUNNING, "")
    stop = Operation.objects.get(agent=agent, action="stop")
    undone_by_start = Operation.objects.filter(
        agent=agent, action="start", reason__startswith="undo of the stop"
    )
    # Either the worker had not begun the stop (withdrawn) or it had (undone by a start).
    assert (stop.error_reason == "undone") != undone_by_start.exists()
    assert (
        AuditEntry.objects.filter(target="wow-cache", user=operator)
        .filter(detail__phase__in=["undone", "requested"], action__in=["agent.stop", "agent.start"])
        .exists()
    )
