"""The Logs, Events and Alerts pages and the header's agent context switcher: every page for every
role, filters in the URL that narrow what is shown, bad filter values answered with a sentence
(never a traceback), the agent context kept per user across sessions, the alert buttons and their
refusal for Viewers, the log download, and the live pushes an alert change sends."""

from __future__ import annotations

import asyncio
import html
import re
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.models import Agent
from agents.runtimes import LogLine
from observability import alerts, events, logs, notify
from observability.models import AgentContext, Alert, AlertRule, Event, Level, Severity
from portal.actors import Actor
from portal.asgi import application
from portal.models import AuditEntry

HTMX = {"HX-Request": "true"}
COMMAND = Actor.command("test")
PAGES = ["/logs/", "/events/", "/alerts/"]

pytestmark = pytest.mark.django_db


def _text(response) -> str:
    return html.unescape(response.content.decode())


def _flat(markup: str) -> str:
    words = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", markup))).strip()
    return re.sub(r" ([,.:;])", r"\1", words)


def _toasts(response) -> list[tuple[str, str]]:
    found = re.findall(
        r'<div class="toast toast-(\w+)[^"]*" role="(?:status|alert)"[^>]*><span>(.*?)</span>',
        response.content.decode(),
        re.S,
    )
    return [(level, _flat(text)) for level, text in found]


def _log(agent: Agent, message: str, *, level: str = "info", ago: float = 0, **fields) -> None:
    moment = timezone.now() - timedelta(seconds=ago)
    record = {
        "ts": moment.isoformat().replace("+00:00", "Z"),
        "level": level,
        "message": message,
        **fields,
    }
    import json

    logs.ingest(agent.pk, [LogLine(agent.slug, 0, "", json.dumps(record))])


def _event(agent: Agent | None, summary: str, *, kind=Event.Kind.HEALTH, severity="info", ago=0):
    event = events.record(kind, summary, agent=agent, severity=severity, actor="system:test")
    if ago:
        Event.objects.filter(pk=event.pk).update(ts=timezone.now() - timedelta(seconds=ago))
    return event


def _alert(agent: Agent, summary: str, *, severity=Severity.CRITICAL, status="firing", **fields):
    rule = AlertRule.objects.get(name="Agent errored")
    return Alert.objects.create(
        rule=rule, agent=agent, severity=severity, status=status, summary=summary, **fields
    )


@pytest.fixture(autouse=True)
def default_rules(db):
    alerts.ensure_default_rules(COMMAND)


@pytest.fixture
def cache(seeded) -> Agent:
    return seeded["wow-cache"]


@pytest.fixture
def search(seeded) -> Agent:
    return seeded["wow-search"]


# --- every page, every role ----------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("role_client", ["as_viewer", "as_operator", "as_admin"])
def test_every_role_sees_each_page_with_the_switcher_and_the_chip(
    request, seeded, role_client, path
) -> None:
    client = request.getfixturevalue(role_client)
    response = client.get(path)
    assert response.status_code == 200
    page = _text(response)
    assert 'id="ctx-button"' in page and 'role="listbox"' in page
    assert "Showing: All agents" in _flat(page)
    assert 'aria-current="page"' in page
    # Every agent is in the switcher's list, with its slug and state.
    assert page.count('role="option"') == 1 + len(seeded)
    assert 'value="wow-cache" role="option"' in page


@pytest.mark.parametrize("path", PAGES)
def test_the_pages_need_a_role(seeded, client, as_outsider, path) -> None:
    assert client.get(path).status_code == 302
    assert as_outsider.get(path).status_code == 403


@pytest.mark.parametrize("path", PAGES)
def test_the_pages_refuse_post(as_operator, seeded, path) -> None:
    assert as_operator.post(path).status_code == 405


def test_the_sidebar_links_to_the_pages_instead_of_coming_soon(as_viewer, seeded) -> None:
    page = _text(as_viewer.get("/"))
    for path in PAGES:
        assert f'href="{path}"' in page
    assert "coming soon" not in _text(as_viewer.get("/logs/"))


