"""The CPU sparkline on every agent card: an extension of the agents app's pages
(``portal.extensions.add_card_extras``), kept current by a poll every scrape interval."""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from django.template.loader import render_to_string
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from agents.models import Agent, State
from observability import charts, metrics
from observability.figures import SPARK_METRIC, SPARK_MINUTES
from portal.extensions import CardExtras

# At most this many cards' sparklines in one refresh.
REFRESH_MAX = 100


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
    """The card extras provider: every card's CPU sparkline for the last hour in one query,
    and once per page the stylesheets and the poll that keeps them current."""
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


def refreshed(slugs: list[str]) -> str:
    """The sparklines of the cards with these slugs, to be swapped out of band."""
    agents = list(
        Agent.objects.filter(slug__in=slugs[:REFRESH_MAX]).only("id", "slug", "name", "state")
    )
    lines = metrics.sparklines(SPARK_METRIC, [agent.pk for agent in agents], SPARK_MINUTES)
    return "".join(_spark(agent, lines.get(agent.pk, []), oob=True) for agent in agents)
