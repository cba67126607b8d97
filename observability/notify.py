"""Observability's listeners: what the browsers hear when an alert changes or an event is
written, and the hook that makes an agent's page the viewer's agent context.

Every page's WebSocket is in the fleet group of its access level, so what goes there reaches
every signed-in browser:

- an alert that fires or resolves (and is not silenced): a toast, coloured by severity, linking
  to the alert; the browser groups toasts of one rule and change ("3 agents ERRORED"), caps how
  many show, and lets all but critical ones fade (static/js/portal.js);
- any alert change: the sidebar's open-alert badge, and a beat (``#alerts-beat``) on which an
  open Alerts page fetches its list again with its own filters;
- a new event: a beat (``#events-beat``) on which an open Events page fetches what is newer than
  its top row.

:func:`connect` wires these up; ``ObservabilityConfig.ready()`` calls it.
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

from django.template.loader import render_to_string

from agents import events as agent_events
from observability import alerts
from observability import context as agent_context
from observability import live as obs_live
from observability.context_processors import AlertBadge
from observability.models import Alert
from portal import extensions, realtime

logger = logging.getLogger(__name__)

# An agent event that writes no event-log row ("pending") still sends a beat; the Events page's
# fetch then finds nothing newer, which costs one indexed query.
TOAST_CHANGES = ("fired", "resolved")
TOAST_LEVELS = {"critical": "error", "warning": "warning", "info": "info"}


def connect() -> None:
    """Register the listeners (idempotent)."""
    alerts.on_change(on_alert_change)
    agent_events.subscribe(on_agent_event)
    extensions.on_agent_viewed(on_agent_viewed)


def _fleet_groups() -> list[str]:
    return [realtime.fleet_group(access) for access in realtime.ACCESS_LEVELS]


def _beat(element_id: str) -> str:
    return f'<span id="{element_id}" hidden data-at="{time.time():.3f}"></span>'


def on_alert_change(alert: Alert, change: str) -> None:
    """``alerts.on_change`` notifier: toast, badge and beat. Never raises into the caller."""
    try:
        publish_alert_change(alert, change)
    except Exception:
        logger.exception("could not push the %s change of alert %s", change, alert.pk)


def publish_alert_change(alert: Alert, change: str) -> None:
    groups = realtime.watched(_fleet_groups())
    if not groups:
        return
    fragments = {
        "alerts-beat": _beat("alerts-beat"),
        "events-beat": _beat("events-beat"),  # each alert change is written as an event too
        "nav-alerts-count": render_to_string(
            "observability/alerts.html#nav-badge", {"alert_badge": AlertBadge(), "oob": True}
        ),
    }
    if change in TOAST_CHANGES and not alert.is_silenced():
        fragments[f"toast-alert-{alert.pk}-{change}"] = render_to_string(
            "observability/alerts.html#alert-toast", alert_toast(alert, change)
        )
    for group in groups:
        realtime.publish(group, fragments)


def alert_toast(alert: Alert, change: str) -> dict:
    """What an alert's toast says, and how the browser groups it with others like it.

    Toasts of the same rule and change collapse in the browser into one ("3 agents ERRORED");
    ``group_text`` is that line with ``{n}`` for the count.
    """
    rule = alert.rule
    if change == "resolved" and alert.resolved_by:
        # Closed by a person: the condition may well still hold.
        level = "success"
        text = f"Alert resolved by {alert.resolved_by}: {rule.name} on {alert.agent.name}" + (
            f" ({alert.resolution})." if alert.resolution else "."
        )
        group_text = f"{{n}} “{rule.name}” alerts resolved by hand"
    elif change == "resolved":
        level = "success"
        if rule.kind == rule.Kind.STATE:
            text = f"Recovered: {alert.agent.name} is no longer {rule.state}"
            group_text = f"{{n}} agents are no longer {rule.state}"
        else:
            text = f"Recovered: {alert.agent.name} is back within “{rule.name}”"
            group_text = f"{{n}} agents are back within “{rule.name}”"
        if alert.resolved_at:
            text += (
                f" (alert open {_duration((alert.resolved_at - alert.fired_at).total_seconds())})"
            )
        text += "."
    else:
        level = TOAST_LEVELS.get(alert.severity, "info")
        text = f"Alert {alert.get_severity_display().lower()}: {alert.summary}"
        group_text = (
            f"{{n}} agents {rule.state}"
            if rule.kind == rule.Kind.STATE
            else f"{{n}} agents alerting: {rule.name}"
        )
    return {
        "alert": alert,
        "toast": text,
        "toast_level": level,
        "group_key": f"{change}-{rule.pk}",
        "group_text": group_text,
    }


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def on_agent_event(event: agent_events.AgentEvent) -> None:
    """``agents.events`` listener: a beat for open Events pages, the agent's new option in every
    header's switcher, and its state in the switchers that list it. Never raises."""
    try:
        if event.state != "REVOKED" and not _registered(event):
            # To the pages whose switcher lists this agent (it lists a few of a large fleet).
            # The switcher lists every agent but the revoked ones: a revoked agent's state has
            # no element to go to (pages loaded before the revoke keep its last state).
            switcher = obs_live.switcher_group(event.slug)
            if realtime.watched([switcher]):
                state = render_to_string(
                    "observability/switcher.html#state",
                    {"agent": SimpleNamespace(slug=event.slug, state=event.state), "oob": True},
                )
                realtime.publish(switcher, {f"ctx-state-{event.slug}": state})
        groups = realtime.watched(_fleet_groups())
        if not groups:
            return
        fragments = {"events-beat": _beat("events-beat")}
        if _registered(event):
            # An agent made (or renamed) after the page was loaded, the factory's: its option,
            # which holds its state, so its next states have somewhere to go.
            option = render_to_string(
                "observability/switcher.html#option",
                {"agent": SimpleNamespace(slug=event.slug, name=event.name, state=event.state)},
            )
            fragments[f"ctx-add-{event.slug}"] = (
                f'<div hx-swap-oob="beforeend:#ctx-listbox">{option}</div>'
            )
        for group in groups:
            realtime.publish(group, fragments)
    except Exception:
        logger.exception("could not push the events beat for %s", event.slug)


def _registered(event: agent_events.AgentEvent) -> bool:
    return event.kind == "registry" and bool(
        {"created", "slug"} & set(event.data.get("changed", []))
    )


def on_agent_viewed(request, actor, agent) -> None:
    """Opening an agent's page makes it the viewer's agent context."""
    try:
        agent_context.choose(actor, agent)
    except Exception:  # the page must open even if the choice cannot be kept
        logger.exception("could not keep %s as the agent context", agent.slug)
