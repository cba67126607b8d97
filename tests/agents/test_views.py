"""The agent pages: the fleet (cards and table), one agent, its history, and the actions menu."""

from __future__ import annotations

import csv
import html
import io
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents import services
from agents.models import Agent, AgentTransition, Health, Operation, State, Tier
from portal.actors import Actor
from portal.models import AuditEntry

HTMX = {"HX-Request": "true"}
# What static/js/portal.js adds on a page that shows the fleet counts (the list, the dashboard).
SHOWS_COUNTS = {**HTMX, "X-Shows-Fleet-Counts": "1"}


def shown_slugs(response) -> list[str]:
    """The agents on a page, cards or table rows, in page order."""
    return re.findall(
        r'<(?:article|tr) [^>]*id="agent-(?:row-)?([a-z0-9-]+)"', response.content.decode()
    )


def toasts(response) -> list[tuple[str, str]]:
    """(level, text) of every toast in the response."""
    found = re.findall(
        r'<div class="toast toast-(\w+)" role="(?:status|alert)"[^>]*><span>(.*?)</span>',
        response.content.decode(),
        re.S,
    )
    return [(level, html.unescape(text)) for level, text in found]


def oob_counts(response) -> dict[str, str] | None:
    """The fleet counts swapped out of band with the response, by label; None if not sent."""
    match = re.search(
        r'<section class="cards counts" id="fleet-counts"[^>]* hx-swap-oob="true">(.*?)</section>',
        response.content.decode(),
        re.S,
    )
    if match is None:
        return None
    pairs = re.findall(
        r'metric-label">([^<]+)</span><span class="metric-value[^"]*">(\d+)<', match.group(1)
    )
    return dict(pairs)


def card_of(response, slug: str) -> str:
    match = re.search(
        rf'<article [^>]*id="agent-{slug}".*?</article>', response.content.decode(), re.S
    )
    assert match, f"no card for {slug}"
    return match.group(0)


# --- the fleet --------------------------------------------------------------------------------


def test_agents_page_shows_the_fourteen_cards_and_the_counts(seeded, as_viewer) -> None:
    response = as_viewer.get("/agents/")
    assert response.status_code == 200
    assert sorted(shown_slugs(response)) == sorted(seeded)
    content = response.content.decode()
    assert content.count('class="card agent-card') == 14
    assert "WowVision Prime" in content
    assert 'id="fleet-counts"' in content
    assert re.search(r'Agents</span><span class="metric-value">14<', content)
    assert "<html" in content


def test_table_view_has_one_row_per_agent(seeded, as_viewer) -> None:
    response = as_viewer.get("/agents/", {"view": "table"})
    content = response.content.decode()
    assert response.status_code == 200
    assert content.count('<tr id="agent-') == 14
    assert "agent-card" not in content
    memory_row = re.search(r'<tr id="agent-(?:row-)?wow-memory".*?</tr>', content, re.S).group(0)
    assert "WowCache" in memory_row and "WowEvent" in memory_row  # its dependencies


def test_search_by_name_narrows_the_list(seeded, as_viewer) -> None:
    assert shown_slugs(as_viewer.get("/agents/", {"q": "vision"})) == ["wow-vision"]
    assert shown_slugs(as_viewer.get("/agents/", {"q": "  WowCache "})) == ["wow-cache"]
    nothing = as_viewer.get("/agents/", {"q": "no such agent"})
    assert shown_slugs(nothing) == []
    assert "No agent matches these filters." in nothing.content.decode()


def test_filter_by_state(seeded, as_viewer, act) -> None:
    act(seeded["wow-cache"], "provision")
    assert shown_slugs(as_viewer.get("/agents/", {"state": "PROVISIONED"})) == ["wow-cache"]
    assert shown_slugs(as_viewer.get("/agents/", {"state": "provisioned"})) == ["wow-cache"]
    assert len(shown_slugs(as_viewer.get("/agents/", {"state": "DRAFT"}))) == 13
    assert shown_slugs(as_viewer.get("/agents/", {"state": "RUNNING"})) == []
    # A value that is not a state filters nothing rather than failing.
    assert len(shown_slugs(as_viewer.get("/agents/", {"state": "ASLEEP"}))) == 14


