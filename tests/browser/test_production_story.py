"""Production stories in a real browser (issue 20's "Done when"): an Admin finds on the audit
page who stopped WowCache yesterday and exports it as CSV; the compliance report for a week
downloads and names the actions by actor, the refusals and the role changes.

The history is made through the real services (agents started and stopped on the local runtime
by user actors, a refused stop, a role change); only the entries' times are moved back, as
tests/portal/test_audit_log.py does, since no door may edit an entry."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
from datetime import datetime, time, timedelta
from pathlib import Path

import pytest
from django.db import connection, transaction
from playwright.sync_api import expect

from agents import services
from agents.models import Agent
from portal.actors import Actor
from portal.models import AuditEntry
from portal.services import assign_role


@pytest.fixture
def agents_root(settings, tmp_path_factory):
    root = tmp_path_factory.mktemp("story-agents")
    settings.AGENT_ROOT = root
    yield root
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(str(root) in part for part in process.info["cmdline"] or []):
                os.kill(process.pid, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError):
            pass


def _act(agent: Agent, action: str, actor: Actor, reason: str = "") -> None:
    operation = services.request_action(agent, action, actor, reason=reason, enqueue=False)
    assert services.run_operation(str(operation.pk)).status == "succeeded", action


def _move(entries, when: datetime) -> None:
    """Back-date entries: tests only, triggers off for this transaction (as a superuser restoring
    a backup would), since no door may edit an entry."""
    ids = [entry.pk for entry in entries]
    assert ids
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("UPDATE portal_auditentry SET at = %s WHERE id = ANY(%s)", [when, ids])
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")


def _local(day, hour: int) -> datetime:
    from django.utils import timezone

    return timezone.make_aware(datetime.combine(day, time(hour, 0)))


@pytest.fixture
def history(agents_root, admin, operator, viewer, make_user):
    """Otto (Operator) stopped WowCache yesterday at noon; around it: Ada (Admin) started and
    stopped it again today, Olga stopped WowEvent yesterday, Vera (Viewer) was refused a start
    of WowCache yesterday, Otto stopped WowCache three days ago, and Ada made Vera a Viewer."""
    from django.utils import timezone

    today = timezone.localdate()
    yesterday, three_days_ago = today - timedelta(days=1), today - timedelta(days=3)
    olga = make_user("olga", "Operator")
    otto, ada, olga_actor, vera = (Actor(kind="user", user=user, source="10.1.2.3")
                                   for user in (operator, admin, olga, viewer))  # fmt: skip
    services.seed_platform_agents(Actor.command("test"))
    cache = Agent.objects.get(slug="wow-cache")
    event = Agent.objects.get(slug="wow-event")
    for agent in (cache, event):
        for action in ("provision", "deploy", "start"):
            _act(agent, action, ada)
    # Three days ago: Otto stops WowCache, Ada starts it again.
    _act(cache, "stop", otto, reason="rotating keys")
    _move(AuditEntry.objects.filter(action="agent.stop", user=operator), _local(three_days_ago, 9))
    _act(cache, "start", ada)
    # Yesterday: Otto stops it (the one we look for), Olga stops WowEvent, Vera is refused.
    before = set(AuditEntry.objects.values_list("pk", flat=True))
    _act(cache, "stop", otto, reason="noisy neighbour")
    wanted = list(AuditEntry.objects.exclude(pk__in=before).filter(action="agent.stop"))
    _act(event, "stop", olga_actor, reason="maintenance")
    with pytest.raises(Exception):  # noqa: B017, PT011 (refused: PermissionDenied)
        services.request_action(Agent.objects.get(pk=cache.pk), "start", vera, enqueue=False)
    yesterdays = AuditEntry.objects.exclude(pk__in=before)
    _move(yesterdays, _local(yesterday, 12))
    # Today: Ada starts and stops WowCache, and changes Vera's role.
    _act(cache, "start", ada)
    _act(cache, "stop", ada, reason="end of test")
    assign_role(viewer, "Viewer", ada)
    return {"wanted": wanted, "yesterday": yesterday, "today": today}


def test_an_admin_finds_who_stopped_wowcache_yesterday_and_exports_it(
    page, sign_in_as, admin, history, screenshot
) -> None:
    wanted = history["wanted"]
    assert {entry.user.get_username() for entry in wanted} == {"otto"}

    sign_in_as(admin)
    page.goto("/audit/")
    expect(page.locator("tr.audit-row").first).to_be_visible()
    assert page.locator("tr.audit-row").count() > len(wanted)  # the noise is there
    form = page.locator("form.audit-filters")
    form.get_by_label("Object").fill("wow-cache")
    form.get_by_label("Action").fill("agent.stop")
    form.get_by_label("From").fill(history["yesterday"].isoformat())
    form.get_by_label("Until").fill(history["today"].isoformat())
    form.get_by_role("button", name="Search").click()
    rows = page.locator("#audit-rows tr.audit-row")
    expect(rows).to_have_count(len(wanted))
    expect(page).to_have_url(re.compile(r"/audit/\?.*object=wow-cache.*since="))
    assert sorted(int(pk) for pk in rows.evaluate_all("rs => rs.map(r => r.dataset.audit)")) == (
        sorted(entry.pk for entry in wanted)
    )
    for row in rows.all():
        expect(row).to_contain_text("otto")
        expect(row).to_contain_text("agent.stop")
        expect(row).to_contain_text(str(history["yesterday"]))
    screenshot(page, "production-audit-who-stopped-wowcache")

    with page.expect_download() as download_info:
        page.locator('[data-export="csv"]').click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    exported = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert sorted(int(row["id"]) for row in exported) == sorted(entry.pk for entry in wanted)
    for row in exported:
        assert (row["actor"], row["action"], row["target"]) == ("user:otto", "agent.stop",
                                                                "wow-cache")  # fmt: skip
        assert row["at"].startswith(str(history["yesterday"]))
    assert any("noisy neighbour" in row["detail"] for row in exported)  # the request's reason


def test_the_compliance_report_for_a_week_downloads(
    page, sign_in_as, admin, history, screenshot
) -> None:
    sign_in_as(admin)
    page.goto("/audit/")
    page.locator("[data-report-link]").click()
    expect(page).to_have_url(re.compile(r"/audit/report/$"))
    week_ago = history["today"] - timedelta(days=7)
    tomorrow = history["today"] + timedelta(days=1)
    page.get_by_label("From").fill(week_ago.isoformat())
    page.get_by_label("Until").fill(tomorrow.isoformat())
    page.get_by_role("button", name="Show").click()
    report = page.locator("[data-report]")
    expect(report).to_be_visible()
    by_actor = report.locator("[data-by-actor]")
    for name in ("user:otto", "user:ada", "user:olga", "user:vera"):
        expect(by_actor).to_contain_text(name)
    expect(report.locator('[data-section="refusals"]')).to_contain_text("user:vera")
    expect(report.locator('[data-section="role_changes"]')).to_contain_text("user.role")
    screenshot(page, "production-compliance-report")
    report.locator('[data-section="role_changes"]').scroll_into_view_if_needed()
    screenshot(page, "production-compliance-report-refusals")

    with page.expect_download() as download_info:
        report.locator('[data-download="csv"]').click()
    download = download_info.value
    assert download.suggested_filename == f"compliance-{week_ago}-{tomorrow}.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    counted = {row["name"]: row for row in rows if row["section"] == "by_actor"}
    in_db = AuditEntry.objects.filter(actor="user:otto", at__gte=_local(week_ago, 0))
    assert int(counted["user:otto"]["entries"]) == in_db.count() >= 2
    assert int(counted["user:vera"]["refused"]) == 1
    refusals = [row for row in rows if row["section"] == "refusals"]
    assert [(row["actor"], row["action"], row["target"]) for row in refusals] == [
        ("user:vera", "agent.start", "wow-cache")
    ]
    roles = [row for row in rows if row["section"] == "role_changes"]
    assert [(row["actor"], row["action"], row["target"]) for row in roles] == [
        ("user:ada", "user.role", "vera")
    ]

    with page.expect_download() as download_info:
        report.locator('[data-download="json"]').click()
    found = json.loads(Path(download_info.value.path()).read_text())
    assert found["totals"]["refused"] == 1
    assert {row["actor"] for row in found["by_actor"]} >= {"user:otto", "user:ada", "user:olga"}
