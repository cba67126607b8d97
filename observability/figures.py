"""Metrics as people read them: the charts of one agent or the fleet (with the alert rules'
thresholds drawn in), uptime as text, the tiles of "now", and everything the Metrics page shows.

Numbers come from ``observability.metrics`` and are drawn by ``observability.charts``; nothing
here computes a metric. The Metrics page, the dashboard and the card sparklines read this.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from agents.models import Agent, State
from observability import charts, metrics
from observability.context import query_string
from observability.metrics import TimeRange
from observability.models import AlertRule, MetricSample

MiB = 1024 * 1024
# How recent a sample must be to count as "now" (a few missed scrapes, no more).
CURRENT_WITHIN = timedelta(minutes=2)
SPARK_METRIC = "cpu_percent"
SPARK_MINUTES = 60


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


# --- the Metrics page -------------------------------------------------------------------------


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
                "href": query_string(agent=agent.slug, range=time_range.key),
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
        "fleet_current": fleet_current(latest.values()),
        "charts": build_charts(None, time_range, now=now),
        "rows": rows,
    }


def fleet_current(samples: Iterable[MetricSample]) -> list[dict]:
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
