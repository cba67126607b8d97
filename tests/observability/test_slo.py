"""Availability objectives: the error budget and burn rates computed from uptime samples, the
multi-window burn-rate alert through the rule engine, and the four doors (panel, API, command,
admin) with their refusals."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from agents import services
from agents.models import Agent
from observability import alerts, slo
from observability.models import Alert, MetricSample, ServiceLevelObjective
from portal.actors import Actor
from portal.models import AuditEntry

pytestmark = pytest.mark.django_db
INTERVAL = 15  # METRICS_SCRAPE_INTERVAL_SECONDS


@pytest.fixture
def fleet(db):
    services.seed_platform_agents(Actor.command("test"))
    return {agent.slug: agent for agent in Agent.objects.all()}


def scrapes(agent, now, *, hours: float, down_minutes: float) -> None:
    """A scrape every 15 s for the last ``hours``, down for the last ``down_minutes``."""
    count = int(hours * 3600 / INTERVAL)
    MetricSample.objects.bulk_create(
        MetricSample(
            agent=agent,
            ts=now - timedelta(seconds=INTERVAL * n + 1),
            step=MetricSample.RAW,
            up=0.0 if n * INTERVAL < down_minutes * 60 else 1.0,
        )  # fmt: skip
        for n in range(count)
    )


def test_the_budget_and_burn_rates_follow_from_the_uptime(fleet):
    now = timezone.now()
    event = fleet["wow-event"]  # 99.9 % by default: a budget of 43.2 minutes in 30 days
    scrapes(event, now, hours=6, down_minutes=10)

    (status,) = slo.statuses([event], now)

    assert status.objective == 99.9 and status.budget_minutes == pytest.approx(43.2)
    assert status.burn["5m"] == pytest.approx(1000)  # all down: 100 % / 0.1 %
    assert status.burn["30m"] == pytest.approx(100 / 3 / 0.1, rel=1e-3)
    assert status.burn["1h"] == pytest.approx(100 / 6 / 0.1, rel=1e-3)
    assert status.burn["6h"] == pytest.approx(100 / 36 / 0.1, rel=1e-3)
    # Measured over the time it was meant to run (the six hours sampled): 10 min of 360 down.
    assert status.availability == pytest.approx(100 * 350 / 360, rel=1e-4)
    assert status.spent_minutes == pytest.approx(30 * 24 * 60 * 10 / 360, rel=1e-3)
    assert status.budget_left_percent == pytest.approx(100 * (1 - 1200 / 43.2), rel=1e-3)
    assert status.alerting == "1h/5m" and status.met is False


def test_a_short_blip_does_not_page_but_a_slow_steady_burn_does(fleet):
    now = timezone.now()
    vision, event = fleet["wow-vision"], fleet["wow-event"]
    # 2 minutes down an hour ago, up since: the 5-minute window is clean, so no alert.
    MetricSample.objects.bulk_create(
        MetricSample(
            agent=vision,
            ts=now - timedelta(seconds=INTERVAL * n),
            step=0,
            up=0.0 if 3600 <= n * INTERVAL < 3720 else 1.0,
        )  # fmt: skip
        for n in range(int(6 * 3600 / INTERVAL))
    )
    # Down one scrape in ten for six hours: 10 % down, a burn of 100 on every window.
    MetricSample.objects.bulk_create(
        MetricSample(
            agent=event,
            ts=now - timedelta(seconds=INTERVAL * n),
            step=0,
            up=0.0 if n % 10 == 0 else 1.0,
        )  # fmt: skip
        for n in range(int(6 * 3600 / INTERVAL))
    )

    found = {s.agent.slug: s for s in slo.statuses([vision, event], now)}

    assert found["wow-vision"].alerting == "" and found["wow-vision"].burn["5m"] == 0
    assert found["wow-event"].alerting == "1h/5m"


def test_the_burn_rate_rule_fires_through_the_rule_engine_and_resolves(fleet):
    alerts.ensure_default_rules(Actor.command("test"))
    now = timezone.now()
    event = fleet["wow-event"]
    Agent.objects.filter(pk=event.pk).update(state="RUNNING")
    scrapes(event, now, hours=2, down_minutes=10)

    alerts.evaluate(now)

    alert = Alert.objects.get(rule__name="SLO burn rate")
    assert alert.agent == event and alert.status == "firing"
    assert (
        "WowEvent burns its error budget" in alert.summary and "objective 99.9 %" in alert.summary
    )
    assert not Alert.objects.filter(rule__name="SLO burn rate").exclude(agent=event).exists()

    later = now + timedelta(hours=1, minutes=10)  # an hour up since: both windows clean again
    MetricSample.objects.bulk_create(
        MetricSample(agent=event, ts=later - timedelta(seconds=INTERVAL * n), step=0, up=1.0)
        for n in range(int(70 * 60 / INTERVAL))
    )
    alerts.evaluate(later)
    alert.refresh_from_db()
    assert alert.status == "resolved"


def test_an_admin_sets_an_objective_at_every_door_and_bad_ones_change_nothing(
    fleet, client, admin, operator, capsys
):
    cache = fleet["wow-cache"]
    client.force_login(admin)

    put = client.put("/api/platform/agents/wow-cache/slo", {"objective": 99.5},
                     content_type="application/json")  # fmt: skip
    assert put.status_code == 200 and put.json()["slo"]["objective"] == 99.5
    for bad, says in ((100, "no error budget"), ("abc", "not a number"), (49, "out of range"),
                      (99.12345, "three decimals"), ("nan", "out of range")):  # fmt: skip
        refused = client.put("/api/platform/agents/wow-cache/slo", {"objective": bad},
                             content_type="application/json")  # fmt: skip
        assert refused.status_code == 400 and says in refused.json()["detail"], (
            bad,
            refused.json(),
        )
    assert ServiceLevelObjective.objects.get(agent=cache).objective == 99.5

    page = client.post("/slo/wow-cache/", {"objective": "99.95"}, HTTP_HX_REQUEST="true")
    assert page.status_code == 200 and "99.95 %" in page.content.decode()
    call_command("slo", "set", "wow-cache", "clear")
    assert not ServiceLevelObjective.objects.filter(agent=cache).exists()
    capsys.readouterr()
    call_command("slo", "list", "--json")
    listed = json.loads(capsys.readouterr().out)
    assert {row["agent"] for row in listed["slos"]} == {"wow-event", "wow-vision"}

    client.force_login(operator)
    denied = client.put("/api/platform/agents/wow-cache/slo", {"objective": 99.0},
                        content_type="application/json")  # fmt: skip
    assert denied.status_code == 403
    assert not ServiceLevelObjective.objects.filter(agent=cache).exists()
    actions = AuditEntry.objects.filter(target="wow-cache").order_by("id")
    assert [(e.action, e.door) for e in actions] == [
        ("slo.set", "api"),
        ("slo.set", "page"),
        ("slo.clear", "command"),
        ("slo.set", "api"),
    ]
    assert actions.last().outcome == "refused" and actions.last().actor == "user:otto"


def test_the_dashboard_and_the_agent_page_show_the_budget(fleet, client, viewer):
    now = timezone.now()
    scrapes(fleet["wow-event"], now, hours=2, down_minutes=10)
    client.force_login(viewer)

    dashboard = client.get("/").content.decode()
    page = client.get("/agents/wow-event/").content.decode()
    listing = client.get("/api/platform/slo").json()

    assert 'data-slo="wow-event"' in dashboard and 'data-slo="wow-vision"' in dashboard
    assert 'data-alerting="1h/5m"' in dashboard and "Burning" in dashboard
    assert 'data-slo="wow-event"' in page and "slo-form" not in page  # a Viewer cannot set
    assert {row["agent"] for row in listing["slos"]} == {"wow-event", "wow-vision"}
