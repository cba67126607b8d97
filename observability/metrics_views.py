"""Metrics in the browser: the Metrics page (one agent or the fleet, over a chosen time range),
the dashboard's metrics and dependency graph, the graph on an agent's page, and the CPU
sparkline on every agent card.

Numbers come from ``observability.metrics`` and are drawn by ``observability.charts``; nothing
here computes a metric. The agents app must not import observability, so the card sparkline,
the detail page's graph panel and the graph's live updates are registered into agents' hooks by
``register_agent_hooks`` (called from ``ObservabilityConfig.ready``).

Charts refresh by htmx polling every scrape interval: new numbers only exist that often, so a
poll is exactly as fresh as a push would be.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from agents.models import Agent, AgentError, State
from observability import charts, metrics
from observability import context as agent_context
from observability.metrics import TimeRange
from observability.models import Alert, AlertRule, MetricSample
from portal import extensions, roles
from portal.actors import Actor
from portal.extensions import CardExtras
from portal.htmx import htmx_partial

if TYPE_CHECKING:
    from agents.events import AgentEvent

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
# How recent a sample must be to count as "now" (a few missed scrapes, no more).
CURRENT_WITHIN = timedelta(minutes=2)
SPARK_METRIC = "cpu_percent"
SPARK_MINUTES = 60
# The sections an agent's dashboard links to, each filtered to the agent.
FOCUS_LINK_SECTIONS = ("errors", "logs", "events", "alerts", "metrics")


# --- time ranges and charts ---------------------------------------------------------------


RANGES = metrics.RANGES
DEFAULT_RANGE = "1h"


@dataclass(frozen=True)
class Line:
    metric: str
    label: str
    css_class: str = ""


@dataclass(frozen=True)
class ChartSpec:
    """One chart: its lines, its unit, and the alert-rule metrics drawn as threshold lines."""

    key: str
    title: str
    fleet_title: str
    unit: str
    lines: tuple[Line, ...]
    alert_metrics: tuple[str, ...] = ()
    # Whether a threshold for one agent means something for the fleet's figure (an average or
    # a rate does; a sum over fourteen agents does not).
    fleet_thresholds: bool = False


CHARTS = (
    ChartSpec(
        "cpu", "CPU (% of one core)", "CPU, all agents together (% of one core)", "%",
        (Line("cpu_percent", "CPU"),), ("cpu_percent",),
    ),
    ChartSpec(
        "memory", "Memory (resident)", "Memory, all agents together", "bytes",
        (Line("memory_bytes", "Resident memory"),), ("memory_percent",),
    ),
    ChartSpec(
        "throughput", "Throughput (tasks/s)", "Throughput, all agents (tasks/s)", "/s",
        (Line("throughput", "Tasks processed"),),
    ),
    ChartSpec(
        "error_rate", "Error rate (% of attempts)", "Error rate, all agents (% of attempts)", "%",
        (Line("error_rate", "Failed attempts"),), ("error_rate",), fleet_thresholds=True,
    ),
    ChartSpec(
        "latency", "Task latency (ms)", "Task latency, average of agents (ms)", "ms",
        (Line("latency_p50_ms", "p50", "series-1"), Line("latency_p95_ms", "p95", "series-2"),
         Line("latency_p99_ms", "p99", "series-3")),
        ("latency_p95_ms",), fleet_thresholds=True,
    ),
    ChartSpec(
        "queue", "Queue depth", "Queue depth, all agents", "tasks",
        (Line("queue_depth", "Waiting", "series-1"), Line("dead_letters", "Dead letters", "series-4")),
        ("queue_depth", "dead_letters"),
    ),
)  # fmt: skip
CHARTS_BY_KEY = {spec.key: spec for spec in CHARTS}
DASHBOARD_CHARTS = ("cpu", "throughput", "error_rate")


def _alert_rules(agent: Agent | None) -> dict[str, list[AlertRule]]:
    """The enabled metric rules that apply to ``agent`` (None: rules for every agent), by metric."""
    rules = AlertRule.objects.filter(enabled=True, kind=AlertRule.Kind.METRIC)
    if agent is None:
        rules = rules.filter(agent__isnull=True)
    else:
        rules = rules.filter(Q(agent__isnull=True) | Q(agent=agent))
    by_metric: dict[str, list[AlertRule]] = {}
    for rule in rules:
        by_metric.setdefault(rule.metric, []).append(rule)
    return by_metric


def _rule_label(rule: AlertRule, value_text: str) -> str:
    return f"alert {rule.get_operator_display()} {value_text}"


def _thresholds(
    spec: ChartSpec,
    agent: Agent | None,
    rules: dict[str, list[AlertRule]],
    memory_limit: float | None,
) -> list[charts.Threshold]:
    if agent is None and not spec.fleet_thresholds:
        return []
    lines = []
    if spec.key == "memory":
        if memory_limit:
            lines.append(
                charts.Threshold(
                    memory_limit,
                    f"limit {charts.format_value(memory_limit, 'bytes')}",
                    "threshold-limit",
                )
            )
            for rule in rules.get("memory_percent", []):
                percent = f"{rule.threshold:g} % of limit"
                lines.append(
                    charts.Threshold(
                        memory_limit * rule.threshold / 100.0,
                        _rule_label(rule, percent),
                        "threshold-alert",
                    )
                )
        return lines
    for metric in spec.alert_metrics:
        for rule in rules.get(metric, []):
            text = charts.format_value(rule.threshold, spec.unit)
            if len(spec.lines) > 1:
                line = next(line for line in spec.lines if line.metric == metric)
                text = f"{line.label} {text}"
            lines.append(
                charts.Threshold(rule.threshold, _rule_label(rule, text), "threshold-alert")
            )
    return lines


def _memory_limit(agent: Agent, latest: MetricSample | None) -> float:
    if latest is not None and latest.memory_limit_bytes:
        return latest.memory_limit_bytes
    return float(agent.memory_mb * MiB * max(agent.replicas, 1))


def build_charts(
    agent: Agent | None,
    time_range: TimeRange,
    *,
    now: datetime | None = None,
    keys: Iterable[str] | None = None,
    height: int = 180,
    latest: MetricSample | None = None,
) -> list[dict]:
    """The charts of ``agent`` (None: the fleet) over ``time_range`` ending now: one query per
    line. Each is ``{"key", "title", "html"}``."""
    now = now or timezone.now()
    start, end = now - time_range.span, now
    rules = _alert_rules(agent)
    memory_limit = _memory_limit(agent, latest) if agent is not None else None
    built = []
    for key in keys or CHARTS_BY_KEY:
        spec = CHARTS_BY_KEY[key]
        lines = [
            charts.Series(
                line.label,
                metrics.series(
                    line.metric, agent=agent, start=start, end=end, points=time_range.points
                ).points,
                line.css_class,
            )
            for line in spec.lines
        ]
        title = spec.title if agent is not None else spec.fleet_title
        html = charts.line_chart(
            lines,
            title=title,
            unit=spec.unit,
            start=start,
            end=end,
            height=height,
            thresholds=_thresholds(spec, agent, rules, memory_limit),
        )
        built.append({"key": key, "title": title, "html": html})
    return built


# --- numbers ----------------------------------------------------------------------------------


def uptime_text(percent: float | None) -> str:
    """99.95 %: two decimals, rounded down so that a bad minute never shows as 100 %."""
    if percent is None:
        return charts.NO_VALUE
    if percent >= 100.0:
        return "100 %"
    return f"{math.floor(percent * 100) / 100:.2f} %"


def current_values(sample: MetricSample | None) -> list[dict]:
    """The tiles of "now": label, formatted value, and a hint."""
    if sample is None:
        return []
    memory_hint = ""
    if sample.memory_percent is not None:
        memory_hint = (
            f"{charts.format_value(sample.memory_percent, '%')} of "
            f"{charts.format_value(sample.memory_limit_bytes, 'bytes')}"
        )
    if sample.up >= 1:
        up = {"label": "Up", "value": "Yes", "hint": "answered the last scrape", "state": "ok"}
    elif sample.up <= 0:
        up = {"label": "Up", "value": "No", "hint": "did not answer", "state": "bad"}
    else:
        up = {"label": "Up", "value": f"{sample.up * 100:.0f} %", "hint": "of replicas answered",
              "state": "warn"}  # fmt: skip
    return [
        up,
        {"label": "CPU", "value": charts.format_value(sample.cpu_percent, "%"),
         "hint": "of one core"},
        {"label": "Memory", "value": charts.format_value(sample.memory_bytes, "bytes"),
         "hint": memory_hint},
        {"label": "Throughput", "value": charts.format_value(sample.throughput, "/s"),
         "hint": "tasks processed"},
        {"label": "Error rate", "value": charts.format_value(sample.error_rate, "%"),
         "hint": "of attempts" if sample.error_rate is not None else "no attempts"},
        {"label": "Latency p95", "value": charts.format_value(sample.latency_p95_ms, "ms"),
         "hint": f"p50 {charts.format_value(sample.latency_p50_ms, 'ms')}, "
                 f"p99 {charts.format_value(sample.latency_p99_ms, 'ms')}"},
        {"label": "Queue", "value": charts.format_value(sample.queue_depth, ""),
         "hint": f"tasks waiting, {charts.format_value(sample.dead_letters, '')} dead letters"},
    ]  # fmt: skip


# --- the agent context ------------------------------------------------------------------------


def focus_for(
    request: HttpRequest, actor: Actor, *, remember: bool = True
) -> agent_context.Resolved:
    """The agent context of a page request (remembered, redirected as ``context.resolve``
    decides), or, for a poll (``remember=False``), only what its URL says: a tab polling an old
    choice must not take back the choice just made in another tab."""
    if remember:
        return agent_context.resolve(request, actor)
    slug = (request.GET.get(agent_context.PARAM) or "").strip()
    if slug in ("", agent_context.ALL):
        return agent_context.Resolved(None)
    return agent_context.Resolved(
        Agent.objects.filter(slug=slug).exclude(state=State.REVOKED).first()
    )


def _query(**params: str | None) -> str:
    return "?" + urlencode({key: value for key, value in params.items() if value})


# --- the Metrics page -------------------------------------------------------------------------


@require_GET
@vary_on_headers("HX-Request")
def metrics_page(request: HttpRequest) -> HttpResponse:
    """One agent's metrics, or the fleet's, over 1 h to 7 d; htmx polls get the live part."""
    actor = Actor.from_request(request)
    actor.require(roles.VIEW, "see metrics")
    partial = htmx_partial(request)
    focus = focus_for(request, actor, remember=not partial)
    if focus.redirect_to:
        return redirect(focus.redirect_to)
    agent = focus.agent
    range_key = request.GET.get("range") or DEFAULT_RANGE
    time_range = RANGES.get(range_key)
    slug = agent.slug if agent else None
    context = {
        "agent": agent,
        "problem": focus.problem,
        "range_key": range_key,
        "ranges": [
            {"key": r.key, "label": r.label, "href": _query(agent=slug, range=r.key)}
            for r in RANGES.values()
        ],
        "clear_href": _query(agent=agent_context.ALL, range=range_key if time_range else None),
        "refresh_seconds": settings.METRICS_SCRAPE_INTERVAL_SECONDS,
        "time_zone": timezone.get_current_timezone_name(),
        "poll_href": request.path + _query(agent=slug, range=range_key),
    }
    if time_range is None:
        context["range_error"] = (
            f"There is no time range “{range_key}”. Choose one of "
            + ", ".join(r.label for r in RANGES.values())
            + "."
        )
        template = "observability/metrics.html#live" if partial else "observability/metrics.html"
        return render(request, template, context, status=400)
    context["time_range"] = time_range
    context.update(agent_metrics(agent, time_range) if agent else fleet_metrics(time_range))
    template = "observability/metrics.html#live" if partial else "observability/metrics.html"
    return render(request, template, context)


def agent_metrics(agent: Agent, time_range: TimeRange) -> dict:
    """Everything the page shows for one agent."""
    now = timezone.now()
    latest = metrics.latest(agent)
    fresh = latest if latest is not None and latest.ts >= now - CURRENT_WITHIN else None
    return {
        "uptime_24h": uptime_text(metrics.uptime(agent, timedelta(hours=24), now)),
        "uptime_7d": uptime_text(metrics.uptime(agent, timedelta(days=7), now)),
        "latest": latest,
        "latest_is_current": fresh is not None,
        "current": current_values(latest),
        "charts": build_charts(agent, time_range, now=now, latest=latest),
    }


def fleet_metrics(time_range: TimeRange) -> dict:
    """Everything the page shows for the fleet: totals, averages and one row per agent."""
    now = timezone.now()
    agents = list(Agent.objects.exclude(state=State.REVOKED).order_by("name"))
    ids = [agent.pk for agent in agents]
    day = metrics.uptimes(timedelta(hours=24), now)
    week = metrics.uptimes(timedelta(days=7), now)
    latest = metrics.latest_many(ids, within=CURRENT_WITHIN, now=now)
    lines = metrics.sparklines(SPARK_METRIC, ids, minutes=SPARK_MINUTES, now=now)
    rows = []
    for agent in agents:
        sample = latest.get(agent.pk)
        rows.append(
            {
                "agent": agent,
                "href": _query(agent=agent.slug, range=time_range.key),
                "uptime_24h": uptime_text(day.get(agent.pk)),
                "uptime_7d": uptime_text(week.get(agent.pk)),
                "sample": sample,
                "ever_sampled": bool(
                    sample or lines.get(agent.pk) or agent.pk in day or agent.pk in week
                ),
                "cpu": charts.format_value(sample and sample.cpu_percent, "%"),
                "memory": charts.format_value(sample and sample.memory_bytes, "bytes"),
                "throughput": charts.format_value(sample and sample.throughput, "/s"),
                "error_rate": charts.format_value(sample and sample.error_rate, "%"),
                "sparkline": charts.sparkline(
                    lines.get(agent.pk, []), unit="%", label=f"{agent.name} CPU, last hour",
                    y_min=0, show_value=False,  # the CPU column has it
                ),
            }
        )  # fmt: skip
    meant_to_run = [agent for agent in agents if agent.state in metrics.SAMPLED_STATES]
    up_now = sum(1 for agent in meant_to_run if (s := latest.get(agent.pk)) and s.up >= 1)
    return {
        "uptime_24h": uptime_text(metrics.uptime(None, timedelta(hours=24), now)),
        "uptime_7d": uptime_text(metrics.uptime(None, timedelta(days=7), now)),
        "up_now": up_now,
        "meant_to_run": len(meant_to_run),
        "fleet_current": _fleet_current(latest.values()),
        "charts": build_charts(None, time_range, now=now),
        "rows": rows,
    }


def _fleet_current(samples: Iterable[MetricSample]) -> list[dict]:
    samples = list(samples)

    def total(field: str) -> float | None:
        values = [getattr(s, field) for s in samples if getattr(s, field) is not None]
        return sum(values) if values else None

    throughput, failures = total("throughput"), total("failures")
    attempts = (throughput or 0) + (failures or 0)
    error_rate = 100.0 * (failures or 0) / attempts if attempts else None
    return [
        {"label": "CPU", "value": charts.format_value(total("cpu_percent"), "%"),
         "hint": "all agents, of one core"},
        {"label": "Memory", "value": charts.format_value(total("memory_bytes"), "bytes"),
         "hint": "all agents"},
        {"label": "Throughput", "value": charts.format_value(throughput, "/s"),
         "hint": "tasks processed"},
        {"label": "Error rate", "value": charts.format_value(error_rate, "%"),
         "hint": "of attempts" if error_rate is not None else "no attempts"},
        {"label": "Queue", "value": charts.format_value(total("queue_depth"), ""),
         "hint": f"tasks waiting, {charts.format_value(total('dead_letters'), '')} dead letters"},
    ]  # fmt: skip


# --- sparklines on agent cards ----------------------------------------------------------------


def _spark(agent: Agent, points: Sequence, *, oob: bool = False) -> str:
    # An agent that is not running uses no CPU: its last sample is history, not a figure for now.
    running = agent.state == State.RUNNING
    line = charts.sparkline(
        points,
        unit="%",
        label=f"{agent.name} CPU, last hour" + ("" if running else " (not running now)"),
        y_min=0,
        css_class="agent-spark-line",
        show_value=running,
    )
    return format_html(
        '<div class="agent-spark" id="agent-spark-{}" data-spark-agent="{}"{}>'
        '<span class="agent-spark-label" aria-hidden="true">CPU · 1 h</span>{}</div>',
        agent.slug,
        agent.slug,
        mark_safe(' hx-swap-oob="true"') if oob else "",
        line,
    )


def card_sparklines(agents: Sequence[Agent]) -> CardExtras:
    """The agents hook: every card's CPU sparkline for the last hour in one query, and once
    per page the stylesheets and the poll that keeps them current."""
    lines = metrics.sparklines(SPARK_METRIC, [agent.pk for agent in agents], SPARK_MINUTES)
    cards = {
        agent.pk: _spark(agent, lines.get(agent.pk, []))
        for agent in agents
        if lines.get(agent.pk) or agent.state in metrics.SAMPLED_STATES
    }
    page = render_to_string(
        "observability/metrics_card_poll.html",
        {"refresh_seconds": settings.METRICS_SCRAPE_INTERVAL_SECONDS},
    )
    return CardExtras(cards=cards, page=page)


@require_GET
def card_sparklines_refresh(request: HttpRequest) -> HttpResponse:
    """The sparklines of the cards a page shows (``?agents=a,b``), swapped out of band."""
    actor = Actor.from_request(request)
    actor.require(roles.VIEW, "see metrics")
    slugs = [slug for slug in request.GET.get("agents", "").split(",") if slug][:100]
    if not slugs:
        return HttpResponse(status=204)
    agents = list(Agent.objects.filter(slug__in=slugs).only("id", "slug", "name", "state"))
    lines = metrics.sparklines(SPARK_METRIC, [agent.pk for agent in agents], SPARK_MINUTES)
    html = "".join(_spark(agent, lines.get(agent.pk, []), oob=True) for agent in agents)
    return HttpResponse(html)


# --- the dependency graph -------------------------------------------------------------------


def graph_link(slug: str) -> str:
    """Where a node leads: the dashboard focused on that agent, which also sets the context."""
    return reverse("dashboard") + _query(agent=slug)


def graph_data() -> tuple[list[charts.Node], list[tuple[str, str]]]:
    """Every agent not revoked, and who depends on whom: two queries."""
    agents = list(
        Agent.objects.exclude(state=State.REVOKED)
        .only("id", "slug", "name", "state", "tier", "health")
        .order_by("name")
    )
    slugs = {agent.pk: agent.slug for agent in agents}
    links = Agent.dependencies.through.objects.values_list("from_agent_id", "to_agent_id")
    edges = [
        (slugs[dependent], slugs[dependency])
        for dependent, dependency in links
        if dependent in slugs and dependency in slugs
    ]
    nodes = [
        charts.Node(agent.slug, agent.name, agent.state, agent.tier, agent.health)
        for agent in agents
    ]
    return nodes, sorted(edges)


def dependency_graph(focus: Agent | None = None) -> dict:
    """The graph panel's context; with ``focus``, that agent, what it depends on and what
    depends on it stand out."""
    nodes, edges = graph_data()
    context = {
        "graph": charts.dependency_graph(nodes, edges, link=graph_link),
        "node_count": len(nodes),
        "focus": focus,
    }
    if focus is not None:
        context["focus_dependencies"] = sorted({b for a, b in edges if a == focus.slug})
        context["focus_dependents"] = sorted({a for a, b in edges if b == focus.slug})
    return context


def graph_detail_panel(agent: Agent, actor: Actor) -> str:
    """The agents hook: the graph panel on an agent's own page."""
    return render_to_string("observability/graph_panel.html", dependency_graph(agent))


