"""The bulk operation pages: selection on the agents page, the preview dialog, running, the
progress page with its summary, cancel, retry and roll-back, the list of recent operations, and
the live topic. Runs go through the real services and the runner, with real agent processes."""

from __future__ import annotations

import asyncio
import html
import re

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from agents import bulk, live
from agents.models import Agent, BulkItem, BulkOperation, State
from portal import realtime
from portal.actors import Actor
from portal.asgi import application
from portal.models import AuditEntry

HTMX = {"HX-Request": "true"}
COMMAND = Actor.command("test")
CRASH_ON_START = {"faults": {"crash_after_seconds": 0, "crash_exit_code": 3}}


def _set(slug: str, **fields) -> None:
    """Put an agent in a state for a test that only plans (no processes involved)."""
    Agent.objects.filter(slug=slug).update(**fields)


def _text(response) -> str:
    return html.unescape(response.content.decode())


def _checkboxes(response) -> dict[str, dict[str, str]]:
    """The selection checkboxes on the page: slug → their data attributes."""
    found = {}
    for tag in re.findall(r"<input [^>]*data-bulk-select [^>]*>", response.content.decode()):
        slug = re.search(r'value="([^"]+)"', tag).group(1)
        found[slug] = dict(re.findall(r'data-(state|tier|bulk-actions)="([^"]*)"', tag))
    return found


def _plan_rows(response, which: str) -> list[str]:
    """Agent slugs listed under "Will change" (``changing``) or "Skipped", in order."""
    match = re.search(rf'<ul [^>]*data-plan="{which}">(.*?)</ul>', response.content.decode(), re.S)
    return re.findall(r'data-agent="([^"]+)"', match.group(1)) if match else []


def _plan_item(response, slug: str) -> str:
    match = re.search(
        rf'<li class="plan-item" data-agent="{slug}">(.*?)</li>', response.content.decode(), re.S
    )
    assert match, f"{slug} is not in the preview"
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1)))).strip()


def _item_row(response, slug: str) -> str:
    match = re.search(
        rf'<div id="bulk-item-\d+" [^>]*data-agent="{slug}"[^>]*>.*?\n</div>',
        response.content.decode(),
        re.S,
    )
    assert match, f"no row for {slug}"
    return match.group(0)


def _run(action: str, actor: Actor = COMMAND, **kwargs) -> BulkOperation:
    created = bulk.create_bulk_operation(action, actor, enqueue=False, **kwargs)
    finished = bulk.run_bulk_operation(created.pk)
    assert finished is not None
    return finished


def _counts(response) -> dict[str, str]:
    return dict(
        re.findall(r'data-count="(succeeded|failed|skipped|pending)">(\d+)', _text(response))
    )


# --- selection on the agents page -------------------------------------------------------------


def test_operators_get_a_checkbox_per_card_with_the_bulk_actions_that_apply(
    seeded, as_operator
) -> None:
    _set("wow-cache", state=State.RUNNING)
    _set("wow-event", state=State.ERRORED)
    _set("wow-memory", state=State.STOPPED)
    _set("wow-vision", state=State.REVOKED)
    response = as_operator.get("/agents/")

    boxes = _checkboxes(response)
    assert sorted(boxes) == sorted(seeded)
    assert boxes["wow-search"] == {
        "state": "DRAFT",
        "tier": "platform",
        "bulk-actions": "deploy_and_start deploy revoke",
    }
    assert boxes["wow-cache"]["bulk-actions"] == "stop restart suspend revoke"
    assert boxes["wow-event"]["bulk-actions"] == "stop restart revoke"
    assert boxes["wow-memory"]["bulk-actions"] == "deploy_and_start deploy start revoke"
    assert boxes["wow-vision"]["bulk-actions"] == ""
    content = _text(response)
    # The toolbar: every bulk action (shown by the page for the ticked agents), the selection
    # rules, the shortcuts and the way to the recent operations.
    assert 'id="bulk-form"' in content and "0 selected" in content
    buttons = re.findall(r'data-bulk-action="(\w+)">([^<]+)<', content)
    assert buttons == [(action, bulk.BULK_ACTION_LABELS[action]) for action in bulk.BULK_ACTIONS]
    picks = re.findall(r'data-bulk-pick="([^"]+)"', content)
    assert {
        "all",
        "none",
        "state:ERRORED",
        "state:RUNNING",
        "state:STOPPED",
        "tier:platform",
    } <= set(picks)
    shortcuts = re.findall(
        r'href="/agents/bulk/preview/\?shortcut=([\w-]+)"[^>]*>([^<]+)<', content
    )
    assert shortcuts == list(bulk.SHORTCUT_LABELS.items())
    assert 'href="/agents/bulk/"' in content


