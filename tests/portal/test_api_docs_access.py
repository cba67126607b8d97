"""The API documentation and the OpenAPI document need sign-in and a role, like every page."""

from __future__ import annotations

import pytest
from django.test import Client

from portal import services
from portal.actors import Actor


@pytest.mark.django_db
def test_anonymous_is_sent_to_sign_in_from_the_api_docs(client: Client) -> None:
    response = client.get("/api/docs")
    assert response.status_code == 302
    assert "/login/" in response["Location"]


@pytest.mark.django_db
def test_anonymous_gets_401_for_the_openapi_document(client: Client) -> None:
    response = client.get("/api/platform/openapi.json")
    assert response.status_code == 401
    assert "paths" not in response.json()


def test_a_user_without_a_role_cannot_read_the_api_docs(as_outsider) -> None:
    assert as_outsider.get("/api/docs").status_code == 403
    response = as_outsider.get("/api/platform/openapi.json")
    assert response.status_code == 403
    assert "paths" not in response.json()


def test_a_viewer_reads_the_api_docs_and_the_openapi_document(as_viewer) -> None:
    assert as_viewer.get("/api/docs").status_code == 200
    assert "paths" in as_viewer.get("/api/platform/openapi.json").json()


def test_an_api_token_reads_the_openapi_document(client: Client, operator) -> None:
    _, text = services.create_api_token(operator, Actor.command("test"), name="docs")
    response = client.get("/api/platform/openapi.json", HTTP_AUTHORIZATION=f"Bearer {text}")
    assert response.status_code == 200
    assert "paths" in response.json()