def test_filter_by_tier(seeded, as_viewer) -> None:
    Agent.objects.create(slug="acme-helper", name="Acme Helper", tier=Tier.CUSTOMER)
    assert shown_slugs(as_viewer.get("/agents/", {"tier": "customer"})) == ["acme-helper"]
    assert len(shown_slugs(as_viewer.get("/agents/", {"tier": "platform"}))) == 14


def test_filter_by_health_combines_with_search(seeded, as_viewer) -> None:
    # Health is probed (and recorded) for running agents only.
    Agent.objects.filter(slug__in=["wow-cache", "wow-event"]).update(state=State.RUNNING)
    services.record_health(seeded["wow-cache"], Health.HEALTHY)
    services.record_health(seeded["wow-event"], Health.DEGRADED, "slow answers")
    assert shown_slugs(as_viewer.get("/agents/", {"health": "healthy"})) == ["wow-cache"]
    assert shown_slugs(as_viewer.get("/agents/", {"health": "degraded"})) == ["wow-event"]
    assert shown_slugs(as_viewer.get("/agents/", {"health": "degraded", "q": "cache"})) == []
    assert len(shown_slugs(as_viewer.get("/agents/", {"health": "unknown"}))) == 12


def test_htmx_filter_request_gets_only_the_results_fragment(seeded, as_viewer) -> None:
    response = as_viewer.get("/agents/", {"q": "wow", "view": "table"}, headers=HTMX)
    content = response.content.decode().strip()
    assert response.status_code == 200
    assert content.startswith('<div id="agent-results"')
    assert "<html" not in content and 'id="fleet-counts"' not in content
    assert content.count('<tr id="agent-') == 14
    assert "HX-Request" in response["Vary"]
    assert "HX-Request" in as_viewer.get("/agents/")["Vary"]


def test_boosted_htmx_request_gets_the_whole_page(seeded, as_viewer) -> None:
    response = as_viewer.get("/agents/", headers={**HTMX, "HX-Boosted": "true"})
    assert "<html" in response.content.decode()


def _queries_for(client, path: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(path).status_code == 200
    return len(queries)


@pytest.mark.parametrize("path", ["/agents/", "/agents/?view=table", "/"])
def test_list_queries_do_not_grow_with_the_number_of_agents(
    seeded, as_operator, django_assert_num_queries, path
) -> None:
    services.request_action(seeded["wow-cache"], "provision", Actor.command("test"), enqueue=False)
    with_fourteen = _queries_for(as_operator, path)
    event = seeded["wow-event"]
    for number in range(10):
        extra = Agent.objects.create(
            slug=f"extra-{number}", name=f"Extra {number}", tier=Tier.CUSTOMER
        )
        extra.dependencies.add(event)
        if number % 2:
            services.request_action(extra, "provision", Actor.command("test"), enqueue=False)
    with django_assert_num_queries(with_fourteen):
        response = as_operator.get(path)
    # The dashboard shows the Platform CoE agents and those with an action in flight (the five
    # odd extras); the Agents page all 24.
    assert len(shown_slugs(response)) == (19 if path == "/" else 24)


def test_a_large_fleet_is_paged_on_the_agents_page_and_summed_up_on_the_dashboard(
    seeded, as_operator, act
) -> None:
    Agent.objects.bulk_create(
        Agent(slug=f"cust-{n:03d}", name=f"Customer {n:03d}", tier=Tier.CUSTOMER)
        for n in range(120)
    )
    Agent.objects.filter(slug="cust-077").update(state="ERRORED")

    first = as_operator.get("/agents/")
    third = as_operator.get("/agents/?page=3")
    beyond = as_operator.get("/agents/?page=999999")
    bad = as_operator.get("/agents/?page=abc")
    dashboard = as_operator.get("/")

    by_name = list(Agent.objects.order_by("name").values_list("slug", flat=True))
    assert shown_slugs(first) == by_name[:50]
    assert shown_slugs(third) == by_name[100:]
    assert "1–50 of 134 · page 1 of 3" in first.content.decode()
    assert 'rel="next"' in first.content.decode() and 'rel="next"' not in third.content.decode()
    assert shown_slugs(beyond) == shown_slugs(third)  # past the end: the last page
    assert "is not a page number" in bad.content.decode() and len(shown_slugs(bad)) == 50
    shown = set(shown_slugs(dashboard))
    assert shown == set(seeded) | {"cust-077"}
    assert 'data-cards-not-shown="119"' in dashboard.content.decode()


def test_list_queries_do_not_grow_with_deployed_agents_that_have_dependencies(
    seeded, as_operator, act, django_assert_num_queries
) -> None:
    act(seeded["wow-memory"], "provision")
    act(seeded["wow-memory"], "deploy")
    with_one = _queries_for(as_operator, "/agents/")
    for slug in ("wow-search", "wow-analytics", "wow-domain"):
        act(seeded[slug], "provision")
        act(seeded[slug], "deploy")
    with django_assert_num_queries(with_one):
        as_operator.get("/agents/")


def test_agent_pages_need_a_role(seeded, client, as_outsider) -> None:
    for path in (
        "/agents/",
        "/agents/wow-cache/",
        "/agents/wow-cache/history/",
        "/agents/wow-cache/card/",
    ):
        assert as_outsider.get(path).status_code == 403
        anonymous = client.get(path)
        assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]


