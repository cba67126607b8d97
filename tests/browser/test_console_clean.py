"""A walk over every page while live pushes arrive, failing on any console error (issue 13,
item 10). Before, pushes sent agent cards, graph nodes and counters to every page, and one walk
logged about 790 ``htmx:oobErrorNoTarget``: now a page subscribes to what it shows."""

from __future__ import annotations

from playwright.sync_api import expect

from agents import events, services
from agents.models import Agent
from observability import alerts
from portal import realtime
from portal.actors import Actor

COMMAND = Actor.command("test")
# What pushes: state changes (cards, rows, counters, graph nodes, detail blocks, the switcher),
# an alert firing and resolving (toasts, the badge, the Alerts beat), errors (the dashboard's
# panel, the Errors beat).
STEPS = ["provision", "deploy"]
ROTATION = ["wow-cache", "wow-event", "wow-memory", "wow-security", "wow-domain"]


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


def _push_everything(number: int) -> None:
    """Changes of every kind that pushes, as the worker, the monitor and beat would make them."""
    slug = ROTATION[number % len(ROTATION)]
    agent = Agent.objects.get(slug=slug)
    step = STEPS[0] if agent.state == "DRAFT" else STEPS[1] if agent.state == "PROVISIONED" else ""
    if step:
        operation = services.request_action(agent, step, COMMAND, enqueue=False)
        services.run_operation(str(operation.pk))
    events.emit("health", Agent.objects.get(slug=slug))
    Agent.objects.filter(slug="wow-analytics").update(state="ERRORED" if number % 2 else "DRAFT")
    alerts.evaluate()
    realtime.publisher.flush()


def test_every_page_stays_free_of_console_errors_while_pushes_arrive(
    page, sign_in_as, operator, transactional_db, settings, tmp_path
) -> None:
    settings.AGENT_ROOT = tmp_path
    services.seed_platform_agents(COMMAND)
    alerts.ensure_default_rules(COMMAND)
    problems = _listen(page)
    sign_in_as(operator)

    pages = [
        "/",
        "/agents/",
        "/agents/?view=table",
        "/agents/?state=DRAFT",
        "/agents/?q=cache",
        "/agents/wow-cache/",
        "/agents/wow-event/history/",
        "/agents/errors/",
        "/agents/bulk/",
        "/logs/",
        "/events/",
        "/alerts/",
        "/metrics/",
        "/?agent=wow-cache",
        "/queues/",
    ]
    for number, path in enumerate(pages):
        page.goto(path)
        expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
        page.wait_for_timeout(300)  # the page's subscriptions are sent
        for push in range(2):
            _push_everything(number * 2 + push)
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
