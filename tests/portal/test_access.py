"""Who can open which page: anonymous, no role, Viewer, Operator, Admin."""

from __future__ import annotations

import pytest
from django.test import Client

from portal.navigation import SECTIONS

SECTION_PAGES = [section.href for section in SECTIONS if section.slug != "dashboard"]
PORTAL_PAGES = ["/", *SECTION_PAGES]


@pytest.mark.django_db
@pytest.mark.parametrize("path", [*PORTAL_PAGES, "/admin/"])
def test_anonymous_is_sent_to_sign_in(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert "/login/" in response["Location"]


@pytest.mark.django_db
def test_login_page_and_healthz_are_open_to_anonymous(client: Client) -> None:
    assert client.get("/login/").status_code == 200
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("path", PORTAL_PAGES)
@pytest.mark.parametrize("role_client", ["as_viewer", "as_operator", "as_admin"])
def test_every_role_sees_every_portal_page(request, role_client: str, path: str) -> None:
    client = request.getfixturevalue(role_client)
    response = client.get(path)
    assert response.status_code == 200
    assert b"WAOOAW" in response.content


def test_a_signed_in_user_without_a_role_is_refused_with_a_reason(as_outsider) -> None:
    response = as_outsider.get("/")
    assert response.status_code == 403
    assert b"no role yet" in response.content


@pytest.mark.parametrize("role_client", ["as_viewer", "as_operator"])
def test_only_admins_reach_the_django_admin(request, role_client: str) -> None:
    client = request.getfixturevalue(role_client)
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_admin_reaches_the_django_admin(as_admin) -> None:
    response = as_admin.get("/admin/")
    assert response.status_code == 200
    for model in (b"Users", b"Groups", b"API tokens", b"Audit entries"):
        assert model in response.content


def test_admin_link_shows_only_for_admins(as_admin, as_operator) -> None:
    assert b'href="/admin/"' in as_admin.get("/").content
    assert b'href="/admin/"' not in as_operator.get("/").content


def test_dashboard_refuses_post(as_admin) -> None:
    assert as_admin.post("/").status_code == 405


def test_unknown_section_is_404(as_viewer) -> None:
    response = as_viewer.get("/nowhere/")
    assert response.status_code == 404
    assert b"nothing at this address" in response.content


def test_shell_shows_user_role_and_sidebar(as_operator) -> None:
    html = as_operator.get("/").content.decode()
    assert "otto" in html and "Operator" in html
    for section in SECTIONS:
        assert section.title.replace("&", "&amp;") in html
    assert 'aria-current="page"' in html


def test_expired_htmx_request_redirects_whole_page(client: Client, db) -> None:
    response = client.get("/", HTTP_HX_REQUEST="true")
    assert response.status_code == 204
    assert response["HX-Redirect"].startswith("/login/")


def test_dashboard_answers_htmx_polls_with_the_fleet_region_only(as_viewer) -> None:
    response = as_viewer.get("/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="fleet-region"')
    assert "<html" not in html
    assert response["Vary"] and "HX-Request" in response["Vary"]
