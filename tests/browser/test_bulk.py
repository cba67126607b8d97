"""Bulk operations in a real browser, carried out by a real Celery worker with real agent
processes: an Operator ticks all 14 agents, deploys and starts them and watches every row come
up live; "Stop all running" with its typed confirmation stops them all; five agents crashed by
SIGKILL are picked with "All ERRORED" and restarted."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import psutil
import pytest
from playwright.sync_api import expect

from agents import bulk, services
from agents.models import Agent, AgentTransition, BulkOperation, RestartPolicy, State
from agents.monitor import Monitor
from portal.actors import Actor

COMMAND = Actor.command("test")
# From the click to every row finished: the worker brings 14 agents up, five at a time.
BULK_TIMEOUT_MS = 60_000
MOBILE = {"width": 375, "height": 812}
DESKTOP = {"width": 1366, "height": 860}


@pytest.fixture
def fleet(transactional_db):
    services.seed_platform_agents(Actor.command("test"))


def _wait_for_bulk(operation_id: int, timeout: float = 60) -> BulkOperation:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        operation = BulkOperation.objects.get(pk=operation_id)
        if operation.is_finished:
            return operation
        time.sleep(0.2)
    raise AssertionError(f"bulk operation {operation_id} did not finish in {timeout} s")


def _bring_up_by_the_worker(**choice) -> None:
    """Set-up through the same service the pages call, carried out by the worker."""
    operation = bulk.create_bulk_operation("deploy_and_start", COMMAND, **choice)
    finished = _wait_for_bulk(operation.pk)
    assert finished.status == BulkOperation.Status.SUCCEEDED, bulk.bulk_summary(finished)


def _open_agents_page(page) -> None:
    page.goto("/agents/")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")


def _pick(page, label: str) -> None:
    bar = page.locator("#bulk-form")
    bar.locator("summary", has_text="Select").click()
    bar.get_by_role("menuitem", name=label, exact=True).click()


def _visible_bulk_actions(page) -> list[str]:
    return page.locator("#bulk-form [data-bulk-action]:visible").all_inner_texts()


def _expect_all_rows(page, count: int, status: str, state: str) -> None:
    """Every row of the progress page reaches ``status`` with the agent in ``state``."""
    expect(page.locator(".bulk-item")).to_have_count(count)
    try:
        expect(page.locator(f'.bulk-item[data-status="{status}"]')).to_have_count(
            count, timeout=BULK_TIMEOUT_MS
        )
    except AssertionError as failure:
        # Say whether the work or the page lagged behind.
        latest = BulkOperation.objects.order_by("-pk").first()
        items = {item["agent"]: item["status"] for item in bulk.bulk_summary(latest)["items"]}
        raise AssertionError(f"{failure}\nthe database says: {latest.status}, {items}") from None
    expect(page.locator(f".bulk-item [data-now-state]:text-is('{state}')")).to_have_count(count)


def test_operator_deploys_and_starts_all_fourteen_and_watches_them_come_up_live(
    page, sign_in_as, operator, fleet, agent_worker, screenshot
) -> None:
    sign_in_as(operator)
    _open_agents_page(page)
    bar = page.locator("#bulk-form")
    expect(bar.locator("[data-bulk-count]")).to_have_text("0 selected")
    expect(bar.get_by_role("link", name="Start all")).to_be_visible()

    _pick(page, "All shown")
    expect(bar.locator("[data-bulk-count]")).to_have_text("14 selected")
    assert _visible_bulk_actions(page) == ["Deploy and start", "Deploy", "Revoke"]
    expect(bar.get_by_role("link", name="Start all")).to_be_hidden()

    # A live update replaces a card: its tick stays, and so does the count.
    cache = Agent.objects.get(slug="wow-cache")
    cache.description = "Shared cache, described again while the page is open."
    services.update_agent_settings(cache, ["description"], Actor.command("test"))
    expect(page.locator("#agent-wow-cache")).to_contain_text("described again")
    expect(page.locator("#agent-wow-cache input[data-bulk-select]")).to_be_checked()
    expect(bar.locator("[data-bulk-count]")).to_have_text("14 selected")
    # Unticking one by hand and ticking it again.
    page.locator("#agent-wow-vision input[data-bulk-select]").uncheck()
    expect(bar.locator("[data-bulk-count]")).to_have_text("13 selected")
    page.locator("#agent-wow-vision input[data-bulk-select]").check()
    expect(bar.locator("[data-bulk-count]")).to_have_text("14 selected")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "bulk-selection-toolbar")
    page.evaluate("window.scrollTo(0, 600)")
    screenshot(page, "bulk-selection-toolbar-scrolled")

    bar.get_by_role("button", name="Deploy and start", exact=True).click()
    dialog = page.locator("#modal dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("h2")).to_have_text("Deploy and start 14 of 14 agents?")
    expect(dialog.locator('[data-plan="changing"] li')).to_have_count(14)
    expect(dialog.locator('li[data-agent="wow-cache"] .plan-steps')).to_have_text(
        "provision → deploy → start"
    )
    expect(dialog.get_by_label(re.compile("At most this many at a time"))).to_have_value("5")
    screenshot(page, "bulk-preview-dialog")

    dialog.get_by_role("button", name="Deploy and start 14 agents").click()
    page.wait_for_url(re.compile(r"/agents/bulk/\d+/$"))
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    operation = BulkOperation.objects.get()
    assert (operation.action, operation.total, operation.parallelism) == ("deploy_and_start", 14, 5)

    # Mid-run: some finished, some not.
    expect(page.locator('.bulk-item[data-status="succeeded"]').first).to_be_visible(
        timeout=BULK_TIMEOUT_MS
    )
    screenshot(page, "bulk-progress-running")

    _expect_all_rows(page, 14, "succeeded", "RUNNING")
    progress = page.locator("#bulk-progress")
    expect(progress.locator(".bulk-status")).to_have_text("Succeeded")
    expect(progress.locator('[data-count="succeeded"]')).to_have_text("14")
    expect(progress.locator('[data-count="pending"]')).to_have_text("0")
    expect(page.locator("#bulk-summary")).to_contain_text(
        re.compile(r"14 succeeded, 0 failed, 0 skipped; total time \d+ s\.")
    )
    expect(page.locator("#bulk-summary [data-summary=succeeded] a")).to_have_count(14)
    expect(page.locator("#toasts")).to_contain_text(
        re.compile(r"Deploy and start: 14 succeeded in \d+(\.\d)? s")
    )
    expect(page.locator("[data-cancel]")).to_have_count(0)
    assert page.evaluate("window.sameDocument") is True
    screenshot(page, "bulk-progress-finished")

    assert set(Agent.objects.values_list("state", flat=True)) == {State.RUNNING}

    # The same pages on a phone.
    page.set_viewport_size(MOBILE)
    page.wait_for_timeout(400)  # the sidebar slides away
    screenshot(page, "bulk-progress-finished-mobile")
    page.locator(".bulk-items").scroll_into_view_if_needed()
    screenshot(page, "bulk-progress-rows-mobile")
    page.goto("/agents/bulk/")
    expect(page.locator("#bulk-rows tr")).to_have_count(1)
    screenshot(page, "bulk-list-mobile")
    page.goto("/agents/")
    _pick(page, "All RUNNING")
    expect(bar.locator("[data-bulk-count]")).to_have_text("14 selected")
    assert _visible_bulk_actions(page) == ["Stop", "Restart", "Suspend", "Revoke"]
    screenshot(page, "bulk-selection-toolbar-mobile")
    bar.get_by_role("button", name="Restart", exact=True).click()
    expect(dialog).to_be_visible()
    screenshot(page, "bulk-preview-dialog-mobile")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    assert BulkOperation.objects.count() == 1


def test_stop_all_running_asks_for_the_typed_phrase_then_stops_every_agent(
    page, sign_in_as, operator, fleet, agent_worker, screenshot
) -> None:
    _bring_up_by_the_worker(filter={"all": True})
    pids = {agent.slug: agent.runtime_details["pids"][0] for agent in Agent.objects.all()}
    sign_in_as(operator)
    _open_agents_page(page)

    page.locator("#bulk-form").get_by_role("link", name="Stop all running").click()
    dialog = page.locator("#modal dialog")
    expect(dialog.locator("h2")).to_have_text("Stop 14 of 14 agents?")
    expect(dialog).to_contain_text("Chosen by filter: state RUNNING.")
    confirm = dialog.get_by_label(re.compile("Type stop 14 to confirm"))
    run = dialog.get_by_role("button", name="Stop 14 agents")
    confirm.fill("stop 13")
    run.click()
    expect(dialog.locator("[data-run-error]")).to_have_text(
        "This stop changes 14 agents; type “stop 14” to confirm it."
    )
    assert BulkOperation.objects.count() == 1  # the set-up only
    screenshot(page, "bulk-stop-typed-confirmation")

    dialog.get_by_label(re.compile("Type stop 14 to confirm")).fill("stop 14")
    dialog.get_by_role("button", name="Stop 14 agents").click()
    page.wait_for_url(re.compile(r"/agents/bulk/\d+/$"))
    _expect_all_rows(page, 14, "succeeded", "STOPPED")
    expect(page.locator("#bulk-summary")).to_contain_text("14 succeeded, 0 failed, 0 skipped")
    # A stop can be undone: the summary offers the roll-back, previewed first.
    page.locator("#bulk-summary").get_by_role("link", name="Roll back…").click()
    dialog = page.locator("#modal dialog")
    expect(dialog.locator("h2")).to_have_text(re.compile(r"Roll back bulk operation #\d+\?"))
    expect(dialog.locator('[data-plan="changing"] .plan-steps')).to_have_text(["start"] * 14)
    screenshot(page, "bulk-rollback-preview")
    dialog.get_by_role("button", name="Cancel").click()

    assert set(Agent.objects.values_list("state", flat=True)) == {State.STOPPED}
    # Gracefully: each went through the stop transition (no crash recorded), its process gone.
    stops = AgentTransition.objects.filter(action="stop", to_state=State.STOPPED)
    assert stops.count() == 14
    assert not AgentTransition.objects.filter(action="fail").exists()
    assert not [slug for slug, pid in pids.items() if psutil.pid_exists(pid)]
    assert not BulkOperation.objects.filter(kind=BulkOperation.Kind.ROLLBACK).exists()
    page.goto("/agents/bulk/")
    expect(page.locator("#bulk-rows tr")).to_have_count(2)
    screenshot(page, "bulk-list")


@pytest.fixture
def monitor(settings, agent_worker):
    """The runtime monitor, watching the worker's agents, as ``manage.py up`` runs it."""
    settings.AGENT_ROOT = agent_worker
    running = Monitor(probe_interval=1)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    yield running
    running.stop()
    thread.join(timeout=10)


