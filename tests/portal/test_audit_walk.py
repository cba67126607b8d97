"""The portal app's part of the audit walk (``tests/audit_kit.py``): tokens, roles, sessions,
the first Admin and the retention purge, each called for real by an Admin and by a Viewer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from portal import services
from portal.audit import retention
from portal.models import ApiToken, AuditEntry, UserSession
from portal.profile import services as profile
from tests.audit_kit import Walk

walk = Walk()

NOT_WALKED = {
    "portal.services.record_audit": "the audit writer itself; every recipe reads what it wrote",
    "portal.services.refusals_audited": "records a refusal for the functions it wraps; the "
    "Viewer half of every walk reads what it wrote",
}

SELF_SERVICE = "everyone with a role manages their own tokens and sessions"


def _someone(username: str):
    return get_user_model().objects.create_user(username=username, password="x" * 12)


@walk("portal.services.assign_role")
def _(w, actor):
    services.assign_role(_someone("walk-new"), "Operator", actor)


@walk("portal.services.create_api_token")
def _(w, actor):
    services.create_api_token(_someone("walk-robot"), actor, name="ci", expires_in_days=30)


@walk("portal.services.revoke_api_token")
def _(w, actor):
    token, _ = services.create_api_token(_someone("walk-robot"), w.admin, name="ci")
    services.revoke_api_token(token, actor)


@walk("portal.services.ensure_admin_user")
def _(w, actor):
    w.fixture("settings").PORTAL_ADMIN_EMAIL = "root@waooaw.test"
    w.fixture("settings").PORTAL_ADMIN_PASSWORD = "a-long-enough-password"
    services.ensure_admin_user(actor)


@walk("portal.audit.retention.purge_expired")
def _(w, actor):
    w.fixture("settings").AUDIT_RETENTION_DAYS = 30
    AuditEntry.objects.create(actor="system:old", action="agent.stop",
                              at=timezone.now() - timedelta(days=90))  # fmt: skip
    retention.purge_expired(actor)


@walk("portal.profile.services.create_own_token", viewer_may=SELF_SERVICE)
def _(w, actor):
    profile.create_own_token(actor, name="laptop", expires_in_days="30")


@walk("portal.profile.services.revoke_own_token", viewer_may=SELF_SERVICE)
def _(w, actor):
    token, _ = profile.create_own_token(actor, name="laptop", expires_in_days="30")
    profile.revoke_own_token(actor, token.prefix)


def _sessions(user) -> list[UserSession]:
    return [
        UserSession.objects.create(user=user, session_key=f"walk-{user.pk}-{n}", ip="10.0.0.9")
        for n in range(2)
    ]


@walk("portal.profile.services.sign_out_other_sessions", viewer_may=SELF_SERVICE)
def _(w, actor):
    current, _ = _sessions(actor.user)
    profile.sign_out_other_sessions(actor, current.session_key)


@walk("portal.profile.services.sign_out_session", viewer_may=SELF_SERVICE)
def _(w, actor):
    current, other = _sessions(actor.user)
    profile.sign_out_session(actor, str(other.pk), current.session_key)


test_writes_an_audit_entry, test_a_viewers_refusal_is_audited = walk.tests()


def test_an_outsider_without_a_role_is_refused_its_own_tokens_and_it_is_audited(walker, make_user):
    outsider = type(walker.admin)(kind="user", user=make_user("walk-outsider"), source="10.0.0.9")
    with pytest.raises(Exception, match="Viewer role"):
        profile.create_own_token(outsider, name="x", expires_in_days="30")
    entry = AuditEntry.objects.get(actor=outsider.label)
    assert (entry.action, entry.outcome) == ("api_token.create", "refused")
    assert not ApiToken.objects.filter(user=outsider.user).exists()