def test_dashboard_shows_the_fleet_counts_and_fourteen_cards(seeded, as_viewer, act) -> None:
    act(seeded["wow-cache"], "provision")
    response = as_viewer.get("/")
    content = response.content.decode()
    assert response.status_code == 200
    assert content.count('class="card agent-card') == 14
    assert sorted(shown_slugs(response)) == sorted(seeded)
    assert re.search(r'Agents</span><span class="metric-value">14<', content)
    assert re.search(r'Running</span><span class="metric-value ok">0<', content)


# --- one agent --------------------------------------------------------------------------------


def test_detail_page_of_a_running_agent(seeded, as_viewer, bring_up, operator_actor) -> None:
    cache = bring_up(seeded["wow-cache"], operator_actor)
    services.record_health(cache, Health.HEALTHY)
    port = cache.runtime_details["ports"][0]
    response = as_viewer.get("/agents/wow-cache/")
    content = response.content.decode()
    assert response.status_code == 200
    status = re.search(r'<section [^>]*id="agent-status".*?</section>', content, re.S).group(0)
    assert ">RUNNING</span>" in status
    assert "Healthy" in status
    assert "Last action: start by user:otto — succeeded" in status
    assert "<dt>Version</dt><dd>1.0.0</dd>" in content
    assert "<dt>Runtime</dt><dd>Local process</dd>" in content
    assert "<dt>Resources</dt><dd>250m CPU · 512 MiB</dd>" in content
    assert f"<dt>Ports</dt><dd>{port}</dd>" in content
    assert re.search(
        r"<h2>Needed by</h2>\s*<ul[^>]*><li><a href=\"/agents/wow-memory/\">WowMemory</a>", content
    )
    transitions = re.findall(
        r"<td>(\w+)</td><td>(\w+) → <strong>(\w+)</strong></td><td>([^<]+)</td>", content
    )
    assert transitions == [
        ("start", "DEPLOYED", "RUNNING", "user:otto"),
        ("deploy", "PROVISIONED", "DEPLOYED", "user:otto"),
        ("provision", "DRAFT", "PROVISIONED", "user:otto"),
    ]
    assert "Recent log lines" in content
    assert f"listening on 127.0.0.1:{port}" in content
    assert "Actions" not in status  # a Viewer is offered nothing


def test_detail_page_of_a_draft_agent_lists_its_dependencies(seeded, as_operator) -> None:
    content = as_operator.get("/agents/wow-memory/").content.decode()
    depends_on = re.search(r"<h2>Depends on</h2>(.*?)</ul>", content, re.S).group(1)
    assert re.findall(r">(Wow\w+)</a>", depends_on) == ["WowCache", "WowEvent"]
    assert "No transitions yet: WowMemory is still a draft." in content
    assert "No log lines: the agent has never run." in content
    menu = re.search(r'<details class="menu">.*?</details>', content, re.S).group(0)
    assert re.findall(r'role="menuitem"[^>]*>(\w+)</a>', menu, re.S) == ["Provision", "Revoke"]


def test_detail_htmx_request_gets_the_status_fragment(seeded, as_viewer) -> None:
    response = as_viewer.get("/agents/wow-cache/", headers=HTMX)
    content = response.content.decode().strip()
    assert content.startswith('<section class="card panel agent-status')
    assert "<html" not in content and "Recent log lines" not in content
    assert "HX-Request" in response["Vary"]


