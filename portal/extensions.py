"""The extension points: how an app adds to pages it does not own, without either importing
the other. Each app registers from its ``AppConfig.ready``; ``portal`` imports no app.

- ``add_card_extras`` / ``card_extras``: HTML on every agent card of a page (observability's CPU
  sparkline), computed once per page for all its cards.
- ``add_detail_panel`` / ``detail_panels``: a panel on an agent's detail page (the graph).
- ``on_agent_viewed`` / ``agent_viewed``: someone opened an agent's page (it becomes their
  agent context).
- ``add_dashboard_panel`` / ``dashboard_context``: what the dashboard shows, for the fleet or
  for one agent in focus, and the regions an htmx poll may ask for alone.
- ``set_dashboard_focus``: who decides which agent the dashboard is about (the agent context).
- live topics: ``portal.realtime.register_topic`` / ``register_topic_kind``.
- API routers: ``add_api_router`` (mounted at the API root, ``/api/platform/``).
- ``add_metrics_collector`` / ``metrics_collectors``: an app's figures for ``/-/metrics``, read
  when Prometheus scrapes (agents by state, open alerts...).

Objects of other apps (an agent, an actor) pass through here untyped: portal cannot name them.
A failing provider costs only its own part of the page, never the page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from portal.api import add_router as add_api_router  # noqa: F401 (an extension point)

logger = logging.getLogger(__name__)


# --- agent cards and pages ----------------------------------------------------------------------


@dataclass(frozen=True)
class CardExtras:
    """What one provider adds to the agent cards of a page: HTML per agent id for the card's
    extras slot, and HTML once per page (what keeps those slots current)."""

    cards: Mapping[int, str] = field(default_factory=dict)
    page: str = ""


CardExtrasProvider = Callable[[Sequence[Any]], CardExtras]
DetailPanel = Callable[[Any, Any], str]  # (agent, actor) -> HTML
AgentViewed = Callable[[Any, Any, Any], None]  # (request, actor, agent)

_CARD_EXTRAS: list[CardExtrasProvider] = []
_DETAIL_PANELS: list[DetailPanel] = []
_AGENT_VIEWED: list[AgentViewed] = []


def _add(registry: list, item) -> None:
    if item not in registry:  # ready() may run twice (tests, reloads)
        registry.append(item)


def add_card_extras(provider: CardExtrasProvider) -> None:
    """``provider(every agent the page shows) -> CardExtras``: once per page, never per card."""
    _add(_CARD_EXTRAS, provider)


def add_detail_panel(provider: DetailPanel) -> None:
    """``provider(agent, actor) -> HTML`` of a panel on the agent's detail page."""
    _add(_DETAIL_PANELS, provider)


def on_agent_viewed(hook: AgentViewed) -> None:
    """``hook(request, actor, agent)``: the agent's whole page was opened (not a refresh)."""
    _add(_AGENT_VIEWED, hook)


def card_extras(agents: Sequence[Any]) -> tuple[dict[int, list[str]], list[str]]:
    """Every provider's additions for ``agents``: HTML pieces per agent id, and for the page."""
    cards: dict[int, list[str]] = {}
    page: list[str] = []
    for provider in _CARD_EXTRAS:
        try:
            extras = provider(agents)
        except Exception:
            logger.exception("card extras provider %r failed", provider)
            continue
        for agent_id, html in extras.cards.items():
            cards.setdefault(agent_id, []).append(html)
        if extras.page:
            page.append(extras.page)
    return cards, page


def detail_panels(agent: Any, actor: Any) -> list[str]:
    panels = []
    for provider in _DETAIL_PANELS:
        try:
            panels.append(provider(agent, actor))
        except Exception:
            logger.exception("detail panel provider %r failed", provider)
    return panels


def agent_viewed(request: Any, actor: Any, agent: Any) -> None:
    for hook in _AGENT_VIEWED:
        try:
            hook(request, actor, agent)
        except Exception:
            logger.exception("agent viewed hook %r failed", hook)


