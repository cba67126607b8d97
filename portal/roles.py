"""The three roles, Admin, Operator and Viewer, as Django groups with the portal's permissions.

A user's role is the highest of the role groups they belong to. Superusers are Admins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

ADMIN = "Admin"
OPERATOR = "Operator"
VIEWER = "Viewer"
ROLES = [ADMIN, OPERATOR, VIEWER]  # highest first

VIEW = "view_portal"
OPERATE = "operate_agents"
MANAGE = "manage_platform"
VIEW_SECRETS = "view_secrets"

ROLE_PERMISSIONS = {
    VIEWER: {VIEW},
    OPERATOR: {VIEW, OPERATE},
    ADMIN: {VIEW, OPERATE, MANAGE, VIEW_SECRETS},
}


def role_allows(role: str | None, permission: str) -> bool:
    return role is not None and permission in ROLE_PERMISSIONS[role]


def lowest_role_with(permission: str) -> str:
    for role in reversed(ROLES):
        if permission in ROLE_PERMISSIONS[role]:
            return role
    raise ValueError(f"unknown permission {permission!r}")


def role_of(user: AbstractBaseUser | None) -> str | None:
    """The user's highest role, or None for anonymous users and users without one."""
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return ADMIN
    cached = getattr(user, "_portal_role", False)
    if cached is not False:
        return cached
    names = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    role = next((name for name in ROLES if name in names), None)
    user._portal_role = role
    return role


def ensure_roles() -> None:
    """Create the three groups and give each exactly its permissions. Idempotent."""
    from django.contrib.auth.models import Group, Permission

    permissions = {
        perm.codename: perm
        for perm in Permission.objects.filter(
            content_type__app_label="portal", content_type__model="access"
        )
    }
    with transaction.atomic():
        for role, codenames in ROLE_PERMISSIONS.items():
            group, _ = Group.objects.get_or_create(name=role)
            group.permissions.set(
                [permissions[codename] for codename in codenames if codename in permissions]
            )


def role_for_email(email: str) -> str:
    """The role a new Google user gets: an exact-email rule, else a domain rule, else the default."""
    email = email.strip().lower()
    rules = settings.ROLE_RULES
    if email in rules:
        return rules[email]
    domain = email.rpartition("@")[2]
    return rules.get(domain, settings.DEFAULT_ROLE)


def set_role(user: AbstractBaseUser, role: str) -> None:
    """Put the user in exactly one role group. Callers check permission and audit."""
    from django.contrib.auth.models import Group

    if role not in ROLES:
        raise ValueError(f"{role!r} is not a role; use one of {', '.join(ROLES)}.")
    ensure_roles()
    with transaction.atomic():
        user.groups.remove(*Group.objects.filter(name__in=ROLES).exclude(name=role))
        user.groups.add(Group.objects.get(name=role))
        # Admin rights include the Django admin site.
        is_staff = role == ADMIN
        if user.is_staff != is_staff:
            user.is_staff = is_staff
            user.save(update_fields=["is_staff"])
    user.__dict__.pop("_portal_role", None)
