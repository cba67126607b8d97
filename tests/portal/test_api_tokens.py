"""API tokens: created and revoked by Admins (command, admin, service), used as Bearer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from portal import services
from portal.actors import Actor
from portal.models import ApiToken, AuditEntry


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.fixture
def operator_token(operator):
    _, text = services.create_api_token(operator, Actor.command("test"), name="ci")
    return text


def test_valid_token_acts_as_its_user_with_that_role(client: Client, operator_token) -> None:
    response = client.get("/api/platform/me", **bearer(operator_token))
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "otto"
    assert body["role"] == "Operator"
    assert body["authenticated_by"].startswith("token ")


def test_token_reaches_pages_too(client: Client, operator_token) -> None:
    assert client.get("/", **bearer(operator_token)).status_code == 200


def test_missing_credentials_get_401_not_a_redirect(client: Client, db) -> None:
    response = client.get("/api/platform/me")
    assert response.status_code == 401


def test_wrong_token_gets_401_with_advice(client: Client, operator_token) -> None:
    response = client.get("/api/platform/me", **bearer(operator_token[:-2] + "xx"))
    assert response.status_code == 401
    assert "not valid" in response.json()["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_malformed_header_gets_401(client: Client, operator_token) -> None:
    response = client.get("/api/platform/me", HTTP_AUTHORIZATION=f"Token {operator_token}")
    assert response.status_code == 401
    assert "Bearer <token>" in response.json()["detail"]


def test_revoked_token_gets_401(client: Client, operator, operator_token) -> None:
    token = services.find_api_token(operator_token)
    assert services.revoke_api_token(token, Actor.command("test")) is True
    response = client.get("/api/platform/me", **bearer(operator_token))
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_revoking_twice_changes_nothing(operator_token) -> None:
    token = services.find_api_token(operator_token)
    services.revoke_api_token(token, Actor.command("test"))
    first = ApiToken.objects.get(pk=token.pk).revoked_at
    assert services.revoke_api_token(token, Actor.command("test")) is False
    assert ApiToken.objects.get(pk=token.pk).revoked_at == first
    assert AuditEntry.objects.filter(action="api_token.revoke").count() == 1


def test_expired_token_gets_401(client: Client, operator_token) -> None:
    ApiToken.objects.update(expires_at=timezone.now() - timedelta(minutes=1))
    response = client.get("/api/platform/me", **bearer(operator_token))
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_token_of_deactivated_user_gets_401(client: Client, operator, operator_token) -> None:
    operator.is_active = False
    operator.save()
    assert client.get("/api/platform/me", **bearer(operator_token)).status_code == 401


def test_token_is_stored_hashed(operator_token) -> None:
    token = ApiToken.objects.get()
    assert operator_token not in (token.digest, token.prefix)
    assert token.prefix in operator_token


def test_bearer_post_needs_no_csrf_but_session_post_does(operator, operator_token) -> None:
    client = Client(enforce_csrf_checks=True)
    assert client.post("/logout/", **bearer(operator_token)).status_code == 302
    session_client = Client(enforce_csrf_checks=True)
    session_client.force_login(operator)
    assert session_client.post("/logout/").status_code == 403


def test_last_used_is_recorded(client: Client, operator_token) -> None:
    client.get("/api/platform/me", **bearer(operator_token))
    assert ApiToken.objects.get().last_used_at is not None


def test_only_admins_create_tokens(viewer, operator) -> None:
    with pytest.raises(PermissionDenied, match="needs the Admin role"):
        services.create_api_token(viewer, Actor(kind="user", user=operator))


def test_command_creates_lists_and_revokes(viewer, capsys, client: Client) -> None:
    call_command("api_token", "create", "vera@waooaw.test", "--name", "grafana")
    text = capsys.readouterr().out.strip()
    assert text.startswith("wao_")
    assert client.get("/api/platform/me", **bearer(text)).json()["role"] == "Viewer"

    call_command("api_token", "list")
    listing = capsys.readouterr().out
    assert "grafana" in listing and "active" in listing and text not in listing

    call_command("api_token", "revoke", text.split("_")[1])
    assert "Revoked" in capsys.readouterr().out
    assert client.get("/api/platform/me", **bearer(text)).status_code == 401
    assert AuditEntry.objects.filter(action__startswith="api_token.").count() == 2


def test_command_refuses_unknown_user_and_user_without_role(outsider) -> None:
    with pytest.raises(CommandError, match="No user 'ghost'"):
        call_command("api_token", "create", "ghost")
    with pytest.raises(CommandError, match="has no role"):
        call_command("api_token", "create", "oscar")
    assert not ApiToken.objects.exists()


def test_admin_creates_token_and_sees_it_once(as_admin, viewer) -> None:
    response = as_admin.post(
        "/admin/portal/apitoken/add/", {"user": viewer.pk, "name": "dashboards"}, follow=True
    )
    assert response.status_code == 200
    token = ApiToken.objects.get()
    assert b"it is not shown again: wao_" + token.prefix.encode() in response.content
    assert (
        b"wao_" + token.prefix.encode()
        not in as_admin.get(f"/admin/portal/apitoken/{token.pk}/change/").content
    )


def test_admin_action_revokes(as_admin, operator_token) -> None:
    token = ApiToken.objects.get()
    as_admin.post(
        "/admin/portal/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}, follow=True
    )
    assert ApiToken.objects.get().revoked_at is not None


def test_viewer_cannot_open_token_admin(as_viewer) -> None:
    assert as_viewer.get("/admin/portal/apitoken/").status_code == 302
