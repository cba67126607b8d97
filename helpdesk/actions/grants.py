"""Temporary access: a named user given the Operator role on one customer's agents until a
time. The agents app asks ``scoped_role(user, agent)`` through the ``scoped_role`` lookup (it
imports nothing of the help desk); a grant counts only until ``expires_at`` whatever the sweep
did, and the sweep marks expired grants revoked (audited as ``system:helpdesk``)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from agents.models import Agent
from helpdesk.actions import params as p
from helpdesk.actions.base import ActionResult
from helpdesk.models import AccessGrant, Customer
from helpdesk.refusals import HelpdeskRefused
from portal import roles
from portal.actors import Actor
from portal.services import record_audit

GRANT_ROLES = (roles.OPERATOR,)
SWEEPER = Actor.system("helpdesk")


def scoped_role(user, agent) -> str | None:
    """The role ``user`` holds on ``agent`` through an active grant on its customer, if any."""
    if user is None or not getattr(user, "pk", None) or agent is None:
        return None
    return (
        AccessGrant.objects.filter(
            grantee_id=user.pk,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
            customer__links__agent_id=agent.pk,
        )  # fmt: skip
        .values_list("role", flat=True)
        .first()
    )


def active_grants(customer: Customer) -> list[AccessGrant]:
    return list(
        AccessGrant.objects.filter(
            customer=customer, revoked_at__isnull=True, expires_at__gt=timezone.now()
        )
        .select_related("grantee")
        .order_by("expires_at", "id")
    )


def _grantee(params: dict):
    username = p.text(params, "username", required=True, limit=150)
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise HelpdeskRefused(
            f"There is no active user {username!r}; they sign in once to the portal first.",
            "invalid",
        )
    return user


def grant_access(
    actor: Actor, customer: Customer, agent: Agent | None, params: dict
) -> ActionResult:
    user = _grantee(params)
    hours = p.whole(params, "hours", 1, settings.HELPDESK_GRANT_MAX_HOURS, None)
    role = p.choice(params, "role", GRANT_ROLES, roles.OPERATOR)
    reason = p.text(params, "reason", limit=300)
    if roles.role_allows(roles.role_of(user), roles.OPERATE):
        raise HelpdeskRefused(
            f"{user.get_username()} is {roles.role_of(user)} already and may act on every agent; "
            "a grant would add nothing.",
            "conflict",
        )
    with transaction.atomic():
        Customer.objects.select_for_update().get(pk=customer.pk)  # one grant at a time
        current = next((g for g in active_grants(customer) if g.grantee_id == user.pk), None)
        if current is not None:
            raise HelpdeskRefused(
                f"{user.get_username()} has access to {customer.company_name}'s agents until "
                f"{current.expires_at:%Y-%m-%d %H:%M} UTC already; revoke it first to change it.",
                "conflict",
            )
        grant = AccessGrant.objects.create(
            **AccessGrant.stamp(actor), customer=customer, grantee=user, role=role, reason=reason,
            expires_at=timezone.now() + timedelta(hours=hours),
        )  # fmt: skip
    return ActionResult(
        "grant-access", True,
        f"{user.get_username()} may act as {role} on {customer.company_name}'s agents until "
        f"{grant.expires_at:%Y-%m-%d %H:%M} UTC ({hours} h); revoked automatically then.",
        {"grant": grant.pk, "username": user.get_username(), "role": role,
         "expires_at": grant.expires_at.isoformat()},
    )  # fmt: skip


def describe_grant(customer: Customer, agent: Agent | None, params: dict) -> str:
    hours = p.whole(params, "hours", 1, settings.HELPDESK_GRANT_MAX_HOURS, None)
    username = p.text(params, "username", required=True, limit=150)
    return f"Give {username} the Operator role on {customer.company_name}'s agents for {hours} h."


def revoke_access(
    actor: Actor, customer: Customer, agent: Agent | None, params: dict
) -> ActionResult:
    grant_id = p.whole(params, "grant", 1, 2**62, 0)
    username = p.text(params, "username", limit=150)
    if not grant_id and not username:
        raise HelpdeskRefused("Name the grant to end: grant (its id) or username.", "invalid")
    with transaction.atomic():
        found = AccessGrant.objects.select_for_update().filter(
            customer=customer, revoked_at__isnull=True, expires_at__gt=timezone.now()
        )
        if grant_id:
            found = found.filter(pk=grant_id)
        if username:
            found = found.filter(grantee__username=username)
        grants = list(found.select_related("grantee"))
        if not grants:
            raise HelpdeskRefused(
                f"{customer.company_name} has no active grant "
                + (f"#{grant_id}" if grant_id else f"for {username!r}")
                + "; the grants list shows the active ones.",
                "not_found",
            )
        now = timezone.now()
        for grant in grants:
            grant.revoked_at, grant.revoked_by = now, actor.label[:200]
            grant.save(update_fields=["revoked_at", "revoked_by"])
    names = ", ".join(sorted({g.grantee.get_username() for g in grants}))
    return ActionResult(
        "revoke-access", True, f"Ended {names}'s access to {customer.company_name}'s agents.",
        {"grants": [g.pk for g in grants]},
    )  # fmt: skip


def describe_revoke(customer: Customer, agent: Agent | None, params: dict) -> str:
    who = p.text(params, "username", limit=150) or f"grant #{params.get('grant')}"
    return f"End {who}'s access to {customer.company_name}'s agents now."


def revoke_expired_grants(now=None) -> int:
    """The sweep: mark every grant past its time revoked (by ``system:helpdesk``), audited."""
    now = now or timezone.now()
    count = 0
    with transaction.atomic():
        expired = list(
            AccessGrant.objects.select_for_update(skip_locked=True)
            .filter(revoked_at__isnull=True, expires_at__lte=now)
            .select_related("customer", "grantee")
        )
        for grant in expired:
            grant.revoked_at, grant.revoked_by = now, SWEEPER.label
            grant.save(update_fields=["revoked_at", "revoked_by"])
            record_audit(
                SWEEPER, "helpdesk.grant.expired", target=f"customer:{grant.customer.key}",
                grant=grant.pk, username=grant.grantee.get_username(),
                expires_at=grant.expires_at.isoformat(),
            )  # fmt: skip
            count += 1
    return count
