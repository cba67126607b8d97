"""Agent and bulk events → HTML fragments pushed to the pages that show them.

One event is rendered once per group and access level: the card and table row for the fleet
pages (dashboard, agents list), the counters, the detail page's status block, and a toast for
the person whose action finished; for an error, the agent's error panel, the dashboard's open
errors and a toast for the person whose recovery finished; for a bulk operation, its progress
block and the item row that changed, the row of the recent-operations list, and a toast for the
person who started it once it ends. The templates are the pages' own partials, so the markup
exists once.
"""

from __future__ import annotations

import logging
import time
import uuid

from django.db.models import Q
from django.template.loader import render_to_string

from agents.errors.rules import RECOVERIES
from agents.events import AgentEvent, BulkEvent
from agents.models import (
    Agent,
    BulkItem,
    BulkOperation,
    Operation,
    RecoveryAttempt,
)
from agents.views.bulk import bulk_context, describe_item, finished_toast
from agents.views.errors import dashboard_errors, error_panel
from agents.views.shared import (
    agents_with_relations,
    card_context,
    detail_extras,
    outcome_toast,
)
from portal import extensions, realtime, roles
from portal.actors import Actor

logger = logging.getLogger(__name__)

# An actor standing for everyone at an access level, to decide which actions a menu offers.
_ACCESS_ACTORS = {
    realtime.ACCESS_VIEW: Actor(kind="system", source="live", assumed_role=roles.VIEWER),
    realtime.ACCESS_OPERATE: Actor(kind="system", source="live", assumed_role=roles.OPERATOR),
}


# --- the topics pages subscribe to (registered in AgentsConfig.ready) ------------------------------


# --- the groups of this app's topics, by name, for the code that publishes to them ---------


def agent_group(slug: str, access: str) -> str:
    """Pages showing one agent (its detail page: topic ``agent:<slug>``)."""
    return realtime.group_name("agent", slug, access)


def card_group(slug: str, access: str) -> str:
    """Pages showing this agent's card (topic ``card:<slug>``: the agents list, the dashboard)."""
    return realtime.group_name("card", slug, access)


def row_group(slug: str, access: str) -> str:
    """Pages showing this agent's row in the fleet table (topic ``row:<slug>``)."""
    return realtime.group_name("row", slug, access)


def operation_group(operation_id: object) -> str:
    return realtime.group_name("operation", operation_id)


def bulk_group(bulk_id: object, access: str) -> str:
    """Pages showing one bulk operation's progress (an Operator's has its buttons)."""
    return realtime.group_name("bulk", bulk_id, access)


def bulk_list_group() -> str:
    """The list of recent bulk operations (the same for every role)."""
    return realtime.group_name("bulk-list")


def register_topics() -> None:
    """``agent:<slug>`` (its detail page), ``card:<slug>`` and ``row:<slug>`` (wherever its card
    or table row shows), ``bulk:<id>``, ``operation:<id>``, and the named ``fleet-counts``,
    ``errors-overview`` (the dashboard's open errors), ``errors-list`` (the Errors page's beat)
    and ``bulk-list``."""
    for kind in ("agent", "card", "row"):
        realtime.register_topic_kind(
            kind, existing=_existing_slugs, per_access=True, resync=_resync_agents
        )
    realtime.register_topic_kind("bulk", existing=_existing_bulk_ids, per_access=True)
    realtime.register_topic_kind("bulk-row", existing=_existing_bulk_ids)
    realtime.register_topic_kind("operation", existing=_existing_operation_ids)
    realtime.register_topic(FLEET_COUNTS, resync=_resync_counts)
    for name in (ERRORS_OVERVIEW, ERRORS_LIST):
        realtime.register_topic(name)
    realtime.register_topic("bulk-list", group=bulk_list_group())


FLEET_COUNTS = "fleet-counts"
ERRORS_OVERVIEW = "errors-overview"
ERRORS_LIST = "errors-list"


def _existing_slugs(keys: list[str]) -> set[str]:
    return set(Agent.objects.filter(slug__in=keys).values_list("slug", flat=True))


def _resync_agents(slugs: list[str]) -> None:
    """Push these agents' cards, rows and detail panels as they are now (a page that loaded
    while they changed; see portal.realtime.resync)."""
    for agent in Agent.objects.filter(slug__in=slugs):
        publish_agent(
            AgentEvent(kind="resync", agent_id=agent.pk, slug=agent.slug, state=agent.state,
                       health=agent.health, pending_action=agent.pending_action)
        )  # fmt: skip


def _resync_counts() -> None:
    counts = render_to_string(
        "agents/agent_list.html#counts", {"counts": Agent.objects.fleet_counts()}
    )
    realtime.publish(realtime.topic_group(FLEET_COUNTS), {"fleet-counts": counts})


def _existing_bulk_ids(keys: list[str]) -> set[str]:
    # Ids are small integers; anything else (or too big for the column) names nothing.
    ids = [int(key) for key in keys if key.isdecimal() and len(key) < 10]
    return {str(pk) for pk in BulkOperation.objects.filter(pk__in=ids).values_list("pk", flat=True)}