def test_table_rows_have_checkboxes_and_a_select_all_box(seeded, as_operator) -> None:
    response = as_operator.get("/agents/", {"view": "table"})
    content = response.content.decode()
    assert len(_checkboxes(response)) == 14
    assert content.count('<td class="select-cell">') == 14
    assert "data-bulk-select-all" in content
    # The htmx swap of the results keeps them (the page re-ticks what was selected).
    fragment = as_operator.get("/agents/", {"view": "table"}, headers=HTMX)
    assert len(_checkboxes(fragment)) == 14


def test_viewers_get_no_selection_and_no_toolbar(seeded, as_viewer) -> None:
    for view in ("grid", "table"):
        response = as_viewer.get("/agents/", {"view": view})
        content = response.content.decode()
        assert _checkboxes(response) == {}
        assert 'id="bulk-form"' not in content
        assert "data-bulk-select-all" not in content
        assert "shortcut=" not in content


def test_live_cards_and_rows_carry_the_checkbox_for_operators_only(seeded) -> None:
    from django.template.loader import render_to_string

    from agents.live import _ACCESS_ACTORS
    from agents.views.shared import agents_with_relations as _agents_with_relations
    from agents.views.shared import card_context as _card_context

    agent = _agents_with_relations().get(slug="wow-cache")
    for access, actor in _ACCESS_ACTORS.items():
        context = _card_context(agent, actor)
        card = render_to_string("agents/agent_list.html#card", context)
        row = render_to_string("agents/agent_list.html#row", context)
        has_box = access == realtime.ACCESS_OPERATE
        assert ("data-bulk-select" in card) is has_box
        assert ("data-bulk-select" in row) is has_box


# --- the preview ----------------------------------------------------------------------------


def test_preview_lists_every_agent_with_its_steps_in_dependency_order(seeded, as_operator) -> None:
    response = as_operator.get(
        "/agents/bulk/preview/",
        {"action": "deploy_and_start", "agent": list(seeded)},
        headers=HTMX,
    )

    assert response.status_code == 200
    content = _text(response)
    assert content.lstrip().startswith('<dialog class="dialog dialog-wide" id="bulk-dialog"')
    assert "Deploy and start 14 of 14 agents?" in content
    order = _plan_rows(response, "changing")
    assert sorted(order) == sorted(seeded)
    assert order.index("wow-event") < order.index("wow-memory") < order.index("wow-domain")
    assert order.index("wow-domain") < order.index("wow-agent-factory")
    assert (
        _plan_item(response, "wow-cache") == "WowCache DRAFT → RUNNING provision → deploy → start"
    )
    assert _plan_rows(response, "skipped") == []
    assert "dependencies first" in content
    assert re.search(r'name="parallelism"[^>]* max="10"[^>]* value="5"', content)
    assert 'name="confirm"' not in content
    # The run carries the same choice.
    hidden = re.findall(r'<input type="hidden" name="(action|agent)" value="([^"]+)"', content)
    assert ("action", "deploy_and_start") in hidden
    assert sorted(value for name, value in hidden if name == "agent") == sorted(seeded)
    assert re.search(r'<button type="submit" [^>]*data-run>Deploy and start 14 agents<', content)
    assert not BulkOperation.objects.exists()


def test_preview_says_why_agents_are_skipped(seeded, as_operator) -> None:
    _set("wow-event", state=State.RUNNING)
    _set("wow-cache", state=State.DEPLOYED)
    _set("wow-security", state=State.SUSPENDED)
    _set("wow-memory", state=State.STOPPED, pending_action="start")
    response = as_operator.get(
        "/agents/bulk/preview/",
        {"action": "start", "agent": ["wow-event", "wow-cache", "wow-security", "wow-memory", "wow-search"]},
        headers=HTMX,
    )  # fmt: skip

    assert _plan_rows(response, "changing") == ["wow-cache"]
    assert _plan_item(response, "wow-cache") == "WowCache DEPLOYED → RUNNING start"
    assert sorted(_plan_rows(response, "skipped")) == [
        "wow-event", "wow-memory", "wow-search", "wow-security",
    ]  # fmt: skip
    assert "WowEvent is already RUNNING." in _plan_item(response, "wow-event")
    assert "WowSecurity is SUSPENDED; resume it instead." in _plan_item(response, "wow-security")
    assert "WowMemory is already starting" in _plan_item(response, "wow-memory")
    assert "provision and deploy it first" in _plan_item(response, "wow-search")
    assert "1 will change, 4 will be skipped" in re.sub(r"<[^>]+>", "", _text(response))
    assert "Start 1 agent<" in _text(response)