# The topic of pages showing the dependency graph (the dashboard, an agent's page).
GRAPH_TOPIC = "graph"


def on_agent_event(event: AgentEvent) -> None:
    """Listener for ``agents.events``: a node of every open graph takes the agent's new state.
    Never raises into the caller."""
    try:
        publish_graph_node(event)
    except Exception:
        logger.exception("could not push the graph node of %s", event.slug)


def publish_graph_node(event: AgentEvent) -> None:
    from portal import realtime

    if event.kind not in ("transition", "health", "registry"):
        return  # what a node shows: name, state, health
    group = realtime.topic_group(GRAPH_TOPIC)
    if not realtime.watched([group]):
        return
    agent = (
        Agent.objects.only("id", "slug", "name", "state", "tier", "health")
        .filter(pk=event.agent_id)
        .first()
    )
    if agent is None or agent.state == State.REVOKED:
        return
    names = list(agent.dependencies.order_by("name").values_list("name", flat=True))
    node = charts.Node(agent.slug, agent.name, agent.state, agent.tier, agent.health)
    html = charts.dependency_graph_node(node, names, link=graph_link)
    realtime.publish(group, {f"graph-node-{agent.slug}": html})


# --- the dashboard ------------------------------------------------------------------------


def fleet_metrics_now() -> dict:
    """The dashboard's fleet figures: uptime over 24 h, throughput and error rate now."""
    now = timezone.now()
    current = {
        item["label"]: item
        for item in _fleet_current(metrics.latest_many(within=CURRENT_WITHIN, now=now).values())
    }
    return {
        "fleet_uptime_24h": uptime_text(metrics.uptime(None, timedelta(hours=24), now)),
        "fleet_throughput": current["Throughput"]["value"],
        "fleet_error_rate": current["Error rate"]["value"],
        "metrics_href": reverse("metrics:index") + _query(agent=agent_context.ALL),
        "refresh_seconds": settings.METRICS_SCRAPE_INTERVAL_SECONDS,
    }


