"""Metrics in a real browser, from real agents: WowEvent and WowCache run as processes, get
tasks (WowCache fails a share of them and takes 20 ms each), and are scraped by
``metrics.scrape_all`` a second apart. The Metrics page for WowCache and for the fleet, the
dashboard's dependency graph and the card sparklines are checked and photographed at 1280 and
375 px; a state change recolours the agent's node in the open graph without a reload.

The scrapes are real; only their time stamps are spread 30 s apart (two per chart bucket at
1 h) so that a couple of minutes of data draw lines rather than a dot in the last bucket.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import expect

from agents import services
from agents.models import Agent
from observability import alerts, metrics
from observability.models import MetricSample
from portal.actors import Actor
from tests.browser.conftest import _kill_processes_under

COMMAND = Actor.command("test")
DESKTOP = {"width": 1280, "height": 900}
MOBILE = {"width": 375, "height": 812}
SCRAPES = 16
SPREAD = timedelta(seconds=30)


@pytest.fixture
def agents_root(settings, tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics-agents")
    settings.AGENT_ROOT = root
    settings.AGENT_READY_TIMEOUT_SECONDS = 20
    yield root
    _kill_processes_under(root)


def _act(agent: Agent, action: str) -> None:
    operation = services.request_action(agent, action, COMMAND, enqueue=False)
    assert services.run_operation(str(operation.pk)).status == "succeeded"


def _bring_up(slug: str) -> Agent:
    agent = Agent.objects.get(slug=slug)
    for action in ("provision", "deploy", "start"):
        _act(agent, action)
        agent.refresh_from_db()
    return agent


@pytest.fixture
def scraped_fleet(transactional_db, agents_root, redis_url):
    """Two real agents with real work, scraped SCRAPES times a second apart."""
    services.seed_platform_agents(COMMAND)
    alerts.ensure_default_rules(COMMAND)
    Agent.objects.filter(slug="wow-cache").update(
        config={"faults": {"fail_rate": 0.15, "latency_ms": 20}, "task_max_failures": 50}
    )
    _bring_up("wow-event")
    _bring_up("wow-cache")
    queue = redis.Redis.from_url(settings.AGENT_REDIS_URL)
    start = timezone.now() - SPREAD * SCRAPES
    for number in range(SCRAPES):
        for slug in ("wow-event", "wow-cache"):
            for task in range(6 + number % 5):
                queue.xadd(f"agents:{slug}:tasks", {"job": f"job-{number}-{task}"})
        assert metrics.scrape_all(now=start + SPREAD * (number + 1)) == 2
        time.sleep(1.0)
    metrics.downsample()  # the 5-minute averages beat makes, which 7-day figures read
    cache = Agent.objects.get(slug="wow-cache")
    newest = MetricSample.objects.filter(agent=cache).order_by("-ts").first()
    assert newest.up == 1.0 and newest.throughput and newest.throughput > 0
    assert newest.memory_bytes > 5 * 1024 * 1024
    return cache


def _no_horizontal_overflow(page) -> None:
    wide = page.evaluate(
        "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        " - window.innerWidth"
    )
    assert wide <= 0, f"the page is {wide} px wider than the screen"


def test_metrics_page_dashboard_graph_and_sparklines_from_real_scrapes(
    page, sign_in_as, viewer, scraped_fleet, screenshot
) -> None:
    page.emulate_media(reduced_motion="reduce")  # no sidebar slide caught mid-way in a shot
    page.set_viewport_size(DESKTOP)
    sign_in_as(viewer)

    # One agent: six charts with units, uptime, values now.
    page.goto("/metrics/?agent=wow-cache")
    expect(page.locator(".ctx-chip")).to_contain_text("WowCache")
    charts = page.locator("[data-chart]")
    expect(charts).to_have_count(6)
    cpu = page.locator('[data-chart="cpu"]')
    expect(cpu.locator(".chart-title")).to_have_text("CPU (% of one core)")
    expect(cpu.locator(".chart-ylabel").first).to_have_text(ends_with(" %"))
    expect(cpu.locator(".chart-line").first).to_be_visible()
    memory = page.locator('[data-chart="memory"]')
    expect(memory.locator(".chart-threshold-label").first).to_have_text("limit 512 MiB")
    expect(page.locator('[data-chart="error_rate"] .chart-threshold-label')).to_have_text(
        "alert > 5 %"
    )
    expect(page.locator('[data-chart="latency"] .chart-legend li')).to_have_count(3)
    expect(page.locator('[data-uptime="24h"] .metric-value')).to_have_text("100 %")
    expect(page.locator('[data-now="throughput"] .now-value')).to_have_text(ends_with("/s"))
    screenshot(page, "metrics-agent-1280")
    page.locator('[data-chart="latency"]').scroll_into_view_if_needed()
    screenshot(page, "metrics-agent-1280-latency")
    page.evaluate("document.documentElement.dataset.theme = 'light'")
    screenshot(page, "metrics-agent-1280-light")
    page.evaluate("document.documentElement.dataset.theme = 'dark'")
    page.set_viewport_size(MOBILE)
    _no_horizontal_overflow(page)
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "metrics-agent-375")
    page.locator('[data-chart="memory"]').scroll_into_view_if_needed()
    screenshot(page, "metrics-agent-375-charts")

    # The fleet: totals and a row per agent, each leading to that agent.
    page.set_viewport_size(DESKTOP)
    page.goto("/metrics/?agent=all&range=6h")
    expect(page.locator(".range-option.active")).to_have_text("6 h")
    expect(page.locator(".metrics-table tbody tr")).to_have_count(14)
    row = page.locator('tr[data-agent="wow-cache"]')
    expect(row.locator('[data-label="Uptime 24 h"]')).to_have_text("100 %")
    expect(row.locator(".sparkline-line")).to_have_count(1)
    page.locator(".metrics-agents").scroll_into_view_if_needed()
    screenshot(page, "metrics-fleet-1280-table")
    page.goto("/metrics/?agent=all")
    screenshot(page, "metrics-fleet-1280")
    page.set_viewport_size(MOBILE)
    _no_horizontal_overflow(page)
    page.locator(".metrics-agents").scroll_into_view_if_needed()
    screenshot(page, "metrics-fleet-375-table")
    page.set_viewport_size(DESKTOP)
    row.locator("a.agent-link").click()
    expect(page).to_have_url(ends_with("/metrics/?agent=wow-cache&range=1h"))

    # The dashboard (all agents): the graph of the fourteen, coloured by state, and sparklines.
    page.goto("/?agent=all")
    graph = page.locator("#dependency-graph")
    expect(graph.locator("svg .graph-node")).to_have_count(14)
    expect(graph.locator("svg .graph-edge")).to_have_count(25)
    node = graph.locator("#dependencies-node-wow-cache")
    expect(node).to_have_class(has_class("is-running"))
    expect(page.locator("#agent-spark-wow-cache .sparkline-line")).to_have_count(1)
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    graph.scroll_into_view_if_needed()
    screenshot(page, "dashboard-graph-1280")
    page.locator("#agent-wow-cache").scroll_into_view_if_needed()
    screenshot(page, "dashboard-cards-sparkline-1280")

    # A state change recolours the node in the open graph (pushed over the socket).
    _act(Agent.objects.get(slug="wow-cache"), "stop")
    expect(node).to_have_class(has_class("is-stopped"), timeout=5000)
    expect(node.locator(".graph-node-sublabel")).to_have_text("STOPPED")
    expect(page.locator("#agent-spark-wow-cache .sparkline-line")).to_have_count(1)

    page.set_viewport_size(MOBILE)
    _no_horizontal_overflow(page)
    graph.scroll_into_view_if_needed()
    screenshot(page, "dashboard-graph-375")

    # A node focuses the dashboard on its agent: its card, counts, charts and links.
    page.set_viewport_size(DESKTOP)
    page.goto("/?agent=all")
    page.locator("#dependencies-node-wow-event a").click()
    expect(page).to_have_url(ends_with("/?agent=wow-event"))
    expect(page.locator(".agent-card")).to_have_count(1)
    expect(page.locator("#agent-focus [data-chart]")).to_have_count(3)
    screenshot(page, "dashboard-focus-1280")
    page.set_viewport_size(MOBILE)
    _no_horizontal_overflow(page)
    screenshot(page, "dashboard-focus-375")

    # The agents page: each running card's CPU, kept current by one poll for all cards.
    page.goto("/agents/")
    spark = page.locator("#agent-spark-wow-event")
    expect(spark.locator(".sparkline-line")).to_have_count(1)
    expect(spark.locator(".sparkline-value")).to_have_text(ends_with(" %"))
    expect(page.locator("#agent-spark-wow-search")).to_have_count(0)  # never ran
    page.locator("#agent-wow-event").scroll_into_view_if_needed()
    screenshot(page, "agents-cards-sparkline-375")
    metrics.scrape_all()
    with page.expect_response(lambda r: "/metrics/sparklines/" in r.url, timeout=20_000) as poll:
        pass
    assert "wow-event" in poll.value.url and poll.value.status == 200
    expect(spark.locator(".sparkline-line")).to_have_count(1)

    # The agent's own page: the graph with it, its dependencies and dependents standing out.
    page.set_viewport_size(DESKTOP)
    page.goto("/agents/wow-memory/")
    panel = page.locator("#agent-graph")
    expect(panel.locator("svg .graph-node")).to_have_count(14)
    panel.scroll_into_view_if_needed()
    screenshot(page, "agent-detail-graph-1280")


def ends_with(suffix: str) -> re.Pattern:
    return re.compile(rf".*{re.escape(suffix)}$")


def has_class(name: str) -> re.Pattern:
    return re.compile(rf"(^|\s){re.escape(name)}(\s|$)")
