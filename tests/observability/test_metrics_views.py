"""The Metrics page (one agent or the fleet, each time range, the agent context), the CPU
sparkline on agent cards, the dependency graph on the dashboard and agent pages, and the
dashboard focused on one agent.

Samples are MetricSample rows as ``metrics.scrape_all`` writes them (one per agent and scrape,
rates already computed); the browser test scrapes real agents.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta

import pytest
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from agents import errors
from agents.catalog import PLATFORM_AGENTS
from agents.models import Agent
from observability import alerts, figures, metrics, sparklines
from observability import context as agent_context
from observability.models import Alert, AlertRule, MetricSample
from portal.actors import Actor

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024
HTMX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def default_rules(db) -> None:
    """The alert rules every fleet starts with ("High error rate" above 5 %, ...)."""
    alerts.ensure_default_rules(Actor.command("test"))


def scrapes(agent, minutes: int = 60, every: int = 15, down_every: int = 0, **overrides):
    """What scraping ``agent`` every ``every`` seconds for the last ``minutes`` stored: rising
    CPU, steady memory against its limit, tasks with a few failures. Every ``down_every``-th
    scrape it did not answer (up 0, nothing else), as the scraper records a dead agent. Then
    the 5-minute averages, as beat makes them."""
    now = timezone.now().replace(microsecond=0)
    count = minutes * 60 // every
    rows = []
    for i in range(count):
        ts = now - timedelta(seconds=every * (count - i))
        if down_every and i % down_every == 0:
            rows.append(MetricSample(agent=agent, ts=ts, up=0.0))
            continue
        values = {
            "up": 1.0,
            "cpu_percent": 2.0 + 10.0 * i / count,
            "memory_bytes": 40.0 * MiB,
            "memory_limit_bytes": agent.memory_mb * MiB,
            "throughput": 4.0,
            "failures": 0.2,
            "error_rate": 100 * 0.2 / 4.2,
            "latency_p50_ms": 12.0,
            "latency_p95_ms": 30.0,
            "latency_p99_ms": 45.0,
            "queue_depth": 3.0,
            "dead_letters": 1.0,
            **overrides,
        }
        rows.append(MetricSample(agent=agent, ts=ts, **values))
    MetricSample.objects.bulk_create(rows)
    metrics.downsample()  # beat's 5-minute averages, which ranges beyond 48 h read
    return rows


def running(agent: Agent) -> Agent:
    """Mark an agent RUNNING without starting a process (the samples stand for its scrapes)."""
    Agent.objects.filter(pk=agent.pk).update(state="RUNNING", health="healthy")
    return Agent.objects.get(pk=agent.pk)


def chart(html: str, key: str) -> str:
    """The markup of one chart card on a page."""
    match = re.search(rf'data-chart="{key}">(.*?)</figure>', html, re.S)
    assert match, f"no {key} chart"
    return match.group(1)


def choose(user, slug: str | None) -> None:
    agent = Agent.objects.get(slug=slug) if slug else None
    agent_context.choose(Actor(kind="user", user=user), agent)


# --- the page, per role --------------------------------------------------------------------


@pytest.mark.parametrize("role_client", ["as_viewer", "as_operator", "as_admin"])
def test_every_role_sees_the_fleet_with_totals_charts_and_a_row_per_agent(
    request, role_client, seeded
) -> None:
    client = request.getfixturevalue(role_client)
    scrapes(running(seeded["wow-cache"]))
    scrapes(running(seeded["wow-event"]), cpu_percent=5.0)

    response = client.get("/metrics/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "Fleet uptime, 24 h" in html and "Fleet uptime, 7 d" in html
    for title in (
        "CPU, all agents together (% of one core)",
        "Memory, all agents together",
        "Throughput, all agents (tasks/s)",
        "Error rate, all agents (% of attempts)",
        "Task latency, average of agents (ms)",
        "Queue depth, all agents",
    ):
        assert title in html
    # Units on the value axes; the time axis in clock times.
    assert re.search(r'class="chart-ylabel"[^>]*>\d+(\.\d+)? %<', chart(html, "cpu"))
    assert re.search(r'class="chart-ylabel"[^>]*>\d+ MiB<', chart(html, "memory"))
    assert re.search(r'class="chart-ylabel"[^>]*>[\d.]+/s<', chart(html, "throughput"))
    assert re.search(r'class="chart-ylabel"[^>]*>[\d.]+ ms<', chart(html, "latency"))
    assert re.search(r'class="chart-ylabel"[^>]*>[\d.]+ tasks<', chart(html, "queue"))
    assert re.search(r'class="chart-xlabel[^"]*"[^>]*>\d\d:\d\d<', chart(html, "cpu"))
    # Two agents of 4/s each.
    assert 'class="chart-last">8/s<' in chart(html, "throughput")
    rows = re.findall(r'<tr data-agent="([a-z-]+)"', html)
    assert sorted(rows) == sorted(a.slug for a in PLATFORM_AGENTS)
    cache_row = html[html.index('<tr data-agent="wow-cache"') :].split("</tr>")[0]
    assert 'href="?agent=wow-cache&amp;range=1h"' in cache_row
    assert "100 %" in cache_row and "40 MiB" in cache_row and "4/s" in cache_row
    assert "sparkline-line" in cache_row
    draft_row = html[html.index('<tr data-agent="wow-search"') :].split("</tr>")[0]
    assert "No samples in the last 7 days" in draft_row  # never ran: no data, not zero
    assert "sparkline" not in draft_row


def test_metrics_need_a_role(seeded, client, as_outsider) -> None:
    assert as_outsider.get("/metrics/").status_code == 403
    assert as_outsider.get("/metrics/sparklines/?agents=wow-cache").status_code == 403
    response = client.get("/metrics/")
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_metrics_page_refuses_post(seeded, as_operator) -> None:
    assert as_operator.post("/metrics/").status_code == 405


def test_one_agent_has_every_chart_with_its_unit_thresholds_uptime_and_current_values(
    seeded, as_viewer
) -> None:
    cache = running(seeded["wow-cache"])  # 512 MiB limit
    scrapes(cache, down_every=4)  # a quarter of the scrapes unanswered

    html = as_viewer.get("/metrics/?agent=wow-cache").content.decode()

    assert [m for m in re.findall(r'data-chart="([a-z_]+)"', html)] == [
        "cpu", "memory", "throughput", "error_rate", "latency", "queue",
    ]  # fmt: skip
    assert "CPU (% of one core)" in html and "Throughput (tasks/s)" in html
    memory = chart(html, "memory")
    assert "limit 512 MiB" in memory  # the agent's memory limit as a line
    assert "alert &gt; 90 % of limit" in memory  # the "Memory near limit" rule
    assert 'data-value="536870912' in memory
    assert "alert &gt; 5 %" in chart(html, "error_rate")  # the "High error rate" rule
    latency = chart(html, "latency")
    for label in ("p50", "p95", "p99"):
        assert f'data-label="{label}"' in latency
    assert 'data-label="Dead letters"' in chart(html, "queue")
    assert re.search(r'data-uptime="24h">.*?75.00 %', html, re.S)
    # Seven days are read from the 5-minute averages: the bucket in progress is not in them.
    week = metrics.uptime(cache, timedelta(days=7))
    assert week == pytest.approx(75, abs=1.5)
    assert re.search(rf'data-uptime="7d">.*?{figures.uptime_text(week)}', html, re.S)
    now = html[html.index('class="now-tiles"') :].split("</dl>")[0]
    assert "40 MiB" in now and "7.81 % of 512 MiB" in now and "4/s" in now
    assert "4.76 %" in now and "30 ms" in now and "12.0 %" not in now


def test_a_stopped_agent_says_why_it_has_no_samples(seeded, as_viewer) -> None:
    html = as_viewer.get("/metrics/?agent=wow-search").content.decode()
    assert "No samples yet" in html and "(it is DRAFT)" in html
    assert html.count("No data in this period") == 6


@pytest.mark.parametrize(
    ("key", "label"), [("1h", "1 h"), ("6h", "6 h"), ("24h", "24 h"), ("7d", "7 d")]
)
def test_each_time_range_draws_that_period(seeded, as_viewer, key, label) -> None:
    scrapes(running(seeded["wow-cache"]), minutes=20, every=60)
    response = as_viewer.get(f"/metrics/?agent=wow-cache&range={key}")
    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-range="{key}"' in html
    assert re.search(rf'class="range-option active"[^>]*>{label}<', html)
    assert "sparkline" not in chart(html, "cpu")
    assert "chart-line" in chart(html, "cpu")  # twenty minutes of samples show in every range
    if key == "7d":
        assert re.search(r'class="chart-xlabel[^"]*"[^>]*>(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d+<', html)


def test_an_unknown_range_is_refused_with_the_choices(seeded, as_viewer) -> None:
    response = as_viewer.get("/metrics/?agent=all&range=2w")
    assert response.status_code == 400
    html = response.content.decode()
    assert "There is no time range “2w”. Choose one of 1 h, 6 h, 24 h, 7 d." in html
    assert 'href="?range=24h"' in html  # the choices still work
    assert "data-chart" not in html


# --- the agent context -------------------------------------------------------------------------


def test_the_remembered_agent_is_put_in_the_url_and_shown_on_a_chip(seeded, viewer, as_viewer):
    choose(viewer, "wow-cache")

    response = as_viewer.get("/metrics/?range=6h")
    assert response.status_code == 302
    assert response["Location"] == "/metrics/?agent=wow-cache&range=6h"

    html = as_viewer.get(response["Location"]).content.decode()
    assert "Showing: <strong>WowCache</strong>" in html
    assert 'href="?agent=all&amp;range=6h"' in html  # the ✕ goes back to all agents
    assert 'href="?agent=wow-cache&amp;range=24h"' in html  # ranges keep the agent

    as_viewer.get("/metrics/?agent=all")
    assert agent_context.stored(viewer) is None
    assert as_viewer.get("/metrics/").status_code == 200


def test_an_unknown_agent_says_so(seeded, as_viewer) -> None:
    html = as_viewer.get("/metrics/?agent=wow-nothing").content.decode()
    assert "There is no agent called “wow-nothing”" in html
    assert "Every agent" in html  # the fleet, as nothing was chosen before


def test_polls_refresh_the_live_part_without_changing_the_remembered_agent(
    seeded, viewer, as_viewer
) -> None:
    scrapes(running(seeded["wow-cache"]), minutes=5)
    html = as_viewer.get("/metrics/?agent=wow-cache").content.decode()
    assert 'hx-get="/metrics/?agent=wow-cache&amp;range=1h" hx-trigger="every 15s' in html
    choose(viewer, "wow-event")  # chosen meanwhile in another tab

    response = as_viewer.get("/metrics/?agent=wow-cache&range=1h", headers=HTMX)

    assert response.status_code == 200 and "HX-Request" in response["Vary"]
    fragment = response.content.decode()
    assert fragment.lstrip().startswith('<div id="metrics-live"')
    assert "<html" not in fragment and 'data-chart="cpu"' in fragment
    assert agent_context.stored(viewer).slug == "wow-event"


def test_the_page_costs_the_same_queries_with_more_agents_sampled(
    seeded, as_viewer, django_assert_num_queries
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    scrapes(running(seeded["wow-cache"]), minutes=10)
    as_viewer.get("/metrics/?agent=all")  # the first visit stores the context
    with CaptureQueriesContext(connection) as one:
        as_viewer.get("/metrics/?agent=all")
    for slug in ("wow-event", "wow-memory", "wow-security"):
        scrapes(running(seeded[slug]), minutes=10)
    with django_assert_num_queries(len(one.captured_queries)):
        as_viewer.get("/metrics/?agent=all")


# --- sparklines on agent cards ---------------------------------------------------------------


def test_cards_show_cpu_for_the_last_hour_with_the_current_value(seeded, as_viewer) -> None:
    scrapes(running(seeded["wow-cache"]), cpu_percent=7.5)
    for path in ("/", "/agents/"):
        html = as_viewer.get(path).content.decode()
        card = html[html.index('id="agent-wow-cache"') :].split("</article>")[0]
        assert 'id="agent-spark-wow-cache"' in card and "sparkline-line" in card
        assert 'class="sparkline-value" aria-hidden="true">7.5 %<' in card
        draft = html[html.index('id="agent-wow-search"') :].split("</article>")[0]
        assert "agent-spark" not in draft  # never ran: no empty chart on its card
        assert 'id="card-sparklines-poll"' in html


def test_all_cards_sparklines_cost_one_query(seeded, django_assert_num_queries) -> None:
    for slug in ("wow-cache", "wow-event", "wow-memory"):
        scrapes(running(seeded[slug]), minutes=30)
    agents = list(Agent.objects.all())
    with django_assert_num_queries(1):
        extras = sparklines.card_sparklines(agents)
    assert len(extras.cards) == 3 and "card-sparklines-poll" in extras.page


def test_card_pages_cost_no_more_queries_with_sparkline_data(
    seeded, as_operator, django_assert_num_queries
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for path in ("/", "/agents/"):
        with CaptureQueriesContext(connection) as without:
            as_operator.get(path)
        for slug in ("wow-cache", "wow-event", "wow-memory", "wow-search"):
            MetricSample.objects.filter(agent=seeded[slug]).delete()
            scrapes(running(seeded[slug]), minutes=10)
        with django_assert_num_queries(len(without.captured_queries)):
            as_operator.get(path)


def test_a_card_re_rendered_live_keeps_its_sparkline(seeded) -> None:
    from agents.live import _ACCESS_ACTORS
    from agents.views.shared import agents_with_relations as _agents_with_relations
    from agents.views.shared import card_context as _card_context

    scrapes(running(seeded["wow-cache"]), minutes=10, cpu_percent=3.0)
    agent = _agents_with_relations().get(slug="wow-cache")
    for actor in _ACCESS_ACTORS.values():
        card = render_to_string("agents/agent_list.html#card", _card_context(agent, actor))
        assert 'id="agent-spark-wow-cache"' in card and ">3 %<" in card


def test_the_sparkline_poll_swaps_every_shown_card_out_of_band(seeded, as_viewer) -> None:
    scrapes(running(seeded["wow-cache"]), minutes=10, cpu_percent=9.0)
    response = as_viewer.get("/metrics/sparklines/?agents=wow-cache,wow-event,nothing")
    html = response.content.decode()
    assert response.status_code == 200
    assert html.count('hx-swap-oob="true"') == 2
    assert 'id="agent-spark-wow-cache"' in html and ">9 %<" in html
    assert as_viewer.get("/metrics/sparklines/").status_code == 204


# --- the dependency graph ------------------------------------------------------------------------


def graph_in(html: str, panel_id: str) -> tuple[str, dict]:
    """The graph panel's markup and the data its figure holds (what graph.js draws)."""
    panel = html[html.index(f'id="{panel_id}"') :].split("</section>")[0]
    script = re.search(
        r'<script type="application/json" id="dependencies-data">(.*?)</script>', panel
    )
    assert script, panel[:500]
    return panel, json.loads(script.group(1))


