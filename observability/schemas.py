"""The observability API's schemas and serializers, one per object: the API answers with them and
the ``alerts`` and ``events`` commands print them for ``--json``, so scripts can use either door.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Field, Schema

from agents.schemas import FleetMetrics
from observability.models import Alert, Event, Level, LogEntry

# --- logs -------------------------------------------------------------------------------------


class LogEntryOut(Schema):
    id: int
    ts: datetime
    agent: str
    replica: int
    level: str
    event: str
    message: str
    fields: dict[str, Any]


class LogPageOut(Schema):
    entries: list[LogEntryOut]
    older: str | None  # pass as ``before`` for the next, older page; null on the last page


def log_entry_out(entry: LogEntry) -> dict:
    return {
        "id": entry.pk,
        "ts": entry.ts,
        "agent": entry.agent.slug,
        "replica": entry.replica,
        "level": Level(entry.level).label if entry.level in Level.values else str(entry.level),
        "event": entry.event,
        "message": entry.message,
        "fields": entry.fields or {},
    }


# --- events -----------------------------------------------------------------------------------


class EventOut(Schema):
    id: int
    ts: datetime
    agent: str | None
    agent_name: str | None
    kind: str
    severity: str
    summary: str
    actor: str
    data: dict[str, Any]


class EventPageOut(Schema):
    events: list[EventOut]
    older: int | None  # pass as ``before`` for the next, older page; null on the last page


def event_out(event: Event) -> dict:
    return {
        "id": event.pk,
        "ts": event.ts,
        "agent": event.agent.slug if event.agent_id else None,
        "agent_name": event.agent.name if event.agent_id else None,
        "kind": event.kind,
        "severity": event.severity,
        "summary": event.summary,
        "actor": event.actor,
        "data": event.data,
    }


# --- alerts -----------------------------------------------------------------------------------


class AlertOut(Schema):
    id: int
    rule: str
    condition: str
    agent: str
    agent_name: str
    severity: str
    status: str
    summary: str
    value: float | None
    fired_at: datetime
    last_seen_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str
    silenced: bool
    silenced_until: datetime | None
    silenced_by: str
    resolved_at: datetime | None
    resolved_by: str
    resolution: str
    url: str


class AlertPageOut(Schema):
    count: int
    limit: int
    offset: int
    alerts: list[AlertOut]


class NoteIn(Schema):
    note: str = ""


class SilenceIn(Schema):
    # Checked by the endpoint and the service, so a bad value gets a sentence rather than a
    # schema error.
    minutes: Any = Field(
        None, json_schema_extra={"type": "integer", "minimum": 1, "maximum": 10080}
    )


def alert_url(alert_id: int) -> str:
    return f"/api/platform/alerts/{alert_id}"


def alert_out(alert: Alert) -> dict:
    """An alert as ``AlertOut`` (also ``manage.py alerts list --json``); load it with its agent
    and rule (``alerts.search`` does)."""
    return {
        "id": alert.pk,
        "rule": alert.rule.name,
        "condition": alert.rule.condition,
        "agent": alert.agent.slug,
        "agent_name": alert.agent.name,
        "silenced": alert.is_silenced(),
        "url": alert_url(alert.pk),
        **{
            field: getattr(alert, field)
            for field in (
                "severity", "status", "summary", "value", "fired_at", "last_seen_at",
                "acknowledged_at", "acknowledged_by", "silenced_until", "silenced_by",
                "resolved_at", "resolved_by", "resolution",
            )
        },
    }  # fmt: skip


# --- metrics ----------------------------------------------------------------------------------


class PointOut(Schema):
    at: datetime
    value: float | None


class SeriesOut(Schema):
    metric: str
    agent: str | None  # null: the whole fleet
    start: datetime
    end: datetime
    bucket_seconds: int
    last: float | None
    points: list[PointOut]


class UptimeOut(Schema):
    agent: str | None  # null: the whole fleet (the average agent)
    uptime_24h: float | None  # percent; null when there are no samples (never meant to run)
    uptime_7d: float | None


class MetricsOut(FleetMetrics):
    series: SeriesOut | None = None  # with ?metric=
    uptime: UptimeOut | None = None  # with ?agent=, or with ?metric= for the fleet