def test_unknown_agent_is_404_on_every_page(seeded, as_operator) -> None:
    for path in (
        "/agents/wow-nothing/",
        "/agents/wow-nothing/card/",
        "/agents/wow-nothing/history/",
        "/agents/wow-nothing/actions/start/",
    ):
        assert as_operator.get(path).status_code == 404, path
    assert as_operator.post("/agents/wow-nothing/actions/start/run/").status_code == 404


# --- history --------------------------------------------------------------------------------


@pytest.fixture
def cache_history(seeded, act, operator_actor):
    """WowCache provisioned by Otto, deployed by a command, revoked by Otto: three transitions."""
    cache = seeded["wow-cache"]
    act(cache, "provision", operator_actor, reason="first step")
    act(cache, "deploy", Actor.command("test"))
    act(cache, "revoke", operator_actor, confirm=True, reason="done with it")
    return cache


def _history_actions(response) -> list[str]:
    return re.findall(r"<tr><td>[\d: -]+</td><td>(\w+)</td>", response.content.decode())


def test_history_page_lists_every_transition_newest_first(cache_history, as_viewer) -> None:
    response = as_viewer.get("/agents/wow-cache/history/")
    assert response.status_code == 200
    assert _history_actions(response) == ["revoke", "deploy", "provision"]
    assert "done with it" in response.content.decode()


def test_history_filters_by_action_actor_and_date(cache_history, as_viewer) -> None:
    path = "/agents/wow-cache/history/"
    assert _history_actions(as_viewer.get(path, {"action": "deploy"})) == ["deploy"]
    assert _history_actions(as_viewer.get(path, {"actor_kind": "user"})) == ["revoke", "provision"]
    assert _history_actions(as_viewer.get(path, {"actor_kind": "command"})) == ["deploy"]
    today = AgentTransition.objects.first().at.date()
    assert len(_history_actions(as_viewer.get(path, {"since": today.isoformat()}))) == 3
    assert _history_actions(as_viewer.get(path, {"until": "2000-01-01"})) == []
    assert "No transitions match." in as_viewer.get(path, {"since": "2999-01-01"}).content.decode()
    # Nonsense in a filter is ignored, not an error.
    assert (
        len(_history_actions(as_viewer.get(path, {"action": "explode", "since": "yesterday"}))) == 3
    )