def test_preview_names_dependents_outside_the_selection(seeded, as_operator) -> None:
    for slug in ("wow-event", "wow-cache", "wow-memory", "wow-communication"):
        _set(slug, state=State.RUNNING)
    response = as_operator.get(
        "/agents/bulk/preview/",
        {"action": "stop", "agent": ["wow-event", "wow-cache"]},
        headers=HTMX,
    )
    content = _text(response)
    affected = re.search(r'data-plan="affected">(.*?)</div>', content, re.S).group(1)
    assert "WowCommunication (RUNNING), WowMemory (RUNNING)" in affected
    assert "dependents first" in content
    assert 'name="confirm"' not in content, "not every running agent stops"


def test_stop_all_running_shortcut_asks_for_the_typed_phrase(seeded, as_operator) -> None:
    for slug in ("wow-event", "wow-cache", "wow-memory"):
        _set(slug, state=State.RUNNING)
    response = as_operator.get("/agents/bulk/preview/", {"shortcut": "stop-running"}, headers=HTMX)

    content = _text(response)
    assert sorted(_plan_rows(response, "changing")) == ["wow-cache", "wow-event", "wow-memory"]
    assert "Chosen by filter: state RUNNING." in content
    assert re.search(r"Type <strong[^>]*>stop 3</strong> to confirm", content)
    assert 'name="confirm"' in content
    assert '<input type="hidden" name="shortcut" value="stop-running">' in content
    assert re.search(r'class="button button-danger" data-run>Stop 3 agents<', content)


def test_preview_without_agents_or_of_nothing_explains_and_offers_no_run(
    seeded, as_operator
) -> None:
    cases = [
        ({"action": "start"}, "Choose the agents"),
        ({"shortcut": "restart-errored"}, "No agent matches state ERRORED."),
        ({"shortcut": "warp-speed"}, "There is no shortcut 'warp-speed'"),
        ({"action": "explode", "agent": ["wow-cache"]}, "'explode' is not a bulk action"),
        ({"action": "start", "agent": ["wow-nope"]}, "There is no agent 'wow-nope'"),
    ]
    for query, message in cases:
        response = as_operator.get("/agents/bulk/preview/", query, headers=HTMX)
        assert response.status_code == 200
        content = _text(response)
        assert message in content, (query, content)
        assert "data-run" not in content


def test_preview_is_a_page_without_htmx(seeded, as_operator) -> None:
    response = as_operator.get("/agents/bulk/preview/", {"shortcut": "deploy-all"})
    content = _text(response)
    assert response.status_code == 200
    assert "<html" in content and "<dialog" in content and " open>" in content.split("<dialog")[1]
    assert len(_plan_rows(response, "changing")) == 14
    assert '<a class="button" href="/agents/">Cancel</a>' in content
    assert "HX-Request" in response["Vary"]


# --- running ---------------------------------------------------------------------------------


def test_run_records_the_operation_and_sends_htmx_to_its_progress_page(
    seeded, as_operator, operator
) -> None:
    response = as_operator.post(
        "/agents/bulk/run/",
        {"action": "deploy", "agent": ["wow-cache", "wow-event"], "parallelism": "3", "reason": "go"},
        headers=HTMX,
    )  # fmt: skip

    operation = BulkOperation.objects.get()
    assert response.status_code == 200
    assert response["HX-Redirect"] == f"/agents/bulk/{operation.pk}/"
    assert (operation.action, operation.parallelism, operation.user, operation.actor) == (
        "deploy", 3, operator, "user:otto",
    )  # fmt: skip
    assert operation.options["reason"] == "go"
    assert sorted(operation.items.values_list("agent__slug", flat=True)) == [
        "wow-cache",
        "wow-event",
    ]
    assert AuditEntry.objects.filter(action="bulk.deploy", target=f"bulk:{operation.pk}").exists()

    # Without JavaScript: a plain redirect. The same agents again: busy in the first one.
    again = as_operator.post("/agents/bulk/run/", {"action": "deploy", "agent": ["wow-search"]})
    assert again.status_code == 302
    assert again["Location"] == f"/agents/bulk/{BulkOperation.objects.first().pk}/"
    refused = as_operator.post(
        "/agents/bulk/run/", {"action": "deploy", "agent": ["wow-cache"]}, headers=HTMX
    )
    assert "HX-Redirect" not in refused
    assert f"WowCache is in bulk operation #{operation.pk}" in _text(refused)
    assert BulkOperation.objects.count() == 2


def test_run_from_a_shortcut_uses_its_filter(seeded, as_operator) -> None:
    response = as_operator.post("/agents/bulk/run/", {"shortcut": "start-all"}, headers=HTMX)
    operation = BulkOperation.objects.get()
    assert response["HX-Redirect"] == f"/agents/bulk/{operation.pk}/"
    assert (operation.action, operation.filter, operation.total) == (
        "deploy_and_start",
        {"all": True},
        14,
    )
    assert operation.parallelism == 5


