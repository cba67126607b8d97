"""One ordering rule for many agents, whatever the door (issue 14): stopping WowCache and
WowMemory (which depends on it) stops WowMemory first from the admin, the command line, the API
and the page; starting goes dependencies first. The rule is agents/lifecycle.py's."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from agents import bulk, lifecycle, services
from agents.models import Agent, AgentTransition, BulkOperation, Operation

pytestmark = pytest.mark.django_db(transaction=True)

PAIR = ["wow-cache", "wow-memory"]  # WowMemory depends on WowCache


@pytest.fixture
def running(seeded, bring_up):
    for slug in ("wow-cache", "wow-event", "wow-memory"):
        bring_up(seeded[slug])
    assert Agent.objects.get(slug="wow-memory").dependencies.filter(slug="wow-cache").exists()


@pytest.fixture(autouse=True)
def empty_queue():
    from portal.celery import app

    app.control.purge()
    yield
    app.control.purge()


def _stops_in_order() -> list[str]:
    rows = AgentTransition.objects.filter(action="stop", agent__slug__in=PAIR).order_by("at", "id")
    return [row.agent.slug for row in rows]


def _requested_in_order(action: str) -> list[str]:
    rows = Operation.objects.filter(action=action, agent__slug__in=PAIR).order_by("requested_at")
    return [row.agent.slug for row in rows]


def test_the_table_orders_down_actions_dependents_first() -> None:
    dependencies_first = ["cache", "memory"]
    for name in ("stop", "suspend", "revoke"):
        assert lifecycle.in_order(name, dependencies_first) == ["memory", "cache"]
    for name in ("provision", "deploy", "start", "resume", "restart", "deploy_and_start"):
        assert lifecycle.in_order(name, dependencies_first) == ["cache", "memory"]


def test_the_admin_stops_dependents_first(running, as_admin) -> None:
    ids = [str(pk) for pk in Agent.objects.filter(slug__in=PAIR).values_list("pk", flat=True)]
    response = as_admin.post(
        "/admin/agents/agent/", {"action": "stop_agents", "_selected_action": ids}
    )
    assert response.status_code == 302
    assert _requested_in_order("stop") == ["wow-memory", "wow-cache"]


def test_the_command_stops_dependents_first_and_starts_dependencies_first(running) -> None:
    call_command("agents", "stop", *PAIR, "--inline", "--yes", stdout=io.StringIO())
    assert _stops_in_order() == ["wow-memory", "wow-cache"]
    call_command("agents", "start", "wow-memory", "wow-cache", "--inline", stdout=io.StringIO())
    assert _requested_in_order("start")[-2:] == ["wow-cache", "wow-memory"]


def test_the_api_stops_dependents_first(running, as_operator) -> None:
    response = as_operator.post(
        "/api/platform/bulk",
        {"action": "stop", "targets": PAIR, "parallelism": 2},
        content_type="application/json",
    )
    assert response.status_code == 202, response.content
    bulk.run_bulk_operation(response.json()["id"])
    assert _stops_in_order() == ["wow-memory", "wow-cache"]


def test_the_page_stops_dependents_first(running, as_operator) -> None:
    response = as_operator.post(
        "/agents/bulk/run/", {"action": "stop", "agent": PAIR, "parallelism": "2"}
    )
    assert response.status_code == 302, response.content[:500]
    operation = BulkOperation.objects.get()
    bulk.run_bulk_operation(operation.pk)
    assert _stops_in_order() == ["wow-memory", "wow-cache"]
    assert services.in_action_order("stop", Agent.objects.filter(slug__in=PAIR)) == [
        Agent.objects.get(slug="wow-memory"),
        Agent.objects.get(slug="wow-cache"),
    ]
