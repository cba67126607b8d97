"""Roles: the three groups, the mapping rules, and role changes through the admin."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied

from portal import roles, services
from portal.actors import Actor
from portal.models import AuditEntry


def test_migrate_creates_the_three_role_groups_with_permissions(db) -> None:
    perms = {
        group.name: set(group.permissions.values_list("codename", flat=True))
        for group in Group.objects.filter(name__in=roles.ROLES)
    }
    assert perms == {
        "Viewer": {"view_portal"},
        "Operator": {"view_portal", "operate_agents"},
        "Admin": {"view_portal", "operate_agents", "manage_platform", "view_secrets"},
    }


def test_ensure_roles_is_idempotent(db) -> None:
    roles.ensure_roles()
    roles.ensure_roles()
    assert Group.objects.filter(name__in=roles.ROLES).count() == 3


@pytest.mark.parametrize(
    ("email", "role"),
    [("boss@waooaw.com", "Admin"), ("pat@partner.io", "Operator"), ("anyone@waooaw.com", "Viewer")],
)
def test_role_for_email(settings, email: str, role: str) -> None:
    settings.ROLE_RULES = {"boss@waooaw.com": "Admin", "partner.io": "Operator"}
    settings.DEFAULT_ROLE = "Viewer"
    assert roles.role_for_email(email) == role


def test_highest_role_wins_and_superuser_is_admin(make_user) -> None:
    user = make_user("multi", "Viewer")
    user.groups.add(Group.objects.get(name="Operator"))
    assert roles.role_of(user) == "Operator"
    assert roles.role_of(make_user("root", is_superuser=True)) == "Admin"


def test_assign_role_is_admin_only_and_audited(admin, operator, viewer) -> None:
    with pytest.raises(
        PermissionDenied, match="change roles: it needs the Admin role and you are Operator"
    ):
        services.assign_role(viewer, "Admin", Actor(kind="user", user=operator))
    assert roles.role_of(viewer) == "Viewer"
    services.assign_role(viewer, "Operator", Actor(kind="user", user=admin))
    assert roles.role_of(type(viewer).objects.get(pk=viewer.pk)) == "Operator"
    refusal = AuditEntry.objects.get(action="user.role", outcome="refused")
    assert (refusal.actor, refusal.target) == ("user:otto", "vera")
    entry = AuditEntry.objects.get(action="user.role", outcome="success")
    assert (
        entry.actor == "user:ada"
        and entry.target == "vera"
        and entry.detail == {"role": "Operator"}
    )


def test_admin_action_sets_role(as_admin, viewer) -> None:
    response = as_admin.post(
        "/admin/auth/user/",
        {"action": "make_operator", "_selected_action": [viewer.pk]},
        follow=True,
    )
    assert b"are now Operator" in response.content
    assert roles.role_of(type(viewer).objects.get(pk=viewer.pk)) == "Operator"


def test_audit_trail_is_read_only_in_admin(as_admin, admin, viewer) -> None:
    services.assign_role(viewer, "Operator", Actor(kind="user", user=admin))
    entry = AuditEntry.objects.get()
    assert as_admin.get("/admin/portal/auditentry/").status_code == 200
    assert (
        as_admin.post(f"/admin/portal/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_first_admin_bootstrap_generates_a_password_once(db, settings) -> None:
    settings.PORTAL_ADMIN_EMAIL = ""
    user, password = services.ensure_admin_user(Actor.command("up"))
    assert user.username == "admin" and password
    assert user.check_password(password)
    assert roles.role_of(user) == "Admin"
    assert services.ensure_admin_user(Actor.command("up")) == (None, None)


def test_configured_admin_is_created_then_updated(db, settings) -> None:
    settings.PORTAL_ADMIN_EMAIL = "ops@waooaw.com"
    settings.PORTAL_ADMIN_PASSWORD = "first-password-1"
    user, password = services.ensure_admin_user(Actor.command("up"))
    assert password is None and user.check_password("first-password-1")
    settings.PORTAL_ADMIN_PASSWORD = "second-password-2"
    user, _ = services.ensure_admin_user(Actor.command("up"))
    user.refresh_from_db()
    assert user.check_password("second-password-2")
    assert roles.role_of(user) == "Admin"
    assert type(user).objects.filter(username="ops@waooaw.com").count() == 1