def nodes_by_id(data: dict) -> dict[str, dict]:
    return {node["id"]: node for node in data["nodes"]}


def test_the_dashboard_graph_has_the_fourteen_agents_and_their_dependencies(
    seeded, as_viewer
) -> None:
    html = as_viewer.get("/").content.decode()

    panel, data = graph_in(html, "dependency-graph")
    assert '<figure class="graph" id="dependencies" data-graph' in panel
    assert "data-graph-focus" not in panel
    nodes = nodes_by_id(data)
    assert sorted(nodes) == sorted(a.slug for a in PLATFORM_AGENTS)
    edges = {(edge["source"], edge["target"]) for edge in data["edges"]}
    expected = {(a.slug, dep) for a in PLATFORM_AGENTS for dep in a.depends_on}
    assert edges == expected and len(data["edges"]) == 25
    assert data["direction"] == "RIGHT" and data["relation"] == "depends on"
    assert nodes["wow-cache"]["href"] == "/?agent=wow-cache"  # focuses the dashboard on it
    assert {node["status"] for node in data["nodes"]} == {"draft"}
    assert {node["kind"] for node in data["nodes"]} == {"agent"}
    assert nodes["wow-support"]["title"] == (
        "WowSupport (DRAFT). Depends on: WowCommunication, WowNotification, WowSearch."
    )
    assert nodes["wow-event"]["title"] == "WowEvent (DRAFT). Depends on: nothing."
    # Without JavaScript (and for screen readers): the agents and their dependencies in words.
    assert '<li data-id="wow-cache"><a href="/?agent=wow-cache">WowCache</a>: DRAFT</li>' in panel
    assert "WowSupport depends on WowSearch</li>" in panel