# --- the agent context ---------------------------------------------------------------------


def test_agent_in_the_url_is_remembered_and_later_pages_redirect_to_it(
    as_viewer, viewer, cache
) -> None:
    response = as_viewer.get("/events/?agent=wow-cache")
    assert response.status_code == 200
    assert AgentContext.objects.get(user=viewer).agent == cache
    assert "Showing: WowCache" in _flat(_text(response))
    assert 'aria-label="Show all agents"' in _text(response)
    for path in PAGES:
        response = as_viewer.get(path)
        assert response.status_code == 302
        assert response["Location"] == f"{path}?agent=wow-cache"
    # Other filters stay in the URL it redirects to.
    assert (
        as_viewer.get("/events/?kind=health")["Location"] == "/events/?agent=wow-cache&kind=health"
    )


def test_all_clears_the_remembered_agent(as_viewer, viewer, cache) -> None:
    as_viewer.get("/logs/?agent=wow-cache")
    response = as_viewer.get("/alerts/?agent=all")
    assert response.status_code == 200
    assert AgentContext.objects.get(user=viewer).agent is None
    assert as_viewer.get("/logs/").status_code == 200


def test_the_context_survives_signing_out_and_in_again(viewer, cache, password) -> None:
    first = Client()
    first.force_login(viewer)
    first.get("/logs/?agent=wow-cache")
    first.post("/logout/")
    second = Client()
    assert second.login(username=viewer.username, password=password)
    response = second.get("/alerts/")
    assert response["Location"] == "/alerts/?agent=wow-cache"
    assert 'aria-selected="true" data-ctx-option data-search="wowcache wow-cache"' in _text(
        second.get(response["Location"])
    )


def test_each_user_has_their_own_context(as_viewer, as_operator, cache) -> None:
    as_viewer.get("/logs/?agent=wow-cache")
    assert as_operator.get("/logs/").status_code == 200


def test_an_unknown_agent_is_a_message_not_an_error(as_viewer, cache) -> None:
    as_viewer.get("/events/?agent=wow-cache")
    response = as_viewer.get("/events/?agent=wow-nothing")
    assert response.status_code == 200
    assert "There is no agent called “wow-nothing”" in _text(response)
    # The previous choice is what the page shows.
    assert "Showing: WowCache" in _flat(_text(response))


