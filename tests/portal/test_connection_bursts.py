"""Bursts of concurrent requests at the real ASGI server keep PostgreSQL's connections bounded.

Under Daphne every request runs its view in a thread of its own; with persistent connections
each of those threads kept its connection open, so bursts piled them up until PostgreSQL refused
new clients and every request answered 500 (issue 13, item 1).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.db import connection

from agents import services as agent_services
from portal import services
from portal.actors import Actor

pytestmark = pytest.mark.django_db(transaction=True)

BURSTS = 3
REQUESTS_PER_BURST = 100
AT_ONCE = 64
# The web process's own connections (a request finishing, Channels' consumers) settle to a few.
MOST_CONNECTIONS_AFTER_A_BURST = 8


def _server_connections() -> int:
    """Client connections to the test database other than this test's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND backend_type = 'client backend'"
            " AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def _settled_connections(timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    count = _server_connections()
    while count > MOST_CONNECTIONS_AFTER_A_BURST and time.monotonic() < deadline:
        time.sleep(0.2)
        count = _server_connections()
    return count


def test_bursts_of_concurrent_requests_leave_connections_bounded(portal_server, operator):
    agent_services.seed_platform_agents(Actor.command("test"))
    _, token = services.create_api_token(operator, Actor.command("test"), name="burst")
    headers = {"Authorization": f"Bearer {token}"}
    before = _server_connections()

    def one(number: int) -> int:
        if number % 2:
            # A lifecycle request that is refused (the agent is not running): a 4xx.
            url = f"{portal_server}/api/platform/agents/wow-security/restart"
            return requests.post(url, headers=headers, json={}, timeout=60).status_code
        url = f"{portal_server}/api/platform/agents?q=wow"
        return requests.get(url, headers=headers, timeout=60).status_code

    after_each_burst = []
    for _ in range(BURSTS):
        with ThreadPoolExecutor(max_workers=AT_ONCE) as pool:
            statuses = list(pool.map(one, range(REQUESTS_PER_BURST)))
        errors = [status for status in statuses if status >= 500]
        assert not errors, f"{len(errors)} answers were 5xx: {sorted(set(statuses))}"
        assert all(200 <= status < 500 for status in statuses)
        after_each_burst.append(_settled_connections())

    assert max(after_each_burst) <= max(before, MOST_CONNECTIONS_AFTER_A_BURST), (
        f"connections before {before}, after each burst {after_each_burst}"
    )
    response = requests.get(f"{portal_server}/healthz", timeout=10)
    assert response.status_code == 200
