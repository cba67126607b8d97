"""The Factory in a real browser, the issue's story: a Memory agent "acme-memory" made through
the six steps (a taken name and a dependency cycle refused as they are typed, the sandbox's
tests passing with the agent's log, the creation watched live to its first successful task),
then a Data agent whose setting fails a sandbox test, stopped before anything is created; the
wizard at 375 px.

A real Celery worker runs the sandbox and the creation workflow; real agentd processes.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from agents import services
from agents.models import Agent
from factory.models import Draft
from factory.services import templates
from portal.actors import Actor

COMMAND = Actor.command("test")


@pytest.fixture
def catalog(transactional_db, agent_worker):
    templates.seed_templates(COMMAND)
    services.seed_platform_agents(COMMAND)


def _field_error(page, slot: str):
    return page.locator(f"#err-{slot}")


def test_a_memory_agent_is_made_through_the_six_steps(
    page, sign_in_as, operator, catalog, screenshot
) -> None:
    sign_in_as(operator)
    page.goto("/factory/")
    expect(page.locator(".fx-card")).to_have_count(6)
    screenshot(page, "factory-templates")
    page.locator("[data-choose=memory]").click()
    page.wait_for_url("**/configure/")

    # Step 2: refused as typed, beside the field.
    page.locator("#f-name").fill("WowCache")
    expect(_field_error(page, "name")).to_contain_text(
        "WowCache is taken by the agent wow-cache", timeout=5_000
    )
    page.locator("#f-name").fill("Acme Memory")
    expect(_field_error(page, "name")).to_be_empty()
    page.locator("#f-slug").fill("acme-memory")
    page.locator("#f-dependencies").fill("acme-memory")
    expect(_field_error(page, "dependencies")).to_contain_text(
        "acme-memory cannot depend on itself: that is a cycle."
    )
    page.locator("#f-settings-max_keys").fill("0")
    expect(_field_error(page, "settings-max_keys")).to_contain_text(
        "0 is less than the minimum of 1"
    )
    screenshot(page, "factory-configure-errors")
    page.locator("#f-dependencies").fill("")
    page.locator("#f-settings-max_keys").fill("5000")
    page.locator("#f-owner").fill("Acme Corp")
    expect(_field_error(page, "dependencies")).to_be_empty()
    expect(_field_error(page, "settings-max_keys")).to_be_empty()
    page.locator("#f-secrets").fill("CACHE_KEY=opensesame")
    page.locator("[data-next]").click()
    page.wait_for_url("**/resources/")

    # Step 3: a slider moves the monthly cost.
    before = page.locator("[data-cost-total]").inner_text()
    page.locator("#f-memory_mb").evaluate(
        "e => { e.value = 512; e.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    expect(page.locator("[data-cost-total]")).not_to_have_text(before, timeout=5_000)
    expect(page.locator("#out-memory_mb")).to_have_text("512")
    page.locator("#f-memory_mb").evaluate(
        "e => { e.value = 128; e.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    expect(page.locator("[data-cost-total]")).to_have_text(before, timeout=5_000)
    screenshot(page, "factory-resources")
    page.locator("[data-next]").click()
    page.wait_for_url("**/sandbox/")

    # Step 4: the sandbox runs for real.
    page.locator("[data-run-sandbox]").click()
    expect(page.locator("#fx-sandbox-region")).to_have_attribute(
        "data-sandbox-status", "passed", timeout=30_000
    )
    expect(page.locator("[data-test-result=pass]")).to_have_count(5)
    page.locator(".fx-logs summary").click()
    expect(page.locator("[data-sandbox-logs]")).to_contain_text("ready")
    screenshot(page, "factory-sandbox")
    page.locator("[data-next]").click()
    page.wait_for_url("**/review/")

    # Step 5: what will be made, and the cost.
    expect(page.locator("[data-objects]")).to_contain_text("agents:acme-memory:tasks")
    expect(page.locator("[data-objects]")).to_contain_text("CACHE_KEY")
    expect(page.locator("body")).not_to_contain_text("opensesame")
    screenshot(page, "factory-review")
    page.locator("[data-create]").click()
    page.wait_for_url("**/create/")

    # Step 6: watched live to the first successful task.
    expect(page.locator("#fx-monitor")).to_have_attribute(
        "data-run-status", "succeeded", timeout=60_000
    )
    expect(page.locator("[data-step=first-task]")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("[data-created]")).to_contain_text(
        "Acme Memory is RUNNING and answered its first task"
    )
    screenshot(page, "factory-created")
    page.locator("[data-agent-link]").click()
    page.wait_for_url("**/agents/acme-memory/")
    assert Agent.objects.get(slug="acme-memory").state == "RUNNING"

    page.set_viewport_size({"width": 375, "height": 800})
    page.goto("/factory/")
    page.locator("[data-choose=data]").click()
    page.wait_for_url("**/configure/")
    screenshot(page, "factory-configure-375")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_a_failing_sandbox_test_stops_the_creation_before_anything_is_made(
    page, sign_in_as, operator, catalog, screenshot
) -> None:
    sign_in_as(operator)
    page.goto("/factory/")
    page.locator("[data-choose=data]").click()
    page.wait_for_url("**/configure/")
    page.locator("#f-name").fill("Acme Data")
    page.locator("#f-slug").fill("acme-data")
    page.locator("#f-owner").fill("Acme Corp")
    page.locator("#f-settings-pipeline").fill('[{"limit": 1}]')
    page.locator("[data-next]").click()
    page.wait_for_url("**/resources/")
    page.locator("[data-next]").click()
    page.wait_for_url("**/sandbox/")
    page.locator("[data-run-sandbox]").click()
    expect(page.locator("#fx-sandbox-region")).to_have_attribute(
        "data-sandbox-status", "failed", timeout=30_000
    )
    expect(page.locator("[data-test-result=fail]").first).to_contain_text("output.records")
    expect(page.locator("#fx-sandbox-region [data-next]")).to_have_count(0)
    screenshot(page, "factory-sandbox-failed")
    draft = Draft.objects.get(values__slug="acme-data")
    page.goto(f"/factory/drafts/{draft.pk}/review/")
    page.wait_for_url("**/sandbox/")  # not reached: the sandbox did not pass
    assert not Agent.objects.filter(slug="acme-data").exists()
