"""The dependency graph drawn by static/js/graph.js with ELK, in Chromium, on the real pages:
every agent and every dependency drawn, no boxes overlapping, no two edges running along one
another (the hand-written layout's long edges merged), a node leading where it should, a live
state change recolouring its node in place without a new layout, an agent revoked laying the
graph out again, a region polled again redrawn without moving, the agent page's focus, and no
console error on the way. Photographed at 1440 and 375 px, dark and light.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from agents import services
from agents.catalog import PLATFORM_AGENTS
from agents.models import Agent
from portal.actors import Actor

COMMAND = Actor.command("test")
WIDE = {"width": 1440, "height": 900}
NARROW = {"width": 375, "height": 812}
DEPENDENCIES = {(a.slug, dependency) for a in PLATFORM_AGENTS for dependency in a.depends_on}

# Every node's box and every edge's straight runs, in page pixels. An edge's runs come from its
# path: the start, each rounded corner's control point (the bend itself) and the end.
GEOMETRY = """(figure) => {
  const svg = figure.querySelector('svg.graph-svg');
  const ctm = svg.getScreenCTM();
  const at = (x, y) => { const p = new DOMPoint(x, y).matrixTransform(ctm); return [p.x, p.y]; };
  const nodes = {};
  figure.querySelectorAll('.graph-node').forEach(node => {
    const r = node.querySelector('.graph-node-box').getBoundingClientRect();
    nodes[node.dataset.id] = [r.left, r.top, r.right, r.bottom];
  });
  const edges = [...figure.querySelectorAll('.graph-edge')].map(edge => {
    const d = edge.querySelector('.graph-edge-line').getAttribute('d');
    const parts = [...d.matchAll(/([MLQ])([^MLQ]*)/g)].map(m => [m[1], m[2].trim().split(/\\s+/).map(Number)]);
    const points = [parts[0][1].slice(0, 2)];
    parts.forEach(([command, n]) => { if (command === 'Q') points.push(n.slice(0, 2)); });
    points.push(parts[parts.length - 1][1].slice(-2));
    const head = edge.querySelector('.graph-edge-head').getAttribute('d').match(/^M(\\S+) (\\S+)/);
    return {source: edge.dataset.source, target: edge.dataset.target,
            points: points.map(([x, y]) => at(x, y)), tip: at(Number(head[1]), Number(head[2]))};
  });
  return {nodes, edges};
}"""


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
    return problems


def _act(slug: str, action: str) -> None:
    agent = Agent.objects.get(slug=slug)
    operation = services.request_action(agent, action, COMMAND, enqueue=False)
    assert services.run_operation(str(operation.pk)).status == "succeeded"


def _drawn(page, selector: str = "#dependencies"):
    figure = page.locator(selector)
    expect(figure).to_have_attribute("data-graph-state", "drawn")
    return figure


def _check_geometry(geometry: dict) -> None:
    nodes, edges = geometry["nodes"], geometry["edges"]
    boxes = list(nodes.items())
    for i, (a, (ax1, ay1, ax2, ay2)) in enumerate(boxes):
        for b, (bx1, by1, bx2, by2) in boxes[i + 1 :]:
            apart = ax2 <= bx1 or bx2 <= ax1 or ay2 <= by1 or by2 <= ay1
            assert apart, f"the boxes of {a} and {b} overlap"
    for edge in edges:
        # The arrow ends on the edge of the dependency's box, not inside it or short of it.
        x1, y1, x2, y2 = nodes[edge["target"]]
        x, y = edge["tip"]
        assert x1 - 1.5 <= x <= x2 + 1.5 and y1 - 1.5 <= y <= y2 + 1.5, edge
        assert min(abs(x - x1), abs(x - x2), abs(y - y1), abs(y - y2)) <= 1.5, edge
        sx1, sy1, sx2, sy2 = nodes[edge["source"]]
        start_x, start_y = edge["points"][0]
        assert sx1 - 1.5 <= start_x <= sx2 + 1.5 and sy1 - 1.5 <= start_y <= sy2 + 1.5, edge
    # No two edges share a stretch of line: each keeps a track of its own.
    runs = []
    for number, edge in enumerate(edges):
        points = edge["points"]
        for (ax, ay), (bx, by) in zip(points, points[1:], strict=False):
            runs.append((number, ax, ay, bx, by))
    for i, (e1, ax, ay, bx, by) in enumerate(runs):
        for e2, cx, cy, dx, dy in runs[i + 1 :]:
            if e1 == e2:
                continue
            if abs(ay - by) < 0.5 and abs(cy - dy) < 0.5 and abs(ay - cy) < 2:
                shared = min(max(ax, bx), max(cx, dx)) - max(min(ax, bx), min(cx, dx))
            elif abs(ax - bx) < 0.5 and abs(cx - dx) < 0.5 and abs(ax - cx) < 2:
                shared = min(max(ay, by), max(cy, dy)) - max(min(ay, by), min(cy, dy))
            else:
                continue
            assert shared <= 2, (
                f"{edges[e1]['source']}->{edges[e1]['target']} and "
                f"{edges[e2]['source']}->{edges[e2]['target']} run along one another"
            )


@pytest.fixture
def fleet(transactional_db, settings, tmp_path):
    settings.AGENT_ROOT = tmp_path
    services.seed_platform_agents(COMMAND)


def test_the_dashboard_graph_is_drawn_and_follows_the_fleet_live(
    page, sign_in_as, viewer, fleet, screenshot
) -> None:
    problems = _listen(page)
    page.emulate_media(reduced_motion="reduce")
    page.set_viewport_size(WIDE)
    sign_in_as(viewer)
    page.goto("/?agent=all")
    expect(page.locator("#live-indicator")).to_have_attribute("data-state", "live")
    figure = _drawn(page)

    # The fourteen agents and every dependency, each an arrow from the agent to what it needs.
    expect(figure.locator("svg .graph-node")).to_have_count(14)
    expect(figure.locator("svg .graph-edge")).to_have_count(len(DEPENDENCIES))
    drawn = {
        (edge.get_attribute("data-source"), edge.get_attribute("data-target"))
        for edge in figure.locator("svg .graph-edge").all()
    }
    assert drawn == DEPENDENCIES
    cache = figure.locator("#dependencies-node-wow-cache")
    expect(cache).to_have_class("graph-node graph-node--agent is-draft")
    expect(cache.locator(".graph-node-label")).to_have_text("WowCache")
    expect(cache.locator(".graph-node-sublabel")).to_have_text("DRAFT")
    _check_geometry(figure.evaluate(GEOMETRY))
    # The list stays for screen readers, out of sight and out of the tab order.
    fallback = figure.locator("#dependencies-list")
    assert fallback.bounding_box()["width"] <= 1
    expect(fallback.locator("a").first).to_have_attribute("tabindex", "-1")
    expect(figure).to_have_attribute("data-graph-layouts", "1")
    figure.scroll_into_view_if_needed()
    screenshot(page, "graph-dashboard-1440")

    # A live state change: the node takes its new state where it is; nothing is laid out again.
    box = cache.bounding_box()
    cache.evaluate("node => { node.dataset.before = 'yes'; }")
    _act("wow-cache", "provision")
    expect(cache).to_have_class("graph-node graph-node--agent is-provisioned", timeout=5000)
    expect(cache.locator(".graph-node-sublabel")).to_have_text("PROVISIONED")
    expect(cache).to_have_attribute("data-before", "yes")  # the same element
    assert cache.bounding_box() == box
    expect(figure).to_have_attribute("data-graph-layouts", "1")
    expect(fallback.locator('li[data-id="wow-cache"]')).to_have_text("WowCache: PROVISIONED")
    assert figure.locator(".graph-node.is-provisioned").count() == 1

    # The dashboard's region fetched again (as after a reconnect): drawn at once, in place.
    page.evaluate("htmx.trigger(document.body, 'live:resync')")
    expect(page.locator("#dependencies-node-wow-cache")).not_to_have_attribute("data-before", "yes")
    figure = _drawn(page)
    cache = figure.locator("#dependencies-node-wow-cache")
    expect(cache).to_have_class("graph-node graph-node--agent is-provisioned")
    assert cache.bounding_box() == box
    expect(figure).to_have_attribute("data-graph-layouts", "1")

    # Hovering a node picks out its edges.
    figure.locator("#dependencies-node-wow-memory").hover()
    expect(figure).to_have_attribute("data-graph-tracing", "wow-memory")
    expect(figure.locator(".graph-edge.is-traced")).to_have_count(6)
    page.mouse.move(0, 0)

    page.evaluate("document.documentElement.dataset.theme = 'light'")
    figure.scroll_into_view_if_needed()
    screenshot(page, "graph-dashboard-1440-light")
    page.evaluate("document.documentElement.dataset.theme = 'dark'")

    # Narrow: the drawing shrinks to a legible size, then scrolls sideways inside its panel.
    page.set_viewport_size(NARROW)
    wider = page.evaluate(
        "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth) - innerWidth"
    )
    assert wider <= 0, f"the page is {wider} px wider than the screen"
    canvas = figure.locator(".graph-canvas")
    assert canvas.evaluate("c => c.scrollWidth > c.clientWidth")
    label = figure.locator("#dependencies-node-wow-cache .graph-node-label")
    assert label.bounding_box()["height"] >= 0.7 * 13
    figure.scroll_into_view_if_needed()
    screenshot(page, "graph-dashboard-375")
    page.set_viewport_size(WIDE)

    # An agent gone: the graph is laid out again without it.
    _act("wow-scaling", "revoke")
    expect(figure.locator("svg .graph-node")).to_have_count(13, timeout=5000)
    expect(figure).to_have_attribute("data-graph-layouts", "2")
    expect(figure.locator("svg .graph-edge")).to_have_count(len(DEPENDENCIES) - 2)
    _check_geometry(figure.evaluate(GEOMETRY))

    # A node leads to the dashboard focused on its agent.
    node_link = figure.locator("#dependencies-node-wow-event a")
    expect(node_link).to_have_attribute("href", "/?agent=wow-event")
    node_link.click()
    expect(page).to_have_url(re.compile(r"/\?agent=wow-event$"))
    expect(page.locator(".agent-card")).to_have_count(1)
    assert not problems, problems


def test_an_agent_page_graph_picks_out_the_agent_and_its_neighbours(
    page, sign_in_as, viewer, fleet, screenshot
) -> None:
    problems = _listen(page)
    page.emulate_media(reduced_motion="reduce")
    page.set_viewport_size(WIDE)
    sign_in_as(viewer)
    page.goto("/agents/wow-memory/")
    figure = _drawn(page)
    expect(figure).to_have_attribute("data-graph-focus", "wow-memory")
    expect(figure.locator("#dependencies-node-wow-memory")).to_have_class(re.compile(r"is-focus"))
    near = {node.get_attribute("data-id") for node in figure.locator(".graph-node.is-near").all()}
    assert near == {"wow-cache", "wow-event", "wow-domain", "wow-search", "wow-analytics",
                    "wow-vision"}  # fmt: skip
    expect(figure.locator(".graph-edge.is-near")).to_have_count(6)
    _check_geometry(figure.evaluate(GEOMETRY))
    # Keyboard: a node is a link to tab to.
    figure.locator("#dependencies-node-wow-cache a").focus()
    expect(figure.locator("#dependencies-node-wow-cache a")).to_be_focused()
    page.locator("#agent-graph").scroll_into_view_if_needed()
    screenshot(page, "graph-agent-page-1440")
    page.set_viewport_size(NARROW)
    page.locator("#agent-graph").scroll_into_view_if_needed()
    screenshot(page, "graph-agent-page-375")
    assert not problems, problems
