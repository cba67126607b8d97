"""The observability JSON API: logs, events, alerts (reading, acknowledging, resolving,
silencing), metric series and uptime; filters and their 400 sentences, who may do what, audit.

The data is real: agents taken through the lifecycle services and crashed as the monitor
records a crash, alerts fired by ``alerts.evaluate()`` from the rules, log lines stored by the
logs service, metric samples as a scrape stores them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents import services
from agents.models import Agent, State
from agents.runtimes.base import LogLine
from observability import alerts, logs, metrics
from observability.models import Alert, AlertRule, Event, MetricSample
from portal import services as portal_services
from portal.actors import Actor
from portal.models import AuditEntry
from tests.agents import conftest as agents_conftest

ALERT_FIELDS = {
    "id", "rule", "condition", "agent", "agent_name", "severity", "status", "summary", "value",
    "fired_at", "last_seen_at", "acknowledged_at", "acknowledged_by", "silenced",
    "silenced_until", "silenced_by", "resolved_at", "resolved_by", "resolution", "url",
}  # fmt: skip

# The agents' fixtures: a private agent root per test, the seeded registry, actions run here.
agent_root, seeded, act = agents_conftest.agent_root, agents_conftest.seeded, agents_conftest.act


@pytest.fixture(autouse=True)
def default_rules(db):
    alerts.ensure_default_rules(Actor.command("test"))


@pytest.fixture
def admin_token(admin) -> str:
    return portal_services.create_api_token(admin, Actor.command("test"))[1]


@pytest.fixture
def operator_token(operator) -> str:
    return portal_services.create_api_token(operator, Actor.command("test"))[1]


@pytest.fixture
def viewer_token(viewer) -> str:
    return portal_services.create_api_token(viewer, Actor.command("test"))[1]


def api(client: Client, method: str, path: str, token: str | None = None, **data):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    if method == "get":
        return client.get(f"/api/platform{path}", data, **headers)
    return client.post(
        f"/api/platform{path}", data or None, content_type="application/json", **headers
    )


@pytest.fixture
def fleet(seeded, act) -> dict:
    """WowCache deployed, then crashed (ERRORED, as the monitor records it), and WowEvent
    deployed but never started, watched by a rule an Admin added; one evaluation fires a
    critical alert for WowCache and a warning for WowEvent."""
    cache, event = seeded["wow-cache"], seeded["wow-event"]
    for agent in (cache, event):
        for action in ("provision", "deploy"):
            assert act(agent, action).status == "succeeded"
    assert services.record_crash(cache, {"exit_code": 1, "replica": 0})
    AlertRule.objects.create(
        name="Deployed, not started", kind="state", state=State.DEPLOYED, severity="warning"
    )
    assert alerts.evaluate() == {"fired": 2, "resolved": 0}
    return {
        "cache": Agent.objects.get(pk=cache.pk),
        "event": Agent.objects.get(pk=event.pk),
        "critical": Alert.objects.get(agent=cache),
        "warning": Alert.objects.get(agent=event),
    }


def ids(body: dict, key: str = "alerts") -> list[int]:
    return [row["id"] for row in body[key]]


# --- who may call -----------------------------------------------------------------------------

READS = ["/logs", "/events", "/alerts", "/metrics/series?metric=up", "/metrics/uptime"]


def test_callers_without_a_role_or_credentials_are_refused(fleet, client, as_outsider) -> None:
    alert = fleet["critical"]
    for path in [*READS, f"/alerts/{alert.pk}"]:
        assert api(client, "get", path).status_code == 401, path
        assert api(as_outsider, "get", path).status_code == 401, path
        wrong = api(client, "get", path, token="wpt_not-a-token")
        assert wrong.status_code == 401 and wrong.json()["detail"], path
    for verb in ("acknowledge", "resolve", "silence"):
        assert api(client, "post", f"/alerts/{alert.pk}/{verb}", minutes=5).status_code == 401
    alert.refresh_from_db()
    assert alert.status == Alert.Status.FIRING and alert.silenced_until is None


def test_a_viewer_reads_everything_by_token_and_by_session(
    fleet, client, viewer_token, as_viewer
) -> None:
    for path in READS:
        assert api(client, "get", path, viewer_token).status_code == 200, path
        assert api(as_viewer, "get", path).status_code == 200, path


def test_the_fleet_counts_at_metrics_still_answer(fleet, client, viewer_token) -> None:
    body = api(client, "get", "/metrics", viewer_token).json()
    assert body["total"] == 14
    assert body["by_state"]["ERRORED"] == 1 and body["by_state"]["DEPLOYED"] == 1


def test_the_endpoints_are_in_the_openapi_document(as_viewer) -> None:
    paths = as_viewer.get("/api/platform/openapi.json").json()["paths"]
    for path in [
        "/api/platform/logs", "/api/platform/events", "/api/platform/alerts",
        "/api/platform/alerts/{alert_id}", "/api/platform/alerts/{alert_id}/acknowledge",
        "/api/platform/alerts/{alert_id}/resolve", "/api/platform/alerts/{alert_id}/silence",
        "/api/platform/metrics/series", "/api/platform/metrics/uptime", "/api/platform/metrics",
    ]:  # fmt: skip
        assert path in paths, path


# --- alerts: reading --------------------------------------------------------------------------


def test_alerts_are_listed_newest_first_with_their_rule_and_condition(
    fleet, client, viewer_token
) -> None:
    response = api(client, "get", "/alerts", viewer_token)
    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["limit"], body["offset"]) == (2, 50, 0)
    critical = next(row for row in body["alerts"] if row["agent"] == "wow-cache")
    assert set(critical) == ALERT_FIELDS
    assert (critical["rule"], critical["condition"]) == ("Agent errored", "agent is ERRORED")
    assert (critical["severity"], critical["status"], critical["agent_name"]) == (
        "critical", "firing", "WowCache",
    )  # fmt: skip
    assert critical["summary"].startswith("WowCache is ERRORED")
    assert critical["silenced"] is False and critical["resolved_by"] == ""
    assert critical["url"] == f"/api/platform/alerts/{fleet['critical'].pk}"
    fired_at = datetime.fromisoformat(critical["fired_at"])  # ISO 8601, to the millisecond
    assert abs(fired_at - fleet["critical"].fired_at) < timedelta(milliseconds=1)
    warning = next(row for row in body["alerts"] if row["agent"] == "wow-event")
    assert (warning["rule"], warning["severity"]) == ("Deployed, not started", "warning")


def test_alert_filters(fleet, client, viewer_token, operator) -> None:
    critical, warning = fleet["critical"], fleet["warning"]
    operator_actor = Actor(kind="user", user=operator, source="127.0.0.1")
    alerts.acknowledge(warning, operator_actor)
    Alert.objects.filter(pk=critical.pk).update(fired_at=timezone.now() - timedelta(hours=3))

    def found(**filters) -> list[int]:
        response = api(client, "get", "/alerts", viewer_token, **filters)
        assert response.status_code == 200, (filters, response.json())
        return ids(response.json())

    assert found() == [warning.pk, critical.pk]
    assert found(status="open") == [warning.pk, critical.pk]
    assert found(status="all") == [warning.pk, critical.pk]
    assert found(status="firing") == [critical.pk]
    assert found(status="acknowledged") == [warning.pk]
    assert found(status="resolved") == []
    assert found(severity="critical") == [critical.pk]
    assert found(agent="wow-event") == [warning.pk]
    assert found(agent="wow-memory") == []
    assert found(since="2h") == [warning.pk]
    hour_ago = (timezone.now() - timedelta(hours=1)).astimezone(UTC)
    assert found(until=hour_ago.isoformat()) == [critical.pk]
    assert found(since=hour_ago.strftime("%Y-%m-%dT%H:%M:%SZ")) == [warning.pk]
    page = api(client, "get", "/alerts", viewer_token, limit=1, offset=1).json()
    assert (page["count"], ids(page)) == (2, [critical.pk])


@pytest.mark.parametrize(
    ("filters", "sentence"),
    [
        ({"status": "burning"}, "Unknown alert status 'burning': choose open, firing,"),
        ({"severity": "loud"}, "Unknown severity 'loud': choose one of info, warning, critical."),
        ({"agent": "wow-nothing"}, "No agent called 'wow-nothing': use a slug such as wow-cache."),
        ({"since": "yesterday"}, "since='yesterday' is not a time; use ISO 8601"),
        ({"since": "1h", "until": "2h"}, "The start of the time range is after its end"),
        ({"limit": "0"}, "limit='0' is out of range; give a whole number from 1 to 500."),
        ({"limit": "many"}, "limit='many' is out of range; give a whole number from 1 to 500."),
        ({"limit": "501"}, "limit='501' is out of range"),
        ({"offset": "-1"}, "offset='-1' is out of range"),
    ],
)
def test_bad_alert_filters_are_answered_400_with_what_to_change(
    fleet, client, viewer_token, filters, sentence
) -> None:
    response = api(client, "get", "/alerts", viewer_token, **filters)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(sentence), response.json()


def test_listing_alerts_costs_the_same_queries_for_one_or_many(fleet, client, viewer_token) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api(client, "get", "/alerts", viewer_token).status_code == 200
        return len(captured)

    queries()  # the first use of a token records when it was used
    two = queries()
    Alert.objects.filter(pk=fleet["warning"].pk).delete()
    assert queries() == two


def test_one_alert_and_an_unknown_one(fleet, client, viewer_token) -> None:
    alert = fleet["critical"]
    body = api(client, "get", f"/alerts/{alert.pk}", viewer_token).json()
    assert (body["id"], body["agent"], body["status"]) == (alert.pk, "wow-cache", "firing")
    missing = api(client, "get", "/alerts/424242", viewer_token)
    assert missing.status_code == 404
    assert missing.json()["detail"] == (
        "There is no alert #424242; GET /api/platform/alerts lists them."
    )


# --- alerts: acting ---------------------------------------------------------------------------


def test_an_operator_acknowledges_once_and_it_is_audited(fleet, client, operator_token) -> None:
    alert = fleet["critical"]
    response = api(client, "post", f"/alerts/{alert.pk}/acknowledge", operator_token, note="on it")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "acknowledged"
    assert body["acknowledged_by"].startswith("token:") and "(otto)" in body["acknowledged_by"]
    assert body["acknowledged_at"] is not None
    entry = AuditEntry.objects.get(action="alert.acknowledge")
    assert (entry.outcome, entry.target, entry.detail["alert"]) == (
        "success",
        "wow-cache",
        alert.pk,
    )
    assert entry.user.username == "otto" and entry.detail["note"] == "on it"
    assert Event.objects.filter(kind="alert", summary__startswith="Alert acknowledged").count() == 1

    again = api(client, "post", f"/alerts/{alert.pk}/acknowledge", operator_token)
    assert again.status_code == 409
    assert again.json() == {
        "detail": f"Alert #{alert.pk} was already acknowledged by {body['acknowledged_by']}.",
        "code": "already_acknowledged",
    }
    refused = AuditEntry.objects.get(action="alert.acknowledge", outcome="refused")
    assert refused.detail["reason"] == again.json()["detail"]


def test_resolving_by_hand_keeps_the_note_and_a_resolved_alert_cannot_be_acted_on(
    fleet, client, operator_token, as_operator
) -> None:
    alert = fleet["warning"]
    # Without a body, and through the browser session, too.
    plain = as_operator.generic("POST", f"/api/platform/alerts/{fleet['critical'].pk}/resolve")
    assert plain.status_code == 200, plain.content
    response = api(client, "post", f"/alerts/{alert.pk}/resolve", operator_token, note="known")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["resolution"]) == ("resolved", "known")
    assert body["resolved_by"].startswith("token:") and body["resolved_at"] is not None
    assert Alert.objects.get(pk=fleet["critical"].pk).resolution == "Resolved by hand."
    for verb, data in (("resolve", {}), ("acknowledge", {}), ("silence", {"minutes": 10})):
        conflict = api(client, "post", f"/alerts/{alert.pk}/{verb}", operator_token, **data)
        assert conflict.status_code == 409, verb
        assert conflict.json()["code"] == "resolved"
        assert conflict.json()["detail"].startswith(f"Alert #{alert.pk} is already resolved by")
    assert AuditEntry.objects.filter(action__startswith="alert.", outcome="refused").count() == 3
    # Resolved while its condition still holds: the rule stays quiet for that agent.
    assert alerts.evaluate() == {"fired": 0, "resolved": 0}


def test_silencing_for_some_minutes(fleet, client, operator_token) -> None:
    alert = fleet["critical"]
    before = timezone.now()
    response = api(client, "post", f"/alerts/{alert.pk}/silence", operator_token, minutes=90)
    assert response.status_code == 200
    body = response.json()
    until = datetime.fromisoformat(body["silenced_until"])
    assert before + timedelta(minutes=90) <= until <= timezone.now() + timedelta(minutes=90)
    assert body["silenced"] is True and body["status"] == "firing"
    assert body["silenced_by"].startswith("token:")
    entry = AuditEntry.objects.get(action="alert.silence")
    assert entry.detail["minutes"] == 90


@pytest.mark.parametrize(
    "body",
    [{}, {"minutes": "soon"}, {"minutes": 1.5}, {"minutes": True}, {"minutes": 0},
     {"minutes": 10081}],
)  # fmt: skip
def test_a_silence_needs_whole_minutes_up_to_a_week(fleet, client, operator_token, body) -> None:
    alert = fleet["critical"]
    response = api(client, "post", f"/alerts/{alert.pk}/silence", operator_token, **body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_duration"
    assert "minute" in response.json()["detail"]
    alert.refresh_from_db()
    assert alert.silenced_until is None


def test_a_viewer_cannot_act_and_the_refusals_are_audited(fleet, client, viewer_token) -> None:
    alert = fleet["critical"]
    for verb, data in (
        ("acknowledge", {}),
        ("resolve", {"note": "x"}),
        ("silence", {"minutes": 5}),
    ):
        response = api(client, "post", f"/alerts/{alert.pk}/{verb}", viewer_token, **data)
        assert response.status_code == 403, verb
        assert response.json() == {
            "detail": f"You cannot {verb} alerts: it needs the Operator role and you are "
            "Viewer. Ask an Admin if you need it.",
            "code": "forbidden",
        }
    alert.refresh_from_db()
    assert (alert.status, alert.silenced_until, alert.resolved_by) == ("firing", None, "")
    refused = AuditEntry.objects.filter(outcome="refused").order_by("at")
    assert [entry.action for entry in refused] == [
        "alert.acknowledge", "alert.resolve", "alert.silence",
    ]  # fmt: skip
    assert all(entry.user.username == "vera" for entry in refused)


def test_acting_on_an_unknown_alert_is_404(db, client, operator_token) -> None:
    for verb in ("acknowledge", "resolve", "silence"):
        response = api(client, "post", f"/alerts/99999/{verb}", operator_token, minutes=5)
        assert response.status_code == 404, verb
        assert response.json()["detail"].startswith("There is no alert #99999")
    assert not AuditEntry.objects.filter(action__startswith="alert.").exists()


def test_a_session_post_without_the_csrf_token_is_refused(fleet, operator) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    alert = fleet["critical"]
    response = browser.post(f"/api/platform/alerts/{alert.pk}/acknowledge")
    assert response.status_code == 403
    alert.refresh_from_db()
    assert alert.status == Alert.Status.FIRING


# --- events -----------------------------------------------------------------------------------


def test_events_newest_first_with_filters_and_pages(fleet, client, viewer_token) -> None:
    response = api(client, "get", "/events", viewer_token)
    assert response.status_code == 200
    body = response.json()
    stored = list(Event.objects.order_by("-id").values_list("id", flat=True))
    assert ids(body, "events") == stored[:50] and body["older"] is None
    first = body["events"][0]
    assert set(first) == {
        "id", "ts", "agent", "agent_name", "kind", "severity", "summary", "actor", "data",
    }  # fmt: skip
    assert first["kind"] == "alert" and first["actor"] == "system:alerts"

    def found(**filters) -> list[dict]:
        answer = api(client, "get", "/events", viewer_token, **filters)
        assert answer.status_code == 200, (filters, answer.json())
        return answer.json()["events"]

    crashed = found(agent="wow-cache", kind="transition", severity="critical")
    assert [row["summary"] for row in crashed] == [
        "WowCache DEPLOYED → ERRORED: process exited with code 1"
    ]
    assert crashed[0]["actor"] == "system:monitor" and crashed[0]["agent_name"] == "WowCache"
    assert {row["agent"] for row in found(kind="alert")} == {"wow-cache", "wow-event"}
    assert all("Alert fired" in row["summary"] for row in found(text="alert fired"))
    assert found(since="1h") == found()
    assert found(until=(timezone.now() - timedelta(hours=1)).isoformat()) == []

    pages, before = [], None
    while True:
        page = api(
            client,
            "get",
            "/events",
            viewer_token,
            limit=3,
            **({"before": before} if before else {}),
        )
        pages.append(ids(page.json(), "events"))
        before = page.json()["older"]
        if before is None:
            break
    assert [event for page in pages for event in page] == stored
    assert all(len(page) == 3 for page in pages[:-1])


@pytest.mark.parametrize(
    ("filters", "sentence"),
    [
        ({"kind": "party"}, "Unknown event kind 'party': choose one of transition, health,"),
        ({"severity": "loud"}, "Unknown severity 'loud'"),
        ({"agent": "wow-nothing"}, "No agent called 'wow-nothing'"),
        ({"since": "31/01/2025"}, "since='31/01/2025' is not a time"),
        ({"before": "abc"}, "before='abc' is not a cursor; pass the 'older' value"),
        ({"limit": "1000"}, "limit='1000' is out of range; give a whole number from 1 to 500."),
    ],
)
def test_bad_event_filters_are_400(db, client, viewer_token, filters, sentence) -> None:
    response = api(client, "get", "/events", viewer_token, **filters)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(sentence), response.json()


# --- logs -------------------------------------------------------------------------------------


def log(slug: str, at: datetime, level: str, message: str, **extra) -> LogLine:
    """One line as agentd writes it."""
    stamp = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    record = {"ts": stamp, "level": level, "slug": slug, "event": "task", "message": message}
    return LogLine(slug=slug, replica=0, ts="", text=json.dumps(record | extra))


@pytest.fixture
def logged(seeded) -> dict:
    """Lines WowCache and WowEvent wrote in the last ten minutes, stored by the logs service."""
    now = timezone.now()
    cache, event = seeded["wow-cache"], seeded["wow-event"]
    logs.ingest(cache.pk, [
        log("wow-cache", now - timedelta(minutes=10), "info", "cache warm"),
        log("wow-cache", now - timedelta(minutes=8), "warning", "evicting 120 keys", keys=120),
        log("wow-cache", now - timedelta(minutes=5), "error", "task 7 failed: timeout"),
    ])  # fmt: skip
    logs.ingest(event.pk, [
        log("wow-event", now - timedelta(minutes=9), "debug", "poll"),
        log("wow-event", now - timedelta(minutes=2), "info", "published 3 events"),
    ])  # fmt: skip
    return {"now": now}


def test_logs_newest_first_with_level_text_agent_and_time_filters(
    logged, client, viewer_token
) -> None:
    response = api(client, "get", "/logs", viewer_token)
    assert response.status_code == 200
    body = response.json()
    assert [row["message"] for row in body["entries"]] == [
        "published 3 events", "task 7 failed: timeout", "evicting 120 keys", "poll", "cache warm",
    ]  # fmt: skip
    assert body["older"] is None
    evicting = body["entries"][2]
    assert set(evicting) == {"id", "ts", "agent", "replica", "level", "event", "message", "fields"}
    assert (evicting["agent"], evicting["level"], evicting["event"]) == (
        "wow-cache", "warning", "task",
    )  # fmt: skip
    assert evicting["fields"] == {"keys": 120}

    def messages(**filters) -> list[str]:
        answer = api(client, "get", "/logs", viewer_token, **filters)
        assert answer.status_code == 200, (filters, answer.json())
        return [row["message"] for row in answer.json()["entries"]]

    assert messages(level="warning") == ["task 7 failed: timeout", "evicting 120 keys"]
    assert messages(level="WARN", agent="wow-cache") == messages(level="warning")
    assert messages(agent="wow-event") == ["published 3 events", "poll"]
    assert messages(text="TASK 7") == ["task 7 failed: timeout"]
    assert messages(since="6m") == ["published 3 events", "task 7 failed: timeout"]
    until = (logged["now"] - timedelta(minutes=8, seconds=30)).isoformat()
    assert messages(until=until) == ["poll", "cache warm"]


def test_logs_page_older_with_the_cursor(logged, client, viewer_token) -> None:
    seen, before = [], None
    while True:
        filters = {"limit": 2, **({"before": before} if before else {})}
        body = api(client, "get", "/logs", viewer_token, **filters).json()
        seen.append([row["message"] for row in body["entries"]])
        before = body["older"]
        if before is None:
            break
    assert seen == [
        ["published 3 events", "task 7 failed: timeout"], ["evicting 120 keys", "poll"],
        ["cache warm"],
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("filters", "sentence"),
    [
        ({"level": "loud"}, "Unknown level 'loud'; use one of debug, info, warning, error"),
        ({"agent": "wow-nothing"}, "There is no agent 'wow-nothing'"),
        ({"before": "yesterday"}, "before='yesterday' is not a page cursor"),
        ({"since": "soon"}, "since='soon' is not a time"),
        ({"since": "1h", "until": "2h"}, "since ("),
        ({"limit": "501"}, "limit='501' is out of range; give a whole number from 1 to 500."),
        ({"text": "x" * 201}, "The text to search for is 201 characters long"),
    ],
)
def test_bad_log_filters_are_400(seeded, client, viewer_token, filters, sentence) -> None:
    response = api(client, "get", "/logs", viewer_token, **filters)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(sentence), response.json()


# --- metrics ----------------------------------------------------------------------------------


@pytest.fixture
def sampled(seeded) -> dict:
    """Half an hour of scrapes every 15 s: WowEvent up, handling 2 then 4 tasks a second;
    WowCache down (ERRORED: up 0, nothing else), as ``metrics.scrape_all`` stores them; then the
    5-minute averages, as the downsampling task makes them."""
    now = timezone.now().replace(second=0, microsecond=0)
    cache, event = seeded["wow-cache"], seeded["wow-event"]
    rows = []
    for index in range(120):
        at = now - timedelta(seconds=15 * index)
        rate = 4.0 if index < 60 else 2.0
        rows.append(MetricSample(agent=event, ts=at, up=1.0, throughput=rate, failures=0.0))
        rows.append(MetricSample(agent=cache, ts=at, up=0.0))
    MetricSample.objects.bulk_create(rows)
    metrics.downsample(now=now + timedelta(minutes=5))
    return {"now": now, "cache": cache, "event": event}


def test_a_series_has_iso_times_and_the_stored_values(sampled, client, viewer_token) -> None:
    response = api(
        client, "get", "/metrics/series", viewer_token, metric="throughput", agent="wow-event"
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["metric"], body["agent"]) == ("throughput", "wow-event")
    start, end = datetime.fromisoformat(body["start"]), datetime.fromisoformat(body["end"])
    assert timedelta(minutes=59) < end - start <= timedelta(hours=1)
    assert body["bucket_seconds"] == 30 and body["last"] == 4.0
    values = {datetime.fromisoformat(point["at"]): point["value"] for point in body["points"]}
    assert len(values) in (120, 121)  # an hour of 30 s buckets, the first one cut
    filled = [value for value in values.values() if value is not None]
    # Thirty minutes of samples; a bucket may straddle the change from 2 to 4 tasks a second.
    assert {2.0, 4.0} <= set(filled) <= {2.0, 3.0, 4.0} and len(filled) in (60, 61)
    assert values[min(values)] is None  # an hour ago nothing was scraped yet
    fleet = api(client, "get", "/metrics/series", viewer_token, metric="up", range="6h").json()
    assert fleet["agent"] is None and fleet["last"] == 0.5
    assert fleet["bucket_seconds"] == 180
    # As many buckets as the Metrics page draws for the range: 144 over a day.
    day = api(client, "get", "/metrics/series", viewer_token, metric="up", range="24h").json()
    assert day["bucket_seconds"] == 600 and len(day["points"]) in (144, 145)


def test_the_metrics_endpoint_keeps_its_counts_and_takes_the_pages_filters(
    sampled, client, viewer_token
) -> None:
    plain = api(client, "get", "/metrics", viewer_token).json()
    assert plain["total"] == 14 and plain["series"] is None and plain["uptime"] is None

    body = api(
        client, "get", "/metrics", viewer_token, metric="throughput", agent="wow-event", range="1h"
    ).json()
    assert body["total"] == 14 and body["by_state"]
    assert body["series"]["metric"] == "throughput" and body["series"]["agent"] == "wow-event"
    assert body["series"]["last"] == 4.0
    assert body["uptime"] == {"agent": "wow-event", "uptime_24h": 100.0, "uptime_7d": 100.0}

    bad = api(client, "get", "/metrics", viewer_token, metric="heat")
    assert bad.status_code == 400 and "Unknown metric 'heat'" in bad.json()["detail"]


def test_a_series_over_custom_times(sampled, client, viewer_token) -> None:
    now = sampled["now"]
    body = api(
        client, "get", "/metrics/series", viewer_token, metric="throughput", agent="wow-event",
        since=(now - timedelta(minutes=10)).isoformat(), until=now.isoformat(), points=10,
    ).json()  # fmt: skip
    assert body["bucket_seconds"] == 60
    assert [point["value"] for point in body["points"]] == [4.0] * 10


@pytest.mark.parametrize(
    ("filters", "sentence"),
    [
        ({"metric": "happiness"}, "Unknown metric 'happiness': choose one of cpu_percent,"),
        ({"metric": ""}, "Unknown metric '': choose one of"),
        ({"metric": "up", "range": "2y"}, "range='2y' is not a range; use one of 1h, 6h, 24h, 7d."),
        ({"metric": "up", "range": "1h", "since": "2h"}, "Give either range or since/until"),
        ({"metric": "up", "until": "1h"}, "until needs a since"),
        ({"metric": "up", "since": "1h", "until": "2h"}, "The start of the time range must be"),
        ({"metric": "up", "since": "noon"}, "since='noon' is not a time"),
        ({"metric": "up", "agent": "wow-nothing"}, "No agent called 'wow-nothing'"),
        ({"metric": "up", "points": "0"}, "points='0' is out of range"),
    ],
)
def test_bad_series_questions_are_400(seeded, client, viewer_token, filters, sentence) -> None:
    response = api(client, "get", "/metrics/series", viewer_token, **filters)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(sentence), response.json()


def test_uptime_over_a_day_and_a_week(sampled, client, viewer_token) -> None:
    def uptime(**filters) -> dict:
        response = api(client, "get", "/metrics/uptime", viewer_token, **filters)
        assert response.status_code == 200
        return response.json()

    assert uptime(agent="wow-event") == {
        "agent": "wow-event",
        "uptime_24h": 100.0,
        "uptime_7d": 100.0,
    }
    assert uptime(agent="wow-cache") == {"agent": "wow-cache", "uptime_24h": 0.0, "uptime_7d": 0.0}
    assert uptime() == {"agent": None, "uptime_24h": 50.0, "uptime_7d": 50.0}
    never = uptime(agent="wow-memory")
    assert never["uptime_24h"] is None and never["uptime_7d"] is None
    assert api(client, "get", "/metrics/uptime", viewer_token, agent="x").status_code == 400