def test_a_wrong_or_missing_typed_confirmation_is_refused_and_changes_nothing(
    seeded, as_operator
) -> None:
    targets = {"action": "revoke", "agent": ["wow-vision", "wow-scaling"], "parallelism": "2"}
    for typed in ("", "revoke", "revoke 3"):
        response = as_operator.post(
            "/agents/bulk/run/", {**targets, "confirm": typed, "reason": "tidy"}, headers=HTMX
        )
        content = _text(response)
        assert response.status_code == 200 and "HX-Redirect" not in response
        assert content.lstrip().startswith('<form method="post" action="/agents/bulk/run/"')
        assert "type “revoke 2” to confirm it" in content
        # What was typed stays; the dialog still offers the run.
        assert re.search(r'name="parallelism"[^>]* value="2"', content)
        assert 'value="tidy"' in content
        assert "data-run" in content
    assert not BulkOperation.objects.exists()
    assert set(Agent.objects.values_list("state", flat=True)) == {State.DRAFT}
    assert AuditEntry.objects.filter(action="bulk.revoke", outcome="refused").count() == 3

    response = as_operator.post(
        "/agents/bulk/run/", {**targets, "confirm": " Revoke 2 "}, headers=HTMX
    )
    assert response["HX-Redirect"].startswith("/agents/bulk/")


def test_a_bad_parallelism_is_refused_in_the_dialog(seeded, as_operator) -> None:
    for value in ("0", "11", "two"):
        response = as_operator.post(
            "/agents/bulk/run/",
            {"action": "deploy", "agent": ["wow-cache"], "parallelism": value},
            headers=HTMX,
        )
        assert "give a whole number from 1 to 10" in _text(response)
    without_htmx = as_operator.post(
        "/agents/bulk/run/", {"action": "deploy", "agent": ["wow-cache"], "parallelism": "0"}
    )
    assert without_htmx.status_code == 200 and "<html" in _text(without_htmx)
    assert not BulkOperation.objects.exists()


def test_a_run_where_every_agent_would_be_skipped_is_refused(seeded, as_operator) -> None:
    response = as_operator.post(
        "/agents/bulk/run/", {"action": "stop", "agent": ["wow-cache", "wow-event"]}, headers=HTMX
    )
    assert "Nothing to do: every chosen agent would be skipped" in _text(response)
    assert not BulkOperation.objects.exists()


# --- the progress page -------------------------------------------------------------------------


def test_a_queued_operation_shows_pending_rows_a_cancel_button_and_polls(
    seeded, as_operator, as_viewer, operator
) -> None:
    operation = bulk.create_bulk_operation(
        "deploy_and_start",
        Actor(kind="user", user=operator),
        targets=["wow-memory", "wow-cache", "wow-event"],
        enqueue=False,
    )
    response = as_operator.get(f"/agents/bulk/{operation.pk}/")
    content = _text(response)

    assert response.status_code == 200
    assert 'Deploy and start <span class="muted">· 3 agents</span>' in content
    assert "bulk-status-pending" in content and "waiting for a worker" in content
    assert _counts(response) == {"succeeded": "0", "failed": "0", "skipped": "0", "pending": "3"}
    assert "by user:otto" in content and "at most 5 at a time" in content
    row = _item_row(response, "wow-memory")
    assert "item-status-pending" in row and "provision → deploy → start" in row
    assert 'badge-target" title="Where this operation takes it">RUNNING' in row
    # Items in dependency order; the page subscribes to its live topic and polls while offline.
    assert re.findall(r'data-agent="(wow-[a-z]+)" data-status', content) == [
        "wow-cache", "wow-event", "wow-memory",
    ]  # fmt: skip
    assert f'data-live-topics="bulk:{operation.pk}"' in content
    assert 'hx-trigger="every 2s [portalLiveDown()], live:resync from:body"' in content
    assert "data-cancel" in content
    assert "Summary" not in content
    # The viewer sees the same progress and no button.
    viewer_page = _text(as_viewer.get(f"/agents/bulk/{operation.pk}/"))
    assert "item-status-pending" in viewer_page and "data-cancel" not in viewer_page
    # htmx polls get the region only.
    fragment = as_viewer.get(f"/agents/bulk/{operation.pk}/", headers=HTMX)
    assert _text(fragment).lstrip().startswith('<div id="bulk-region"')
    assert "<html" not in _text(fragment)


