"""Local username/password sign-in and sign-out."""

from __future__ import annotations

from django.test import Client


def test_operator_signs_in_with_username_and_lands_on_dashboard(
    client: Client, operator, password
) -> None:
    response = client.post("/login/", {"username": "otto", "password": password}, follow=True)
    assert response.redirect_chain[-1][0] == "/"
    assert b"Dashboard" in response.content


def test_sign_in_with_email_works_too(client: Client, viewer, password) -> None:
    response = client.post("/login/", {"username": "VERA@waooaw.test", "password": password})
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_wrong_password_says_what_to_check_and_signs_nobody_in(client: Client, viewer) -> None:
    response = client.post("/login/", {"username": "vera", "password": "nope"})
    assert response.status_code == 200
    assert b"do not match" in response.content
    assert client.get("/").status_code == 302


def test_next_parameter_is_honoured(client: Client, viewer, password) -> None:
    response = client.post(
        "/login/?next=/logs/", {"username": "vera", "password": password, "next": "/logs/"}
    )
    assert response["Location"] == "/logs/"


def test_sign_out_needs_post_and_ends_the_session(as_viewer) -> None:
    assert as_viewer.get("/logout/").status_code == 405
    response = as_viewer.post("/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/login/"
    assert as_viewer.get("/").status_code == 302


def test_signed_in_user_visiting_login_goes_to_dashboard(as_viewer) -> None:
    response = as_viewer.get("/login/")
    assert response.status_code == 302


def test_login_form_needs_csrf(viewer, password) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post("/login/", {"username": "vera", "password": password})
    assert response.status_code == 403
