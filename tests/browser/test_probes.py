"""The Probes panel in a real browser: an operator turns WowCache's liveness probe into a TCP
probe of a port nobody listens on; the monitor finds it failing and the page shows the agent
unhealthy, live. Screenshots of the panel at 1440 and 375 pixels wide."""

from __future__ import annotations

import socket

from playwright.sync_api import expect

from agents import services
from agents.models import Agent
from agents.monitor import Monitor
from portal.actors import Actor
from tests.browser.conftest import SCREENSHOTS

HIDE_TOP_BAR = ".topbar { visibility: hidden; }"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_operator_sets_a_tcp_probe_on_a_closed_port_and_sees_the_agent_turn_unhealthy(
    page, sign_in_as, operator, agents_root, screenshot
) -> None:
    services.seed_platform_agents(Actor.command("test"))
    cache = Agent.objects.get(slug="wow-cache")
    for action in ("provision", "deploy", "start"):
        operation = services.request_action(cache, action, Actor.command("test"), enqueue=False)
        assert services.run_operation(str(operation.pk)).status == "succeeded"
    monitor = Monitor(probe_interval=1)
    monitor.probe_all()

    sign_in_as(operator)
    page.set_viewport_size({"width": 1440, "height": 1000})
    page.goto("/agents/wow-cache/")
    panel = page.locator("#agent-probes")
    expect(panel.locator("[data-probes-kind]")).to_have_text("defaults")
    expect(page.locator("#agent-status .health")).to_have_text("Healthy")

    port = closed_port()
    panel.get_by_text("Change the probes").click()
    liveness = panel.locator('[data-probe-form="liveness"]')
    liveness.get_by_label("Kind").select_option("tcp")
    expect(liveness.get_by_label("Path")).to_be_hidden()  # only a TCP probe's fields
    liveness.get_by_label("Port").fill(str(port))
    liveness.get_by_label("Timeout (s)").fill("1")
    liveness.get_by_label("Fails after").fill("2")
    panel.locator("[data-probes-save]").click()
    expect(panel.locator("[data-probes-saved]")).to_contain_text("Probes saved")
    expect(panel.locator('tr[data-probe="liveness"]')).to_contain_text(f"TCP port {port}")

    # A bad value is refused in place, naming the field; nothing is saved.
    panel.get_by_text("Change the probes").click()
    panel.locator('[data-probe-form="readiness"]').get_by_label("Timeout (s)").fill("99")
    panel.locator("[data-probes-save]").click()
    expect(panel.locator("[data-probes-problem]")).to_contain_text(
        "readiness.timeout_seconds must be a number of seconds from 1 to 60"
    )
    assert Agent.objects.get(slug="wow-cache").probes["readiness"]["timeout_seconds"] == 1.5

    monitor.probe_all()
    expect(page.locator("#agent-status .health")).to_have_text("Healthy")  # one failure of two
    monitor.probe_all()
    expect(page.locator("#agent-status .health")).to_have_text("Unhealthy", timeout=5000)
    expect(page.locator("#agent-status")).to_contain_text(
        f"failing its liveness probe (TCP port {port}): port {port} refused the connection"
    )

    # The panel alone, at each width, as the page loads there (the sticky top bar hidden so
    # that it covers none of it).
    for width in (1440, 375):
        page.set_viewport_size({"width": width, "height": 900})
        page.reload()
        panel = page.locator("#agent-probes")
        result = panel.locator('[data-replica="0"] [data-result="liveness"]')
        expect(result).to_have_attribute("data-ok", "false")
        panel.get_by_text("Change the probes").click()
        screenshot(page, f"probes-page-{width}")
        panel.screenshot(path=str(SCREENSHOTS / f"probes-panel-{width}.png"), style=HIDE_TOP_BAR)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than a {width} px screen"