def test_the_graph_colours_nodes_by_state(seeded, as_viewer) -> None:
    running(seeded["wow-event"])
    Agent.objects.filter(slug="wow-cache").update(state="ERRORED", health="unhealthy")
    Agent.objects.filter(slug="wow-search").update(state="REVOKED")

    _, data = graph_in(as_viewer.get("/").content.decode(), "dependency-graph")
    nodes = nodes_by_id(data)
    assert nodes["wow-event"]["status"] == "running"
    assert nodes["wow-event"]["sublabel"].startswith("RUNNING")
    assert nodes["wow-cache"]["status"] == "errored"
    assert nodes["wow-cache"]["sublabel"] == "ERRORED · unhealthy"
    assert "wow-search" not in nodes and len(nodes) == 13  # revoked: gone, with its edges
    assert all("wow-search" not in (e["source"], e["target"]) for e in data["edges"])


def test_an_agent_page_highlights_it_its_dependencies_and_dependents(seeded, as_viewer) -> None:
    html = as_viewer.get("/agents/wow-memory/").content.decode()
    panel, data = graph_in(html, "agent-graph")
    assert "WowMemory, the 2 agents it depends on and the 4 that depend on it" in panel
    assert 'data-graph-focus="wow-memory"' in panel  # graph.js dims the rest
    assert len(data["nodes"]) == 14


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_state_change_pushes_the_graph_to_open_graphs(viewer, operator) -> None:
    from tests.portal.test_realtime import connect, next_html, provision_as, seed

    await seed()
    socket, connected, _ = await connect(viewer)
    assert connected
    await socket.send_json_to({"subscribe": ["graph"]})  # what a page showing the graph sends
    await asyncio.sleep(0.2)
    await provision_as(operator)
    html = await next_html(socket, 'id="dependencies-data"', '"status":"provisioned"')
    data = re.search(
        r'<script type="application/json" id="dependencies-data" hx-swap-oob="true">(.*?)</script>',
        html,
    )
    nodes = nodes_by_id(json.loads(data.group(1)))
    assert nodes["wow-cache"]["status"] == "provisioned"
    assert nodes["wow-cache"]["sublabel"] == "PROVISIONED"
    assert nodes["wow-cache"]["href"] == "/?agent=wow-cache"
    assert len(nodes) == 14
    # The list for screen readers follows.
    assert '<div class="graph-fallback" id="dependencies-list" hx-swap-oob="true">' in html
    assert '<a href="/?agent=wow-cache">WowCache</a>: PROVISIONED</li>' in html
    await socket.disconnect()


