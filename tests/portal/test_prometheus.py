"""``/-/metrics``: who may read it, what it says (parsed as Prometheus parses it), that request
counting survives 404s and errors with bounded labels, that its cost does not grow with the
fleet, and that it adds up the counts of several real processes (``manage.py up`` included)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import requests
from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import include, path
from prometheus_client.parser import text_string_to_metric_families

from agents import services
from agents.models import Agent, AgentError, Operation, State, Tier
from observability import alerts
from observability.models import Alert, AlertRule
from portal import embedded, prometheus, realtime
from portal.actors import Actor
from portal.celery import app as celery_app
from portal.services import create_api_token
from portal.supervisor import _forget_live_metrics

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def families(response) -> dict:
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {f.name: f for f in text_string_to_metric_families(response.content.decode())}


def samples(family, suffix: str = "") -> dict:
    """Sample values by their labels (sorted pairs); ``suffix`` picks ``_bucket``, ``_count``..."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in family.samples
        if s.name == family.name + suffix
    }


def scrape(client=None) -> dict:
    return families((client or Client()).get("/-/metrics"))


@pytest.fixture
def fleet(db):
    services.seed_platform_agents(Actor.command("test"))


# --- who may read it ------------------------------------------------------------------------


def test_by_default_only_loopback_reads_it_without_a_token(client):
    assert client.get("/-/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/-/metrics", REMOTE_ADDR="::1").status_code == 200
    refused = client.get("/-/metrics", REMOTE_ADDR="10.0.0.8")
    assert refused.status_code == 403
    assert "10.0.0.8 is in neither" in refused.content.decode()


def test_an_allowed_network_reads_it_and_others_are_refused_not_sent_to_sign_in(client, settings):
    settings.PROMETHEUS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.1.0.0/16")]

    inside = client.get("/-/metrics", REMOTE_ADDR="10.1.2.3")
    outside = client.get("/-/metrics", REMOTE_ADDR="192.0.2.9")
    loopback = client.get("/-/metrics", REMOTE_ADDR="127.0.0.1")  # no longer in the list
    nonsense = client.get("/-/metrics", REMOTE_ADDR="not-an-ip")

    assert inside.status_code == 200 and "portal_agents" in inside.content.decode()
    for refused in (outside, loopback, nonsense):
        assert refused.status_code == 403 and not refused.has_header("Location")
        assert "PROMETHEUS_ALLOWED_NETWORKS" in refused.content.decode()
        assert "portal_agents" not in refused.content.decode()
    assert client.post("/-/metrics", REMOTE_ADDR="10.1.2.3").status_code == 405


