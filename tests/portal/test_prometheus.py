"""``/-/metrics``: who may read it, what it says (parsed as Prometheus would), that its cost
does not grow with the fleet, and that it adds up the counts of several processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families

from agents import services
from agents.models import Agent, Tier
from portal import prometheus
from portal.actors import Actor
from portal.services import create_api_token

pytestmark = pytest.mark.django_db


def families(response) -> dict:
    assert response.status_code == 200, response.content
    return {f.name: f for f in text_string_to_metric_families(response.content.decode())}


def samples(family) -> dict:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


@pytest.fixture
def fleet(db):
    services.seed_platform_agents(Actor.command("test"))


def test_an_allowed_network_reads_it_without_signing_in_and_others_are_refused(client, settings):
    settings.PROMETHEUS_ALLOWED_NETWORKS = [__import__("ipaddress").ip_network("10.1.0.0/16")]

    inside = client.get("/-/metrics", REMOTE_ADDR="10.1.2.3")
    outside = client.get("/-/metrics", REMOTE_ADDR="192.0.2.9")
    nonsense = client.get("/-/metrics", REMOTE_ADDR="not-an-ip")

    assert inside.status_code == 200 and inside["Content-Type"].startswith("text/plain")
    assert outside.status_code == 403 and "PROMETHEUS_ALLOWED_NETWORKS" in outside.content.decode()
    assert nonsense.status_code == 403
    assert client.post("/-/metrics", REMOTE_ADDR="10.1.2.3").status_code == 405


def test_an_admin_token_reads_it_from_anywhere_and_a_viewer_token_does_not(client, admin, viewer):
    _, admin_token = create_api_token(admin, Actor.command("test"), name="prometheus")
    _, viewer_token = create_api_token(viewer, Actor.command("test"), name="viewer")

    as_admin = client.get("/-/metrics", REMOTE_ADDR="192.0.2.9",
                          HTTP_AUTHORIZATION=f"Bearer {admin_token}")  # fmt: skip
    as_viewer = client.get("/-/metrics", REMOTE_ADDR="127.0.0.1",
                           HTTP_AUTHORIZATION=f"Bearer {viewer_token}")  # fmt: skip

    assert as_admin.status_code == 200
    assert as_viewer.status_code == 403 and "Admin's API token" in as_viewer.content.decode()


def test_it_tells_the_fleet_the_requests_and_the_queue(client, fleet, as_viewer):
    Agent.objects.filter(slug="wow-cache").update(state="RUNNING", health="healthy")
    as_viewer.get("/agents/")
    as_viewer.get("/agents/wow-cache/")
    as_viewer.get("/no/such/page/")

    found = families(client.get("/-/metrics"))

    agents = samples(found["portal_agents"])
    assert agents[(("state", "RUNNING"),)] == 1 and agents[(("state", "DRAFT"),)] == 13
    assert samples(found["portal_agents_health"])[(("health", "healthy"),)] == 1
    requests = samples(found["portal_http_requests"])
    routes = {dict(labels)["route"] for labels in requests}
    assert "agents/" in routes and "agents/<slug:slug>/" in routes and "unmatched" in routes
    assert not any("wow-cache" in route for route in routes)  # patterns, never raw paths
    assert "portal_http_request_duration_seconds" in found
    for name in ("portal_operations", "portal_bulk_operations", "portal_open_errors",
                 "portal_open_alerts", "portal_celery_queue_length", "portal_websockets_open",
                 "portal_live_pushes", "portal_scrape_errors"):  # fmt: skip
        assert name in found, name
    assert samples(found["portal_scrape_errors"])[()] == 0


def test_a_scrape_costs_the_same_queries_with_ten_agents_as_with_three_hundred(client, fleet):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/-/metrics").status_code == 200
        return len(captured)

    few = queries()
    Agent.objects.bulk_create(
        Agent(slug=f"c-{n}", name=f"C {n}", tier=Tier.CUSTOMER) for n in range(300)
    )
    assert queries() == few


def test_counts_of_several_processes_are_added_up(tmp_path, monkeypatch, client):
    script = "from prometheus_client import Counter; Counter('portal_live_pushes', 'x').inc(7)"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):  # two processes, as the web server and a worker would be
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=30)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    found = families(client.get("/-/metrics"))

    assert samples(found["portal_live_pushes"])[()] == 14


def test_a_failing_collector_costs_only_its_own_figures(client, monkeypatch):
    def broken():
        raise RuntimeError("boom")
        yield  # pragma: no cover

    monkeypatch.setattr(prometheus, "_COLLECTORS", [*prometheus._COLLECTORS, broken])

    found = families(client.get("/-/metrics"))

    assert samples(found["portal_scrape_errors"])[()] == 1 and "portal_agents" in found


def test_the_grafana_dashboard_asks_only_for_metrics_the_portal_exports(client, fleet, as_viewer):
    import json
    import re
    from pathlib import Path

    as_viewer.get("/agents/")
    exported = set()
    for family in families(client.get("/-/metrics")).values():  # with or without samples yet
        exported |= {family.name + suffix for suffix in ("", "_total", "_bucket", "_count", "_sum")}
    dashboard = json.loads(
        (Path(__file__).resolve().parents[2] / "deploy/grafana/portal-dashboard.json").read_text()
    )
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bportal_[a-z_]+", target["expr"])
    }
    assert asked and asked <= exported, asked - exported
