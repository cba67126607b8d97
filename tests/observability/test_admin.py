"""Observability in the Django admin: alert rules added, edited, disabled (validated, audited,
never deleted), alerts read and acknowledged or resolved through the services (audited), and
the event log, log lines and metric samples read-only, their lists never counting every row.
Only Admins get in."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents import services
from agents.models import State
from agents.runtimes.base import LogLine
from observability import alerts, logs
from observability.admin import CappedCountPaginator, LogEntryAdmin
from observability.models import Alert, AlertRule, Event, LogEntry, MetricSample
from portal.actors import Actor
from portal.models import AuditEntry
from tests.agents import conftest as agents_conftest

RULES = "/admin/observability/alertrule/"
ALERTS = "/admin/observability/alert/"

# The agents' fixtures: a private agent root per test, the seeded registry, actions run here.
agent_root, seeded, act = agents_conftest.agent_root, agents_conftest.seeded, agents_conftest.act


@pytest.fixture(autouse=True)
def default_rules(db):
    alerts.ensure_default_rules(Actor.command("test"))


@pytest.fixture
def fleet(seeded, act) -> dict:
    """WowCache deployed then crashed (ERRORED) and WowEvent deployed, with a warning rule for
    deployed agents; one evaluation fires an alert for each."""
    cache, event = seeded["wow-cache"], seeded["wow-event"]
    for agent in (cache, event):
        for action in ("provision", "deploy"):
            assert act(agent, action).status == "succeeded"
    assert services.record_crash(cache, {"exit_code": 1, "replica": 0})
    AlertRule.objects.create(
        name="Deployed, not started", kind="state", state=State.DEPLOYED, severity="warning"
    )
    assert alerts.evaluate() == {"fired": 2, "resolved": 0}
    return {"critical": Alert.objects.get(agent=cache), "warning": Alert.objects.get(agent=event)}


def rule_form(**fields) -> dict:
    """What the rule form posts: a metric rule unless ``fields`` say otherwise."""
    return {
        "name": "Slow tasks",
        "description": "p95 latency above a second",
        "kind": "metric",
        "metric": "latency_p95_ms",
        "operator": "gt",
        "threshold": "1000",
        "state": "",
        "for_seconds": "300",
        "severity": "warning",
        "agent": "",
        "enabled": "on",
    } | fields


def errors_of(response) -> dict[str, list[str]]:
    form = response.context["adminform"].form
    return {name: list(messages) for name, messages in form.errors.items()}


def run_action(client, base: str, action: str, *rows):
    return client.post(
        base, {"action": action, "_selected_action": [row.pk for row in rows]}, follow=True
    )


def shown_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# --- who gets in ------------------------------------------------------------------------------


@pytest.mark.parametrize("role_client", ["as_viewer", "as_operator", "as_outsider"])
def test_only_admins_reach_the_observability_admin(request, fleet, role_client) -> None:
    client = request.getfixturevalue(role_client)
    critical = fleet["critical"]
    for model in ("alertrule", "alert", "event", "logentry", "metricsample"):
        response = client.get(f"/admin/observability/{model}/")
        assert response.status_code == 302, model
        assert response["Location"].startswith("/admin/login/"), model
    refused = client.post(
        ALERTS, {"action": "acknowledge_alerts", "_selected_action": [critical.pk]}
    )
    assert refused.status_code == 302 and refused["Location"].startswith("/admin/login/")
    critical.refresh_from_db()
    assert critical.status == Alert.Status.FIRING
    assert not AuditEntry.objects.filter(action__startswith="alert.").exists()


# --- alert rules ------------------------------------------------------------------------------


def test_rules_list_their_condition_severity_scope_and_open_alerts(fleet, as_admin) -> None:
    response = as_admin.get(RULES)
    assert response.status_code == 200
    rows = {rule.name: rule for rule in response.context["cl"].result_list}
    assert set(rows) == {
        "Agent errored", "High error rate", "Memory near limit", "No heartbeat", "Workflow deadline",
        "Dead letters arriving", "Queue backlog", "Queue lagging", "Deployed, not started",
        "SLO burn rate",
    }  # fmt: skip
    assert rows["Agent errored"].open_count == 1 and rows["High error rate"].open_count == 0
    content = response.content.decode()
    for text in ("agent is ERRORED", "error rate (%) &gt; 5 for 5 min", "no heartbeat for 1 min",
                 "All agents", "Open alerts"):  # fmt: skip
        assert text in content, text
    # Rules are disabled, not deleted: deleting one would delete its alerts' history.
    assert "delete_selected" not in content
    rule = AlertRule.objects.get(name="Agent errored")
    assert as_admin.get(f"{RULES}{rule.pk}/delete/").status_code == 403
    assert AlertRule.objects.filter(pk=rule.pk).exists()


def test_rules_list_costs_the_same_queries_for_few_or_many_rules(fleet, as_admin) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert as_admin.get(RULES).status_code == 200
        return len(captured)

    few = queries()
    for number in range(5):
        AlertRule.objects.create(
            name=f"Errored {number}",
            kind="state",
            state=State.ERRORED,
            agent=fleet["critical"].agent,
        )
    assert queries() == few


def test_an_admin_adds_a_rule_that_is_audited_and_evaluated(fleet, as_admin) -> None:
    response = as_admin.post(f"{RULES}add/", rule_form(), follow=True)
    assert response.status_code == 200
    rule = AlertRule.objects.get(name="Slow tasks")
    assert (rule.kind, rule.metric, rule.threshold, rule.enabled) == (
        "metric", "latency_p95_ms", 1000.0, True,
    )  # fmt: skip
    assert rule.condition == "latency p95 (ms) > 1000 for 5 min"
    entry = AuditEntry.objects.get(action="alert_rule.create", target="Slow tasks")
    assert entry.actor == "user:ada" and entry.outcome == "success"
    assert entry.detail["rule"] == rule.pk

    state_rule = rule_form(name="Suspended too long", kind="state", metric="", threshold="",
                           state="SUSPENDED", for_seconds="3600", severity="info")  # fmt: skip
    assert as_admin.post(f"{RULES}add/", state_rule).status_code == 302
    created = AlertRule.objects.get(name="Suspended too long")
    assert created.condition == "agent is SUSPENDED for 1 h"
    assert alerts.evaluate() == {"fired": 0, "resolved": 0}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"metric": ""}, {"metric": ["A metric threshold rule needs a metric: choose one."]}),
        ({"threshold": ""}, {"threshold": ["A metric threshold rule needs a threshold."]}),
        ({"threshold": "-1"}, {"threshold": ["No metric goes below 0: give a threshold of 0 or more."]}),
        ({"metric": "error_rate", "threshold": "150"},
         {"threshold": ["Error rate (%) is a percentage: give a threshold from 0 to 100."]}),
        ({"operator": ""}, {"operator": ["Choose whether the rule fires above or below."]}),
        ({"state": "ERRORED"}, {"state": ["Only agent-state rules have a state: clear it."]}),
        ({"kind": "state", "metric": "", "threshold": ""},
         {"state": ["An agent-state rule needs the state it fires on: choose one."]}),
        ({"kind": "state", "state": "ERRORED"},
         {"metric": ["Only metric rules have a metric: clear it for an agent-state rule."],
          "threshold": ["Only metric rules have a threshold: clear it for an agent-state rule."]}),
        ({"kind": "heartbeat", "metric": "", "threshold": "3"},
         {"threshold": ["Only metric rules have a threshold: clear it for a no-heartbeat rule."]}),
        ({"kind": "state", "metric": "", "threshold": "", "state": "DRAFT"},
         {"state": ["Select a valid choice. DRAFT is not one of the available choices."]}),
    ],
)  # fmt: skip
def test_a_rule_that_cannot_work_is_refused_with_what_to_fix(as_admin, fields, expected) -> None:
    response = as_admin.post(f"{RULES}add/", rule_form(**fields))
    assert response.status_code == 200
    assert errors_of(response) == expected
    assert not AlertRule.objects.filter(name="Slow tasks").exists()
    assert not AuditEntry.objects.filter(action="alert_rule.create", target="Slow tasks").exists()


def test_editing_a_rule_is_audited_with_what_changed(db, as_admin) -> None:
    rule = AlertRule.objects.get(name="High error rate")
    page = as_admin.get(f"{RULES}{rule.pk}/change/")
    assert page.status_code == 200 and 'name="threshold"' in page.content.decode()
    changed = rule_form(name="High error rate", description=rule.description,
                        metric="error_rate", threshold="10", for_seconds="300")  # fmt: skip
    assert as_admin.post(f"{RULES}{rule.pk}/change/", changed).status_code == 302
    rule.refresh_from_db()
    assert rule.threshold == 10.0 and rule.condition == "error rate (%) > 10 for 5 min"
    entry = AuditEntry.objects.get(action="alert_rule.change")
    assert entry.target == "High error rate" and entry.detail["changed"] == ["threshold"]


def test_rules_are_disabled_and_enabled_by_admin_actions(fleet, as_admin) -> None:
    errored = AlertRule.objects.get(name="Agent errored")
    heartbeat = AlertRule.objects.get(name="No heartbeat")
    response = run_action(as_admin, RULES, "disable_rules", errored, heartbeat)
    assert "2 rule(s) disabled." in shown_messages(response)
    assert not AlertRule.objects.filter(pk__in=[errored.pk, heartbeat.pk], enabled=True).exists()
    disabled = AuditEntry.objects.filter(action="alert_rule.disable")
    assert sorted(disabled.values_list("target", flat=True)) == ["Agent errored", "No heartbeat"]
    assert all(entry.actor == "user:ada" for entry in disabled)
    # Disabled rules are not evaluated: a second crash fires nothing.
    Alert.objects.filter(rule=errored).update(status="resolved", resolved_at=timezone.now())
    assert alerts.evaluate()["fired"] == 0

    again = run_action(as_admin, RULES, "disable_rules", errored)
    assert "0 rule(s) disabled." in shown_messages(again)
    enabled = run_action(as_admin, RULES, "enable_rules", errored)
    assert "1 rule(s) enabled." in shown_messages(enabled)
    assert AlertRule.objects.get(pk=errored.pk).enabled
    assert (
        AuditEntry.objects.filter(action="alert_rule.enable", target="Agent errored").count() == 1
    )


# --- alerts -----------------------------------------------------------------------------------


def test_alerts_are_listed_with_filters_and_are_read_only(fleet, as_admin) -> None:
    critical, warning = fleet["critical"], fleet["warning"]
    listing = as_admin.get(ALERTS)
    assert listing.status_code == 200
    assert [row.pk for row in listing.context["cl"].result_list] == [warning.pk, critical.pk]
    content = listing.content.decode()
    assert "WowCache is ERRORED: process exited with code 1" in content
    assert ">Acknowledge selected alerts</option>" in content
    assert ">Resolve selected alerts</option>" in content
    assert "delete_selected" not in content

    def listed(**filters) -> list[int]:
        response = as_admin.get(ALERTS, filters)
        assert response.status_code == 200
        return [row.pk for row in response.context["cl"].result_list]

    assert listed(severity__exact="critical") == [critical.pk]
    assert listed(agent__id__exact=warning.agent_id) == [warning.pk]
    assert listed(status__exact="resolved") == []

    assert as_admin.get(f"{ALERTS}add/").status_code == 403
    assert as_admin.get(f"{ALERTS}{critical.pk}/change/").status_code == 200
    assert (
        as_admin.post(f"{ALERTS}{critical.pk}/change/", {"status": "resolved"}).status_code == 403
    )
    assert as_admin.post(f"{ALERTS}{critical.pk}/delete/", {"post": "yes"}).status_code == 403
    critical.refresh_from_db()
    assert critical.status == Alert.Status.FIRING


def test_admin_actions_acknowledge_and_resolve_through_the_services(fleet, as_admin) -> None:
    critical, warning = fleet["critical"], fleet["warning"]
    response = run_action(as_admin, ALERTS, "acknowledge_alerts", critical)
    assert "1 alert(s) acknowledged." in shown_messages(response)
    critical.refresh_from_db()
    assert (critical.status, critical.acknowledged_by) == ("acknowledged", "user:ada")
    entry = AuditEntry.objects.get(action="alert.acknowledge", outcome="success")
    assert entry.actor == "user:ada" and entry.target == "wow-cache"
    assert Event.objects.filter(summary__startswith="Alert acknowledged by user:ada").exists()

    # Acknowledged already: refused with the service's sentence, the other one done.
    response = run_action(as_admin, ALERTS, "acknowledge_alerts", critical, warning)
    assert shown_messages(response) == [
        "1 alert(s) acknowledged.",
        f"Alert #{critical.pk} was already acknowledged by user:ada.",
    ]
    assert AuditEntry.objects.filter(action="alert.acknowledge", outcome="refused").count() == 1

    response = run_action(as_admin, ALERTS, "resolve_alerts", critical, warning)
    assert "2 alert(s) resolved." in shown_messages(response)
    assert set(Alert.objects.values_list("status", "resolved_by", "resolution")) == {
        ("resolved", "user:ada", "Resolved in the admin.")
    }
    response = run_action(as_admin, ALERTS, "resolve_alerts", critical)
    assert shown_messages(response) == [
        f"Alert #{critical.pk} is already resolved by user:ada; there is nothing to resolve."
    ]


# --- the event log, log lines, metric samples ---------------------------------------------


@pytest.fixture
def history(fleet) -> dict:
    cache = fleet["critical"].agent
    now = timezone.now()
    logs.ingest(
        cache.pk,
        [LogLine(slug="wow-cache", replica=0, ts="", text=f'{{"level": "warning", "message": "line {n}"}}')
         for n in range(8)],
    )  # fmt: skip
    MetricSample.objects.create(agent=cache, ts=now, up=0.0)
    MetricSample.objects.create(
        agent=cache, ts=now - timedelta(seconds=15), up=1.0, cpu_percent=3.5
    )
    return {"cache": cache}


@pytest.mark.parametrize("model", ["event", "logentry", "metricsample"])
def test_history_is_read_only(history, as_admin, model) -> None:
    base = f"/admin/observability/{model}/"
    listing = as_admin.get(base)
    assert listing.status_code == 200
    assert listing.context["cl"].result_list
    assert "delete_selected" not in listing.content.decode()
    row = listing.context["cl"].result_list[0]
    assert as_admin.get(f"{base}add/").status_code == 403
    assert as_admin.get(f"{base}{row.pk}/change/").status_code == 200
    assert as_admin.post(f"{base}{row.pk}/change/", {}).status_code == 403
    assert as_admin.post(f"{base}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert type(row).objects.filter(pk=row.pk).exists()


def test_log_lines_are_listed_without_counting_the_whole_table(
    history, as_admin, monkeypatch
) -> None:
    monkeypatch.setattr(CappedCountPaginator, "cap", 5)
    monkeypatch.setattr(LogEntryAdmin, "list_per_page", 2)
    with CaptureQueriesContext(connection) as captured:
        response = as_admin.get("/admin/observability/logentry/", {"level__exact": "30"})
    assert response.status_code == 200
    counts = [q["sql"] for q in captured if "COUNT(" in q["sql"].upper() and "logentry" in q["sql"]]
    assert counts and all("LIMIT 5" in sql for sql in counts), counts
    cl = response.context["cl"]
    assert cl.result_count == 5 and cl.full_result_count is None
    assert [entry.message for entry in cl.result_list] == ["line 7", "line 6"]
    assert cl.paginator.num_pages == 3
    found = as_admin.get("/admin/observability/logentry/", {"q": "line 3"})
    assert [entry.message for entry in found.context["cl"].result_list] == ["line 3"]
    assert LogEntry.objects.count() == 8
