"""The audit log: which door each entry came through, that no door can edit or delete one (a
database trigger), searching it by page, API and command, exports, the compliance report and
retention."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from unittest.mock import ANY

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from portal.actors import Actor
from portal.audit import retention
from portal.models import AuditEntry
from portal.services import record_audit

pytestmark = pytest.mark.django_db


def test_each_door_is_recorded(rf, admin_actor):
    user = admin_actor.user
    page = rf.post("/agents/wow-cache/stop/")
    page.user = user
    api = rf.post("/api/platform/agents/wow-cache/stop")
    api.user = user
    admin = rf.post("/admin/portal/apitoken/1/change/")
    admin.user = user

    for actor in (Actor.from_request(page), Actor.from_request(api), Actor.from_request(admin),
                  Actor.command("agents"), Actor.system("monitor")):  # fmt: skip
        record_audit(actor, "agent.stop", target="wow-cache")

    doors = list(AuditEntry.objects.order_by("id").values_list("door", "app"))
    assert doors == [("page", "agent"), ("api", "agent"), ("admin", "agent"),
                     ("command", "agent"), ("system", "agent")]  # fmt: skip


def test_an_entry_cannot_be_edited_or_deleted(admin_actor):
    entry = record_audit(admin_actor, "agent.stop", target="wow-cache")

    for change in (
        lambda: AuditEntry.objects.filter(pk=entry.pk).update(target="wow-memory"),
        lambda: AuditEntry.objects.filter(pk=entry.pk).delete(),
        lambda: AuditEntry.objects.filter(pk=entry.pk).update(user=None, outcome="refused"),
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            change()

    entry.refresh_from_db()
    assert (entry.target, entry.outcome, entry.user) == ("wow-cache", "success", admin_actor.user)


def test_deleting_a_user_keeps_their_entries_under_their_label():
    user = get_user_model().objects.create_user("leaver", password="x" * 12)
    record_audit(Actor(kind="user", user=user, source="10.0.0.9"), "agent.stop", target="wow-cache")

    user.delete()

    entry = AuditEntry.objects.get()
    assert (entry.user, entry.actor, entry.source) == (None, "user:leaver", "10.0.0.9")


# --- searching: the page, the API and the command find the same entries ----------------------


def _at(entry: AuditEntry, when) -> None:
    """Back-date an entry: tests only, with triggers off for this transaction (as a superuser
    restoring a backup would), since no door may edit an entry."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("UPDATE portal_auditentry SET at = %s WHERE id = %s", [when, entry.pk])
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")


@pytest.fixture
def history(admin_actor, operator_actor, viewer_actor):
    """Who stopped WowCache yesterday, among other things."""
    now = timezone.now()
    stop = record_audit(operator_actor, "agent.stop", target="wow-cache", reason="noisy")
    _at(stop, now - timedelta(days=1))
    record_audit(admin_actor, "agent.start", target="wow-cache")
    record_audit(viewer_actor, "agent.stop", target="wow-memory",
                 outcome=AuditEntry.Outcome.REFUSED, error="needs Operator")  # fmt: skip
    record_audit(Actor.system("monitor"), "agent.reconcile", target="wow-event")
    record_audit(admin_actor, "user.role", target="vera", role="Viewer")
    record_audit(admin_actor, "servicing.upgrade", target="wow-cache", window_override="urgent")
    return stop


def test_the_page_finds_who_stopped_wowcache_yesterday(client, viewer, history):
    client.force_login(viewer)
    since = (timezone.localtime() - timedelta(days=2)).date().isoformat()

    response = client.get(
        "/audit/", {"object": "wow-cache", "action": "agent.stop", "since": since}
    )

    assert response.status_code == 200
    rows = response.context["entries"]
    assert [(e.actor, e.action, e.target) for e in rows] == [
        ("user:otto", "agent.stop", "wow-cache")
    ]
    page = response.content.decode()
    assert 'data-action="agent.stop"' in page and "user:otto" in page
    assert "export.csv?" in page and "object=wow-cache" in page


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"actor": "otto"}, ["agent.stop"]),
        ({"actor": "OTTO@waooaw.test"}, ["agent.stop"]),
        ({"actor": "monitor"}, ["agent.reconcile"]),
        ({"actor": "system:monitor"}, ["agent.reconcile"]),
        ({"actor": "nobody"}, []),
        ({"outcome": "refused"}, ["agent.stop"]),
        ({"app": "user"}, ["user.role"]),
        ({"door": "system"}, ["agent.reconcile"]),
        ({"q": "noisy"}, ["agent.stop"]),
        ({"q": "wow cache stop"}, ["agent.stop"]),
        ({"q": "urgent"}, ["servicing.upgrade"]),
        ({"q": "reconc"}, ["agent.reconcile"]),
        ({"q": "!!! & | :*"}, None),  # no words: no filter, every entry
        ({"since": "2h"}, ["servicing.upgrade", "user.role", "agent.reconcile", "agent.stop",
                           "agent.start"]),
    ],
)  # fmt: skip
def test_the_api_filters(client, viewer, history, params, expected):
    client.force_login(viewer)

    response = client.get("/api/platform/audit", params)

    assert response.status_code == 200, response.content
    actions = [e["action"] for e in response.json()["entries"]]
    if expected is None:
        assert len(actions) == 6
    else:
        assert actions == expected if params.get("since") else sorted(actions) == sorted(expected)


