"""/healthz against real servers: a spare PostgreSQL and Redis are started, then stopped."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client

from portal import embedded


@pytest.fixture
def spare_redis(tmp_path, settings):
    url = embedded.start_redis(tmp_path, persistent=False)
    settings.REDIS_URL = url
    yield tmp_path
    embedded.stop_redis(tmp_path)


@pytest.fixture
def spare_postgres(tmp_path_factory, django_db_blocker):
    """Points the default connection at a PostgreSQL of its own for the test, then back."""
    root = tmp_path_factory.mktemp("pg")
    url = embedded.start_postgres(root)
    original = dict(connection.settings_dict)
    from portal.env import database_from_url

    with django_db_blocker.unblock():
        connection.close()
        connection.settings_dict.update(database_from_url(url))
        yield root
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(original)
    embedded.stop_postgres(root)


def test_healthz_reports_both_stores(client: Client, spare_postgres) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]
    assert response["Cache-Control"].startswith("max-age=0")


def test_healthz_is_503_when_redis_is_stopped(client: Client, spare_postgres, spare_redis) -> None:
    assert client.get("/healthz").status_code == 200
    embedded.stop_redis(spare_redis)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is False
    assert "Error" in body["checks"]["redis"]["error"]


def test_healthz_is_503_when_the_database_is_stopped(client: Client, spare_postgres) -> None:
    assert client.get("/healthz").status_code == 200
    embedded.stop_postgres(spare_postgres)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"]["ok"] is False
    assert body["checks"]["redis"]["ok"] is True
    embedded.start_postgres(spare_postgres)
    assert client.get("/healthz").status_code == 200, "recovers once the database is back"


def test_healthz_needs_no_sign_in_and_only_get(client: Client, spare_postgres) -> None:
    assert client.post("/healthz").status_code == 405