def test_the_switcher_posts_the_choice_and_returns_to_the_page(
    as_viewer, viewer, cache, search
) -> None:
    response = as_viewer.post(
        "/context/",
        {"agent": "wow-search", "next": "/logs/?agent=wow-cache&level=error&before=1_2"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/logs/?agent=wow-search&level=error"
    assert AgentContext.objects.get(user=viewer).agent == search
    assert AuditEntry.objects.filter(action="context.choose", target="wow-search").count() == 1


def test_choosing_on_a_page_that_does_not_follow_the_context_keeps_its_url(
    as_viewer, viewer, cache
) -> None:
    response = as_viewer.post("/context/", {"agent": "wow-cache", "next": "/agents/?state=RUNNING"})
    assert response["Location"] == "/agents/?state=RUNNING"
    assert AgentContext.objects.get(user=viewer).agent == cache


def test_choosing_on_an_agents_page_goes_to_the_chosen_agents_page(as_viewer, cache) -> None:
    response = as_viewer.post(
        "/context/", {"agent": "wow-search", "next": "/agents/wow-cache/history/"}
    )
    assert response["Location"] == "/agents/wow-search/history/"
    response = as_viewer.post("/context/", {"agent": "all", "next": "/agents/wow-cache/"})
    assert response["Location"] == "/agents/"


def test_choosing_all_clears_and_a_bad_choice_says_so(as_viewer, viewer, cache) -> None:
    as_viewer.post("/context/", {"agent": "wow-cache", "next": "/events/"})
    response = as_viewer.post("/context/", {"agent": "all", "next": "/events/?agent=wow-cache"})
    assert response["Location"] == "/events/?agent=all"
    assert AgentContext.objects.get(user=viewer).agent is None
    response = as_viewer.post(
        "/context/", {"agent": "nope", "next": "https://evil.test/"}, follow=True
    )
    assert "There is no agent called “nope”" in _text(response)


def test_the_switcher_needs_a_role_and_a_post(client, as_outsider, as_viewer, cache) -> None:
    assert as_viewer.get("/context/").status_code == 405
    assert as_outsider.post("/context/", {"agent": "wow-cache"}).status_code == 403


def test_opening_an_agents_page_makes_it_the_context_when_agents_offers_the_hook(
    as_viewer, viewer, cache
) -> None:
    # The hook is portal.extensions.on_agent_viewed, which notify.connect() registers.
    notify.connect()
    as_viewer.get("/agents/wow-cache/")
    assert AgentContext.objects.get(user=viewer).agent == cache


def test_the_quick_restart_shows_for_operators_when_restart_is_legal(
    as_operator, as_viewer, cache
) -> None:
    Agent.objects.filter(pk=cache.pk).update(state="RUNNING")
    as_operator.get("/logs/?agent=wow-cache")
    as_viewer.get("/logs/?agent=wow-cache")
    operator_page = _text(as_operator.get("/logs/?agent=wow-cache"))
    assert 'action="/agents/wow-cache/actions/restart/run/"' in operator_page
    assert "View logs" in operator_page and "Open detail" in operator_page
    assert "/agents/wow-cache/actions/restart/run/" not in _text(
        as_viewer.get("/logs/?agent=wow-cache")
    )
    Agent.objects.filter(pk=cache.pk).update(state="STOPPED")
    assert "/agents/wow-cache/actions/restart/run/" not in _text(
        as_operator.get("/logs/?agent=wow-cache")
    )


def test_the_switcher_costs_one_query_whatever_the_number_of_agents(
    as_viewer, seeded, django_assert_num_queries
) -> None:
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert as_viewer.get("/events/?agent=all").status_code == 200
        return len(queries)

    count()  # the first visit remembers "all agents"
    before = count()
    for number in range(10):
        Agent.objects.create(slug=f"extra-{number}", name=f"Extra {number}")
    assert count() == before


# --- Events --------------------------------------------------------------------------------


def test_events_show_as_a_timeline_newest_first_grouped_by_day(as_viewer, cache, search) -> None:
    _event(cache, "WowCache is degraded: slow", severity="warning", ago=2 * 86400)
    _event(search, "WowSearch is healthy", ago=60)
    _event(cache, "WowCache is healthy")
    page = _text(as_viewer.get("/events/?agent=all"))
    summaries = re.findall(r'<p class="timeline-summary">(.*?)</p>', page, re.S)
    assert [_flat(s) for s in summaries[:3]] == [
        "WowCache is healthy",
        "WowSearch is healthy",
        "WowCache is degraded: slow",
    ]
    assert page.count('class="timeline-day"') == 2
    assert 'href="/agents/wow-cache/"' in page
    assert "timeline-item severity-warning kind-health" in page


def test_event_filters_narrow_the_timeline(as_viewer, cache, search) -> None:
    _event(cache, "old news", ago=3 * 3600)
    _event(cache, "WowCache is degraded", severity="warning")
    _event(cache, "WowCache: start STOPPED → RUNNING", kind=Event.Kind.TRANSITION)
    _event(search, "WowSearch is degraded", severity="warning")

    def shown(query: str) -> list[str]:
        page = _text(as_viewer.get(f"/events/?{query}"))
        return [_flat(s) for s in re.findall(r'<p class="timeline-summary">(.*?)</p>', page, re.S)]

    assert shown("agent=wow-cache") == [
        "WowCache: start STOPPED → RUNNING",
        "WowCache is degraded",
        "old news",
    ]
    assert shown("agent=all&severity=warning") == ["WowSearch is degraded", "WowCache is degraded"]
    assert shown("agent=all&kind=transition") == ["WowCache: start STOPPED → RUNNING"]
    assert shown("agent=all&q=DEGRADED") == ["WowSearch is degraded", "WowCache is degraded"]
    assert "old news" not in shown("agent=all&range=1h")
    since = (timezone.localtime() - timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M")
    until = (timezone.localtime() - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    assert shown(f"agent=all&range=custom&from={since}&until={until}") == ["old news"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("kind=gossip", "Unknown event kind “gossip”"),
        ("severity=loud", "Unknown severity “loud”"),
        ("range=3y", "Unknown time range “3y”"),
        ("range=custom&from=yesterday", "“yesterday”, is not a date and time"),
        ("range=custom&from=2026-01-02T00:00&until=2026-01-01T00:00", "not before its end"),
        ("before=abc", "is not a position in the list"),
    ],
)
def test_bad_event_filters_are_a_sentence_and_a_400(as_viewer, cache, query, message) -> None:
    response = as_viewer.get(f"/events/?agent=all&{query}")
    assert response.status_code == 400
    assert message in _text(response)
    assert 'id="ctx-button"' in _text(response)  # the page, not a bare error
    fragment = as_viewer.get(f"/events/?agent=all&{query}", headers=HTMX)
    assert fragment.status_code == 400 and message in _text(fragment)


def test_older_events_page_by_cursor(as_viewer, cache) -> None:
    for number in range(60):
        _event(cache, f"event number {number}")
    page = _text(as_viewer.get("/events/?agent=all"))
    assert page.count('class="timeline-item') == 50
    older = re.search(r'<a class="button" href="([^"]+)" hx-get="([^"]+)"', page)
    assert older, "no Older link"
    rest = _text(as_viewer.get("/events/" + html.unescape(older.group(2)), headers=HTMX))
    assert rest.count('class="timeline-item') == 10
    assert "event number 0" in rest and "event number 59" not in rest
    assert '<ol id="timeline" hx-swap-oob="beforeend">' in rest
    assert 'class="timeline-day"' not in rest  # the same day goes on under its heading
    full = _text(as_viewer.get("/events/" + html.unescape(older.group(1))))
    assert full.count('class="timeline-item') == 10


def test_new_events_are_fetched_after_the_top_one(as_viewer, cache, search) -> None:
    first = _event(cache, "WowCache is healthy")
    page = _text(as_viewer.get("/events/?agent=wow-cache"))
    live = re.search(r'<div id="events-live"[^>]*hx-get="([^"]+)"', page)
    assert live and f"after={first.pk}" in html.unescape(live.group(1))
    _event(search, "WowSearch is healthy")
    newer = _event(cache, "WowCache is degraded", severity="warning")
    fragment = _text(as_viewer.get("/events/" + html.unescape(live.group(1)), headers=HTMX))
    assert "WowCache is degraded" in fragment and "WowSearch" not in fragment
    assert "WowCache is healthy" not in fragment
    assert f"after={newer.pk}" in fragment and 'hx-swap-oob="true"' in fragment


def test_events_answer_htmx_with_the_results_only(as_viewer, cache) -> None:
    response = as_viewer.get("/events/?agent=all", headers=HTMX)
    assert _text(response).lstrip().startswith('<div id="event-results"')
    assert "HX-Request" in response["Vary"]


# --- Alerts --------------------------------------------------------------------------------


def test_alerts_show_open_by_default_with_everything_about_them(as_viewer, cache, search) -> None:
    _alert(cache, "WowCache is ERRORED", value=3.5, fired_at=timezone.now() - timedelta(minutes=3))
    _alert(search, "WowSearch resolved long ago", status="resolved", resolved_by="user:otto",
           resolved_at=timezone.now(), resolution="Restarted it.")  # fmt: skip
    response = as_viewer.get("/alerts/?agent=all")
    page = _text(response)
    assert "WowCache is ERRORED" in page and "WowSearch resolved long ago" not in page
    item = _flat(re.search(r'<article class="card alert-item.*?</article>', page, re.S).group(0))
    assert "Critical" in item and "Firing" in item
    assert "fired 3 min ago" in item
    assert "Agent errored: agent is ERRORED" in item
    assert "Value 3.5" in item
    # Viewers see the state but no buttons.
    assert "Acknowledge" not in item and "Resolve" not in item
    assert 'id="nav-alerts-count"' in page and ">1</span>" in page


def test_alert_tabs_and_filters(as_viewer, cache, search) -> None:
    _alert(cache, "cache firing")
    _alert(search, "search acknowledged", status="acknowledged", severity=Severity.WARNING,
           acknowledged_by="user:otto", acknowledged_at=timezone.now())  # fmt: skip
    _alert(cache, "cache resolved", status="resolved", resolved_at=timezone.now())

    def shown(query: str) -> list[str]:
        page = _text(as_viewer.get(f"/alerts/?{query}"))
        return [_flat(s) for s in re.findall(r'<h3 class="alert-summary">(.*?)</h3>', page, re.S)]

    assert sorted(shown("agent=all")) == ["cache firing", "search acknowledged"]
    assert shown("agent=all&status=acknowledged") == ["search acknowledged"]
    assert shown("agent=all&status=resolved") == ["cache resolved"]
    assert len(shown("agent=all&status=all")) == 3
    assert shown("agent=all&severity=warning") == ["search acknowledged"]
    assert shown("agent=wow-cache") == ["cache firing"]
    assert "Acknowledged by user:otto" in _flat(_text(as_viewer.get("/alerts/?agent=all")))


@pytest.mark.parametrize(
    ("query", "message"),
    [("status=sleeping", "Unknown status “sleeping”"), ("severity=loud", "Unknown severity")],
)
def test_bad_alert_filters_are_a_sentence_and_a_400(as_viewer, cache, query, message) -> None:
    response = as_viewer.get(f"/alerts/?agent=all&{query}")
    assert response.status_code == 400
    assert message in _text(response)


def test_operator_acknowledges_silences_and_resolves_an_alert(as_operator, cache) -> None:
    alert = _alert(cache, "WowCache is ERRORED")
    page = _text(as_operator.get("/alerts/?agent=all"))
    for verb in ("acknowledge", "silence", "resolve"):
        assert f'action="/alerts/{alert.pk}/{verb}/"' in page

    response = as_operator.post(f"/alerts/{alert.pk}/acknowledge/", headers=HTMX)
    assert response.status_code == 200
    assert ("success", f"Alert #{alert.pk} acknowledged: WowCache is ERRORED") in _toasts(response)
    assert "Acknowledged by user:otto" in _flat(_text(response))
    alert.refresh_from_db()
    assert (alert.status, alert.acknowledged_by) == ("acknowledged", "user:otto")

    response = as_operator.post(f"/alerts/{alert.pk}/silence/", {"minutes": "60"}, headers=HTMX)
    assert response.status_code == 200
    alert.refresh_from_db()
    assert alert.silenced_by == "user:otto"
    assert timedelta(minutes=59) < alert.silenced_until - timezone.now() <= timedelta(minutes=60)
    assert "Silenced by user:otto until" in _flat(_text(response))

    response = as_operator.post(
        f"/alerts/{alert.pk}/resolve/", {"note": "Restarted it by hand."}, headers=HTMX
    )
    alert.refresh_from_db()
    assert (alert.status, alert.resolved_by, alert.resolution) == (
        "resolved",
        "user:otto",
        "Restarted it by hand.",
    )
    assert "Resolved by user:otto" in _flat(_text(response))
    assert "Restarted it by hand." in _text(response)

    # Again: the service says there is nothing to do, as a toast.
    again = as_operator.post(f"/alerts/{alert.pk}/resolve/", headers=HTMX)
    assert again.status_code == 409
    assert again["HX-Reswap"] == "none"
    assert _toasts(again)[0][0] == "error"
    assert "already resolved by user:otto" in _toasts(again)[0][1]


def test_alert_buttons_work_without_javascript(as_operator, cache) -> None:
    alert = _alert(cache, "WowCache is ERRORED")
    response = as_operator.post(
        f"/alerts/{alert.pk}/acknowledge/", {"next": "/alerts/?agent=all"}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/alerts/?agent=all"
    assert f"Alert #{alert.pk} acknowledged" in _text(response)


@pytest.mark.parametrize("verb", ["acknowledge", "silence", "resolve"])
def test_viewers_are_refused_the_alert_buttons_with_the_reason(as_viewer, cache, verb) -> None:
    alert = _alert(cache, "WowCache is ERRORED")
    data = {"minutes": "15"} if verb == "silence" else {}
    response = as_viewer.post(f"/alerts/{alert.pk}/{verb}/", data, headers=HTMX)
    assert response.status_code == 403
    assert response["HX-Reswap"] == "none"
    level, text = _toasts(response)[0]
    assert level == "error" and f"You cannot {verb} alerts: it needs the Operator role" in text
    page = as_viewer.post(f"/alerts/{alert.pk}/{verb}/", data)
    assert page.status_code == 403
    assert f"You cannot {verb} alerts" in _text(page)
    alert.refresh_from_db()
    assert alert.status == "firing" and not alert.silenced_by


def test_a_silence_must_be_one_of_the_offered_durations(as_operator, cache) -> None:
    alert = _alert(cache, "WowCache is ERRORED")
    response = as_operator.post(f"/alerts/{alert.pk}/silence/", {"minutes": "99999"}, headers=HTMX)
    assert response.status_code == 409
    assert "Silence for 15 min, 1 h, 4 h or 24 h." in _toasts(response)[0][1]


def test_unknown_alert_and_verb_are_404(as_operator, cache) -> None:
    alert = _alert(cache, "WowCache is ERRORED")
    assert as_operator.post("/alerts/999999/acknowledge/").status_code == 404
    assert as_operator.post(f"/alerts/{alert.pk}/explode/").status_code == 404


def test_an_alerts_address_leads_to_it(as_viewer, cache) -> None:
    alert = _alert(cache, "WowCache is ERRORED")
    response = as_viewer.get(f"/alerts/{alert.pk}/")
    assert response["Location"] == f"/alerts/?agent=wow-cache&status=open#alert-{alert.pk}"


# --- Logs ----------------------------------------------------------------------------------


def test_logs_newest_first_with_level_badges(as_viewer, cache, search) -> None:
    _log(cache, "cache warming", ago=30)
    _log(search, "index ready", ago=20)
    _log(cache, "slow lookup", level="warning", ago=10, key="user:42")
    page = _text(as_viewer.get("/logs/?agent=all"))
    assert page.index("slow lookup") < page.index("index ready") < page.index("cache warming")
    cache_page = _text(as_viewer.get("/logs/?agent=wow-cache"))
    assert "slow lookup" in cache_page and "index ready" not in cache_page


def test_log_filters_narrow_the_lines(as_viewer, cache) -> None:
    _log(cache, "debugging detail", level="debug")
    _log(cache, "cache warming")
    _log(cache, "slow lookup", level="warning")
    _log(cache, "lost connection", level="error")
    _log(cache, "yesterday's news", ago=86400 * 2)

    def shown(query: str) -> str:
        return _text(as_viewer.get(f"/logs/?agent=wow-cache&{query}"))

    page = shown("level=warning")
    assert "slow lookup" in page and "lost connection" in page and "cache warming" not in page
    page = shown("q=LOOKUP")
    assert "slow lookup" in page and "lost connection" not in page
    assert "yesterday's news" not in shown("range=24h")
    assert "yesterday's news" in shown("range=7d")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("level=loud", "Unknown level “loud”"),
        ("range=forever", "Unknown time range “forever”"),
        ("range=custom&from=soon", "is not a date and time"),
        ("before=not-a-cursor", "is not a page cursor"),
        ("after=x", "is not a position in the list"),
    ],
)
def test_bad_log_filters_are_a_sentence_and_a_400(as_viewer, cache, query, message) -> None:
    response = as_viewer.get(f"/logs/?agent=all&{query}")
    assert response.status_code == 400
    assert message in _text(response)


def test_older_log_lines_page_by_keyset_without_counting(as_viewer, cache) -> None:
    for number in range(130):
        _log(cache, f"line number {number:03d}", ago=200 - number)
    with CaptureQueriesContext(connection) as queries:
        page = _text(as_viewer.get("/logs/?agent=wow-cache"))
    assert not any("COUNT(" in query["sql"].upper() for query in queries.captured_queries)
    assert "line number 129" in page and "line number 029" not in page
    older = re.search(
        r'<a class="button" href="([^"]+)" hx-get="[^"]+" hx-target="#logs-older"', page
    )
    assert older
    rest = _text(as_viewer.get("/logs/" + html.unescape(older.group(1)), headers=HTMX))
    assert "line number 029" in rest and "line number 030" not in rest
    assert "line number 000" in rest
    assert '<tbody id="log-lines" hx-swap-oob="beforeend">' in rest


def test_a_resumed_tail_gets_every_line_it_missed(as_viewer, cache) -> None:
    _log(cache, "before the pause")
    last = logs.search(agent=cache, limit=1).entries[0].id
    for number in range(3):
        _log(cache, f"while paused {number}")
    fragment = _text(as_viewer.get(f"/logs/?agent=wow-cache&after={last}", headers=HTMX))
    assert "before the pause" not in fragment
    assert fragment.index("while paused 2") < fragment.index("while paused 0")


def test_download_streams_the_filtered_lines_as_text(as_viewer, cache, search) -> None:
    _log(cache, "first cache line", ago=20)
    _log(search, "a search line", ago=15)
    _log(cache, "an error", level="error", ago=10, code=7)
    response = as_viewer.get("/logs/download/?agent=wow-cache")
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert re.match(
        r'attachment; filename="logs-wow-cache-\d{8}-\d{6}\.txt"', response["Content-Disposition"]
    )
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) == 2
    assert "first cache line" in lines[0] and "wow-cache/0" in lines[0]
    assert "ERROR" in lines[1] and "an error" in lines[1] and "code=7" in lines[1]
    errors_only = as_viewer.get("/logs/download/?agent=wow-cache&level=error")
    assert b"".join(errors_only.streaming_content).decode().count("\n") == 1
    bad = as_viewer.get("/logs/download/?agent=all&level=loud")
    assert bad.status_code == 400 and "Unknown level" in bad.content.decode()
    nobody = as_viewer.get("/logs/download/?agent=wow-nothing")
    assert nobody.status_code == 400 and "There is no agent called" in nobody.content.decode()


def test_download_needs_a_role(as_outsider, cache) -> None:
    assert as_outsider.get("/logs/download/?agent=all").status_code == 403


# --- live pushes -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_alert_firing_pushes_a_toast_the_badge_and_a_beat_to_every_browser(
    seeded, viewer, redis_client
) -> None:
    notify.connect()
    cache = Agent.objects.get(slug="wow-cache")
    Agent.objects.filter(pk=cache.pk).update(
        state="ERRORED", state_changed_at=timezone.now() - timedelta(minutes=1)
    )

    async def scenario() -> str:
        communicator = WebsocketCommunicator(
            application, "/ws/live/", headers=[(b"origin", b"http://127.0.0.1")]
        )
        communicator.scope["user"] = viewer
        connected, _ = await communicator.connect()
        assert connected
        await sync_to_async(alerts.evaluate)()
        received = ""
        for _ in range(20):
            message = await communicator.receive_from(timeout=5)
            if "live-beat" in message and "toast" not in message:
                continue
            received += message
            if "data-alert-toast" in received:
                break
        await communicator.disconnect()
        return received

    received = asyncio.run(scenario())
    alert = Alert.objects.get(agent__slug="wow-cache")
    assert f'data-alert-toast="{alert.pk}"' in received
    assert "toast-error" in received and "Alert critical: WowCache is ERRORED" in html.unescape(
        received
    )
    assert f'href="/alerts/{alert.pk}/"' in received
    assert 'id="nav-alerts-count"' in received and 'hx-swap-oob="true"' in received
    assert 'id="alerts-beat"' in received


