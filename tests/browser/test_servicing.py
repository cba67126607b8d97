"""Servicing in a real browser, the issue's story: an Operator upgrades WowCache by canary to
1.1.0 and watches the traffic move 10 %, 50 %, 100 % with the A/B table filling in; a faulty
1.2.0 trips the error-rate gate at 10 %, rolls back by itself and is pinned; WowMemory goes to
1.1.0 blue-green; an upgrade outside WowCache's maintenance window waits for it and is aborted
from the page. A load of tasks runs against the agent through each upgrade and every task is
answered exactly once. Every page fits 375 px, and the console stays clean throughout.

A real Celery worker runs the upgrade workflows; the agents are real agentd processes, brought
up in the worker's agent root so that the worker finds and replaces them.
"""

from __future__ import annotations

import contextlib
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from playwright.sync_api import expect

from agents import services as agent_services
from agents.models import Agent, Operation
from portal.actors import Actor
from servicing import services, windows
from servicing.models import Upgrade, UpgradeStatus
from tests.servicing.upgrade_kit import Load, versions_running

COMMAND = Actor.command("test")
UPGRADE_TIMEOUT_MS = 60_000
MOBILE = {"width": 375, "height": 812}


@pytest.fixture
def platform(settings, transactional_db, agent_worker):
    """The 14 agents, releases 1.0.0, 1.1.0 and a faulty 1.2.0; WowCache, WowEvent and
    WowMemory running in the worker's agent root, their queues empty."""
    settings.AGENT_ROOT = agent_worker
    settings.AGENT_READY_TIMEOUT_SECONDS = 15
    settings.AGENT_STOP_GRACE_SECONDS = 5
    agent_services.seed_platform_agents(COMMAND)
    services.register_first_release(COMMAND)
    services.publish(COMMAND, "1.1.0", "local", "Release 1.1.0.")
    services.publish(
        COMMAND, "1.2.0", "local", "Release 1.2.0.",
        {"faults": {"fail_rate": 0.2}, "task_max_failures": 5},
    )  # fmt: skip
    client = redis.Redis.from_url(django_settings.AGENT_REDIS_URL)
    for pattern in ("agents:wow-cache:*", "agents:wow-event:*", "agents:wow-memory:*"):
        for key in client.scan_iter(pattern):
            client.delete(key)
    client.close()
    for slug in ("wow-cache", "wow-event", "wow-memory"):  # WowMemory needs the other two
        agent = Agent.objects.get(slug=slug)
        for action in ("provision", "deploy", "start"):
            operation = agent_services.request_action(agent, action, COMMAND, enqueue=False)
            operation = agent_services.run_operation(str(operation.pk))
            assert operation.status == Operation.Status.SUCCEEDED, operation.error
    yield {agent.slug: agent for agent in Agent.objects.all()}
    # The worker keeps its snapshots in its own SERVICING_BACKUP_ROOT (a temporary folder the
    # browser conftest gives it): take away the ones these upgrades made all the same.
    for upgrade in Upgrade.objects.all():
        snapshot = ((upgrade.backup or {}).get("data") or {}).get("path")
        if snapshot:
            with contextlib.suppress(OSError):
                Path(snapshot).unlink(missing_ok=True)
                Path(snapshot).parent.rmdir()  # only when it is empty


def _load(agent: Agent, name: str) -> Load:
    return Load(agent.slug, f"{name}-{time.time_ns()}", rate=150.0).start()


def _upgrade_from_the_page(
    page, slug: str, version: str, strategy: str, *, min_tasks: int | None = None
) -> int:
    """Tick the agent on /servicing/, choose the version and strategy (and the gates), submit;
    answers the upgrade's id from the page it lands on."""
    page.goto("/servicing/")
    page.locator(f"#sv-pick-{slug}").check()
    page.locator("select[name=target_version]").select_option(version)
    page.locator("select[name=strategy]").select_option(strategy)
    if min_tasks is not None:
        page.locator("details.sv-gates summary").click()
        page.locator("input[name=gate_min_tasks]").fill(str(min_tasks))
        page.locator("input[name=gate_verify_seconds]").fill("3")
    page.locator("[data-upgrade-selected]").click()
    page.wait_for_url(re.compile(r"/servicing/upgrades/\d+/$"))
    return int(re.search(r"/upgrades/(\d+)/$", page.url).group(1))


def _wait_for_status(page, status: str, upgrade_id: int) -> None:
    try:
        expect(page.locator("#sv-upgrade")).to_have_attribute(
            "data-status", status, timeout=UPGRADE_TIMEOUT_MS
        )
    except AssertionError as failure:
        upgrade = Upgrade.objects.get(pk=upgrade_id)
        raise AssertionError(
            f"{failure}\nthe database says: {upgrade.status}, {upgrade.phase}, {upgrade.outcome}"
        ) from None


def _share(page, step: str) -> float:
    cell = page.locator(f'[data-ab-table] tr[data-ab-step="{step}"] td').first.inner_text()
    return float(re.match(r"\s*([\d.]+) %", cell).group(1))


