"""JSON API for observability under /api/platform/: logs, events, alerts (and acting on them),
metric series and uptime.

Same service functions, filters and messages as the pages and the ``alerts``/``events``
commands. Times are ISO 8601 (``2026-11-21T14:00:00Z``; a naive time is the portal's time
zone) or an age ago (``15m``, ``2h``, ``7d``), as on the Logs page. A filter the services
cannot answer is a 400 whose ``detail`` says what to change; acting on an alert answers 403
(role), 404 (no such alert), 409 (already acknowledged or resolved) or 400 (bad input) with
``detail`` and ``code``. Schemas and serializers: ``observability.schemas``.

``GET /metrics`` answers the fleet's counts by state and health and, with the same filters as
the Metrics page (``metric``, ``agent``, ``range`` or ``since``/``until``), one series and the
uptime; ``/metrics/series`` and ``/metrics/uptime`` answer those alone.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from django.http import HttpRequest
from django.utils import timezone
from ninja import Query, Router
from ninja.errors import HttpError

from agents.models import Agent
from observability import alerts, events, logs, metrics
from observability.models import Alert
from observability.schemas import (
    AlertOut,
    AlertPageOut,
    EventPageOut,
    LogPageOut,
    MetricsOut,
    NoteIn,
    SeriesOut,
    SilenceIn,
    UptimeOut,
    alert_out,
    event_out,
    log_entry_out,
)
from portal.actors import Actor
from portal.schemas import Problem

router = Router(tags=["observability"])

PAGE_MAX = 500
LOG_PAGE_DEFAULT = 100
ALERT_PAGE_DEFAULT = 50
EVENT_PAGE_DEFAULT = 50
SERIES_POINTS_DEFAULT = 120
SERIES_POINTS_MAX = 1000
# The Metrics page's ranges, with as many buckets by default.
RANGES = metrics.RANGES


# --- reading query parameters -----------------------------------------------------------------
# Query parameters arrive as text and are checked here, so a bad value is answered with a
# sentence (400) rather than a validation dump.


def parse_time(name: str, text: str | None) -> datetime | None:
    """A time from a query parameter: ISO 8601 (naive: the portal's time zone) or an age ago
    such as 15m, 2h or 7d, read as the Logs page reads it; None when empty."""
    if text is None or not text.strip():
        return None
    # An unencoded "+01:00" offset arrives as " 01:00": take it back.
    value = re.sub(r" (\d\d:?\d\d)$", r"+\1", text.strip())
    try:
        return logs.parse_time(value, name)
    except logs.LogQueryError as problem:
        raise HttpError(400, str(problem)) from None


def parse_whole(name: str, text: str | None, default: int, low: int, high: int) -> int:
    """A whole number from ``low`` to ``high`` from a query parameter, or ``default``."""
    if text is None or not str(text).strip():
        return default
    try:
        number = int(str(text).strip())
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise HttpError(
            400, f"{name}={text!r} is out of range; give a whole number from {low} to {high}."
        )
    return number


def parse_cursor(text: str | None) -> int | None:
    """The ``before`` cursor: the ``older`` value of the previous page."""
    if text is None or not text.strip():
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise HttpError(
            400,
            f"before={text!r} is not a cursor; pass the 'older' value of the previous page.",
        ) from None


def agent_filter(slug: str | None) -> Agent | None:
    if not slug:
        return None
    agent = Agent.objects.filter(slug=slug).first()
    if agent is None:
        raise HttpError(400, f"No agent called {slug!r}: use a slug such as wow-cache.")
    return agent


# --- logs -------------------------------------------------------------------------------------


@router.get(
    "/logs",
    response=LogPageOut,
    summary="Agents' log lines, newest first, at or above a level, containing some text",
)
def list_logs(
    request: HttpRequest,
    agent: str | None = None,
    level: str | None = Query(None, description=f"The minimum level: {logs.LEVEL_NAMES}"),
    text: str | None = None,
    since: str | None = None,
    until: str | None = None,
    before: str | None = None,
    limit: str | None = None,
):
    try:
        page = logs.search(
            agent=agent or None,
            level=level or None,
            text=text,
            since=parse_time("since", since),
            until=parse_time("until", until),
            before=before.strip() if before and before.strip() else None,
            limit=parse_whole("limit", limit, LOG_PAGE_DEFAULT, 1, PAGE_MAX),
        )
    except logs.LogQueryError as problem:
        raise HttpError(400, str(problem)) from None
    return {"entries": [log_entry_out(entry) for entry in page.entries], "older": page.next_cursor}


# --- events -----------------------------------------------------------------------------------


@router.get(
    "/events",
    response=EventPageOut,
    summary="The event log, newest first: transitions, health, drift, config, errors, alerts",
)
def list_events(
    request: HttpRequest,
    agent: str | None = None,
    kind: str | None = None,
    severity: str | None = None,
    since: str | None = None,
    until: str | None = None,
    text: str | None = None,
    before: str | None = None,
    limit: str | None = None,
):
    try:
        page = events.search(
            agent=agent or None,
            kind=kind,
            severity=severity,
            since=parse_time("since", since),
            until=parse_time("until", until),
            text=text,
            before=parse_cursor(before),
            limit=parse_whole("limit", limit, EVENT_PAGE_DEFAULT, 1, PAGE_MAX),
        )
    except events.EventQueryError as problem:
        raise HttpError(400, str(problem)) from None
    return {"events": [event_out(event) for event in page.events], "older": page.older}


# --- alerts -----------------------------------------------------------------------------------


def _alert_or_404(alert_id: int) -> Alert:
    try:
        return Alert.objects.select_related("agent", "rule").get(pk=alert_id)
    except Alert.DoesNotExist:
        raise HttpError(
            404, f"There is no alert #{alert_id}; GET /api/platform/alerts lists them."
        ) from None


SILENCE_HINT = 'Send {"minutes": N}: a whole number of minutes from 1 to 10080 (7 days).'
# A refusal raised by the service (or here, for input it cannot take) is answered by
# ``portal.api``'s one handler: its status and ``{"detail", "code"}``.
ACTION_ANSWERS = {200: AlertOut, 400: Problem, 403: Problem, 404: Problem, 409: Problem}


@router.get("/alerts", response=AlertPageOut, summary="Alerts, newest first, with filters")
def list_alerts(
    request: HttpRequest,
    agent: str | None = None,
    status: str | None = Query(None, description="open, firing, acknowledged, resolved or all"),
    severity: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: str | None = None,
    offset: str | None = None,
):
    size = parse_whole("limit", limit, ALERT_PAGE_DEFAULT, 1, PAGE_MAX)
    start = parse_whole("offset", offset, 0, 0, 10**9)
    try:
        found = alerts.search(
            agent=agent_filter(agent),
            status=None if status == "all" else status,
            severity=severity,
            since=parse_time("since", since),
            until=parse_time("until", until),
        )
    except alerts.AlertActionError as problem:
        raise HttpError(400, problem.message) from None
    return {
        "count": found.count(),
        "limit": size,
        "offset": start,
        "alerts": [alert_out(alert) for alert in found[start : start + size]],
    }


@router.get("/alerts/{alert_id}", response={200: AlertOut, 404: Problem}, summary="One alert")
def get_alert(request: HttpRequest, alert_id: int):
    return alert_out(_alert_or_404(alert_id))


@router.post(
    "/alerts/{alert_id}/acknowledge",
    response=ACTION_ANSWERS,
    summary="Say someone is on it: the alert stays open and stops firing (Operator)",
)
def acknowledge_alert(request: HttpRequest, alert_id: int, payload: NoteIn | None = None):
    note = (payload or NoteIn()).note.strip()
    return _act_on(request, alert_id, lambda alert, actor: alerts.acknowledge(alert, actor, note))


@router.post(
    "/alerts/{alert_id}/resolve",
    response=ACTION_ANSWERS,
    summary="Close an alert by hand, with a note (Operator)",
)
def resolve_alert(request: HttpRequest, alert_id: int, payload: NoteIn | None = None):
    note = (payload or NoteIn()).note.strip()
    return _act_on(request, alert_id, lambda alert, actor: alerts.resolve(alert, actor, note))


@router.post(
    "/alerts/{alert_id}/silence",
    response=ACTION_ANSWERS,
    summary='No notifications about an alert for {"minutes": N} (1 to 10080); it stays open',
)
def silence_alert(request: HttpRequest, alert_id: int, payload: SilenceIn | None = None):
    minutes = (payload or SilenceIn()).minutes
    if isinstance(minutes, str) and minutes.strip().isdecimal():
        minutes = int(minutes.strip())
    if isinstance(minutes, bool) or not isinstance(minutes, int):
        raise alerts.AlertActionError(SILENCE_HINT, "invalid_duration")
    try:
        duration = timedelta(minutes=minutes)
    except OverflowError:
        raise alerts.AlertActionError(
            SILENCE_HINT, "invalid_duration", details={"field": "minutes"}
        ) from None
    return _act_on(request, alert_id, lambda alert, actor: alerts.silence(alert, actor, duration))


def _act_on(request: HttpRequest, alert_id: int, act):
    """Find the alert, act on it through the service as the caller, and answer it. A refusal
    (``AlertActionError``, ``PermissionDenied``) is answered by ``portal.api``'s handler."""
    alert = _alert_or_404(alert_id)
    return alert_out(act(alert, Actor.from_request(request)))


# --- metrics ----------------------------------------------------------------------------------


def _time_range(window: str | None, since: str | None, until: str | None):
    """Start, end and the default number of buckets, from ``range`` or ``since``/``until``."""
    start, end = parse_time("since", since), parse_time("until", until)
    if window and (start or end):
        raise HttpError(400, "Give either range or since/until, not both.")
    if start is None and end is not None:
        raise HttpError(400, "until needs a since: give both, or a range such as 6h.")
    if start is not None:
        return start, end or timezone.now(), SERIES_POINTS_DEFAULT
    window = window or "1h"
    if window not in RANGES:
        raise HttpError(400, f"range={window!r} is not a range; use one of {', '.join(RANGES)}.")
    span, points = RANGES[window].span, RANGES[window].points
    end = timezone.now()
    return end - span, end, points


@router.get(
    "/metrics",
    response=MetricsOut,
    summary="The fleet's counts by state and health; with metric/agent/range, a series and uptime",
)
def fleet_metrics(
    request: HttpRequest,
    metric: str | None = Query(None, description=", ".join(metrics.METRICS)),
    agent: str | None = None,
    window: str | None = Query(None, alias="range", description=", ".join(RANGES)),
    since: str | None = None,
    until: str | None = None,
    points: str | None = None,
):
    # The read layer counts more than FleetMetrics shows; the schema keeps its fields.
    answer: dict = {**Agent.objects.fleet_counts(), "series": None, "uptime": None}
    if metric:
        answer["series"] = metric_series(request, metric, agent, window, since, until, points)
    if metric or agent:
        answer["uptime"] = metric_uptime(request, agent)
    return answer


@router.get(
    "/metrics/series",
    response=SeriesOut,
    summary="One metric over time, for one agent or the fleet, in equal buckets",
)
def metric_series(
    request: HttpRequest,
    metric: str = Query("", description=", ".join(metrics.METRICS)),
    agent: str | None = None,
    window: str | None = Query(None, alias="range", description=", ".join(RANGES)),
    since: str | None = None,
    until: str | None = None,
    points: str | None = None,
):
    chosen = agent_filter(agent)
    start, end, default_points = _time_range(window, since, until)
    count = parse_whole("points", points, default_points, 1, SERIES_POINTS_MAX)
    try:
        found = metrics.series(metric, agent=chosen, start=start, end=end, points=count)
    except metrics.MetricQueryError as problem:
        raise HttpError(400, str(problem)) from None
    return {
        "metric": found.metric,
        "agent": chosen.slug if chosen else None,
        "start": found.start,
        "end": found.end,
        "bucket_seconds": found.bucket_seconds,
        "last": found.last,
        "points": [{"at": moment, "value": value} for moment, value in found.points],
    }


@router.get(
    "/metrics/uptime",
    response=UptimeOut,
    summary="Share of the last 24 h and 7 days an agent (or the fleet) was up, in percent",
)
def metric_uptime(request: HttpRequest, agent: str | None = None):
    chosen = agent_filter(agent)
    now = timezone.now()
    return {
        "agent": chosen.slug if chosen else None,
        "uptime_24h": metrics.uptime(chosen, timedelta(hours=24), now=now),
        "uptime_7d": metrics.uptime(chosen, timedelta(days=7), now=now),
    }
