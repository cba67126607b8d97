"""The agents page in a real browser: an Operator takes WowCache from DRAFT to RUNNING from its
card, carried out by a real Celery worker with real processes; a Viewer is offered nothing."""

from __future__ import annotations

import re
import urllib.request

import pytest
from playwright.sync_api import expect

from agents import services
from agents.models import Agent, State
from portal.actors import Actor

# From the click to the card showing the new state: the worker's run plus a poll or two.
ACTION_TIMEOUT_MS = 30_000


@pytest.fixture
def fleet(transactional_db):
    services.seed_platform_agents(Actor.command("test"))


def take_action_from_the_card(page, slug: str, label: str) -> None:
    card = page.locator(f"#agent-{slug}")
    card.locator("summary", has_text="Actions").click()
    card.get_by_role("menuitem", name=label, exact=True).click()
    dialog = page.locator("#modal dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading")).to_have_text(f"{label} WowCache?")
    dialog.get_by_role("button", name=label, exact=True).click()
    expect(dialog).to_have_count(0)


def test_operator_starts_wowcache_from_its_card_and_sees_it_running(
    page, sign_in_as, operator, fleet, agent_worker, screenshot
) -> None:
    sign_in_as(operator)
    page.goto("/agents/")
    card = page.locator("#agent-wow-cache")
    badge = card.locator(".badge.state")
    expect(badge).to_have_text("DRAFT")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    for label, state in (
        ("Provision", "PROVISIONED"),
        ("Deploy", "DEPLOYED"),
        ("Start", "RUNNING"),
    ):
        take_action_from_the_card(page, "wow-cache", label)
        expect(badge).to_have_text(state, timeout=ACTION_TIMEOUT_MS)
        expect(page.locator("#toasts .toast-success").last).to_contain_text(
            re.compile(rf"{label} WowCache: done in \d+\.\d s\.")
        )

    expect(card).not_to_have_attribute("hx-trigger", re.compile("."))  # no longer polling
    counts = page.locator("#fleet-counts")
    expect(counts.locator(".metric", has_text="Running").locator(".metric-value")).to_have_text("1")
    expect(
        counts.locator(".metric", has_text="Active operations").locator(".metric-value")
    ).to_have_text("0")
    assert page.evaluate("window.sameDocument") is True
    screenshot(page, "agents-running")

    cache = Agent.objects.get(slug="wow-cache")
    assert cache.state == State.RUNNING
    assert list(cache.transitions.order_by("at").values_list("action", "actor")) == [
        ("provision", "user:otto"), ("deploy", "user:otto"), ("start", "user:otto"),
    ]  # fmt: skip
    port = cache.runtime_details["ports"][0]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:
        assert response.status == 200


def test_viewer_sees_the_cards_without_any_action_button(page, sign_in_as, viewer, fleet) -> None:
    sign_in_as(viewer)
    page.goto("/agents/")
    expect(page.locator(".agent-card")).to_have_count(14)
    expect(page.locator("#agent-wow-cache .badge.state")).to_have_text("DRAFT")
    expect(page.get_by_text("Actions", exact=True)).to_have_count(0)
    expect(page.get_by_role("menuitem")).to_have_count(0)