def test_keyset_pages_walk_every_entry_once_and_cost_the_same(client, viewer, admin_actor):
    for n in range(23):
        record_audit(admin_actor, "agent.restart", target=f"agent-{n}")
    client.force_login(viewer)

    seen, cursor, queries_per_page = [], "", []
    while True:
        with CaptureQueriesContext(connection) as captured:
            body = client.get("/api/platform/audit", {"limit": 5, "cursor": cursor}).json()
        queries_per_page.append(len(captured))
        seen += [e["id"] for e in body["entries"]]
        cursor = body["next_cursor"]
        if not cursor:
            break

    assert len(seen) == len(set(seen)) == AuditEntry.objects.count()
    assert seen == sorted(seen, reverse=True)
    assert len(set(queries_per_page)) == 1


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"since": "yesterday"}, "is not a time"),
        ({"since": "2026-02-30"}, "is not a time"),
        ({"since": "99999-01-01"}, "is not a time"),
        ({"since": "1900-01-01"}, "year must be 2000"),
        ({"since": "999999999d"}, "is not a time"),
        ({"since": "99999d"}, "too far"),
        ({"since": "2026-12-05", "until": "2026-12-01"}, "swap them"),
        ({"door": "window"}, "is not a door"),
        ({"outcome": "maybe"}, "is not an outcome"),
        ({"limit": "0"}, "from 1 to 500"),
        ({"limit": "10000000000000000000000"}, "from 1 to 500"),
        ({"limit": "-1"}, "from 1 to 500"),
        ({"cursor": "not-a-cursor"}, "start again"),
        ({"actor": "x" * 300}, "at most 200"),
    ],
)
def test_bad_filters_are_refused_with_a_sentence_at_every_door(client, viewer, params, says):
    client.force_login(viewer)

    api = client.get("/api/platform/audit", params)
    page = client.get("/audit/", params)

    assert api.status_code == 400 and says in api.json()["detail"]
    assert page.status_code == 400 and says in page.content.decode()
    with pytest.raises(Exception, match=says.split()[0]):
        options = {("target" if k == "object" else k): v for k, v in params.items()}
        call_command("audit", "search", *[f"--{k}={v}" for k, v in options.items()])


def test_a_nul_byte_is_refused(client, viewer):
    client.force_login(viewer)

    assert client.get("/api/platform/audit", {"q": "a\x00b"}).status_code == 400
    assert client.get("/audit/", {"actor": "\x00"}).status_code == 400


def test_someone_without_a_role_reads_nothing(client, outsider, history):
    client.force_login(outsider)

    assert client.get("/audit/").status_code == 403
    assert client.get("/api/platform/audit").status_code == 401  # the API's answer to no role
    assert client.get("/audit/export.csv").status_code == 403


def test_exports_hold_every_matching_entry(client, viewer, history, admin_actor):
    record_audit(admin_actor, "agent.stop", target="=cmd|'/c calc'!A1")  # a formula, typed in
    client.force_login(viewer)

    as_csv = client.get("/audit/export.csv", {"action": "agent.stop"})
    as_jsonl = client.get("/audit/export.jsonl", {"action": "agent.stop"})

    assert as_csv["Content-Disposition"].startswith('attachment; filename="audit-')
    rows = list(csv.DictReader(io.StringIO(b"".join(as_csv).decode())))
    assert sorted(r["target"] for r in rows) == ["'=cmd|'/c calc'!A1", "wow-cache", "wow-memory"]
    assert json.loads(next(r["detail"] for r in rows if r["target"] == "wow-cache")) == {
        "reason": "noisy"
    }
    lines = b"".join(as_jsonl).decode().splitlines()
    assert sorted(json.loads(line)["target"] for line in lines) == [
        "=cmd|'/c calc'!A1", "wow-cache", "wow-memory"]  # fmt: skip


