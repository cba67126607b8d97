"""The event log: one row per thing that happened to an agent, written by a recorder that
``agents.events`` calls inside the transaction of the change, so the log never disagrees with
the state it describes; plus the queries behind the Events page, API and command."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from agents import events as agent_events
from agents import services as agent_services
from agents.models import Agent, AgentError, Operation
from observability.models import Event, Severity
from portal.refusals import BadRequest

PAGE_SIZE = 50
MAX_LIMIT = 500

_ERROR_STATES = {"ERRORED"}


class EventQueryError(BadRequest, ValueError):
    """A filter the event log cannot answer; the message says what to change. A ``BadRequest``
    (400) at every door; still the ``ValueError`` it always was."""


def record_agent_event(event: agent_events.AgentEvent) -> None:
    """Turn one agent event into an event-log row (or none, for bookkeeping events)."""
    described = _describe(event)
    if described is None:
        return
    kind, severity, summary, actor, data = described
    Event.objects.create(
        agent_id=event.agent_id,
        kind=kind,
        severity=severity,
        summary=summary[:300],
        actor=actor[:200],
        data=data,
    )


def _describe(event: agent_events.AgentEvent):
    name = event.name or event.slug
    data = {"state": event.state, "health": event.health}
    if event.kind == "transition":
        action = event.data.get("action", "")
        from_state = event.data.get("from_state", "")
        data.update(action=action, from_state=from_state, to_state=event.state)
        if action == "fail":
            exit_details = event.data.get("exit")
            why = agent_services.describe_exit(exit_details) if exit_details else "failed"
            summary = f"{name} {from_state} → {event.state}: {why}"
            return Event.Kind.TRANSITION, Severity.CRITICAL, summary, "system:monitor", data
        operation = _operation(event.data.get("operation"))
        actor = operation.actor if operation else ""
        reason = f" ({operation.reason})" if operation and operation.reason else ""
        summary = f"{name}: {action} {from_state} → {event.state}{reason}"
        severity = Severity.WARNING if event.state in _ERROR_STATES else Severity.INFO
        data["operation"] = event.data.get("operation")
        return Event.Kind.TRANSITION, severity, summary, actor, data
    if event.kind == "operation" and event.data.get("error"):
        operation = _operation(event.data.get("operation"))
        summary = f"{name}: {event.data.get('action')} failed: {event.data['error']}"
        data.update(action=event.data.get("action"), operation=event.data.get("operation"))
        actor = operation.actor if operation else ""
        return Event.Kind.TRANSITION, Severity.WARNING, summary, actor, data
    if event.kind == "health":
        detail = (
            Agent.objects.filter(pk=event.agent_id).values_list("health_detail", flat=True).first()
        )
        summary = f"{name} is {event.health}" + (f": {detail}" if detail else "")
        severity = {"unhealthy": Severity.WARNING, "degraded": Severity.WARNING}.get(
            event.health, Severity.INFO
        )
        return Event.Kind.HEALTH, severity, summary, "system:monitor", data
    if event.kind == "drift":
        found = event.data.get("drift") or []
        if found:
            summary = f"{name} drifted: " + "; ".join(item.get("message", "") for item in found)
            severity = Severity.WARNING
        else:
            summary, severity = f"{name} matches its runtime again", Severity.INFO
        data["drift"] = found
        return Event.Kind.DRIFT, severity, summary, "system:monitor", data
    if event.kind == "registry":
        changed = event.data.get("changed") or []
        data["changed"] = changed
        summary = f"{name}: {', '.join(changed) or 'registry'} changed"
        return Event.Kind.CONFIG, Severity.INFO, summary, event.data.get("actor", ""), data
    if event.kind == "error":
        error = AgentError.objects.filter(pk=event.data.get("error")).first()
        if error is None:
            return None  # errors closed in bulk ("healthy again") are told by the health event
        data.update(error=error.pk, classification=error.classification, status=error.status)
        if event.data.get("recovery"):
            summary = f"{name}: recovery {event.data['recovery']} — {error.summary}"
            return Event.Kind.ERROR, Severity.INFO, summary, error.resolved_by, data
        if error.status == AgentError.Status.OPEN:
            summary = f"{name}: {error.classification} error — {error.summary}"
            return Event.Kind.ERROR, Severity.WARNING, summary, "system:monitor", data
        summary = f"{name}: error {error.status} — {error.summary}"
        return Event.Kind.ERROR, Severity.INFO, summary, error.resolved_by, data
    return None  # "pending" and the like: the transition that follows tells the story


def _operation(pk: object) -> Operation | None:
    if not pk:
        return None
    return Operation.objects.filter(pk=pk).only("actor", "reason").first()


def record(
    kind: str,
    summary: str,
    *,
    agent: Agent | None = None,
    severity: str = Severity.INFO,
    actor: str = "",
    **data,
) -> Event:
    """Write one event directly (alerts, for example), in the caller's transaction."""
    return Event.objects.create(
        agent=agent,
        kind=kind,
        severity=severity,
        summary=summary[:300],
        actor=actor[:200],
        data=data,
    )


@dataclass(frozen=True)
class EventPage:
    events: list[Event]
    older: int | None  # the ``before`` cursor of the next (older) page, None on the last page


def search(
    *,
    agent: Agent | str | None = None,
    kind: str | None = None,
    severity: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    text: str | None = None,
    before: int | None = None,
    limit: int = PAGE_SIZE,
) -> EventPage:
    """Events newest first, filtered; pages by id (``before``)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise EventQueryError(f"limit={limit} is out of range: ask for 1 to {MAX_LIMIT} events.")
    query = filtered(agent=agent, kind=kind, severity=severity, since=since, until=until, text=text)
    if before is not None:
        query = query.filter(id__lt=before)
    rows = list(query.select_related("agent").order_by("-id")[: limit + 1])
    older = rows[limit - 1].id if len(rows) > limit else None
    return EventPage(rows[:limit], older)


def filtered(
    *,
    agent: Agent | str | None = None,
    kind: str | None = None,
    severity: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    text: str | None = None,
) -> QuerySet[Event]:
    query = Event.objects.all()
    if agent is not None:
        query = query.filter(agent=_agent(agent))
    if kind:
        if kind not in Event.Kind.values:
            raise EventQueryError(
                f"Unknown event kind {kind!r}: choose one of {', '.join(Event.Kind.values)}."
            )
        query = query.filter(kind=kind)
    if severity:
        if severity not in Severity.values:
            raise EventQueryError(
                f"Unknown severity {severity!r}: choose one of {', '.join(Severity.values)}."
            )
        query = query.filter(severity=severity)
    if since and until and since > until:
        raise EventQueryError("The start of the time range is after its end: swap them.")
    if since:
        query = query.filter(ts__gte=since)
    if until:
        query = query.filter(ts__lte=until)
    if text:
        query = query.filter(summary__icontains=text.strip())
    return query


def _agent(agent: Agent | str) -> Agent:
    if isinstance(agent, Agent):
        return agent
    found = Agent.objects.filter(slug=agent).first()
    if found is None:
        raise EventQueryError(f"No agent called {agent!r}: use a slug such as wow-cache.")
    return found


def purge(older_than: datetime, batch: int = 10_000) -> int:
    """Delete events older than ``older_than`` in batches; answers how many went."""
    deleted = 0
    while True:
        ids = list(Event.objects.filter(ts__lt=older_than).values_list("id", flat=True)[:batch])
        if not ids:
            return deleted
        deleted += Event.objects.filter(id__in=ids).delete()[0]