def _existing_operation_ids(keys: list[str]) -> set[str]:
    ids = []
    for key in keys:
        try:
            ids.append(uuid.UUID(key))
        except ValueError:
            continue
    return {str(pk) for pk in Operation.objects.filter(pk__in=ids).values_list("pk", flat=True)}


# --- agent events -----------------------------------------------------------------------------------


def on_agent_event(event: AgentEvent) -> None:
    """Listener for ``agents.events``: render and publish. Never raises into the caller."""
    try:
        publish_agent(event)
    except Exception:
        logger.exception("could not push the %s event of %s", event.kind, event.slug)


def publish_agent(event: AgentEvent) -> None:

    groups = {
        access: {
            "card": card_group(event.slug, access),
            "row": row_group(event.slug, access),
            "agent": agent_group(event.slug, access),
        }
        for access in _ACCESS_ACTORS
    }
    counts_group = realtime.topic_group(FLEET_COUNTS)
    # Detail pages of its dependencies and dependents list this agent's state too.
    links = Agent.dependencies.through.objects.filter(
        Q(from_agent_id=event.agent_id) | Q(to_agent_id=event.agent_id)
    ).values_list("from_agent_id", "to_agent_id")
    neighbour_ids = {pk for pair in links for pk in pair} - {event.agent_id}
    neighbours = dict(Agent.objects.filter(pk__in=neighbour_ids).values_list("pk", "slug"))
    neighbour_groups = {
        pk: [agent_group(slug, access) for access in _ACCESS_ACTORS]
        for pk, slug in neighbours.items()
    }
    # Nobody watching (a bulk job with no page open): nothing to load or render.
    error_groups = (
        [realtime.topic_group(ERRORS_OVERVIEW), realtime.topic_group(ERRORS_LIST)]
        if event.kind == "error"
        else []
    )
    watched = realtime.watched(
        [name for by_kind in groups.values() for name in by_kind.values()]
        + [name for names in neighbour_groups.values() for name in names]
        + [counts_group, *error_groups]
    )
    if event.kind == "error" and event.data.get("recovery") and event.data.get("error"):
        _publish_recovery_outcome(event.data["error"])
    if not watched:
        if event.data.get("operation") and event.kind in ("transition", "operation"):
            _publish_outcome(event.data["operation"])
        return
    try:
        agent = agents_with_relations().get(pk=event.agent_id)
    except Agent.DoesNotExist:
        return
    watched_neighbours = [
        pk for pk, names in neighbour_groups.items() if watched.intersection(names)
    ]
    if watched_neighbours:
        for neighbour in agents_with_relations().filter(pk__in=watched_neighbours):
            html = render_to_string("agents/agent_detail.html#deps", {"agent": neighbour})
            for name in neighbour_groups[neighbour.pk]:
                if name in watched:
                    realtime.publish(name, {"agent-deps": html})
    if event.kind == "error":
        _publish_error_overview(watched)
    if counts_group in watched:
        counts = render_to_string(
            "agents/agent_list.html#counts", {"counts": Agent.objects.fleet_counts()}
        )
        realtime.publish(counts_group, {"fleet-counts": counts})
    # The card's extras (its sparkline) are the same for every access level: collected once.
    cards_watched = any(groups[access]["card"] in watched for access in _ACCESS_ACTORS)
    extras = extensions.card_extras([agent])[0] if cards_watched else {}
    for access, actor in _ACCESS_ACTORS.items():
        names = groups[access]
        if not watched.intersection(names.values()):
            continue
        context = card_context(agent, actor, extras=extras)
        if names["card"] in watched:
            card = render_to_string("agents/agent_list.html#card", context)
            realtime.publish(names["card"], {f"agent-{agent.slug}": card})
        if names["row"] in watched:
            row = render_to_string("agents/agent_list.html#row", context)
            realtime.publish(names["row"], {f"agent-row-{agent.slug}": row})
        if names["agent"] in watched:
            detail = {**context, **detail_extras(agent), "from": "detail"}
            fragments = {
                "agent-status": render_to_string("agents/agent_detail.html#status", detail),
                "agent-transitions": render_to_string(
                    "agents/agent_detail.html#transitions", detail
                ),
            }
            if event.kind == "error":
                fragments["agent-errors"] = render_to_string(
                    "agents/agent_detail.html#errors", error_panel(agent, actor)
                )
            realtime.publish(names["agent"], fragments)
    operation_id = event.data.get("operation")
    if operation_id and event.kind in ("transition", "operation"):
        _publish_outcome(operation_id)


def _publish_error_overview(watched: set[str]) -> None:
    """An error opened, changed or closed: the dashboard's open errors (the same for every
    role: no buttons) and a beat that tells an open Errors page to fetch its list again."""

    overview = realtime.topic_group(ERRORS_OVERVIEW)
    if overview in watched:
        html = render_to_string("portal/dashboard.html#errors", dashboard_errors())
        realtime.publish(overview, {"dashboard-errors": html})
    listing = realtime.topic_group(ERRORS_LIST)
    if listing in watched:
        beat = (
            f'<span id="errors-beat" hidden data-live-subscribe="{ERRORS_LIST}" '
            f'data-at="{time.time():.3f}"></span>'
        )
        realtime.publish(listing, {"errors-beat": beat})


