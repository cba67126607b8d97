"""Production stories in a real browser (issue 20's "Done when"): an Admin finds on the audit
page who stopped WowCache yesterday and exports it as CSV; the compliance report for a week
downloads and names the actions by actor, the refusals and the role changes; WowEvent's SLO
panel shows its error budget burning after a crash and the "SLO burn rate" alert fires; a real
Prometheus server scrapes the portal's ``/-/metrics``.

The history is made through the real services (agents started and stopped on the local runtime
by user actors, a refused stop, a role change); only the entries' times are moved back, as
tests/portal/test_audit_log.py does, since no door may edit an entry."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
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


def test_wowevent_burns_its_error_budget_after_a_crash_and_the_burn_rate_alert_fires(
    page, sign_in_as, operator, agents_root, screenshot
) -> None:
    """WowEvent runs on the local runtime and is scraped once a minute for the last hour (real
    scrapes of its /metrics, stamped a minute apart); then its process is SIGKILLed, the monitor
    finds it ERRORED, and the scrapes of the last minutes record it down. The SLO panel shows the
    budget burning; the "SLO burn rate" rule fires when the alert rules are evaluated."""
    import threading

    from django.utils import timezone

    from agents.models import State
    from agents.monitor import Monitor
    from observability import alerts, metrics
    from observability.models import Alert
    from tests.browser.conftest import wait_for

    services.seed_platform_agents(Actor.command("test"))
    alerts.ensure_default_rules(Actor.command("test"))
    Agent.objects.filter(slug="wow-event").update(restart_policy="never")
    event = Agent.objects.get(slug="wow-event")
    for action in ("provision", "deploy", "start"):
        _act(event, action, Actor(kind="user", user=operator, source="10.1.2.3"))
    event = Agent.objects.get(slug="wow-event")
    now = timezone.now()
    for minutes in range(60, 3, -1):
        assert metrics.scrape_all(now - timedelta(minutes=minutes)) == 1
    assert metrics.uptime(event, timedelta(hours=1)) == 100.0

    monitor = Monitor(probe_interval=1)
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    try:
        os.kill(event.runtime_details["pids"][0], signal.SIGKILL)
        wait_for(lambda: Agent.objects.get(slug="wow-event").state == State.ERRORED, 15,
                 "the monitor to mark WowEvent ERRORED")  # fmt: skip
    finally:
        monitor.stop()
        thread.join(timeout=10)
    now = timezone.now()
    for minutes in (3, 2, 1, 0):
        assert metrics.scrape_all(now - timedelta(minutes=minutes)) == 1
    down_1h = 100.0 - metrics.uptime(event, timedelta(hours=1))
    assert 5 < down_1h < 8  # 4 of about 60 samples down
    alerts.evaluate()
    burning = Alert.objects.get(rule__name="SLO burn rate", agent=event)
    assert burning.status == "firing"

    sign_in_as(operator)
    page.goto("/")
    row = page.locator('[data-slo-panel] tr[data-slo="wow-event"]')
    expect(row).to_have_attribute("data-alerting", "1h/5m")
    budget_left = float(row.locator("[data-budget-left]").get_attribute("data-budget-left"))
    assert (
        budget_left < 0
    )  # an hour of samples, four minutes down: far more than 43.2 min of 30 days
    burn_1h = float(row.locator('[data-burn="1h"]').inner_text().rstrip("×"))
    assert burn_1h == pytest.approx(down_1h / 0.1, abs=0.1)
    expect(row).to_contain_text("Burning (1h/5m)")
    row.scroll_into_view_if_needed()
    screenshot(page, "production-slo-dashboard")

    page.goto("/agents/wow-event/")
    panel = page.locator("#slo-panel-wow-event")
    expect(panel.locator('tr[data-slo="wow-event"]')).to_have_attribute("data-alerting", "1h/5m")
    panel.scroll_into_view_if_needed()
    screenshot(page, "production-slo-agent-page")

    page.goto("/alerts/?agent=all")
    item = page.locator(f"#alert-{burning.pk}")
    expect(item).to_have_attribute("data-status", "firing")
    expect(item).to_contain_text("WowEvent burns its error budget")
    screenshot(page, "production-slo-alert-firing")


@pytest.mark.skipif(
    # Under CI=true .ci/run has installed it: a missing server is a failure there.
    not shutil.which("prometheus") and os.environ.get("CI") != "true",
    reason="no prometheus (apt-get install prometheus)",
)
def test_a_prometheus_server_scrapes_the_portal(page, portal_server, tmp_path, screenshot) -> None:
    """A real Prometheus scrapes the running portal's ``/-/metrics`` from loopback (allowed
    without a token) every second; its query API then answers the portal's own series."""
    import subprocess
    import urllib.parse
    import urllib.request

    from portal import embedded
    from tests.browser.conftest import wait_for

    services.seed_platform_agents(Actor.command("test"))
    target = urllib.parse.urlsplit(portal_server).netloc
    port = embedded.free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: portal\n    metrics_path: /-/metrics\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    server = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def query(expression: str) -> list:
        url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (our own server)
                return json.load(answer)["data"]["result"]
        except OSError:
            return []

    try:
        wait_for(lambda: query('up{job="portal"} == 1'), 30, "Prometheus to scrape the portal")
        drafts = wait_for(lambda: query('portal_agents{state="DRAFT"}'), 10, "portal_agents")
        assert float(drafts[0]["value"][1]) == 14
        assert (
            query("portal_scrape_errors")
            and float(query("portal_scrape_errors")[0]["value"][1]) == 0
        )
        # Debian's Prometheus has no web UI: its query API's answer, as a browser shows it.
        page.goto(f"{base}/api/v1/query?query=portal_agents")
        expect(page.locator("body")).to_contain_text('"job":"portal"')
        expect(page.locator("body")).to_contain_text('"state":"DRAFT"')
        screenshot(page, "production-prometheus-query")
    finally:
        server.terminate()
        server.wait(timeout=10)