def test_cancelling_a_queued_operation_skips_everything_and_says_so(
    seeded, as_operator, operator
) -> None:
    operation = bulk.create_bulk_operation(
        "deploy",
        Actor(kind="user", user=operator),
        targets=["wow-cache", "wow-event"],
        enqueue=False,
    )
    response = as_operator.post(f"/agents/bulk/{operation.pk}/cancel/", headers=HTMX)

    content = _text(response)
    operation.refresh_from_db()
    assert operation.status == BulkOperation.Status.CANCELLED
    assert content.lstrip().startswith(
        '<section class="card panel bulk-progress" id="bulk-progress"'
    )
    assert "bulk-status-cancelled" in content and "data-cancel" not in content
    assert f"Bulk operation #{operation.pk} cancelled." in content
    assert "Cancelled by user:otto" in content
    assert content.count("Not started: the operation was cancelled by user:otto.") == 2
    assert set(operation.items.values_list("status", flat=True)) == {BulkItem.Status.SKIPPED}

    again = as_operator.post(f"/agents/bulk/{operation.pk}/cancel/", headers=HTMX)
    assert again["HX-Reswap"] == "none"
    assert "has already finished (cancelled)" in _text(again)
    plain = as_operator.post(f"/agents/bulk/{operation.pk}/cancel/")
    assert plain.status_code == 302 and plain["Location"] == f"/agents/bulk/{operation.pk}/"


@pytest.mark.django_db(transaction=True)
def test_a_finished_operation_shows_counts_rows_and_the_summary(
    seeded, as_operator, operator, act
) -> None:
    act(Agent.objects.get(slug="wow-search"), "provision")
    act(Agent.objects.get(slug="wow-search"), "deploy")
    operation = _run(
        "deploy",
        Actor(kind="user", user=operator),
        targets=["wow-cache", "wow-event", "wow-search"],
    )
    assert operation.status == BulkOperation.Status.SUCCEEDED

    response = as_operator.get(f"/agents/bulk/{operation.pk}/")
    content = _text(response)
    assert _counts(response) == {"succeeded": "2", "failed": "0", "skipped": "1", "pending": "0"}
    assert "bulk-status-succeeded" in content and ">Succeeded<" in content
    assert "Total time" in content and "data-ticking" not in content
    assert 'aria-valuenow="100"' in content
    assert re.search(r'class="progress-part progress-succeeded" style="width: 66.67%"', content)
    row = _item_row(response, "wow-cache")
    assert "item-status-succeeded" in row and "provision → deploy" in row
    assert re.search(r"DRAFT</span> → <span [^>]*>DEPLOYED</span>", row)
    assert re.search(r'class="item-time">\d+\.\d s<', row)
    skipped = _item_row(response, "wow-search")
    assert "item-status-skipped" in skipped and "WowSearch is already DEPLOYED." in html.unescape(
        skipped
    )
    summary = re.search(r'<div class="bulk-summary" id="bulk-summary">.*', content, re.S).group(0)
    assert re.search(r"2 succeeded, 0 failed, 1 skipped; total time \d+ s\.", summary)
    assert "WowSearch</a>: WowSearch is already DEPLOYED." in summary
    # Nothing failed and a deployment cannot be undone: no follow-up offered.
    assert "data-retry" not in content and "data-rollback" not in content
    assert "data-cancel" not in content
    assert "hx-trigger" not in content.split('id="bulk-region"')[1].split(">")[0]


@pytest.mark.django_db(transaction=True)
def test_retry_failed_only_from_the_summary(
    seeded, as_operator, as_viewer, operator, settings
) -> None:
    settings.AGENT_READY_TIMEOUT_SECONDS = 5
    for slug in ("wow-cache", "wow-event"):
        _set(slug, state=State.DRAFT)
    _set("wow-cache", config=CRASH_ON_START)
    first = _run(
        "deploy_and_start", Actor(kind="user", user=operator), targets=["wow-cache", "wow-event"]
    )
    assert first.status == BulkOperation.Status.PARTIAL

    page = _text(as_operator.get(f"/agents/bulk/{first.pk}/"))
    assert "bulk-status-partial" in page and "Partly failed" in page
    failed = re.search(r'data-summary="failed">(.*?)</div>', page, re.S).group(1)
    assert "Failed (1)" in failed and "WowCache</a>: Start failed:" in failed
    assert re.search(r"data-retry>Retry failed only \(1\)<", page)
    assert "data-retry" not in _text(as_viewer.get(f"/agents/bulk/{first.pk}/"))
    assert as_viewer.post(f"/agents/bulk/{first.pk}/retry/").status_code == 403

    _set("wow-cache", config={})
    response = as_operator.post(f"/agents/bulk/{first.pk}/retry/", headers=HTMX)
    retry = BulkOperation.objects.get(kind=BulkOperation.Kind.RETRY)
    assert response["HX-Redirect"] == f"/agents/bulk/{retry.pk}/"
    assert (retry.follows, retry.targets, retry.action) == (
        first,
        ["wow-cache"],
        "deploy_and_start",
    )
    assert bulk.run_bulk_operation(retry.pk).status == BulkOperation.Status.SUCCEEDED
    retry_page = _text(as_operator.get(f"/agents/bulk/{retry.pk}/"))
    assert (
        f'Retry of failed items of <a href="/agents/bulk/{first.pk}/">#{first.pk}</a>' in retry_page
    )
    assert "data-retry" not in retry_page
    # The first operation lists its follow-up; retrying it again is refused with the reason.
    assert f'<a href="/agents/bulk/{retry.pk}/">#{retry.pk}</a> Retry of failed items' in _text(
        as_operator.get(f"/agents/bulk/{first.pk}/")
    )
    again = as_operator.post(f"/agents/bulk/{retry.pk}/retry/", headers=HTMX)
    assert again["HX-Reswap"] == "none"
    assert "has no failed agent to retry" in _text(again)


