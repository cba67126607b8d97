"""A hot config patch from the agent's page in a real browser: a wrong type is refused beside
the field, a good patch reaches the running replica, and the roll-back puts the old one back."""

from __future__ import annotations

from playwright.sync_api import expect

from agents import services
from agents.models import Agent
from portal.actors import Actor

COMMAND = Actor.command("test")


def test_a_config_patch_is_applied_and_rolled_back_from_the_page(
    page, sign_in_as, operator, settings, tmp_path, screenshot
) -> None:
    settings.AGENT_ROOT = tmp_path
    services.seed_platform_agents(COMMAND)
    cache = Agent.objects.get(slug="wow-cache")
    for action in ("provision", "deploy", "start"):
        services.run_operation(
            str(services.request_action(cache, action, COMMAND, enqueue=False).pk)
        )
    try:
        sign_in_as(operator)
        page.goto("/agents/wow-cache/")
        page.locator("#config-patch").fill('{"task_block_ms": "soon"}')
        page.locator("[data-config-apply]").click()
        expect(page.locator("[data-config-problem]")).to_contain_text(
            "task_block_ms must be an integer from 10 to 5000"
        )
        page.locator("#config-patch").fill('{"task_retry_ms": 700}')
        page.locator("[data-config-apply]").click()
        expect(page.locator("[data-config-outcome]")).to_contain_text("Replica 0: applied.")
        expect(page.locator("[data-config]")).to_contain_text('"task_retry_ms": 700')
        screenshot(page, "agent-config-patched")
        page.locator("[data-config-rollback]").click()
        expect(page.locator("[data-config-outcome]")).to_contain_text("Rolled back")
        expect(page.locator("[data-config]")).not_to_contain_text("task_retry_ms")
    finally:
        cache.refresh_from_db()
        services.run_operation(
            str(services.request_action(cache, "stop", COMMAND, enqueue=False).pk)
        )