def test_upgrades_are_watched_live_gated_rolled_back_and_scheduled(
    page, sign_in_as, operator, admin, platform, screenshot
) -> None:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    cache, memory = platform["wow-cache"], platform["wow-memory"]
    sign_in_as(operator)
    started = time.monotonic()
    upgrades: list[int] = []

    # 1. Canary to 1.1.0: the traffic moves 10 %, 50 %, 100 %, measured on both versions.
    tasks = _load(cache, "canary")
    page.goto("/servicing/")
    expect(page.locator("tr[data-agent=wow-cache] .sv-available")).to_have_text(["1.2.0", "1.1.0"])
    screenshot(page, "servicing-index")
    upgrade_id = _upgrade_from_the_page(page, "wow-cache", "1.1.0", "canary", min_tasks=100)
    upgrades.append(upgrade_id)
    weight = page.locator("[data-weight]")
    for share in (10, 50, 100):
        expect(weight).to_have_text(f"{share} %", timeout=UPGRADE_TIMEOUT_MS)
        screenshot(page, f"servicing-canary-{share}")
    _wait_for_status(page, "succeeded", upgrade_id)
    for step in ("plan", "backup", "deploy", "test", "cutover", "verify"):
        expect(page.locator(f"[data-step={step}]")).to_have_attribute(
            "data-step-status", "succeeded"
        )
    for step, target in (("10 %", 10), ("50 %", 50)):
        expect(page.locator(f'[data-ab-step="{step}"]')).to_be_visible()
        assert abs(_share(page, step) - target) <= 5, (step, _share(page, step))
    screenshot(page, "servicing-canary-succeeded")
    page.locator("[data-ab-table]").scroll_into_view_if_needed()
    screenshot(page, "servicing-canary-ab-table")
    by_version = tasks.check_exactly_once(tasks.settle())
    assert by_version["1.0.0"] > 0 and by_version["1.1.0"] > 0
    cache.refresh_from_db()
    assert cache.version == "1.1.0"
    assert versions_running(cache) == {0: "1.1.0"}

    # 2. Canary to the faulty 1.2.0: the error-rate gate trips at 10 % and it rolls back.
    tasks = _load(cache, "faulty")
    upgrade_id = _upgrade_from_the_page(page, "wow-cache", "1.2.0", "canary", min_tasks=100)
    upgrades.append(upgrade_id)
    _wait_for_status(page, "rolled_back", upgrade_id)
    expect(page.locator("[data-step=cutover]")).to_have_attribute("data-step-status", "failed")
    outcome = page.locator("[data-outcome]")
    expect(outcome).to_contain_text("error_rate")
    expect(outcome).to_contain_text("10 %")
    expect(page.locator("[data-rollback-note]")).to_be_visible()
    screenshot(page, "servicing-canary-rolled-back")
    tasks.check_exactly_once(tasks.settle())
    assert versions_running(cache) == {0: "1.1.0"}
    page.goto("/servicing/")
    expect(page.locator("tr[data-agent=wow-cache]")).to_contain_text("pinned 1.2.0")
    screenshot(page, "servicing-index-pinned")

    # 3. Blue-green of WowMemory to 1.1.0 under load: nothing lost.
    tasks = _load(memory, "blue-green")
    upgrade_id = _upgrade_from_the_page(page, "wow-memory", "1.1.0", "blue-green", min_tasks=100)
    upgrades.append(upgrade_id)
    _wait_for_status(page, "succeeded", upgrade_id)
    expect(page.locator("[data-weight]")).to_have_text("100 %")
    screenshot(page, "servicing-blue-green-succeeded")
    by_version = tasks.check_exactly_once(tasks.settle())
    assert by_version["1.0.0"] > 0 and by_version["1.1.0"] > 0
    assert versions_running(memory) == {0: "1.1.0"}

    # 4. Outside WowCache's maintenance window the upgrade waits for it; aborted from the page.
    now = datetime.now(UTC)
    hour = (now.hour + 3) % 24
    windows.create_window(
        Actor(kind="user", user=admin), name="Cache nights", cron=f"0 {hour} * * *",
        duration_minutes=60, agent="wow-cache",
    )  # fmt: skip
    services.publish(COMMAND, "1.1.1", "local", "Release 1.1.1.")
    opens = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if opens <= now:
        opens += timedelta(days=1)
    upgrade_id = _upgrade_from_the_page(page, "wow-cache", "1.1.1", "rolling")
    upgrades.append(upgrade_id)
    expect(page.locator("#sv-upgrade")).to_have_attribute("data-status", "scheduled")
    expect(page.locator("[data-window]")).to_contain_text(f"Starts {opens:%Y-%m-%d %H:%M}")
    expect(page.locator("[data-command=promote]")).to_have_count(0)
    screenshot(page, "servicing-scheduled")
    page.locator("[data-command=abort]").click()
    _wait_for_status(page, "aborted", upgrade_id)
    expect(page.locator("[data-outcome]")).to_contain_text("abort")
    expect(page.locator("[data-command]")).to_have_count(0)
    screenshot(page, "servicing-aborted")
    cache.refresh_from_db()
    assert cache.version == "1.1.0" and not cache.pending_action
    assert Upgrade.objects.get(pk=upgrade_id).status == UpgradeStatus.ABORTED

    # 5. Every page at 375 px: no sideways scroll.
    page.set_viewport_size(MOBILE)
    for path in ["/servicing/", *(f"/servicing/upgrades/{pk}/" for pk in upgrades)]:
        page.goto(path)
        expect(page.locator("main")).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= MOBILE["width"] + 1, f"{path} is {width} px wide at 375 px"
    page.goto("/servicing/")
    screenshot(page, "servicing-index-375")
    page.goto(f"/servicing/upgrades/{upgrades[1]}/")
    screenshot(page, "servicing-rolled-back-375")
    assert not problems, problems
    assert time.monotonic() - started < 170