@pytest.mark.django_db(transaction=True)
def test_roll_back_shows_its_preview_then_returns_the_agents(
    seeded, as_operator, as_viewer, operator, bring_up
) -> None:
    for slug in ("wow-cache", "wow-event"):
        bring_up(Agent.objects.get(slug=slug))
    operator_actor = Actor(kind="user", user=operator)
    stopped = _run("stop", operator_actor, targets=["wow-cache", "wow-event"], confirm="stop 2")
    assert stopped.status == BulkOperation.Status.SUCCEEDED

    page = _text(as_operator.get(f"/agents/bulk/{stopped.pk}/"))
    assert "data-rollback" in page and "data-retry" not in page
    assert "data-rollback" not in _text(as_viewer.get(f"/agents/bulk/{stopped.pk}/"))
    for method in ("get", "post"):
        assert getattr(as_viewer, method)(f"/agents/bulk/{stopped.pk}/rollback/").status_code == 403

    preview = as_operator.get(f"/agents/bulk/{stopped.pk}/rollback/", headers=HTMX)
    content = _text(preview)
    assert f"Roll back bulk operation #{stopped.pk}?" in content
    assert f'action="/agents/bulk/{stopped.pk}/rollback/"' in content
    # Undoing a stop starts them again, dependencies first.
    assert sorted(_plan_rows(preview, "changing")) == ["wow-cache", "wow-event"]
    assert _plan_item(preview, "wow-cache") == "WowCache STOPPED → RUNNING start"
    assert "Roll back 2 agents<" in content and 'name="reason"' not in content
    assert not BulkOperation.objects.filter(kind=BulkOperation.Kind.ROLLBACK).exists()

    response = as_operator.post(
        f"/agents/bulk/{stopped.pk}/rollback/", {"parallelism": "2"}, headers=HTMX
    )
    rollback = BulkOperation.objects.get(kind=BulkOperation.Kind.ROLLBACK)
    assert response["HX-Redirect"] == f"/agents/bulk/{rollback.pk}/"
    assert (rollback.follows, rollback.parallelism) == (stopped, 2)
    assert bulk.run_bulk_operation(rollback.pk).status == BulkOperation.Status.SUCCEEDED
    states = Agent.objects.filter(slug__in=["wow-cache", "wow-event"]).values_list(
        "state", flat=True
    )
    assert set(states) == {State.RUNNING}
    rollback_page = _text(as_operator.get(f"/agents/bulk/{rollback.pk}/"))
    assert "Roll back <span" in rollback_page and "data-rollback" not in rollback_page
    assert f'Roll-back of <a href="/agents/bulk/{stopped.pk}/">' in rollback_page

    # Nothing left to roll back: the dialog says why and offers no run.
    refused = as_operator.get(f"/agents/bulk/{stopped.pk}/rollback/", headers=HTMX)
    assert "Nothing can be rolled back" in _text(refused) and "data-run" not in _text(refused)
    post = as_operator.post(f"/agents/bulk/{stopped.pk}/rollback/", headers=HTMX)
    assert "Nothing can be rolled back" in _text(post) and "HX-Redirect" not in post


# --- permissions, methods, unknown ids ------------------------------------------------------------