def test_five_crashed_agents_are_picked_with_all_errored_and_restarted(
    page, sign_in_as, operator, fleet, agent_worker, monitor, screenshot
) -> None:
    victims = ["wow-cache", "wow-communication", "wow-event", "wow-memory", "wow-security"]
    _bring_up_by_the_worker(targets=victims)
    # No automatic restart: these stay ERRORED until someone acts.
    Agent.objects.filter(slug__in=victims).update(restart_policy=RestartPolicy.NEVER)
    sign_in_as(operator)
    _open_agents_page(page)

    for agent in Agent.objects.filter(slug__in=victims):
        os.kill(agent.runtime_details["pids"][0], signal.SIGKILL)
    for slug in victims:  # the crashes arrive live
        expect(page.locator(f"#agent-{slug} .badge.state")).to_have_text("ERRORED", timeout=15_000)
    assert Agent.objects.filter(state=State.ERRORED).count() == 5

    _pick(page, "All ERRORED")
    bar = page.locator("#bulk-form")
    expect(bar.locator("[data-bulk-count]")).to_have_text("5 selected")
    for slug in victims:
        expect(page.locator(f"#agent-{slug} input[data-bulk-select]")).to_be_checked()
    expect(page.locator("#agent-wow-search input[data-bulk-select]")).not_to_be_checked()
    assert _visible_bulk_actions(page) == ["Stop", "Restart", "Revoke"]

    bar.get_by_role("button", name="Restart", exact=True).click()
    dialog = page.locator("#modal dialog")
    expect(dialog.locator("h2")).to_have_text("Restart 5 of 5 agents?")
    expect(dialog.locator('[data-plan="changing"] .plan-steps')).to_have_text(["restart"] * 5)
    dialog.get_by_role("button", name="Restart 5 agents").click()
    page.wait_for_url(re.compile(r"/agents/bulk/\d+/$"))
    _expect_all_rows(page, 5, "succeeded", "RUNNING")
    expect(page.locator("#bulk-summary")).to_contain_text("5 succeeded, 0 failed, 0 skipped")

    states = dict(Agent.objects.filter(slug__in=victims).values_list("slug", "state"))
    assert states == dict.fromkeys(victims, State.RUNNING)
    restarted = AgentTransition.objects.filter(action="restart", to_state=State.RUNNING)
    assert sorted(restarted.values_list("agent__slug", flat=True)) == victims

    # The table view: the header box ticks every row shown, and a filter narrows the selection.
    page.goto("/agents/?view=table")
    header_box = page.locator("input[data-bulk-select-all]")
    header_box.check()
    expect(bar.locator("[data-bulk-count]")).to_have_text("14 selected")
    expect(page.locator("tr.is-selected")).to_have_count(14)
    # Nine DRAFT and five RUNNING agents: what applies to at least one of them.
    assert _visible_bulk_actions(page) == [
        "Deploy and start", "Deploy", "Stop", "Restart", "Suspend", "Revoke",
    ]  # fmt: skip
    screenshot(page, "bulk-selection-table")
    page.get_by_label("State").select_option("RUNNING")
    expect(page.locator("#agent-results tbody tr")).to_have_count(5)
    expect(bar.locator("[data-bulk-count]")).to_have_text("5 selected")
    header_box = page.locator("input[data-bulk-select-all]")
    expect(header_box).to_be_checked()
    header_box.uncheck()
    expect(bar.locator("[data-bulk-count]")).to_have_text("0 selected")
