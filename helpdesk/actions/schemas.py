"""The actions API's shapes, reused by the command's ``--json``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Schema

from helpdesk.actions.base import ActionResult
from helpdesk.models import AccessGrant


class ActionIn(Schema):
    # Loose on purpose: the service refuses a wrong type with a sentence (400), not ninja (422).
    agent: Any = None
    params: Any = None


class CustomerActionIn(ActionIn):
    """The seed's ``POST /helpdesk/actions/{action}``: the customer named in the body."""

    customer_id: Any = None


class ActionOut(Schema):
    action: str
    ok: bool
    message: str
    details: dict[str, Any]
    customer_id: str
    agent: str | None


class GrantOut(Schema):
    id: int
    username: str
    role: str
    reason: str
    granted_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str
    active: bool


class Grants(Schema):
    customer_id: str
    grants: list[GrantOut]


def action_out(result: ActionResult, customer_id: str, agent: str | None) -> dict:
    return {"action": result.action, "ok": result.ok, "message": result.message,
            "details": result.details, "customer_id": customer_id, "agent": agent}  # fmt: skip


def grant_out(grant: AccessGrant) -> dict:
    return {
        "id": grant.pk, "username": grant.grantee.get_username(), "role": grant.role,
        "reason": grant.reason, "granted_by": grant.actor, "created_at": grant.created_at,
        "expires_at": grant.expires_at, "revoked_at": grant.revoked_at,
        "revoked_by": grant.revoked_by, "active": grant.active,
    }  # fmt: skip


def grants_out(customer_id: str, grants: list[AccessGrant]) -> dict:
    return {"customer_id": customer_id, "grants": [grant_out(g) for g in grants]}