@pytest.mark.parametrize("client_name", ["as_viewer", "as_outsider"])
def test_viewers_and_outsiders_cannot_preview_run_cancel_retry_or_roll_back(
    seeded, operator, request, client_name
) -> None:
    client = request.getfixturevalue(client_name)
    operation = bulk.create_bulk_operation(
        "deploy", Actor(kind="user", user=operator), targets=["wow-cache"], enqueue=False
    )
    attempts = [
        ("get", "/agents/bulk/preview/", {"shortcut": "deploy-all"}),
        ("post", "/agents/bulk/run/", {"shortcut": "deploy-all"}),
        ("post", "/agents/bulk/run/", {"action": "deploy", "agent": ["wow-event"]}),
        ("post", f"/agents/bulk/{operation.pk}/cancel/", {}),
        ("post", f"/agents/bulk/{operation.pk}/retry/", {}),
        ("get", f"/agents/bulk/{operation.pk}/rollback/", {}),
        ("post", f"/agents/bulk/{operation.pk}/rollback/", {}),
    ]
    for method, path, data in attempts:
        for headers in ({}, HTMX):
            response = getattr(client, method)(path, data, headers=headers)
            assert response.status_code == 403, (method, path)
            dialog_post = headers and method == "post" and path.endswith(("/run/", "/rollback/"))
            if dialog_post and client_name == "as_viewer":
                # Sent from an open dialog (the role changed meanwhile): the dialog says why.
                content = _text(response)
                assert content.lstrip().startswith('<form method="post"'), content
                assert "You cannot run bulk operations: it needs the Operator role" in content
                assert "data-run" not in content
    assert BulkOperation.objects.count() == 1
    operation.refresh_from_db()
    assert operation.status == BulkOperation.Status.PENDING
    assert operation.cancel_requested_at is None


def test_viewers_see_the_bulk_pages_and_outsiders_do_not(
    seeded, operator, as_viewer, as_outsider, client
) -> None:
    operation = bulk.create_bulk_operation(
        "deploy", Actor(kind="user", user=operator), targets=["wow-cache"], enqueue=False
    )
    for path in ("/agents/bulk/", f"/agents/bulk/{operation.pk}/"):
        assert as_viewer.get(path).status_code == 200
        assert as_outsider.get(path).status_code == 403
        assert client.get(path).status_code == 302  # to the sign-in page


def test_wrong_methods_and_unknown_operations(seeded, as_operator) -> None:
    assert as_operator.get("/agents/bulk/run/").status_code == 405
    assert as_operator.post("/agents/bulk/preview/").status_code == 405
    assert as_operator.post("/agents/bulk/").status_code == 405
    assert as_operator.get("/agents/bulk/1/cancel/").status_code == 405
    assert as_operator.get("/agents/bulk/1/retry/").status_code == 405
    assert as_operator.put("/agents/bulk/1/rollback/").status_code == 405
    for path in ("/agents/bulk/999/", "/agents/bulk/999/rollback/"):
        assert as_operator.get(path).status_code == 404
    assert as_operator.post("/agents/bulk/999/cancel/").status_code == 404


def test_run_needs_the_csrf_token(seeded, operator) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    response = client.post("/agents/bulk/run/", {"shortcut": "deploy-all"})
    assert response.status_code == 403
    assert not BulkOperation.objects.exists()


# --- recent bulk operations -------------------------------------------------------------------


def test_the_list_shows_recent_operations_newest_first(seeded, as_viewer, operator) -> None:
    actor = Actor(kind="user", user=operator)
    first = bulk.create_bulk_operation("deploy", actor, targets=["wow-cache"], enqueue=False)
    bulk.cancel_bulk_operation(first, actor)
    second = bulk.create_bulk_operation("revoke", actor, targets=["wow-vision"], confirm="revoke 1", enqueue=False)  # fmt: skip

    response = as_viewer.get("/agents/bulk/")
    content = _text(response)
    assert re.findall(r'<tr id="bulk-op-(\d+)"', content) == [str(second.pk), str(first.pk)]
    first_row = re.search(rf'<tr id="bulk-op-{first.pk}".*?</tr>', content, re.S).group(0)
    assert "Deploy" in first_row and "Cancelled" in first_row and "1 skipped" in first_row
    assert 'data-live-topics="bulk-list"' in content
    fragment = _text(as_viewer.get("/agents/bulk/", headers=HTMX))
    assert fragment.lstrip().startswith('<tbody id="bulk-rows"')

    def queries() -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as captured:
            assert as_viewer.get("/agents/bulk/").status_code == 200
        return len(captured)

    with_two = queries()
    for slug in ("wow-search", "wow-domain", "wow-analytics", "wow-scaling"):
        bulk.create_bulk_operation("deploy", actor, targets=[slug], enqueue=False)
    assert queries() == with_two


def test_empty_list_points_to_the_agents_page(seeded, as_viewer) -> None:
    content = _text(as_viewer.get("/agents/bulk/"))
    assert 'id="bulk-none"' in content and "No bulk operation yet" in content


# --- live -----------------------------------------------------------------------------------------

ORIGIN = (b"origin", b"http://127.0.0.1")


def _session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def _connect(user) -> WebsocketCommunicator:
    cookie = await sync_to_async(_session_cookie)(user)
    communicator = WebsocketCommunicator(
        application, "/ws/live/", headers=[ORIGIN, (b"cookie", cookie)]
    )
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def _next_html(communicator, *containing: str, timeout: float = 5) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise AssertionError(f"no message containing {containing!r} within {timeout} s")
        message = await communicator.receive_from(timeout=remaining)
        if all(text in message for text in containing):
            return message