# --- the dashboard and the agent context ---------------------------------------------------


def test_the_fleet_dashboard_shows_the_graph_and_fleet_uptime(seeded, as_viewer) -> None:
    scrapes(running(seeded["wow-cache"]), down_every=2)
    html = as_viewer.get("/").content.decode()
    assert "Fleet uptime, 24 h" in html and "50.00 %" in html
    assert 'id="fleet-health"' in html and 'id="dependency-graph"' in html
    assert html.count('class="card agent-card') == 14

    poll = as_viewer.get("/", headers={**HTMX, "HX-Target": "fleet-health"}).content.decode()
    assert poll.lstrip().startswith('<section class="cards fleet-health" id="fleet-health"')


def test_a_chosen_agent_focuses_the_dashboard(seeded, viewer, as_viewer) -> None:
    cache = running(seeded["wow-cache"])
    scrapes(cache, minutes=30)
    with transaction.atomic():
        errors.record_error(
            cache, "action", "WowCache could not start: port 8080 is in use",
            {"reason": "port_in_use", "port": 8080},
        )  # fmt: skip
    rule = AlertRule.objects.get(name="High error rate")
    Alert.objects.create(rule=rule, agent=cache, severity=rule.severity, summary="High error rate")
    choose(viewer, "wow-cache")

    response = as_viewer.get("/")
    assert response.status_code == 302 and response["Location"] == "/?agent=wow-cache"
    html = as_viewer.get("/?agent=wow-cache").content.decode()

    assert "Showing: <strong>WowCache</strong>" in html
    assert html.count('class="card agent-card') == 1 and 'id="agent-wow-cache"' in html
    assert re.search(r'data-count="errors">1<', html) and re.search(r'data-count="alerts">1<', html)
    assert "port 8080 is in use" in html
    assert [m for m in re.findall(r'data-chart="([a-z_]+)"', html)] == [
        "cpu", "throughput", "error_rate",
    ]  # fmt: skip
    for path in ("/logs/", "/events/", "/alerts/", "/metrics/"):
        assert f'href="{path}?agent=wow-cache"' in html
    assert 'id="dependency-graph"' not in html

    poll = as_viewer.get("/?agent=wow-cache", headers=HTMX).content.decode()
    assert poll.lstrip().startswith('<div id="agent-focus"')

    html = as_viewer.get("/?agent=all").content.decode()
    assert html.count('class="card agent-card') == 14
