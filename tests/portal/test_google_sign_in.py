"""Google sign-in end to end, with only Google's token and userinfo endpoints stubbed."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
import responses
from django.contrib.auth import get_user_model
from django.test import Client

from portal import roles
from portal.models import AuditEntry

TOKEN_URL = "https://accounts.google.com/o/oauth2/token"
USERINFO_URL = "https://www.googleapis.com/oauth2/v3/userinfo"


@pytest.fixture
def google(settings):
    settings.SOCIAL_AUTH_GOOGLE_OAUTH2_KEY = "test-client-id.apps.googleusercontent.com"
    settings.SOCIAL_AUTH_GOOGLE_OAUTH2_SECRET = "test-client-secret"
    settings.GOOGLE_ALLOWED_DOMAINS = ["waooaw.com", "partner.io"]
    settings.SOCIAL_AUTH_GOOGLE_OAUTH2_WHITELISTED_DOMAINS = ["waooaw.com", "partner.io"]
    settings.GOOGLE_LOGIN_ENABLED = True
    settings.DEFAULT_ROLE = "Viewer"
    settings.ROLE_RULES = {"boss@waooaw.com": "Admin", "partner.io": "Operator"}
    return settings


def sign_in_with_google(client: Client, userinfo: dict) -> object:
    """POST the login button, follow Google's redirect back with a code, as a browser would."""
    start = client.post("/login/google-oauth2/")
    assert start.status_code == 302
    location = urlparse(start["Location"])
    assert location.netloc == "accounts.google.com"
    query = parse_qs(location.query)
    assert query["redirect_uri"][0].endswith("/complete/google-oauth2/")
    state = query["state"][0]
    with responses.RequestsMock() as google_api:
        google_api.post(
            TOKEN_URL,
            json={"access_token": "ya29.test", "token_type": "Bearer", "expires_in": 3599},
        )
        google_api.get(USERINFO_URL, json=userinfo)
        return client.get("/complete/google-oauth2/", {"state": state, "code": "4/test-code"})


def userinfo(email: str, verified: bool = True, sub: str = "1001") -> dict:
    return {
        "sub": sub,
        "email": email,
        "email_verified": verified,
        "name": "Grace Hopper",
        "given_name": "Grace",
        "family_name": "Hopper",
    }


def test_login_page_shows_google_button_as_a_post_form(google, client: Client) -> None:
    html = client.get("/login/").content.decode()
    assert 'action="/login/google-oauth2/"' in html
    assert "Sign in with Google" in html


def test_google_login_url_refuses_get(google, client: Client, db) -> None:
    assert client.get("/login/google-oauth2/").status_code == 405


def test_allowed_domain_signs_in_with_default_role(google, client: Client, db) -> None:
    response = sign_in_with_google(client, userinfo("grace@waooaw.com"))
    assert response.status_code == 302
    assert response["Location"] == "/"
    user = get_user_model().objects.get(email="grace@waooaw.com")
    assert user.username == "grace@waooaw.com"
    assert user.first_name == "Grace"
    assert roles.role_of(user) == "Viewer"
    assert client.get("/").status_code == 200
    assert AuditEntry.objects.filter(action="user.role", target="grace@waooaw.com").exists()


def test_domain_rule_maps_new_user_to_operator(google, client: Client, db) -> None:
    sign_in_with_google(client, userinfo("pat@partner.io", sub="2002"))
    assert roles.role_of(get_user_model().objects.get(email="pat@partner.io")) == "Operator"


def test_email_rule_beats_domain_rule(google, client: Client, db) -> None:
    sign_in_with_google(client, userinfo("boss@waooaw.com", sub="3003"))
    user = get_user_model().objects.get(email="boss@waooaw.com")
    assert roles.role_of(user) == "Admin"
    assert client.get("/admin/").status_code == 200


def test_returning_user_keeps_the_role_an_admin_gave(google, client: Client, db) -> None:
    sign_in_with_google(client, userinfo("grace@waooaw.com"))
    user = get_user_model().objects.get(email="grace@waooaw.com")
    roles.set_role(user, "Operator")
    client.post("/logout/")
    sign_in_with_google(client, userinfo("grace@waooaw.com"))
    assert roles.role_of(get_user_model().objects.get(pk=user.pk)) == "Operator"


def test_foreign_domain_is_refused_with_a_clear_page(google, client: Client, db) -> None:
    response = sign_in_with_google(client, userinfo("mallory@gmail.com", sub="4004"))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/refused/")
    page = client.get(response["Location"])
    assert page.status_code == 403
    assert b"only accounts from waooaw.com, partner.io can" in page.content
    assert not get_user_model().objects.filter(email="mallory@gmail.com").exists()
    assert client.get("/").status_code == 302


def test_unverified_email_is_refused(google, client: Client, db) -> None:
    response = sign_in_with_google(client, userinfo("grace@waooaw.com", verified=False))
    page = client.get(response["Location"])
    assert page.status_code == 403
    assert b"has not verified" in page.content
    assert not get_user_model().objects.filter(email="grace@waooaw.com").exists()


def test_google_button_hidden_when_not_configured(client: Client, db) -> None:
    assert b"Sign in with Google" not in client.get("/login/").content