async def _messages_within(communicator, seconds: float) -> list[str]:
    found = []
    deadline = asyncio.get_running_loop().time() + seconds
    while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
        if await communicator.receive_nothing(timeout=min(remaining, 0.2)):
            continue
        found.append(await communicator.receive_from())
    return found


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_socket_joins_a_bulk_topic_only_for_an_operation_that_exists(
    seeded, viewer, operator
) -> None:
    operation = await sync_to_async(bulk.create_bulk_operation)(
        "deploy", Actor(kind="user", user=operator), targets=["wow-cache"], enqueue=False
    )
    as_viewer = await _connect(viewer)
    as_operator = await _connect(operator)
    await as_viewer.send_json_to(
        {"subscribe": [f"bulk:{operation.pk}", "bulk:999", "bulk:abc", "bulk:99999999999999"]}
    )
    # The list page: new operations (bulk-list) and each row it shows (bulk-row:<id>).
    await as_operator.send_json_to(
        {"subscribe": [f"bulk:{operation.pk}", "bulk-list", f"bulk-row:{operation.pk}"]}
    )
    await asyncio.sleep(0.3)
    watched = await sync_to_async(realtime.watched)(
        [
            live.bulk_group(operation.pk, realtime.ACCESS_VIEW),
            live.bulk_group(operation.pk, realtime.ACCESS_OPERATE),
            live.bulk_group(999, realtime.ACCESS_VIEW),
            live.bulk_list_group(),
        ]
    )
    assert watched == {
        live.bulk_group(operation.pk, realtime.ACCESS_VIEW),
        live.bulk_group(operation.pk, realtime.ACCESS_OPERATE),
        live.bulk_list_group(),
    }

    # A change to the operation reaches both, each with what their role may do.
    await sync_to_async(bulk.cancel_bulk_operation)(operation, Actor(kind="user", user=operator))
    operator_html = "".join(await _messages_within(as_operator, 1.0))
    viewer_html = "".join(await _messages_within(as_viewer, 1.0))
    for pushed in (operator_html, viewer_html):
        assert 'id="bulk-progress"' in pushed and "bulk-status-cancelled" in pushed
        assert "Not started: the operation was cancelled by user:otto." in html.unescape(pushed)
        assert "data-cancel" not in pushed.rsplit('id="bulk-progress"', 1)[1]
    assert re.search(rf'<tr id="bulk-op-{operation.pk}"[^>]*data-status="cancelled"', operator_html)
    assert "bulk-op-" not in viewer_html, "the viewer did not subscribe to the list"

    # A new operation goes on top of the list (whose "none yet" row then hides itself, by CSS).
    created = await sync_to_async(bulk.create_bulk_operation)(
        "deploy", Actor(kind="user", user=operator), targets=["wow-event"], enqueue=False
    )
    pushed = await _next_html(as_operator, f'id="bulk-op-{created.pk}"')
    assert '<tbody id="bulk-rows" hx-swap-oob="afterbegin">' in pushed
    await as_viewer.disconnect()
    await as_operator.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_running_operation_pushes_rows_and_its_starter_gets_one_toast(
    seeded, viewer, operator
) -> None:
    operator_actor = Actor(kind="user", user=operator)
    operation = await sync_to_async(bulk.create_bulk_operation)(
        "deploy", operator_actor, targets=["wow-cache", "wow-event"], enqueue=False
    )
    as_viewer = await _connect(viewer)
    as_operator = await _connect(operator)
    await as_viewer.send_json_to({"subscribe": [f"bulk:{operation.pk}"]})
    await asyncio.sleep(0.3)

    await sync_to_async(bulk.run_bulk_operation)(operation.pk)

    messages = await _messages_within(as_viewer, 1.5)
    pushed = "".join(messages)
    assert 'id="bulk-progress"' in pushed and "bulk-status-succeeded" in pushed
    for item in await sync_to_async(list)(operation.items.all()):
        assert f'id="bulk-item-{item.pk}"' in pushed
    assert "item-status-succeeded" in pushed
    assert "toast" not in pushed, "the toast is the starter's"
    # Rows are not <tr>: a row beside the progress block in one message must survive parsing.
    assert "<tr" not in pushed
    toasts = [m for m in await _messages_within(as_operator, 1.0) if "toast" in m]
    assert len(toasts) == 1, toasts
    assert re.search(r"Deploy: 2 succeeded in \d+\.\d s", toasts[0])
    assert f'href="/agents/bulk/{operation.pk}/"' in toasts[0]
    # One toast for the operation, none for each of its four steps.
    assert "Provision WowCache" not in toasts[0]
    await as_viewer.disconnect()
    await as_operator.disconnect()