def test_a_silenced_alert_resolving_tells_nobody(seeded, monkeypatch) -> None:
    cache = Agent.objects.get(slug="wow-cache")
    alert = _alert(cache, "WowCache is ERRORED", silenced_until=timezone.now() + timedelta(hours=1))
    sent = []
    monkeypatch.setattr(notify.realtime, "watched", lambda groups: set(groups))
    monkeypatch.setattr(notify.realtime, "publish", lambda group, fragments: sent.append(fragments))
    notify.publish_alert_change(alert, "resolved")
    assert sent and not any("toast" in key for fragments in sent for key in fragments)
    notify.publish_alert_change(_alert(Agent.objects.get(slug="wow-search"), "x"), "fired")
    assert any("toast-alert" in key for key in sent[-1])


def test_levels_offered_are_the_log_levels(as_viewer, cache) -> None:
    page = _text(as_viewer.get("/logs/?agent=all"))
    for level in Level:
        assert f'<option value="{level.label}"' in page


def test_the_newest_page_follows_the_live_tail_of_its_agent(as_viewer, cache) -> None:
    from observability import live

    page = _text(as_viewer.get("/logs/?agent=wow-cache"))
    assert 'data-live-topics="logs:wow-cache"' in page
    assert f'<tbody id="{live.rows_element_id("wow-cache")}" class="log-inbox"' in page
    assert 'data-tail="log-tail-rows-wow-cache"' in page and "data-live-toggle" in page
    every = _text(as_viewer.get("/logs/?agent=all&level=warning"))
    assert 'data-live-topics="logs:*"' in every
    assert f'<tbody id="{live.rows_element_id(None)}" class="log-inbox"' in every
    assert 'data-level-min="30"' in every
    # A range that ends, or an older page, has no tail.
    until = timezone.localtime().strftime("%Y-%m-%dT%H:%M")
    fixed = _text(as_viewer.get(f"/logs/?agent=wow-cache&range=custom&until={until}"))
    assert "log-inbox" not in fixed and 'data-live-topics=""' in fixed
    assert "A fixed time range: no live tail." in fixed


def test_choosing_on_the_dashboard_focuses_it_on_the_agent(as_viewer, cache) -> None:
    response = as_viewer.post("/context/", {"agent": "wow-cache", "next": "/"})
    assert response["Location"] == "/?agent=wow-cache"


def test_refreshes_and_downloads_read_the_context_without_changing_it(
    as_viewer, viewer, cache, search
) -> None:
    as_viewer.get("/events/?agent=wow-cache")
    # A tab still showing WowSearch polls, live-refreshes and downloads: the choice stays.
    as_viewer.get("/events/?agent=wow-search", headers=HTMX)
    as_viewer.get("/logs/?agent=wow-search&after=0", headers=HTMX)
    b"".join(as_viewer.get("/logs/download/?agent=wow-search").streaming_content)
    assert AgentContext.objects.get(user=viewer).agent == cache
    fragment = _text(as_viewer.get("/alerts/?agent=wow-search", headers=HTMX))
    assert "for WowSearch" in fragment