def test_history_exports_csv_one_row_per_transition(cache_history, as_viewer) -> None:
    response = as_viewer.get("/agents/wow-cache/history/", {"format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    assert re.fullmatch(
        r'attachment; filename="wow-cache-history-\d{8}-\d{6}\.csv"',
        response["Content-Disposition"],
    )
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == [
        "at", "agent", "action", "from_state", "to_state", "actor_kind", "actor", "reason", "operation", "details",
    ]  # fmt: skip
    assert [(r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows[1:]] == [
        ("revoke", "DEPLOYED", "REVOKED", "user", "user:otto", "done with it"),
        ("deploy", "PROVISIONED", "DEPLOYED", "command", "command:" + Actor.command("x").name, ""),
        ("provision", "DRAFT", "PROVISIONED", "user", "user:otto", "first step"),
    ]
    operations = {str(pk) for pk in Operation.objects.values_list("pk", flat=True)}
    assert {row[8] for row in rows[1:]} == operations


def test_history_csv_honours_the_filters(cache_history, as_viewer) -> None:
    response = as_viewer.get(
        "/agents/wow-cache/history/", {"format": "csv", "actor_kind": "command"}
    )
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row[2] for row in rows[1:]] == ["deploy"]


# --- the confirmation dialog ------------------------------------------------------------------


def test_confirm_dialog_is_a_fragment_for_htmx_and_a_page_otherwise(seeded, as_operator) -> None:
    fragment = as_operator.get(
        "/agents/wow-cache/actions/provision/", {"from": "card"}, headers=HTMX
    )
    content = fragment.content.decode().strip()
    assert fragment.status_code == 200
    assert content.startswith('<dialog class="dialog" id="action-dialog"')
    assert "<html" not in content and " open>" not in content
    assert 'hx-post="/agents/wow-cache/actions/provision/run/"' in content
    assert 'hx-target="#agent-wow-cache"' in content
    assert "Provision WowCache?" in content
    assert "HX-Request" in fragment["Vary"]

    page = as_operator.get(
        "/agents/wow-cache/actions/provision/", {"next": "/agents/"}
    ).content.decode()
    assert "<html" in page and "data-open-modal open>" in page
    assert 'action="/agents/wow-cache/actions/provision/run/"' in page
    assert 'name="next" value="/agents/"' in page


def test_confirm_dialog_from_the_detail_page_targets_the_status_panel(seeded, as_operator) -> None:
    content = as_operator.get(
        "/agents/wow-cache/actions/provision/", {"from": "detail"}, headers=HTMX
    )
    assert 'hx-target="#agent-status"' in content.content.decode()
    assert 'name="from" value="detail"' in content.content.decode()


def test_confirm_dialog_shows_the_running_dependents_a_stop_affects(
    seeded, as_operator, bring_up
) -> None:
    for slug in ("wow-cache", "wow-event", "wow-memory"):
        bring_up(seeded[slug])
    content = as_operator.get("/agents/wow-cache/actions/stop/", headers=HTMX).content.decode()
    assert (
        "<strong>WowMemory</strong> depends on WowCache and is running; they will lose it."
        in content
    )
    assert '<input type="checkbox" name="confirm" required>' in content


def test_confirm_dialog_for_revoke_asks_for_the_typed_name(seeded, as_operator) -> None:
    content = as_operator.get("/agents/wow-cache/actions/revoke/", headers=HTMX).content.decode()
    assert "Type <strong>WowCache</strong> to confirm" in content
    assert 'name="confirm_name"' in content and 'pattern="WowCache"' in content
    assert "cannot be undone" in content


def test_confirm_dialog_explains_a_refused_start_and_offers_dependencies(
    seeded, as_operator, act
) -> None:
    memory = seeded["wow-memory"]
    act(memory, "provision")
    act(memory, "deploy")
    content = as_operator.get("/agents/wow-memory/actions/start/", headers=HTMX).content.decode()
    assert (
        "WowMemory depends on WowCache (DRAFT) and WowEvent (DRAFT), which are not running."
        in content
    )
    assert 'name="with_dependencies"' in content
    assert "WowCache, WowEvent first, in order" in content


def test_confirm_dialog_is_refused_to_a_viewer_and_unknown_action_is_404(
    seeded, as_viewer, as_operator
) -> None:
    assert as_viewer.get("/agents/wow-cache/actions/provision/").status_code == 403
    assert as_operator.get("/agents/wow-cache/actions/explode/").status_code == 404


# --- taking actions --------------------------------------------------------------------------


def test_operator_provisions_from_a_card_with_htmx(seeded, as_operator) -> None:
    response = as_operator.post(
        "/agents/wow-cache/actions/provision/run/",
        {"from": "card", "reason": "from the card"},
        headers=SHOWS_COUNTS,
    )
    assert response.status_code == 200
    content = response.content.decode()
    assert content.startswith(
        '\n<article class="card agent-card state-draft is-pending" id="agent-wow-cache"'
    )
    assert "provisioning…" in content
    assert '<div id="toasts" hx-swap-oob="beforeend">' in content
    assert toasts(response) == [("info", "Provision WowCache: provisioning…")]
    assert oob_counts(response) == {
        "Agents": "14", "Running": "0", "Errored": "0", "Suspended / stopped": "0", "Active operations": "1",
    }  # fmt: skip
    operation = Operation.objects.get()
    assert (operation.action, operation.status, operation.actor, operation.reason) == (
        "provision", "pending", "user:otto", "from the card",
    )  # fmt: skip
    assert Agent.objects.get(slug="wow-cache").pending_action == "provision"


def test_pending_card_polls_until_its_operation_finishes_then_says_how_it_went(
    seeded, as_operator
) -> None:
    as_operator.post("/agents/wow-cache/actions/provision/run/", headers=HTMX)
    operation = Operation.objects.get()

    polling = as_operator.get("/agents/wow-cache/card/", headers=HTMX)
    card = polling.content.decode()
    assert 'hx-trigger="every 1s [portalLiveDown()]"' in card, "polls while the live socket is down"
    assert f'hx-get="/agents/wow-cache/card/?op={operation.pk}"' in card
    assert toasts(polling) == []
    assert oob_counts(polling) is None
    # Conflicting actions are disabled while it runs.
    assert re.search(r'class="menu-item disabled danger"[^>]*aria-disabled="true"', card, re.S)

    assert (
        as_operator.get("/agents/wow-cache/card/", {"op": operation.pk}, headers=HTMX)
        .content.decode()
        .count("every 1s")
        == 1
    )  # still pending: no toast, still polling

    services.run_operation(str(operation.pk))
    finished = as_operator.get(
        "/agents/wow-cache/card/", {"op": operation.pk}, headers=SHOWS_COUNTS
    )
    content = finished.content.decode()
    assert ">PROVISIONED</span>" in content
    assert "hx-trigger" not in card_of(finished, "wow-cache")
    [(level, text)] = toasts(finished)
    assert level == "success"
    assert re.fullmatch(r"Provision WowCache: done in \d+\.\d s\.", text)
    assert oob_counts(finished)["Active operations"] == "0"


def test_table_row_polls_and_reports_too(seeded, as_operator) -> None:
    response = as_operator.post(
        "/agents/wow-cache/actions/provision/run/", {"from": "row"}, headers=HTMX
    )
    operation = Operation.objects.get()
    assert re.match(r'\s*<tr id="agent-(?:row-)?wow-cache"', response.content.decode())
    assert f"?view=table&amp;op={operation.pk}" in response.content.decode()
    services.run_operation(str(operation.pk))
    finished = as_operator.get(
        "/agents/wow-cache/card/", {"view": "table", "op": operation.pk}, headers=HTMX
    )
    assert re.match(r'\s*<tr id="agent-(?:row-)?wow-cache"', finished.content.decode())
    assert toasts(finished)[0][0] == "success"


def test_failed_operation_poll_gives_an_error_toast(seeded, as_operator, act) -> None:
    cache = seeded["wow-cache"]
    cache.config = {"faults": {"fail_rate": 5}}
    cache.save()
    act(cache, "provision")
    act(cache, "deploy")
    as_operator.post("/agents/wow-cache/actions/start/run/", headers=HTMX)
    operation = Operation.objects.get(action="start")
    services.run_operation(str(operation.pk))
    finished = as_operator.get("/agents/wow-cache/card/", {"op": operation.pk}, headers=HTMX)
    [(level, text)] = toasts(finished)
    assert level == "error"
    assert text.startswith("Start WowCache failed: ") and "fail_rate" in text


def test_action_from_the_detail_page_returns_the_status_panel_and_a_toast(
    seeded, as_operator
) -> None:
    response = as_operator.post(
        "/agents/wow-cache/actions/provision/run/", {"from": "detail"}, headers=HTMX
    )
    content = response.content.decode().strip()
    assert content.startswith(
        '<section class="card panel agent-status state-draft" id="agent-status"'
    )
    operation = Operation.objects.get()
    assert f'hx-get="/agents/wow-cache/?op={operation.pk}"' in content
    assert toasts(response) == [("info", "Provision WowCache: provisioning…")]
    assert oob_counts(response) is None  # the detail page has no fleet counts to update
    services.run_operation(str(operation.pk))
    finished = as_operator.get("/agents/wow-cache/", {"op": operation.pk}, headers=HTMX)
    assert (
        finished.content.decode()
        .strip()
        .startswith('<section class="card panel agent-status state-provisioned"')
    )
    assert toasts(finished)[0][0] == "success"


def test_action_without_javascript_redirects_with_a_message(seeded, as_operator) -> None:
    response = as_operator.post(
        "/agents/wow-cache/actions/provision/run/", {"next": "/agents/?view=table"}
    )
    assert response.status_code == 302 and response["Location"] == "/agents/?view=table"
    page = as_operator.get(response["Location"])
    assert toasts(page) == [("info", "Provision WowCache: provisioning…")]

    services.run_operation(str(Operation.objects.get().pk))
    without_next = as_operator.post("/agents/wow-cache/actions/deploy/run/")
    assert without_next.status_code == 302 and without_next["Location"] == "/agents/wow-cache/"


@pytest.mark.parametrize(
    "next_url", ["//evil.example/", "https://evil.example/", "javascript:alert(1)"]
)
def test_action_redirect_ignores_an_offsite_next(seeded, as_operator, next_url) -> None:
    response = as_operator.post("/agents/wow-cache/actions/provision/run/", {"next": next_url})
    assert response["Location"] == "/agents/wow-cache/"


def test_illegal_action_gives_an_error_toast_and_changes_nothing(seeded, as_operator) -> None:
    response = as_operator.post("/agents/wow-cache/actions/start/run/", headers=HTMX)
    assert response.status_code == 200
    assert response["HX-Reswap"] == "none"
    assert toasts(response) == [
        (
            "error",
            "WowCache is DRAFT; provision and deploy it first (or start it with its dependencies).",
        )
    ]
    assert "<article" not in response.content.decode()
    cache = Agent.objects.get(slug="wow-cache")
    assert cache.state == State.DRAFT and cache.pending_action == ""
    assert not Operation.objects.exists()

    plain = as_operator.post("/agents/wow-cache/actions/start/run/")
    assert plain.status_code == 302
    assert toasts(as_operator.get(plain["Location"]))[0][0] == "error"


def test_repeated_request_while_pending_is_refused_as_busy(seeded, as_operator) -> None:
    as_operator.post("/agents/wow-cache/actions/provision/run/", headers=HTMX)
    again = as_operator.post("/agents/wow-cache/actions/provision/run/", headers=HTMX)
    assert toasts(again) == [
        ("error", "WowCache is already provisioning; wait until that finishes.")
    ]
    assert Operation.objects.count() == 1


def test_stop_with_running_dependents_needs_the_confirm_box(seeded, as_operator, bring_up) -> None:
    for slug in ("wow-cache", "wow-event", "wow-memory"):
        bring_up(seeded[slug])
    refused = as_operator.post("/agents/wow-cache/actions/stop/run/", headers=HTMX)
    assert toasts(refused)[0] == (
        "error", "WowMemory depends on WowCache and is running; to stop it anyway, confirm.",
    )  # fmt: skip
    assert not Operation.objects.filter(action="stop").exists()
    accepted = as_operator.post(
        "/agents/wow-cache/actions/stop/run/", {"confirm": "on"}, headers=HTMX
    )
    assert toasts(accepted) == [("info", "Stop WowCache: stopping…")]
    assert Agent.objects.get(slug="wow-cache").pending_action == "stop"


def test_revoke_without_the_typed_name_is_refused(seeded, as_operator) -> None:
    for typed in ("", "wowcache", "WowCache2"):
        response = as_operator.post(
            "/agents/wow-cache/actions/revoke/run/", {"confirm_name": typed}, headers=HTMX
        )
        assert toasts(response) == [
            ("error", "To revoke, type the agent's name exactly: WowCache.")
        ]
    assert not Operation.objects.exists()
    accepted = as_operator.post(
        "/agents/wow-cache/actions/revoke/run/", {"confirm_name": " WowCache "}, headers=HTMX
    )
    assert toasts(accepted) == [("info", "Revoke WowCache: revoking…")]
    assert Agent.objects.get(slug="wow-cache").pending_action == "revoke"


def test_start_with_dependencies_from_the_dialog(seeded, as_operator, act) -> None:
    memory = seeded["wow-memory"]
    act(memory, "provision")
    act(memory, "deploy")
    response = as_operator.post(
        "/agents/wow-memory/actions/start/run/", {"with_dependencies": "on"}, headers=HTMX
    )
    assert toasts(response) == [("info", "Start WowMemory: starting…")]
    assert Operation.objects.get(action="start").options["with_dependencies"] is True


def test_viewer_sees_no_actions_menu(seeded, as_viewer, as_operator) -> None:
    for path in ("/agents/", "/agents/?view=table", "/agents/wow-cache/", "/"):
        # follow: opening an agent's page made it the context, so / redirects to /?agent=…
        viewer_page = as_viewer.get(path, follow=True).content.decode()
        assert '<details class="menu">' not in viewer_page, path
        assert '<details class="menu">' in as_operator.get(path, follow=True).content.decode(), path


@pytest.mark.parametrize("action", ["provision", "revoke"])
@pytest.mark.parametrize("headers", [HTMX, {}], ids=["htmx", "plain"])
@pytest.mark.parametrize("typed_name", ["WowCache", ""])
def test_viewer_cannot_take_an_action(seeded, as_viewer, action, headers, typed_name) -> None:
    response = as_viewer.post(
        f"/agents/wow-cache/actions/{action}/run/", {"confirm_name": typed_name}, headers=headers
    )
    assert response.status_code == 403
    cache = Agent.objects.get(slug="wow-cache")
    assert cache.state == State.DRAFT and cache.pending_action == ""
    assert not Operation.objects.exists()
    refusal = AuditEntry.objects.get(action=f"agent.{action}")
    assert (refusal.actor, refusal.outcome) == ("user:vera", AuditEntry.Outcome.REFUSED)


def test_outsider_cannot_take_an_action(seeded, as_outsider) -> None:
    assert as_outsider.post("/agents/wow-cache/actions/provision/run/").status_code == 403
    assert not Operation.objects.exists()


def test_wrong_methods_are_405(seeded, as_operator) -> None:
    assert as_operator.get("/agents/wow-cache/actions/provision/run/").status_code == 405
    assert as_operator.post("/agents/wow-cache/actions/provision/").status_code == 405
    assert as_operator.post("/agents/").status_code == 405
    assert as_operator.post("/agents/wow-cache/").status_code == 405
    assert as_operator.post("/agents/wow-cache/card/").status_code == 405
    assert not Operation.objects.exists()


def test_unknown_action_is_404(seeded, as_operator) -> None:
    assert as_operator.post("/agents/wow-cache/actions/explode/run/").status_code == 404
    assert as_operator.post("/agents/wow-cache/actions/fail/run/").status_code == 404
    assert not Operation.objects.exists()


def test_action_needs_the_csrf_token(seeded, operator) -> None:
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    assert client.post("/agents/wow-cache/actions/provision/run/", headers=HTMX).status_code == 403
    assert not Operation.objects.exists()


def test_drift_is_shown_and_an_operator_can_reconcile(
    seeded, as_operator, as_viewer, bring_up
) -> None:
    from agents.models import AgentTransition  # noqa: F401  (history stays untouched)
    from portal.models import AuditEntry

    cache = bring_up(seeded["wow-cache"])
    services.record_drift(
        cache,
        [
            {
                "kind": "unexpected_state",
                "message": "replica 0 is paused but the portal says RUNNING",
            }
        ],
    )
    page = as_viewer.get("/agents/wow-cache/").content.decode()
    assert "Drift: the runtime does not match the portal." in page
    assert "replica 0 is paused" in page
    assert "Reconcile</button>" not in page, "a Viewer gets no reconcile button"
    assert 'class="chip drift-chip"' in as_viewer.get("/agents/").content.decode()

    assert as_viewer.post("/agents/wow-cache/reconcile/").status_code == 403
    response = as_operator.post("/agents/wow-cache/reconcile/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "Reconciled WowCache" in response.content.decode()
    assert AuditEntry.objects.filter(action="agent.reconcile", target="wow-cache").exists()
    cache.refresh_from_db()
    assert cache.drift == [], "the local runtime finds nothing out of line after reconciling"


def test_start_refused_for_dependencies_stays_reachable_to_offer_starting_them(
    seeded, as_operator, act
) -> None:
    act(seeded["wow-memory"], "provision")
    act(seeded["wow-memory"], "deploy")
    card = as_operator.get("/agents/wow-memory/card/").content.decode()
    start_item = next(part for part in card.split('<a role="menuitem"')[1:] if ">Start</a>" in part)
    assert "disabled" not in start_item.split(">")[0], (
        "the dialog offers 'start with its dependencies'"
    )
    dialog = as_operator.get(
        "/agents/wow-memory/actions/start/", HTTP_HX_REQUEST="true"
    ).content.decode()
    assert 'name="with_dependencies"' in dialog


def test_an_answer_carries_the_fleet_counts_only_to_a_page_that_shows_them(
    seeded, as_operator
) -> None:
    """The focused dashboard has a card but no counts: its action's answer must not carry an
    out-of-band element the page lacks (htmx:oobErrorNoTarget)."""
    response = as_operator.post(
        "/agents/wow-cache/actions/provision/run/", {"from": "card"}, headers=HTMX
    )
    assert card_of(response, "wow-cache") and oob_counts(response) is None
    operation = Operation.objects.get()
    services.run_operation(str(operation.pk))
    finished = as_operator.get("/agents/wow-cache/card/", {"op": operation.pk}, headers=HTMX)
    assert toasts(finished) and oob_counts(finished) is None