def test_an_admin_token_reads_it_from_anywhere_and_other_roles_tokens_do_not(
    client, admin, operator, viewer
):
    tokens = {
        user.username: create_api_token(user, Actor.command("test"), name="scrape")[1]
        for user in (admin, operator, viewer)
    }

    def scrape_as(username: str, address: str):
        return client.get("/-/metrics", REMOTE_ADDR=address,
                          HTTP_AUTHORIZATION=f"Bearer {tokens[username]}")  # fmt: skip

    assert scrape_as(admin.username, "192.0.2.9").status_code == 200
    for user, role in ((viewer, "Viewer"), (operator, "Operator")):
        # A token is judged by its role, even from an allowed network.
        refused = scrape_as(user.username, "127.0.0.1")
        assert refused.status_code == 403
        assert f"needs an Admin's API token; this token acts as {role}" in refused.content.decode()
    wrong = client.get("/-/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401


def test_a_signed_in_page_session_is_no_key_to_it(as_admin):
    """Browsers are neither sent to the login page nor let in by their session from outside."""
    response = as_admin.get("/-/metrics", REMOTE_ADDR="192.0.2.9")
    assert response.status_code == 403 and not response.has_header("Location")


def test_a_network_setting_that_is_no_network_stops_start_up():
    from tests.portal.test_settings import _check

    result = _check({"PROMETHEUS_ALLOWED_NETWORKS": "10.0.0.0/8, intranet"})

    assert result.returncode != 0
    assert "PROMETHEUS_ALLOWED_NETWORKS: 'intranet' is not a network" in result.stderr


# --- what it says ---------------------------------------------------------------------------


def test_it_tells_the_fleet_its_work_alerts_and_errors(client, fleet, admin):
    Agent.objects.filter(slug="wow-cache").update(state=State.RUNNING, health="healthy")
    Agent.objects.filter(slug="wow-event").update(pending_action="start")
    cache = Agent.objects.get(slug="wow-cache")
    Operation.objects.create(agent=cache, action="restart", status=Operation.Status.RUNNING)
    AgentError.objects.create(
        agent=cache, source=AgentError.Source.CRASH, summary="crashed", classification="resource",
        rule="test", root_cause="test", signature="test",
    )  # fmt: skip
    alerts.ensure_default_rules(Actor.command("test"))
    rule = AlertRule.objects.get(name="Agent errored")
    Alert.objects.create(rule=rule, agent=cache, severity="critical", summary="down")

    found = scrape(client)

    agents = samples(found["portal_agents"])
    assert agents[(("state", "RUNNING"),)] == 1 and agents[(("state", "DRAFT"),)] == 13
    assert agents[(("state", "REVOKED"),)] == 0  # every state, 0 included: series stay put
    assert samples(found["portal_agents_health"])[(("health", "healthy"),)] == 1
    assert samples(found["portal_agents_pending"])[()] == 1
    assert samples(found["portal_operations"])[(("status", "running"),)] == 1
    assert samples(found["portal_bulk_operations"])  # every status, at 0
    assert samples(found["portal_workflow_runs"])
    errors = samples(found["portal_open_errors"])
    assert errors[(("classification", "resource"),)] == 1 and sum(errors.values()) == 1
    open_alerts = samples(found["portal_open_alerts"])
    assert open_alerts[(("severity", "critical"), ("status", "firing"))] == 1
    assert sum(open_alerts.values()) == 1
    assert samples(found["portal_celery_queue_length"])[(("queue", "celery"),)] >= 0
    assert samples(found["portal_scrape_errors"])[()] == 0
    # Nothing probed a running agent yet: no age rather than a made-up one.
    assert not samples(found["portal_monitor_probe_age_seconds"])


def test_a_scraper_that_asks_for_openmetrics_gets_it(client, fleet):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse

    response = client.get("/-/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0,"
                          "text/plain;version=0.0.4;q=0.5")  # fmt: skip

    assert response["Content-Type"].startswith("application/openmetrics-text")
    found = {family.name: family for family in parse(response.content.decode())}
    assert samples(found["portal_agents"])[(("state", "DRAFT"),)] == 14
    assert found["portal_http_requests"].type == "counter"


def test_the_monitor_lag_is_the_age_of_the_newest_probe(client, fleet):
    from django.utils import timezone

    Agent.objects.filter(slug="wow-cache").update(
        state=State.RUNNING, health_checked_at=timezone.now() - timezone.timedelta(seconds=90)
    )

    age = samples(scrape(client)["portal_monitor_probe_age_seconds"])[()]

    assert 90 <= age < 120


def test_the_queue_length_is_read_from_the_broker(client, settings):
    import redis

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("celery")
    broker.rpush("celery", "a", "b", "c")
    try:
        assert samples(scrape(client)["portal_celery_queue_length"])[(("queue", "celery"),)] == 3
    finally:
        broker.delete("celery")
        broker.close()


# --- requests: counted by route, whatever their outcome -------------------------------------


@login_not_required
def boom(request, n: int):
    raise RuntimeError("a view that fails")


@login_not_required
def fine(request):
    return HttpResponse("ok")


urlpatterns = [
    path("boom/<int:n>/", boom),
    path("fine", fine),
    path("", include("portal.urls")),
]


def requests_by_route(found: dict) -> dict[tuple[str, str, str], float]:
    return {
        (labels["method"], labels["route"], labels["status"]): value
        for labels, value in (
            (dict(key), value) for key, value in samples(found["portal_http_requests"], "_total").items()
        )
    }  # fmt: skip


@pytest.mark.urls(__name__)
def test_requests_are_counted_by_route_pattern_through_404s_and_errors(fleet, as_viewer):
    failing = Client(raise_request_exception=False)
    before = requests_by_route(scrape())

    for slug in ("wow-cache", "wow-event", "wow-search"):
        assert as_viewer.get(f"/agents/{slug}/").status_code == 200
    assert as_viewer.get("/agents/no-such-agent/").status_code == 404  # matched, then 404
    for n in range(25):
        assert as_viewer.get(f"/no/such/page/{n}").status_code == 404  # no pattern matched
        assert failing.get(f"/boom/{n}/").status_code == 500  # the view raised
    assert as_viewer.generic("BREW", "/fine").status_code == 200
    assert as_viewer.get("/static/portal-nothing-here.css").status_code == 404

    counted = requests_by_route(scrape())
    grown = {key: counted[key] - before.get(key, 0) for key in counted if counted[key] != before.get(key, 0)}  # fmt: skip
    assert grown[("GET", "/agents/<slug:slug>/", "200")] == 3
    assert grown[("GET", "/agents/<slug:slug>/", "404")] == 1
    assert grown[("GET", prometheus.UNMATCHED, "404")] == 25
    assert grown[("GET", "/boom/<int:n>/", "500")] == 25
    assert grown[("OTHER", "/fine", "200")] == 1
    assert grown[("GET", prometheus.STATIC, "404")] == 1
    # Bounded: 57 requests on 32 paths made 6 series (plus the scrape itself), no path in them.
    assert len(grown) <= 7, grown
    routes = {route for _, route, _ in counted}
    assert not any(re.search(r"wow-|no-such|/\d+", route) for route in routes), routes
    latency = samples(scrape()["portal_http_request_duration_seconds"], "_count")
    assert latency[(("method", "GET"), ("route", "/boom/<int:n>/"))] >= 25


def test_counting_a_request_never_costs_its_answer(client, monkeypatch, caplog):
    def broken_labels(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(prometheus.REQUESTS, "labels", broken_labels)

    assert client.get("/healthz").status_code in (200, 503)
    assert "request metrics not recorded" in caplog.text


# --- Celery tasks: their outcome and run time, counted where they run ----------------------


@celery_app.task(name="tests.prometheus.divide")
def divide(a: int, b: int) -> float:
    return a / b


def test_task_outcomes_and_run_times_are_counted_by_task_name(client):
    def counted() -> tuple[dict, dict]:
        found = scrape(client)
        outcomes = samples(found["portal_celery_tasks"], "_total") if "portal_celery_tasks" in found else {}  # fmt: skip
        return outcomes, samples(found["portal_celery_task_duration_seconds"], "_count")

    before, runs_before = counted()
    divide.apply(args=(1, 2))
    divide.apply(args=(1, 0))  # ZeroDivisionError: the task fails
    after, runs_after = counted()

    task = ("task", "tests.prometheus.divide")
    for outcome in ("succeeded", "failed"):
        key = (("outcome", outcome), task)
        assert after[key] - before.get(key, 0) == 1, outcome
    assert runs_after[(task,)] - runs_before.get((task,), 0) == 2


# --- its cost -------------------------------------------------------------------------------


def test_a_scrape_costs_the_same_queries_with_ten_agents_as_with_two_hundred(client):
    def add(count: int, start: int) -> None:
        Agent.objects.bulk_create(
            Agent(slug=f"c-{n}", name=f"C {n}", tier=Tier.CUSTOMER, state=State.DEPLOYED)
            for n in range(start, start + count)
        )

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            found = scrape(client)
        assert samples(found["portal_scrape_errors"])[()] == 0
        return len(captured)

    add(10, 0)
    few = queries()
    add(190, 10)
    assert queries() == few
    assert few <= 12, "aggregate queries only"


def test_a_failing_collector_costs_only_its_own_figures(client, monkeypatch):
    from portal import extensions

    def broken():
        raise RuntimeError("boom")
        yield  # pragma: no cover

    monkeypatch.setattr(
        extensions, "_METRICS_COLLECTORS", [*extensions._METRICS_COLLECTORS, broken]
    )

    found = scrape(client)

    assert samples(found["portal_scrape_errors"])[()] == 1 and "portal_agents" in found


# --- live pages -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_open_websockets_and_live_pushes_are_counted(viewer):
    from tests.portal.test_realtime import connect

    def read() -> tuple[float, float]:
        found = scrape()
        connection.close()  # this thread's: the test database must drop at the end
        return (samples(found["portal_websockets_open"])[()],
                samples(found["portal_live_pushes"], "_total")[()])  # fmt: skip

    sockets, pushes = await sync_to_async(read)()
    communicator, connected, _ = await connect(viewer)
    assert connected
    realtime.publish(realtime.fleet_group(realtime.ACCESS_VIEW), {"x": '<div id="x">1</div>'})
    await sync_to_async(realtime.publisher.flush)()
    assert await communicator.receive_from(timeout=3)
    now_sockets, now_pushes = await sync_to_async(read)()
    await communicator.disconnect()
    after_sockets, _ = await sync_to_async(read)()

    assert now_sockets == sockets + 1 and after_sockets == sockets
    assert now_pushes >= pushes + 1


# --- several processes ----------------------------------------------------------------------

SECOND_PROCESS = """
import django
django.setup()
from django.test import Client
from portal import prometheus, realtime, tasks
status = Client(HTTP_HOST="127.0.0.1").get("/healthz").status_code  # a request, through the middleware
assert status == 200, status
tasks.heartbeat.apply()                                          # a task, through Celery's tracer
realtime.publish("portal-test-nobody", {"a": "<p id=a></p>", "b": "<p id=b></p>"})
realtime.publisher.flush()                                       # a push, through the channel layer
import time
from prometheus_client import REGISTRY
deadline = time.monotonic() + 10  # flush returns once the layer has it; the count follows
while not REGISTRY.get_sample_value("portal_live_pushes_total") and time.monotonic() < deadline:
    time.sleep(0.01)
prometheus.WEBSOCKETS.inc(2)                                     # as a web server's sockets would
"""


def test_the_counts_of_several_processes_are_added_up(tmp_path, monkeypatch, client):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
           "DJANGO_SETTINGS_MODULE": "portal.settings",
           "DATABASE_URL": os.environ["PORTAL_TEST_DATABASE_URL"],
           "REDIS_URL": os.environ["PORTAL_TEST_REDIS_URL"]}  # fmt: skip
    pids = []
    for _ in range(2):  # two processes, as the web server and a worker are
        process = subprocess.Popen([sys.executable, "-c", SECOND_PROCESS], cwd=ROOT, env=env)
        assert process.wait(timeout=60) == 0
        pids.append(process.pid)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    found = scrape(client)

    assert samples(found["portal_http_requests"], "_total")[
        (("method", "GET"), ("route", "/healthz"), ("status", "200"))
    ] == 2  # fmt: skip
    tasks = samples(found["portal_celery_tasks"], "_total")
    assert tasks[(("outcome", "succeeded"), ("task", "portal.heartbeat"))] == 2
    durations = samples(found["portal_celery_task_duration_seconds"], "_count")
    assert durations[(("task", "portal.heartbeat"),)] == 2
    assert samples(found["portal_live_pushes"], "_total")[()] == 2
    assert samples(found["portal_live_push_fragments"], "_total")[()] == 4
    assert samples(found["portal_websockets_open"])[()] == 4
    assert "portal_agents" in found  # and the fleet's figures, read now, beside them

    _forget_live_metrics(pids[0])  # what the supervisor does when a child dies

    after = scrape(client)
    assert samples(after["portal_websockets_open"])[()] == 2
    assert samples(after["portal_live_pushes"], "_total")[()] == 2  # counters stay


# --- read by Prometheus' own tools ----------------------------------------------------------


@pytest.mark.skipif(not shutil.which("promtool") and os.environ.get("CI") != "true",
                    reason="promtool not installed (Debian: apt-get install prometheus)")  # fmt: skip
def test_promtool_finds_the_exposition_well_formed(fleet, as_viewer):
    as_viewer.get("/agents/")
    text = Client().get("/-/metrics").content

    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60
    )

    # Exit 1 would be lint advice (a counter without _total, a name with a unit in the wrong
    # place...), 3 a malformed exposition: the portal's is clean of both.
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()


