"""Your profile: who you are, where your role comes from, your sessions and your own API tokens,
through the page, the API (/api/platform/me...) and the admin."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone
from social_django.models import UserSocialAuth

from portal import pipeline, services
from portal.actors import Actor
from portal.models import ApiToken, AuditEntry, UserSession
from portal.profile import services as profile
from portal.profile import sessions

API = "/api/platform"
HTMX = {"HTTP_HX_REQUEST": "true"}


def signed_in(user, password: str, user_agent: str = "", ip: str = "127.0.0.1") -> Client:
    """A browser of its own, signed in through the login form like a person."""
    client = Client(HTTP_USER_AGENT=user_agent, REMOTE_ADDR=ip)
    response = client.post("/login/", {"username": user.get_username(), "password": password})
    assert response.status_code == 302, response.content[:500]
    return client


def bearer(text: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {text}"}


def post_json(client: Client, path: str, body: object, **extra):
    return client.post(path, json.dumps(body), content_type="application/json", **extra)


# --- sessions are followed ----------------------------------------------------------------------

CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"


def test_signing_in_keeps_a_row_for_the_session_and_signing_out_removes_it(operator, password):
    client = signed_in(operator, password, user_agent=CHROME, ip="10.1.2.3")
    key = client.session.session_key
    row = UserSession.objects.get(session_key=key)
    assert (row.user, row.ip, row.user_agent) == (operator, "10.1.2.3", CHROME)
    assert row.signed_in_with == "portal.backends.RoleBackend"
    client.post("/logout/")
    assert not UserSession.objects.filter(session_key=key).exists()


def test_last_seen_moves_on_at_most_once_a_minute(operator, password, django_assert_num_queries):
    client = signed_in(operator, password)
    row = UserSession.objects.get(user=operator)
    hour_ago = timezone.now() - timedelta(hours=1)
    UserSession.objects.filter(pk=row.pk).update(last_seen_at=hour_ago)
    client.get("/profile/")  # within the minute of the sign-in: nothing written
    assert UserSession.objects.get(pk=row.pk).last_seen_at == hour_ago
    sessions.forget_recent()  # as if the minute had passed
    client.get("/profile/", REMOTE_ADDR="10.9.9.9")
    seen = UserSession.objects.get(pk=row.pk)
    assert seen.last_seen_at > hour_ago and seen.ip == "10.9.9.9"
    request = type("R", (), {"session": client.session, "user": operator, "META": {}})()
    with django_assert_num_queries(0):
        sessions.note_session_seen(request, now=seen.last_seen_at + timedelta(seconds=59))
    with django_assert_num_queries(1):
        sessions.note_session_seen(request, now=seen.last_seen_at + timedelta(seconds=61))


def test_a_session_without_a_row_gets_one_at_its_next_request(as_operator, operator):
    """Sessions from before the rows were kept (the fixture client signs in without one's
    middleware noticing, then the row is dropped)."""
    UserSession.objects.all().delete()
    sessions.forget_recent()
    assert as_operator.get("/profile/").status_code == 200
    assert UserSession.objects.filter(user=operator).count() == 1


def test_ended_sessions_are_not_listed_and_go_at_the_next_sign_in(operator, password):
    first = signed_in(operator, password)
    Session.objects.filter(session_key=first.session.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    second = signed_in(operator, password)
    assert [s["current"] for s in second.get(f"{API}/me/sessions").json()] == [True]
    assert UserSession.objects.filter(user=operator).count() == 1


def test_browsers_are_described_in_words():
    assert sessions.describe_browser(CHROME) == "Chrome 131 on Linux"
    assert sessions.describe_browser(FIREFOX) == "Firefox 133 on Windows"
    assert sessions.describe_browser("curl/8.5.0") == "curl 8"
    assert sessions.describe_browser("") == "Unknown browser"
    assert sessions.describe_backend("social_core.backends.google.GoogleOAuth2") == "Google"


# --- the page -----------------------------------------------------------------------------------


def test_the_user_chip_links_to_the_profile(as_viewer):
    html = as_viewer.get("/").content.decode()
    assert 'href="/profile/"' in html and "data-profile-link" in html


def test_anonymous_is_sent_to_sign_in_and_the_api_answers_401(client, db):
    assert "/login/" in client.get("/profile/")["Location"]
    assert client.get(f"{API}/me").status_code == 401
    assert client.get(f"{API}/me/tokens").status_code == 401


def test_someone_without_a_role_is_refused(as_outsider, outsider):
    assert as_outsider.get("/profile/").status_code == 403
    # The API does not authenticate someone without a role (portal.api.PortalAuth).
    assert as_outsider.get(f"{API}/me").status_code == 401
    response = post_json(as_outsider, f"{API}/me/tokens", {"name": "x", "expires_in_days": 3})
    assert response.status_code == 401
    assert not ApiToken.objects.exists()


def test_the_page_says_who_you_are_and_what_your_role_lets_you_do(operator, password):
    operator.first_name, operator.last_name = "Otto", "Operand"
    operator.save()
    client = signed_in(operator, password, user_agent=CHROME)
    html = client.get("/profile/").content.decode()
    for text in ("otto", "Otto Operand", "otto@waooaw.test", "Password", "Operator",
                 "Run lifecycle, bulk", "Chrome 131 on Linux", "This session"):  # fmt: skip
        assert text in html, text
    assert "Manage users" not in html  # an Admin's right, not an Operator's
    assert 'data-role-origin="direct"' in html  # the fixture sets the group without an audit


def test_the_role_given_by_an_admin_names_the_admin(admin, viewer, as_viewer):
    services.assign_role(viewer, "Operator", Actor(kind="user", user=admin, via="admin"))
    origin = as_viewer.get(f"{API}/me").json()["role_origin"]
    assert origin["kind"] == "admin" and origin["by"] == "ada"
    assert "Given by the Admin ada in the Django admin" in origin["sentence"]


def test_the_role_given_at_google_sign_in_names_the_rule(make_user, settings):
    settings.ROLE_RULES = {"ops.waooaw.test": "Operator"}
    user = make_user("gina", email="gina@ops.waooaw.test")
    pipeline.assign_role(None, user=user, is_new=True, details={"email": user.email})
    UserSocialAuth.objects.create(user=user, provider="google-oauth2", uid=user.email)
    client = Client()
    client.force_login(user)
    me = client.get(f"{API}/me").json()
    assert me["sign_in_methods"] == ["Google (gina@ops.waooaw.test)", "Password"]
    assert me["role"] == "Operator"
    assert me["role_origin"]["kind"] == "google"
    assert "the domain ops.waooaw.test in ROLE_RULES (Operator)" in me["role_origin"]["rule"]
    settings.ROLE_RULES = {}
    settings.DEFAULT_ROLE = "Viewer"
    assert "DEFAULT_ROLE (Viewer)" in profile.role_origin(user).sentence


def test_a_superuser_is_told_so(make_user):
    boss = make_user("boss", is_superuser=True)
    assert profile.role_origin(boss).kind == "superuser"


def test_the_page_takes_the_same_queries_with_many_tokens_and_sessions(
    operator, password, django_assert_max_num_queries
):
    client = signed_in(operator, password)
    client.get("/profile/")
    with django_assert_max_num_queries(30) as few:
        client.get("/profile/")
    baseline = len(few.captured_queries)  # now: each request clears Django's query log
    for index in range(8):
        profile.create_own_token(
            Actor(kind="user", user=operator), name=f"t{index}", expires_in_days=3
        )
        signed_in(operator, password)
    sessions.forget_recent()
    client.get("/profile/")
    with django_assert_max_num_queries(baseline):
        html = client.get("/profile/").content.decode()
    assert html.count("data-token=") == 8 and html.count("data-session=") == 9


# --- tokens through the page --------------------------------------------------------------------


def test_a_new_token_is_shown_once_and_works(operator, password):
    client = signed_in(operator, password)
    response = client.post(
        "/profile/tokens/", {"name": "laptop script", "expires_in_days": "30"}, **HTMX
    )
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    token = ApiToken.objects.get(user=operator)
    html = response.content.decode()
    text = html.split("data-token-text", 1)[0].rsplit('value="', 1)[1].split('"', 1)[0]
    assert text.startswith(f"wao_{token.prefix}_")
    assert token.name == "laptop script" and token.created_by == operator
    assert timedelta(days=29, hours=23) < token.expires_at - timezone.now() <= timedelta(days=30)
    assert text not in client.get("/profile/").content.decode()  # once
    me = Client().get(f"{API}/me", **bearer(text)).json()
    assert me["username"] == "otto" and me["authenticated_by"] == f"token {token.prefix}"
    entry = AuditEntry.objects.get(action="api_token.create")
    assert entry.detail["self_service"] is True and entry.detail["expires_in_days"] == 30
    assert entry.door == "page" and entry.actor == "user:otto"
    assert text not in json.dumps(entry.detail)


def test_a_plain_form_post_shows_the_token_on_the_page(as_viewer, viewer):
    response = as_viewer.post("/profile/tokens/", {"name": "cron", "expires_in_days": "7"})
    assert response.status_code == 200 and b"data-new-token" in response.content
    assert b"<html" in response.content
    assert ApiToken.objects.get(user=viewer).name == "cron"


BAD_FORMS = [
    ({"name": "x", "expires_in_days": "0"}, "expires_in_days", "1 to 365 days"),
    ({"name": "x", "expires_in_days": "9999"}, "expires_in_days", "out of that range"),
    ({"name": "x", "expires_in_days": "abc"}, "expires_in_days", "not a whole number"),
    ({"name": "x", "expires_in_days": "-3"}, "expires_in_days", "out of that range"),
    ({"name": "x", "expires_in_days": "2.5"}, "expires_in_days", "not a whole number"),
    ({"name": "x", "expires_in_days": ""}, "expires_in_days", "Choose when"),
    ({"name": "x" * 10_000, "expires_in_days": "30"}, "name", "keep it to 100"),
    ({"name": "  ", "expires_in_days": "30"}, "name", "Name the token"),
    ({"name": "tab\there", "expires_in_days": "30"}, "name", "control characters"),
]


@pytest.mark.parametrize(("form", "field", "says"), BAD_FORMS)
def test_bad_input_on_the_page_is_a_400_naming_the_field_and_changes_nothing(
    as_operator, form, field, says
):
    response = as_operator.post("/profile/tokens/", form, **HTMX)
    assert response.status_code == 400
    html = response.content.decode()
    assert says in html
    assert f'name="{field}"' in html.split('aria-invalid="true"', 1)[0].rsplit("<input", 1)[1]
    assert not ApiToken.objects.exists()


def test_a_nul_character_is_refused_before_anything_reads_it(as_operator):
    response = as_operator.post("/profile/tokens/", {"name": "a\x00b", "expires_in_days": "3"})
    assert response.status_code == 400 and b"NUL" in response.content
    response = post_json(as_operator, f"{API}/me/tokens", {"name": "a", "expires_in_days": "3\x00"})
    assert response.status_code == 400
    assert not ApiToken.objects.exists()


def test_revoking_from_the_page(operator, password):
    client = signed_in(operator, password)
    token, text = profile.create_own_token(
        Actor(kind="user", user=operator), name="old", expires_in_days=5
    )
    response = client.post(f"/profile/tokens/{token.prefix}/revoke/", **HTMX)
    assert response.status_code == 200 and b"is revoked" in response.content
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert Client().get(f"{API}/me", **bearer(text)).status_code == 401
    again = client.post(f"/profile/tokens/{token.prefix}/revoke/", **HTMX)
    assert b"already revoked" in again.content
    assert AuditEntry.objects.filter(action="api_token.revoke", outcome="success").count() == 1


def test_a_plain_post_revokes_and_comes_back_with_a_message(as_viewer, viewer):
    token, _ = profile.create_own_token(
        Actor(kind="user", user=viewer), name="n", expires_in_days=1
    )
    response = as_viewer.post(f"/profile/tokens/{token.prefix}/revoke/", follow=True)
    assert response.redirect_chain == [("/profile/", 302)]
    assert b"is revoked" in response.content


def test_nobody_revokes_someone_elses_token(as_viewer, operator):
    token, _ = services.create_api_token(operator, Actor.command("test"), name="theirs")
    response = as_viewer.post(f"/profile/tokens/{token.prefix}/revoke/", **HTMX)
    assert response.status_code == 404
    assert as_viewer.delete(f"{API}/me/tokens/{token.prefix}").status_code == 404
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None
    refused = AuditEntry.objects.filter(action="api_token.revoke", outcome="refused")
    assert refused.count() == 2 and refused.first().user.username == "vera"


def test_the_forms_refuse_get(as_operator):
    assert as_operator.get("/profile/tokens/").status_code == 405
    assert as_operator.get("/profile/sessions/sign-out-others/").status_code == 405


# --- tokens through the API ---------------------------------------------------------------------


def test_the_api_creates_lists_and_revokes_your_tokens(as_operator, operator):
    response = post_json(as_operator, f"{API}/me/tokens", {"name": "ci", "expires_in_days": 90})
    assert response.status_code == 201
    body = response.json()
    prefix, text = body["token"]["prefix"], body["text"]
    assert body["token"]["status"] == "active" and text.startswith(f"wao_{prefix}_")
    listed = as_operator.get(f"{API}/me/tokens").json()
    assert [t["prefix"] for t in listed] == [prefix] and "text" not in listed[0]
    client = Client()
    client.get(f"{API}/me", **bearer(text))
    assert as_operator.get(f"{API}/me/tokens").json()[0]["last_used_at"] is not None
    revoked = as_operator.delete(f"{API}/me/tokens/{prefix}").json()
    assert revoked["revoked"] is True and revoked["token"]["status"] == "revoked"
    assert as_operator.delete(f"{API}/me/tokens/{prefix}").json()["revoked"] is False


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "expires_in_days": 0},
        {"name": "x", "expires_in_days": 9999},
        {"name": "x", "expires_in_days": "abc"},
        {"name": "x", "expires_in_days": True},
        {"name": "x", "expires_in_days": 1.5},
        {"name": "x", "expires_in_days": 1e309},
        {"name": "x", "expires_in_days": None},
        {"name": "x", "expires_in_days": [30]},
        {"name": "x" * 10_000, "expires_in_days": 30},
        {"name": 5, "expires_in_days": 30},
        {"expires_in_days": 30},
        ["name", "x"],
        "just text",
    ],
)
def test_bad_input_to_the_api_is_a_400_and_changes_nothing(as_operator, body):
    response = post_json(as_operator, f"{API}/me/tokens", body)
    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert not ApiToken.objects.exists()


def test_a_body_that_is_not_json_is_a_400(as_operator):
    response = as_operator.post(f"{API}/me/tokens", "{nope", content_type="application/json")
    assert response.status_code == 400 and "not JSON" in response.json()["detail"]


def test_the_expiry_may_be_given_as_text_or_a_whole_float(as_operator):
    for value in ("12", 12.0):
        response = post_json(
            as_operator, f"{API}/me/tokens", {"name": "n", "expires_in_days": value}
        )
        assert response.status_code == 201


def test_at_most_ten_tokens_are_active(operator, as_operator):
    actor = Actor(kind="user", user=operator)
    for index in range(profile.MAX_ACTIVE_TOKENS):
        profile.create_own_token(actor, name=f"t{index}", expires_in_days=1)
    response = post_json(
        as_operator, f"{API}/me/tokens", {"name": "one more", "expires_in_days": 1}
    )
    assert response.status_code == 409 and "revoke one" in response.json()["detail"]
    assert ApiToken.objects.filter(user=operator).count() == profile.MAX_ACTIVE_TOKENS
    page = as_operator.post("/profile/tokens/", {"name": "more", "expires_in_days": "2"}, **HTMX)
    assert page.status_code == 409 and b"revoke one" in page.content  # a toast
    assert AuditEntry.objects.filter(action="api_token.create", outcome="refused").count() == 2
    # Revoked and expired ones do not count.
    ApiToken.objects.filter(name="t0").update(revoked_at=timezone.now())
    ApiToken.objects.filter(name="t1").update(expires_at=timezone.now())
    page = as_operator.post("/profile/tokens/", {"name": "ok", "expires_in_days": "2"}, **HTMX)
    assert page.status_code == 200


def test_a_token_lists_and_revokes_but_cannot_make_tokens(viewer):
    token, text = services.create_api_token(viewer, Actor.command("test"), name="bot")
    client = Client()
    response = post_json(client, f"{API}/me/tokens", {"name": "child", "expires_in_days": 365},
                         **bearer(text))  # fmt: skip
    assert response.status_code == 403 and "cannot create tokens" in response.json()["detail"]
    assert ApiToken.objects.count() == 1
    assert [t["prefix"] for t in client.get(f"{API}/me/tokens", **bearer(text)).json()] == [
        token.prefix
    ]
    page = client.get("/profile/", **bearer(text)).content.decode()
    assert f"an API token {token.prefix}" in page and "This session" not in page
    assert client.delete(f"{API}/me/tokens/{token.prefix}", **bearer(text)).status_code == 200
    assert client.get(f"{API}/me", **bearer(text)).status_code == 401


def test_a_viewer_makes_tokens_that_can_only_read(as_viewer):
    text = post_json(as_viewer, f"{API}/me/tokens", {"name": "r", "expires_in_days": 1}).json()[
        "text"
    ]
    me = Client().get(f"{API}/me", **bearer(text)).json()
    assert me["role"] == "Viewer" and all("Run lifecycle" not in what for what in me["may"])


def test_unsafe_api_calls_from_a_session_need_the_csrf_token(viewer, password):
    client = Client(enforce_csrf_checks=True)
    client.force_login(viewer)
    response = post_json(client, f"{API}/me/tokens", {"name": "x", "expires_in_days": 3})
    assert response.status_code == 403
    assert client.post(f"{API}/me/sessions/sign-out-others").status_code == 403
    assert not ApiToken.objects.exists()


# --- sessions through the page and the API ------------------------------------------------------


def test_signing_out_the_other_sessions(operator, password):
    here = signed_in(operator, password, user_agent=CHROME, ip="10.0.0.1")
    there = signed_in(operator, password, user_agent=FIREFOX, ip="10.0.0.2")
    listed = here.get(f"{API}/me/sessions").json()
    assert [(s["browser"], s["ip"], s["current"]) for s in listed] == [
        ("Chrome 131 on Linux", "10.0.0.1", True),
        ("Firefox 133 on Windows", "10.0.0.2", False),
    ]
    assert all("session_key" not in s for s in listed)
    assert there.get("/profile/").status_code == 200
    response = here.post("/profile/sessions/sign-out-others/", **HTMX)
    assert response.status_code == 200 and b"Signed out 1 other session." in response.content
    assert "/login/" in there.get("/profile/")["Location"]
    assert here.get("/profile/").status_code == 200
    entry = AuditEntry.objects.get(action="user.sign_out_others")
    assert entry.detail == {"sessions": 1, "kept_this_session": True} and entry.target == "otto"


def test_signing_out_others_through_the_api(operator, password):
    here = signed_in(operator, password)
    there = [signed_in(operator, password) for _ in range(2)]
    assert here.post(f"{API}/me/sessions/sign-out-others").json() == {"signed_out": 2}
    assert all(client.get(f"{API}/me").status_code == 401 for client in there)
    assert here.post(f"{API}/me/sessions/sign-out-others").json() == {"signed_out": 0}


def test_a_token_signs_out_every_browser_session(operator, password):
    browser = signed_in(operator, password)
    _, text = services.create_api_token(operator, Actor.command("test"))
    assert Client().get(f"{API}/me/sessions", **bearer(text)).json()[0]["current"] is False
    response = Client().post(f"{API}/me/sessions/sign-out-others", **bearer(text))
    assert response.json() == {"signed_out": 1}
    assert "/login/" in browser.get("/profile/")["Location"]


def test_signing_out_one_session_and_not_this_one_or_someone_elses(operator, viewer, password):
    here = signed_in(operator, password)
    there = signed_in(operator, password, ip="10.0.0.7")
    theirs = signed_in(viewer, password)
    mine = UserSession.objects.get(session_key=here.session.session_key)
    other = UserSession.objects.get(session_key=there.session.session_key)
    foreign = UserSession.objects.get(session_key=theirs.session.session_key)
    assert here.post(f"/profile/sessions/{mine.pk}/sign-out/", **HTMX).status_code == 409
    assert here.post(f"/profile/sessions/{foreign.pk}/sign-out/", **HTMX).status_code == 404
    assert here.delete(f"{API}/me/sessions/{foreign.pk}").status_code == 404
    assert here.delete(f"{API}/me/sessions/abc").status_code == 404
    assert theirs.get("/profile/").status_code == 200
    response = here.post(f"/profile/sessions/{other.pk}/sign-out/", **HTMX)
    assert response.status_code == 200 and b"from 10.0.0.7" in response.content
    assert "/login/" in there.get("/profile/")["Location"]
    assert here.get("/profile/").status_code == 200
    assert AuditEntry.objects.filter(action="user.sign_out_session", outcome="refused").count() == 4


def test_a_plain_post_signs_out_and_comes_back_with_a_message(operator, password):
    here = signed_in(operator, password)
    signed_in(operator, password)
    response = here.post("/profile/sessions/sign-out-others/", follow=True)
    assert b"Signed out 1 other session." in response.content


# --- the admin ----------------------------------------------------------------------------------


def test_admins_see_sessions_read_only_and_never_their_keys(admin, password, operator):
    client = signed_in(admin, password)
    signed_in(operator, password)
    listing = client.get("/admin/portal/usersession/")
    assert listing.status_code == 200 and b"otto" in listing.content
    row = UserSession.objects.get(user=operator)
    detail = client.get(f"/admin/portal/usersession/{row.pk}/change/")
    assert detail.status_code == 200 and row.session_key.encode() not in detail.content
    assert row.session_key.encode() not in listing.content
    assert client.get("/admin/portal/usersession/add/").status_code == 403
    response = client.post(f"/admin/portal/usersession/{row.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403 and UserSession.objects.filter(pk=row.pk).exists()