def test_the_command_searches_and_exports(history, tmp_path, capsys):
    call_command("audit", "search", "--actor", "otto", "--json")
    found = json.loads(capsys.readouterr().out)
    assert [e["action"] for e in found["entries"]] == ["agent.stop"]

    out = tmp_path / "stops.csv"
    call_command("audit", "export", "--object", "wow-cache", "--format", "csv", "-o", str(out))
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["action"] for r in rows) == ["agent.start", "agent.stop", "servicing.upgrade"]


def test_the_compliance_report_counts_the_period(client, admin, viewer, history):
    client.force_login(admin)
    period = {"since": (timezone.now() - timedelta(hours=2)).isoformat(),
              "until": (timezone.now() + timedelta(minutes=1)).isoformat()}  # fmt: skip

    report = client.get("/api/platform/audit/report", period)
    as_csv = client.get("/audit/report/", {**period, "format": "csv"})
    page = client.get("/audit/report/", period)

    body = report.json()
    assert report.status_code == 200, body
    assert body["totals"] == {"entries": 5, "success": 4, "refused": 1, "failed": 0}
    assert {r["actor"]: r["entries"] for r in body["by_actor"]} == {
        "user:ada": 3, "user:vera": 1, "system:monitor": 1}  # fmt: skip
    assert [e["action"] for e in body["refusals"]["entries"]] == ["agent.stop"]
    assert [e["action"] for e in body["overrides"]["entries"]] == ["servicing.upgrade"]
    assert [e["target"] for e in body["role_changes"]["entries"]] == ["vera"]
    sections = {row["section"] for row in csv.DictReader(io.StringIO(as_csv.content.decode()))}
    assert {"period", "by_actor", "refusals", "overrides", "role_changes"} <= sections
    assert as_csv["Content-Disposition"].endswith('.csv"')
    assert page.status_code == 200 and "data-report" in page.content.decode()

    client.force_login(viewer)
    assert client.get("/api/platform/audit/report").status_code == 403


def test_the_report_refuses_a_period_it_cannot_count(client, admin):
    client.force_login(admin)

    too_long = client.get(
        "/api/platform/audit/report", {"since": "2020-01-01", "until": "2026-01-01"}
    )
    half = client.get("/api/platform/audit/report", {"since": "7d"})

    assert too_long.status_code == 400 and "at most 400" in too_long.json()["detail"]
    assert half.status_code == 400 and "both since and until" in half.json()["detail"]


def test_retention_deletes_only_what_is_past_it_and_says_so(settings, admin_actor):
    settings.AUDIT_RETENTION_DAYS = 30
    old = record_audit(admin_actor, "agent.stop", target="old")
    _at(old, timezone.now() - timedelta(days=31))
    record_audit(admin_actor, "agent.stop", target="recent")

    assert retention.purge_expired(batch=1) == 1

    assert sorted(AuditEntry.objects.values_list("action", "target")) == [
        ("agent.stop", "recent"), ("audit.purge", ANY)]  # fmt: skip
    purge = AuditEntry.objects.get(action="audit.purge")
    assert (purge.detail, purge.door, purge.actor) == (
        {"deleted": 1, "days": 30}, "system", "system:audit retention")  # fmt: skip
    assert not AuditEntry.objects.filter(target="old").exists()
    settings.AUDIT_RETENTION_DAYS = 0
    assert retention.purge_expired() == 0


def test_words_found_on_many_entries_page_through_all_of_them(client, viewer, admin_actor):
    for n in range(30):
        record_audit(admin_actor, "agent.restart", target=f"agent-{n}")
        record_audit(admin_actor, "agent.stop", target=f"agent-{n}")
    client.force_login(viewer)

    seen, cursor = [], ""
    while True:
        body = client.get("/api/platform/audit", {"q": "restart", "limit": 7, "cursor": cursor})
        seen += [(e["action"], e["target"]) for e in body.json()["entries"]]
        cursor = body.json()["next_cursor"]
        if not cursor:
            break

    assert sorted(seen) == sorted(("agent.restart", f"agent-{n}") for n in range(30))