def _publish_recovery_outcome(error_id: int) -> None:
    """Tell the person who clicked a fix how it ended, wherever they are in the portal."""
    attempt = (
        RecoveryAttempt.objects.select_related("error__agent")
        .filter(error_id=error_id, user__isnull=False)
        .exclude(outcome=RecoveryAttempt.Outcome.RUNNING)
        .order_by("-finished_at", "-id")
        .first()
    )
    if attempt is None:
        return
    group = realtime.user_group(attempt.user_id)
    if not realtime.watched([group]):
        return
    label = RECOVERIES.get(attempt.action, attempt.action)
    agent = attempt.error.agent
    if attempt.outcome == RecoveryAttempt.Outcome.FIXED:
        toast, level = f"{label} ({agent.name}): fixed, {attempt.detail}.", "success"
    elif attempt.outcome == RecoveryAttempt.Outcome.FAILED:
        toast, level = f"{label} ({agent.name}) failed: {attempt.detail}", "error"
    else:
        toast, level = f"{label} ({agent.name}) did not help: {attempt.detail}", "error"
    html = render_to_string("portal/toast.html", {"toast": toast, "toast_level": level})
    realtime.publish(group, {f"toast-recovery-{attempt.pk}": html})


def _publish_outcome(operation_id: str) -> None:
    """Tell the person who asked for an operation how it ended (a toast), and its own group."""
    operation = Operation.objects.select_related("agent").filter(pk=operation_id).first()
    if operation is None or not operation.is_finished:
        return
    user_group = realtime.user_group(operation.user_id) if operation.user_id else ""
    outcome_group = operation_group(operation.pk)
    watched = realtime.watched([group for group in (user_group, outcome_group) if group])
    if not watched:
        return
    toast, level = outcome_toast(operation)
    html = render_to_string("portal/toast.html", {"toast": toast, "toast_level": level})
    # A step of a bulk operation: its starter gets one toast for the whole operation instead.
    if user_group in watched and not _is_bulk_step(operation):
        realtime.publish(user_group, {f"toast-{operation.pk}": html})
    if outcome_group in watched:
        realtime.publish(outcome_group, {f"toast-{operation.pk}": html})


def _is_bulk_step(operation: Operation) -> bool:
    return BulkItem.objects.filter(operation_ids__contains=[str(operation.pk)]).exists()


# --- bulk operations ----------------------------------------------------------------------------


def on_bulk_event(event: BulkEvent) -> None:
    """Listener for ``agents.events.subscribe_bulk``: render and publish. Never raises."""
    try:
        publish_bulk(event)
    except Exception:
        logger.exception(
            "could not push the %s event of bulk operation %s", event.kind, event.bulk_id
        )


def publish_bulk(event: BulkEvent) -> None:

    groups = {access: bulk_group(event.bulk_id, access) for access in _ACCESS_ACTORS}
    list_group = bulk_list_group()
    row_group = realtime.kind_group("bulk-row", event.bulk_id)
    finished = event.kind == "finished"
    watched = realtime.watched([*groups.values(), list_group, row_group])
    if not watched and not finished:
        return
    try:
        operation = BulkOperation.objects.select_related("follows").get(pk=event.bulk_id)
    except BulkOperation.DoesNotExist:
        return
    item_html = None
    if event.item_id is not None and watched.intersection(groups.values()):
        item = BulkItem.objects.select_related("agent").filter(pk=event.item_id).first()
        if item is not None:
            item_html = render_to_string(
                "agents/bulk_detail.html#item", {"item": describe_item(item)}
            )
    for access, group in groups.items():
        if group not in watched:
            continue
        context = bulk_context(operation, operate=access == realtime.ACCESS_OPERATE)
        fragments = {"bulk-progress": render_to_string("agents/bulk_detail.html#progress", context)}
        if item_html is not None:
            fragments[f"bulk-item-{event.item_id}"] = item_html
        realtime.publish(group, fragments)
    if event.kind == "created" and list_group in watched:
        # A new operation goes on top of the list (whose "none yet" row then hides itself).
        row = render_to_string("agents/bulk_list.html#row", {"operation": operation})
        row = f'<tbody id="bulk-rows" hx-swap-oob="afterbegin">{row}</tbody>'
        realtime.publish(list_group, {f"bulk-op-new-{operation.pk}": row})
    elif row_group in watched:
        row = render_to_string("agents/bulk_list.html#row", {"operation": operation})
        realtime.publish(row_group, {f"bulk-op-{operation.pk}": row})
    if finished and operation.user_id:
        toast, level = finished_toast(operation)
        html = render_to_string(
            "agents/bulk_detail.html#finished-toast",
            {"bulk": operation, "toast": toast, "toast_level": level},
        )
        realtime.publish(
            realtime.user_group(operation.user_id), {f"toast-bulk-{operation.pk}": html}
        )