def _dashboard_queries() -> list[str]:
    dashboard = json.loads((ROOT / "deploy/grafana/portal-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_grafana_dashboard_asks_only_for_metrics_the_portal_exports(client, fleet, as_viewer):
    as_viewer.get("/agents/")
    exported = set()
    for family in scrape(client).values():  # with or without samples yet
        exported |= {family.name + suffix for suffix in ("", "_total", "_bucket", "_count", "_sum")}
    asked = {
        name for expr in _dashboard_queries() for name in re.findall(r"\bportal_[a-z_]+", expr)
    }
    assert asked and asked <= exported, asked - exported
    prefixes = {name.rsplit("_", 1)[0] for name in asked} | asked
    for wanted in ("portal_http_requests_total", "portal_websockets_open", "portal_agents",
                   "portal_celery_queue_length", "portal_open_alerts", "portal_operations"):  # fmt: skip
        assert wanted in prefixes, wanted


# --- manage.py up: its processes share one directory, and Prometheus reads the endpoint -------


@pytest.mark.timeout(240)
def test_up_gives_its_processes_one_fresh_directory_that_the_endpoint_adds_up(tmp_path):
    from tests.portal.test_up import Up

    root = Path(__import__("tempfile").mkdtemp(prefix="portal-prom-"))
    root.chmod(0o755)  # PostgreSQL runs as its own user and must reach into it
    var_dir = root / "var"
    stale = var_dir / "prometheus" / "counter_999999.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by an earlier run")
    port = embedded.free_port()
    base = f"http://127.0.0.1:{port}"
    up = Up(var_dir, port)
    server = None
    try:
        up.wait_for(r"is up at http://127\.0\.0\.1:\d+", timeout=120)
        assert not stale.exists(), "emptied at start"
        for _ in range(3):
            assert requests.get(f"{base}/healthz", timeout=10).status_code == 200

        # The worker runs beat's heartbeat (and the sweep it asks for when ready): its outcome
        # is written by the worker's pool process and read by the web server's endpoint.
        deadline = time.monotonic() + 90
        while True:
            found = {f.name: f for f in text_string_to_metric_families(
                requests.get(f"{base}/-/metrics", timeout=10).text)}  # fmt: skip
            tasks = samples(found["portal_celery_tasks"], "_total") if "portal_celery_tasks" in found else {}  # fmt: skip
            if any(dict(labels)["outcome"] == "succeeded" for labels in tasks):
                break
            assert time.monotonic() < deadline, up.output[-3000:]
            time.sleep(1)
        healthz = samples(found["portal_http_requests"], "_total")[
            (("method", "GET"), ("route", "/healthz"), ("status", "200"))
        ]  # fmt: skip
        assert healthz >= 3
        assert samples(found["portal_agents"])[(("state", "DRAFT"),)] == 14
        files = {p.name.split("_")[0] for p in (var_dir / "prometheus").glob("*.db")}
        assert {"counter", "histogram"} <= files

        if shutil.which("prometheus"):
            server = _prometheus_server(root, port)
            assert _prometheus_reads(server, 'up{job="portal"}') == 1.0
            assert _prometheus_reads(server, 'portal_agents{state="DRAFT"}') == 14.0
            # Every query of the Grafana dashboard is PromQL this Prometheus accepts.
            for expr in _dashboard_queries():
                answer = requests.get(f"{server[1]}/api/v1/query", timeout=5,
                                      params={"query": expr.replace("$job", ".*")}).json()  # fmt: skip
                assert answer["status"] == "success", (expr, answer)
        else:
            warnings.warn(
                "prometheus not installed (apt-get install prometheus): the scrape by a real "
                "Prometheus server and the dashboard's queries were not tried",
                stacklevel=1,
            )
    finally:
        if server is not None:
            server[0].kill()
            server[0].wait(timeout=10)
        code = up.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert code == 0, up.output[-3000:]


def _prometheus_server(root: Path, port: int) -> tuple[subprocess.Popen, str]:
    """A real Prometheus server scraping the portal every second."""
    web = embedded.free_port()
    config = root / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: portal\n    metrics_path: /-/metrics\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    process = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{web}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return process, f"http://127.0.0.1:{web}"


def _prometheus_reads(server: tuple[subprocess.Popen, str], query: str) -> float:
    """The value Prometheus answers for ``query`` once it has scraped (within 30 s)."""
    process, base = server
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "prometheus exited"
        try:
            answer = requests.get(f"{base}/api/v1/query", params={"query": query}, timeout=5).json()
        except requests.RequestException:
            answer = {}
        result = answer.get("data", {}).get("result", [])
        if result:
            return float(result[0]["value"][1])
        time.sleep(0.5)
    raise AssertionError(f"prometheus never answered {query}")