def fleet_dashboard() -> dict:
    """The fleet dashboard's additions: the dependency graph and the fleet's figures."""
    return {**dependency_graph(), **fleet_metrics_now()}


def agent_dashboard(agent: Agent) -> dict:
    """A dashboard focused on one agent: its open errors and alerts, uptime, the last hour's
    CPU, throughput and error rate, and links to its logs, events, alerts and metrics."""
    from agents.error_views import OPEN_STATUSES

    from portal.navigation import SECTIONS_BY_SLUG

    now = timezone.now()
    open_errors = AgentError.objects.filter(agent=agent, status__in=OPEN_STATUSES)
    links = []
    for slug in FOCUS_LINK_SECTIONS:
        section = SECTIONS_BY_SLUG.get(slug)
        if section is None:
            continue
        links.append(
            {
                "slug": slug,
                "title": section.title,
                "icon": section.icon,
                "href": section.href + _query(agent=agent.slug),
            }
        )
    return {
        "focus_open_errors": list(open_errors.order_by("-last_seen_at", "-id")[:3]),
        "focus_open_error_count": open_errors.count(),
        "focus_open_alert_count": Alert.objects.filter(agent=agent, status__in=Alert.OPEN).count(),
        "focus_uptime_24h": uptime_text(metrics.uptime(agent, timedelta(hours=24), now)),
        "focus_charts": build_charts(
            agent, RANGES["1h"], now=now, keys=DASHBOARD_CHARTS, height=140
        ),
        "focus_links": links,
        "focus_alerts_href": next(
            (link["href"] for link in links if link["slug"] == "alerts"),
            reverse("metrics:index") + _query(agent=agent.slug),
        ),
        "refresh_seconds": settings.METRICS_SCRAPE_INTERVAL_SECONDS,
        "clear_href": reverse("dashboard") + _query(agent=agent_context.ALL),
    }


def register_agent_hooks() -> None:
    """Put the card sparklines, the detail page's graph and the graph's live updates into the
    agents app's hooks (it cannot import us)."""
    from agents import events

    extensions.add_card_extras(card_sparklines)
    extensions.add_detail_panel(graph_detail_panel)
    events.subscribe(on_agent_event)
