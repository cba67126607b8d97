"""Alert toasts do not pile up (issue 13, item 8): five crashes make one grouped toast
("5 agents ERRORED: …"), at most four toasts show, all but critical ones fade, and a recovery is
worded as one. Real Daphne, real Redis pushes, Chromium."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from agents import services
from agents.models import Agent, State
from observability import alerts
from portal import realtime
from portal.actors import Actor

COMMAND = Actor.command("test")
FIVE = ["wow-cache", "wow-event", "wow-memory", "wow-notification", "wow-integration"]


def test_five_errored_agents_make_one_toast_that_stays_and_their_recovery_one_that_fades(
    page, sign_in_as, operator, transactional_db, screenshot
) -> None:
    services.seed_platform_agents(COMMAND)
    alerts.ensure_default_rules(COMMAND)
    sign_in_as(operator)
    page.goto("/agents/")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")

    Agent.objects.filter(slug__in=FIVE).update(state=State.ERRORED)
    assert alerts.evaluate()["fired"] == len(FIVE)
    realtime.publisher.flush()

    group = page.locator('#toasts [data-group-key^="fired-"]')
    expect(group).to_have_count(1)
    expect(group).to_have_attribute("data-alert-group", "5")
    expect(group).to_contain_text("5 agents ERRORED: ")
    expect(group).to_contain_text("and 2 more")
    expect(group).to_have_class(re.compile("toast-error"))
    expect(group.get_by_role("link", name="View alerts")).to_have_attribute(
        "href", "/alerts/?status=open"
    )
    expect(page.locator("#toasts .toast")).to_have_count(1)
    screenshot(page, "toasts-grouped")

    # They recover: one success toast, worded as a recovery, which fades; the critical stays.
    Agent.objects.filter(slug__in=FIVE).update(state=State.RUNNING)
    assert alerts.evaluate()["resolved"] == len(FIVE)
    realtime.publisher.flush()
    recovered = page.locator('#toasts [data-group-key^="resolved-"]')
    expect(recovered).to_contain_text("5 agents are no longer ERRORED")
    expect(recovered).to_have_class(re.compile("toast-success"))
    expect(recovered).to_have_count(0, timeout=10_000)
    expect(group).to_be_visible()

    # However many arrive, at most four show; the oldest that would fade go first.
    add_toasts = """([level, count]) => {
          const box = document.getElementById("toasts");
          for (let i = 1; i <= count; i++) {
            box.insertAdjacentHTML("beforeend",
              `<div class="toast toast-${level}" role="status"><span>${level} ${i}</span></div>`);
          }
        }"""
    page.evaluate(add_toasts, ["info", 6])
    shown = page.locator("#toasts .toast:not([data-toast-overflow])")
    expect(shown).to_have_count(4)
    expect(page.locator("#toasts")).to_contain_text("info 6")
    expect(page.locator("#toasts")).not_to_contain_text("info 2")
    expect(group).to_be_visible()  # the critical one outlived newer notes
    # Notes that would have faded anyway go without a word; errors that go are counted.
    expect(page.locator("[data-toast-overflow]")).to_have_count(0)
    page.evaluate(add_toasts, ["error", 5])
    expect(shown).to_have_count(4)
    expect(page.locator("[data-toast-overflow]")).to_contain_text("2 older notifications cleared")
    screenshot(page, "toasts-capped")


def test_one_alert_alone_keeps_its_own_toast(page, sign_in_as, operator, transactional_db) -> None:
    services.seed_platform_agents(COMMAND)
    alerts.ensure_default_rules(COMMAND)
    sign_in_as(operator)
    page.goto("/agents/")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")

    Agent.objects.filter(slug="wow-cache").update(state=State.ERRORED)
    assert alerts.evaluate()["fired"] == 1
    realtime.publisher.flush()
    toast = page.locator("#toasts [data-alert-toast]")
    expect(toast).to_contain_text("Alert critical: WowCache is ERRORED")
    expect(page.locator("[data-alert-group]")).to_have_count(0)

    Agent.objects.filter(slug="wow-cache").update(state=State.RUNNING)
    assert alerts.evaluate()["resolved"] == 1
    realtime.publisher.flush()
    expect(page.locator("#toasts")).to_contain_text(
        re.compile(r"Recovered: WowCache is no longer ERRORED \(alert open \d+ s\)\.")
    )