# --- the dashboard ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DashboardPanel:
    """Part of the dashboard's template context.

    ``context(request, agent)`` gives it for the fleet (``agent`` None) or for one agent in
    focus. ``in_focus_refresh``: also needed when the focused agent's region refreshes alone.
    ``regions``: htmx targets this panel answers alone, each ``target -> (template, context())``.
    """

    name: str
    context: Callable[[Any, Any], dict]
    in_focus_refresh: bool = False
    regions: Mapping[str, tuple[str, Callable[[], dict]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Focus:
    """Which agent the dashboard is about (None: the fleet), or where to go instead."""

    agent: Any = None
    redirect_to: str = ""
    problem: str = ""


_DASHBOARD: dict[str, DashboardPanel] = {}
_FOCUS: list[Callable[..., Focus]] = []


def add_dashboard_panel(panel: DashboardPanel) -> None:
    _DASHBOARD[panel.name] = panel


def set_dashboard_focus(resolve: Callable[..., Focus]) -> None:
    """``resolve(request, actor, remember=bool) -> Focus``: the one agent-context resolver."""
    _FOCUS[:] = [resolve]


def dashboard_focus(request: Any, actor: Any, *, remember: bool) -> Focus:
    return _FOCUS[0](request, actor, remember=remember) if _FOCUS else Focus()


def dashboard_region(target: str) -> tuple[str, Callable[[], dict]] | None:
    """The template and context of a dashboard region an htmx poll asks for by its id."""
    for panel in _DASHBOARD.values():
        if target in panel.regions:
            return panel.regions[target]
    return None


def dashboard_context(request: Any, agent: Any = None, *, focus_refresh: bool = False) -> dict:
    context: dict = {}
    for panel in _DASHBOARD.values():
        if focus_refresh and not panel.in_focus_refresh:
            continue
        try:
            context.update(panel.context(request, agent))
        except Exception:
            logger.exception("dashboard panel %s failed", panel.name)
    return context


# --- links into another app ---------------------------------------------------------------------
# An app names a place another app owns without importing it: the owner registers how to build
# the link, and a missing owner means no link (e.g. agents' "tasks keep failing" error links to
# the dead-letter group that observability shows: ``link("dead_letters", queue=..., group=...)``).

_LINKS: dict[str, Callable[..., str]] = {}


def add_link(name: str, build: Callable[..., str]) -> None:
    _LINKS[name] = build


def link(name: str, **parts: Any) -> str:
    """The URL the owner of ``name`` builds from ``parts``, or "" when nothing registered it."""
    build = _LINKS.get(name)
    if build is None:
        return ""
    try:
        return build(**parts)
    except Exception:
        logger.exception("link %s%r could not be built", name, parts)
        return ""


# --- lookups: a value one app answers for another (the log lines of a task, say) ------------

_LOOKUPS: dict[str, Callable[..., Any]] = {}


def add_lookup(name: str, fetch: Callable[..., Any]) -> None:
    _LOOKUPS[name] = fetch


def lookup(name: str, default: Any = None, **parts: Any) -> Any:
    """What the owner of ``name`` answers for ``parts``, or ``default`` when nothing registered
    it or it failed (logged): a lookup never costs the caller its page."""
    fetch = _LOOKUPS.get(name)
    if fetch is None:
        return default
    try:
        return fetch(**parts)
    except Exception:
        logger.exception("lookup %s%r failed", name, parts)
        return default


# --- the portal's own metrics (/-/metrics) --------------------------------------------------
# ``collector()`` yields prometheus-client metric families (``GaugeMetricFamily`` ...) read from
# the database or Redis when Prometheus scrapes: a few aggregate queries, never one per agent.

MetricsCollector = Callable[[], Iterable[Any]]
_METRICS_COLLECTORS: list[MetricsCollector] = []


def add_metrics_collector(collector: MetricsCollector) -> None:
    _add(_METRICS_COLLECTORS, collector)


def metrics_collectors() -> list[MetricsCollector]:
    return list(_METRICS_COLLECTORS)
