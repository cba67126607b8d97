"""Workflows in a real browser, the issue's story: "Customer onboarding" for Acme Corp started
from the page fails at its Test step while WowVision Prime is made to fail (the agent's error on
the page, live); the fault removed, a retry from the failed step after reading its preview
succeeds; the run is rolled back and the compensations run newest first; a fleet smoke test
(parallel branches) is paused, starts nothing new, and resumed.

Real agentd processes for all 14 agents, started by the real Celery worker that also runs the
workflow steps; real Redis and PostgreSQL.
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from agents import bulk, services
from agents.models import Agent, BulkOperation
from agents.workflows.models import StepRun, WorkflowRun
from portal.actors import Actor

COMMAND = Actor.command("test")
SLOW = ("wow-event", "wow-cache", "wow-security", "wow-memory", "wow-communication")


@pytest.fixture
def fleet(transactional_db, agent_worker):
    """The 14 agents running, brought up by the worker in dependency order."""
    services.seed_platform_agents(COMMAND)
    operation = bulk.create_bulk_operation("deploy_and_start", COMMAND, filter={"all": True})
    _wait(lambda: BulkOperation.objects.get(pk=operation.pk).is_finished, 180, "the fleet is up")
    assert BulkOperation.objects.get(pk=operation.pk).failed == 0


def _configure(slug: str, **config) -> None:
    agent = Agent.objects.get(slug=slug)
    agent.config = {**agent.config, **config}
    services.update_agent_settings(agent, ["config"], COMMAND)
    operation = services.request_action(agent, "restart", COMMAND, confirm=True)
    _wait(lambda: type(operation).objects.get(pk=operation.pk).is_finished, 60, f"{slug} restarts")


def _wait(condition, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what or "condition not met"
        time.sleep(0.2)


def _run_status(page) -> str:
    return page.locator("#run-region").get_attribute("data-status") or ""


def test_onboarding_fails_is_retried_from_its_failed_step_and_rolled_back(
    page, sign_in_as, operator, fleet, screenshot
) -> None:
    _configure("wow-vision", task_retry_ms=200, task_max_failures=2, faults={"fail_rate": 1.0})
    sign_in_as(operator)
    page.goto("/workflows/start/?definition=customer-onboarding")
    page.locator("#param-customer_name").fill("Acme Corp")
    page.locator("[data-start]").click()
    page.wait_for_url("**/workflows/*/")
    run = WorkflowRun.objects.get()
    # The page fills in live: the first steps succeed, Test fails with the agent's error.
    expect(page.locator("#run-region")).to_have_attribute("data-status", "failed", timeout=30_000)
    expect(page.locator("#step-provision")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#step-test")).to_have_attribute("data-status", "failed")
    expect(page.locator("#step-activate")).to_have_attribute("data-status", "pending")
    expect(page.locator("[data-run-error]")).to_contain_text(
        "Test failed: WowVision Prime: injected failure"
    )
    expect(page.locator("svg.gantt .gantt-attempt.is-failed")).to_have_count(1)
    screenshot(page, "workflows-onboarding-failed")

    # The fault removed; the preview of a retry from Test says what runs again and repeats.
    _configure("wow-vision", faults={})
    page.locator("[data-control=retry]").click()
    page.locator("#wf-retry-dialog input[value=from]").check()
    page.locator("#wf-retry-dialog select[name=from_step]").select_option("test")
    expect(page.locator("[data-will-run]")).to_contain_text("Test")
    expect(page.locator("[data-will-run]")).to_contain_text("Activate")
    expect(page.locator("[data-reused]")).to_contain_text("Provision")
    expect(page.locator("[data-side-effects]")).to_contain_text(
        "Test: sends the task to the agent again"
    )
    screenshot(page, "workflows-retry-preview")
    page.locator("[data-confirm-retry]").click()
    expect(page.locator("#run-region")).to_have_attribute(
        "data-status", "succeeded", timeout=30_000
    )
    attempts = list(StepRun.objects.filter(run=run, step_id="test").order_by("attempt"))
    assert [(a.attempt, a.status) for a in attempts] == [(1, "failed"), (2, "succeeded")]
    assert attempts[1].replaces_id == attempts[0].pk
    screenshot(page, "workflows-onboarding-retried")

    # Rolled back: the compensations run newest first, each a visible step.
    page.locator("[data-control=rollback]").click()
    expect(page.locator("[data-compensations] li").first).to_contain_text("Deactivate")
    page.locator("[data-confirm-rollback]").click()
    expect(page.locator("#run-region")).to_have_attribute(
        "data-status", "rolled_back", timeout=30_000
    )
    order = [
        s.step_id
        for s in StepRun.objects.filter(run=run, role="compensation").order_by("started_at")
    ]
    assert order == ["activate", "deploy", "configure", "provision"]
    expect(page.locator(".wf-timeline-compensation .wf-step")).to_have_count(4)
    screenshot(page, "workflows-rolled-back")


def test_a_paused_run_starts_nothing_new_until_resumed(
    page, sign_in_as, operator, fleet, screenshot
) -> None:
    for slug in SLOW:
        _configure(slug, faults={"latency_ms": 1500})
    sign_in_as(operator)
    page.goto("/workflows/start/?definition=fleet-smoke-test")
    page.locator("[data-start]").click()
    page.wait_for_url("**/workflows/*/")
    run = WorkflowRun.objects.get()
    _wait(lambda: StepRun.objects.filter(run=run, status="running").count() == 4, 20,
          "four pings run at once")  # fmt: skip
    page.locator("[data-control=pause]").click()
    expect(page.locator("#run-region")).to_have_attribute("data-status", "paused")
    # The four running finish; no fifth starts while paused.
    _wait(lambda: not StepRun.objects.filter(run=run, status__in=["running", "queued"]).exists(),
          20, "the running pings finish")  # fmt: skip
    time.sleep(2)
    counts = {
        s: StepRun.objects.filter(run=run, status=s).count() for s in ("succeeded", "pending")
    }
    assert counts == {"succeeded": 4, "pending": 11}
    expect(page.locator(".wf-timeline .wf-step[data-status=succeeded]")).to_have_count(4)
    screenshot(page, "workflows-paused")
    page.locator("[data-control=resume]").click()
    expect(page.locator("#run-region")).to_have_attribute(
        "data-status", "succeeded", timeout=60_000
    )
    assert StepRun.objects.filter(run=run, attempt__gt=1).count() == 0
    page.goto("/workflows/")
    expect(page.locator(f"#wf-run-{run.pk}")).to_have_attribute("data-status", "succeeded")
    screenshot(page, "workflows-list")
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto(f"/workflows/{run.pk}/")
    screenshot(page, "workflows-run-375")
