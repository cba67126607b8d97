"""Alert rules against real agents and real samples: firing once, resolving when the condition
clears, people acknowledging, silencing and resolving, permissions, audit and the webhook."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents import services
from agents.models import Agent, State
from observability import alerts
from observability.models import Alert, AlertRule, Event, MetricSample
from portal.actors import Actor
from portal.models import AuditEntry

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def default_rules(db):
    alerts.ensure_default_rules(Actor.command("test"))


def errored(agent: Agent, bring_up) -> Agent:
    """A real agent that really ran, then crashed: ERRORED as the monitor would record it."""
    Agent.objects.filter(pk=agent.pk).update(restart_policy="never")
    bring_up(Agent.objects.get(pk=agent.pk))
    agent = Agent.objects.get(pk=agent.pk)
    services.runtime_for(agent).stop(services.spec_for(agent))
    assert services.record_crash(agent, {"exit_code": 137, "signal": 9, "replica": 0})
    agent = Agent.objects.get(pk=agent.pk)
    assert agent.state == State.ERRORED
    return agent


def only_rule(name: str) -> AlertRule:
    AlertRule.objects.exclude(name=name).update(enabled=False)
    return AlertRule.objects.get(name=name)


def samples(agent: Agent, values: list[float | None], *, every: int = 15, **fields) -> None:
    """Raw samples ending now, one per scrape interval, as a scrape would have stored them."""
    now = timezone.now().replace(microsecond=0)
    for index, value in enumerate(reversed(values)):
        MetricSample.objects.create(
            agent=agent,
            ts=now - timedelta(seconds=every * index),
            up=1.0,
            error_rate=value,
            **fields,
        )


def test_the_default_rules_exist_once():
    assert alerts.ensure_default_rules(Actor.command("test")) == 0
    names = set(AlertRule.objects.values_list("name", flat=True))
    assert {"Agent errored", "High error rate", "Memory near limit", "No heartbeat"} <= names
    rule = AlertRule.objects.get(name="High error rate")
    assert rule.condition == "error rate (%) > 5 for 5 min"


@pytest.mark.django_db(transaction=True)
def test_an_errored_agent_fires_one_alert_and_it_resolves_when_the_agent_recovers(
    seeded, bring_up, act
):
    only_rule("Agent errored")
    cache = errored(seeded["wow-cache"], bring_up)

    assert alerts.evaluate() == {"fired": 1, "resolved": 0}
    assert alerts.evaluate() == {"fired": 0, "resolved": 0}  # evaluated again: still one
    alert = Alert.objects.get()
    assert alert.agent == cache and alert.status == Alert.Status.FIRING
    assert alert.severity == "critical" and "WowCache is ERRORED" in alert.summary
    assert (
        Event.objects.filter(kind="alert", agent=cache, summary__startswith="Alert fired").count()
        == 1
    )

    act(cache, "restart")
    assert Agent.objects.get(pk=cache.pk).state == State.RUNNING
    assert alerts.evaluate() == {"fired": 0, "resolved": 1}
    alert.refresh_from_db()
    assert alert.status == Alert.Status.RESOLVED and alert.resolved_by == ""
    assert alert.resolution == "The condition cleared." and alert.cleared_at is not None


def test_the_database_refuses_a_second_open_alert_for_a_rule_and_agent(seeded):
    rule = AlertRule.objects.get(name="Agent errored")
    cache = seeded["wow-cache"]
    Alert.objects.create(rule=rule, agent=cache, severity="critical", summary="first")
    with pytest.raises(IntegrityError), transaction.atomic():
        Alert.objects.create(rule=rule, agent=cache, severity="critical", summary="second")


@pytest.mark.django_db(transaction=True)
def test_a_metric_rule_fires_only_when_the_condition_held_for_its_whole_period(seeded, bring_up):
    rule = only_rule("High error rate")
    cache = bring_up(seeded["wow-cache"])

    samples(cache, [12.0, 30.0, 9.0])  # 30 s of bad samples: not yet five minutes
    assert alerts.evaluate()["fired"] == 0

    MetricSample.objects.all().delete()
    samples(cache, [8.0] * 21 + [2.0])  # five minutes bad, but the latest is fine
    assert alerts.evaluate()["fired"] == 0

    MetricSample.objects.all().delete()
    samples(cache, [8.0] * 21 + [25.0])
    assert alerts.evaluate()["fired"] == 1
    alert = Alert.objects.get(rule=rule)
    assert alert.value == pytest.approx(25.0)
    assert alert.summary == "WowCache: Error rate 25.0% > 5% for 5 min"

    MetricSample.objects.all().delete()
    samples(cache, [1.0])
    assert alerts.evaluate()["resolved"] == 1


@pytest.mark.django_db(transaction=True)
def test_memory_rule_compares_with_the_limit(seeded, bring_up):
    only_rule("Memory near limit")
    cache = bring_up(seeded["wow-cache"])
    limit = 256 * 1024 * 1024
    samples(cache, [None] * 10, memory_bytes=0.95 * limit, memory_limit_bytes=limit)
    assert alerts.evaluate()["fired"] == 1
    assert "Memory 95.0% > 90%" in Alert.objects.get().summary


@pytest.mark.django_db(transaction=True)
def test_no_heartbeat_fires_for_a_running_agent_that_stopped_answering(seeded, bring_up):
    only_rule("No heartbeat")
    cache = bring_up(seeded["wow-cache"])
    Agent.objects.filter(pk=cache.pk).update(state_changed_at=timezone.now() - timedelta(minutes=5))
    samples(cache, [None])  # answered just now
    assert alerts.evaluate()["fired"] == 0
    MetricSample.objects.update(ts=timezone.now() - timedelta(minutes=3))
    assert alerts.evaluate()["fired"] == 1
    assert "no heartbeat since" in Alert.objects.get().summary


@pytest.mark.django_db(transaction=True)
def test_people_acknowledge_silence_and_resolve_and_each_is_audited(
    seeded, bring_up, operator_actor, viewer_actor
):
    only_rule("Agent errored")
    cache = errored(seeded["wow-cache"], bring_up)
    alerts.evaluate()
    alert = Alert.objects.get()

    with pytest.raises(PermissionDenied, match="Operator"):
        alerts.acknowledge(alert, viewer_actor)
    assert Alert.objects.get().status == Alert.Status.FIRING
    refused = AuditEntry.objects.get(action="alert.acknowledge")
    assert refused.outcome == AuditEntry.Outcome.REFUSED

    alert = alerts.acknowledge(alert, operator_actor, "looking")
    assert alert.status == Alert.Status.ACKNOWLEDGED and alert.acknowledged_by == "user:otto"
    with pytest.raises(alerts.AlertActionError, match="already acknowledged by user:otto"):
        alerts.acknowledge(alert, operator_actor)

    with pytest.raises(alerts.AlertActionError, match="between one minute and 7 days"):
        alerts.silence(alert, operator_actor, timedelta(days=30))
    alert = alerts.silence(alert, operator_actor, timedelta(hours=1))
    assert alert.is_silenced() and alert.silenced_by == "user:otto"

    alert = alerts.resolve(alert, operator_actor, "known, fixing the host")
    assert alert.status == Alert.Status.RESOLVED and alert.resolved_by == "user:otto"
    assert alert.resolution == "known, fixing the host"
    with pytest.raises(alerts.AlertActionError, match="already resolved by user:otto") as refused:
        alerts.resolve(alert, operator_actor)
    assert refused.value.code == "resolved"

    audited = list(
        AuditEntry.objects.filter(outcome=AuditEntry.Outcome.SUCCESS, action__startswith="alert.")
        .order_by("at")
        .values_list("action", flat=True)
    )
    assert audited == ["alert.acknowledge", "alert.silence", "alert.resolve"]
    assert Event.objects.filter(kind="alert", agent=cache, actor="user:otto").count() == 3

    # Resolved by hand while still ERRORED: no new alert until the condition has cleared once.
    assert alerts.evaluate()["fired"] == 0
    Agent.objects.filter(pk=cache.pk).update(state=State.STOPPED)
    alerts.evaluate()
    assert Alert.objects.get().cleared_at is not None
    Agent.objects.filter(pk=cache.pk).update(state=State.ERRORED)
    assert alerts.evaluate()["fired"] == 1
    assert Alert.objects.count() == 2


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - the http.server API
        length = int(self.headers["Content-Length"])
        _Receiver.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.django_db(transaction=True)
def test_a_firing_alert_is_posted_to_the_webhook(seeded, bring_up, settings):
    from observability.jobs import send_alert_webhook

    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/hook"
    _Receiver.received = []
    try:
        only_rule("Agent errored")
        errored(seeded["wow-cache"], bring_up)
        alerts.evaluate()
        alert = Alert.objects.get()
        # The task was queued on commit; run it here as the worker would.
        assert send_alert_webhook.run(alert.pk, "fired") == 204
    finally:
        server.shutdown()
    assert _Receiver.received[-1]["agent"] == "wow-cache"
    assert _Receiver.received[-1]["change"] == "fired"
    assert _Receiver.received[-1]["rule"] == "Agent errored"
    assert _Receiver.received[-1]["severity"] == "critical"


def test_search_validates_its_filters(seeded):
    with pytest.raises(alerts.AlertActionError, match="Unknown alert status 'burning'"):
        alerts.search(status="burning")
    with pytest.raises(alerts.AlertActionError, match="Unknown severity"):
        alerts.search(severity="loud")


@pytest.mark.django_db(transaction=True)
def test_disabling_a_rule_closes_its_open_alerts(seeded, bring_up):
    rule = only_rule("Agent errored")
    errored(seeded["wow-cache"], bring_up)
    alerts.evaluate()
    AlertRule.objects.filter(pk=rule.pk).update(enabled=False)
    assert alerts.evaluate() == {"fired": 0, "resolved": 1}
    alert = Alert.objects.get()
    assert alert.status == Alert.Status.RESOLVED and alert.resolution == "The rule was disabled."


@pytest.mark.django_db(transaction=True)
def test_a_silence_of_the_wrong_length_is_refused_and_audited(seeded, bring_up, operator_actor):
    only_rule("Agent errored")
    errored(seeded["wow-cache"], bring_up)
    alerts.evaluate()
    alert = Alert.objects.get()
    with pytest.raises(alerts.AlertActionError) as refused:
        alerts.silence(alert, operator_actor, timedelta(seconds=10))
    assert refused.value.code == "invalid_duration"
    assert Alert.objects.get().silenced_until is None
    entry = AuditEntry.objects.get(action="alert.silence")
    assert entry.outcome == AuditEntry.Outcome.REFUSED
