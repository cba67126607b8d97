"""A walk over every page while live pushes arrive, failing on any console error (issue 13,
item 10). Before, pushes sent agent cards, graph nodes and counters to every page, and one walk
logged about 790 ``htmx:oobErrorNoTarget``: now a page subscribes to what it shows."""

from __future__ import annotations

from playwright.sync_api import expect

from agents import bulk, services
from agents.models import Agent
from observability import alerts
from portal.actors import Actor
from portal.navigation import SECTIONS
from tests.portal.test_subscriptions import push_everything  # every kind of change that pushes

COMMAND = Actor.command("test")


def _listen(page) -> list[str]:
    problems: list[str] = []
    page.on(
        "console",
        lambda message: (
            problems.append(f"console {message.type}: {message.text}")
            if message.type in ("error", "warning")
            else None
        ),
    )
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    # htmx logs a missing out-of-band target to the console only with its logger on; count the
    # event itself, which it always fires.
    page.add_init_script(
        """document.addEventListener("htmx:oobErrorNoTarget", (event) => {
             console.error("htmx:oobErrorNoTarget " + (event.detail.content && event.detail.content.id));
           });"""
    )
    return problems


def test_every_page_stays_free_of_console_errors_while_pushes_arrive(
    page, sign_in_as, operator, transactional_db, settings, tmp_path
) -> None:
    settings.AGENT_ROOT = tmp_path
    services.seed_platform_agents(COMMAND)
    alerts.ensure_default_rules(COMMAND)
    bulk_id = bulk.create_bulk_operation(
        "deploy", COMMAND, targets=["wow-search", "wow-support"], enqueue=False
    ).pk
    problems = _listen(page)
    sign_in_as(operator)

    # Every page of the sidebar, then the pages they lead to (filters, an agent, a bulk job).
    pages = [
        *(section.href for section in SECTIONS),
        "/agents/?view=table",
        "/agents/?state=DRAFT",
        "/agents/?q=cache",
        "/agents/wow-cache/",
        "/agents/wow-event/history/",
        "/agents/bulk/",
        f"/agents/bulk/{bulk_id}/",
        "/logs/?agent=wow-cache",
        "/?agent=wow-cache",
    ]
    for number, path in enumerate(pages):
        page.goto(path)
        expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
        page.wait_for_timeout(300)  # the page's subscriptions are sent
        for push in range(2):
            push_everything(number * 2 + push, bulk_id)
        page.wait_for_timeout(700)  # the pushes arrive and are swapped
        assert not problems, f"{path}: {problems}"
    # The pushes do reach the pages that show them.
    page.goto("/agents/")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    page.wait_for_timeout(300)
    agent = Agent.objects.get(slug="wow-communication")  # not in the rotation: still DRAFT
    operation = services.request_action(agent, "provision", COMMAND, enqueue=False)
    services.run_operation(str(operation.pk))
    expect(page.locator("#agent-wow-communication .badge.state")).to_have_text("PROVISIONED")
    assert not problems, problems


def test_an_action_from_the_focused_dashboards_card_logs_no_error(
    page, sign_in_as, operator, transactional_db
) -> None:
    """The focused dashboard shows WowCache's card but no fleet counts: the action's answer
    must not carry them (it did, and htmx logged oobErrorNoTarget #fleet-counts)."""
    from tests.browser.test_agents import take_action_from_the_card

    services.seed_platform_agents(COMMAND)
    problems = _listen(page)
    sign_in_as(operator)
    page.goto("/?agent=wow-cache")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    expect(page.locator("#fleet-counts")).to_have_count(0)
    take_action_from_the_card(page, "wow-cache", "Provision")
    expect(page.locator("#toasts")).to_contain_text("Provision WowCache: provisioning…")
    page.wait_for_timeout(500)
    assert not problems, problems
