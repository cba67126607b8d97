"""The live log tail: new log lines pushed to the pages that follow them.

The scheme the Logs page builds on:

=========================  =======================  =========================================
the page subscribes to      channel-layer group      rows are appended to (``beforeend``)
=========================  =======================  =========================================
``logs:<slug>``             ``logs.<slug>``          ``<tbody id="log-tail-rows-<slug>">``
``logs:*`` (every agent)    ``logs-all``             ``<tbody id="log-tail-rows">``
=========================  =======================  =========================================

(``{"subscribe": ["logs:wow-cache"]}`` on the page's ``/ws/live/`` socket; every signed-in role
may.) Each message carries ``<tbody id="log-tail-rows-<slug>" hx-swap-oob="beforeend">`` with
the new rows, oldest first, rendered by ``observability/log_rows.html`` (one ``<tr>`` per line,
``id="log-<id>"``, with ``data-id``, ``data-level`` (the number: 10 debug … 50 critical) and
``data-agent`` (the slug), so a page can drop rows below its level filter or remember the last
id to resume with ``logs.after``). The two element ids differ so that a page which changes
agent without reloading cannot receive another agent's lines into its table.

The collector publishes after every batch it stores (about every 250 ms), only to groups someone
watches; a batch bigger than :data:`LIVE_MAX_ROWS` sends its newest lines and one
``<tr class="log-gap">`` row saying how many were left out (the page can search for them).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

from django.template.loader import render_to_string

from agents.models import Agent
from portal import realtime

logger = logging.getLogger(__name__)

LIVE_MAX_ROWS = 200
ROWS_TEMPLATE = "observability/log_rows.html"
ALL_AGENTS_TOPIC = "*"


def register_topics() -> None:
    """``logs:<slug>`` and ``logs:*`` (every signed-in role may read logs)."""

    def existing(slugs: list[str]) -> set[str]:
        return set(Agent.objects.filter(slug__in=slugs).values_list("slug", flat=True))

    realtime.register_topic_kind("logs", existing=existing)
    # The switcher's option of an agent (its state badge): ``ctx:<slug>``, per option shown, so
    # a page listing 60 of 5,000 agents hears about those 60 only.
    realtime.register_topic_kind("ctx", existing=existing)
    realtime.register_topic(f"logs:{ALL_AGENTS_TOPIC}", group=all_logs_group())


def log_group(slug: str) -> str:
    """The group of pages following one agent's log (topic ``logs:<slug>``)."""
    return realtime.group_name("logs", slug)


def switcher_group(slug: str) -> str:
    """The pages whose agent switcher lists ``slug`` (topic ``ctx:<slug>``)."""
    return realtime.kind_group("ctx", slug)


def all_logs_group() -> str:
    """The group of pages following every agent's log (topic ``logs:*``)."""
    return realtime.group_name("logs-all")


def rows_element_id(slug: str | None = None) -> str:
    """The id of the ``<tbody>`` new rows are appended to: one agent's, or every agent's."""
    return f"log-tail-rows-{slug}" if slug else "log-tail-rows"


def watched_groups(slugs: Iterable[str]) -> set[str]:
    """Which of these agents' groups, and the all-agents group, have a page listening."""
    return realtime.watched([all_logs_group(), *(log_group(slug) for slug in set(slugs))])


def render_rows(entries: list) -> str:
    """``<tr>`` rows for LogEntry objects (their ``agent`` attached), in the order given."""
    return render_to_string(ROWS_TEMPLATE, {"entries": entries})


def publish_entries(entries: list, watched: set[str] | None = None) -> None:
    """Push newly stored lines (LogEntry objects, oldest first, agents attached) to the groups
    among ``watched`` (asked of Redis when not given) that show them. Never raises: a failed push
    must not stop the collector, and pages catch up with ``logs.after`` when they reconnect."""
    if not entries:
        return
    try:
        by_slug: dict[str, list] = defaultdict(list)
        for entry in entries:
            by_slug[entry.agent.slug].append(entry)
        if watched is None:
            watched = watched_groups(by_slug)
        if all_logs_group() in watched:
            _push(all_logs_group(), rows_element_id(), entries)
        for slug, own in by_slug.items():
            if log_group(slug) in watched:
                _push(log_group(slug), rows_element_id(slug), own)
    except Exception:
        logger.exception("could not push %d new log lines to the live tail", len(entries))


def _push(group: str, element_id: str, entries: list) -> None:
    shown = entries[-LIVE_MAX_ROWS:]
    left_out = len(entries) - len(shown)
    gap = ""
    if left_out:
        gap = (
            f'<tr class="log-gap" data-left-out="{left_out}"><td colspan="5">{left_out} more '
            f"lines arrived at once; search or download to see them all.</td></tr>"
        )
    html = f'<tbody id="{element_id}" hx-swap-oob="beforeend">{gap}{render_rows(shown)}</tbody>'
    # Keyed by the first line's id: two batches inside one publishing window both arrive (the
    # publisher merges fragments by key, and an append must not replace the one before it).
    realtime.publish(group, {f"{element_id}@{shown[0].pk}": html})
