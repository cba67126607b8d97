"""Maintenance windows in the API, under /api/platform/servicing/windows: list them (any role;
?agent=slug those that apply to that agent, ?tier= the fleet's and that tier's), create, change
and delete them (Admin), and ask when an agent may next be upgraded (``/windows/next?agent=``).

Each route calls one function of ``servicing.windows``, which checks the role, validates (the
refusal names the field), audits, and refuses with a sentence answered ``{"detail", "code"}``:
400 bad input (a cron that does not parse, an unknown time zone, a duration out of bounds, a
query parameter naming no agent), 403 role, 404 no such window. The schemas here are also what
``manage.py servicing windows|window-add|window-next --json`` prints.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja import Body, Router, Schema
from ninja.responses import Status

from portal import roles
from portal.actors import Actor
from portal.schemas import Problem
from servicing import services, windows
from servicing.models import MaintenanceWindow
from servicing.services import ServicingRefused

router = Router(tags=["servicing"])

ROOT = "/servicing/windows"
READ = {400: Problem, 403: Problem, 404: Problem}


# --- schemas ----------------------------------------------------------------------------------


class WindowIn(Schema):
    """A window's fields, for the API's documentation. The routes read the JSON object as it
    came, so that ``servicing.windows`` refuses a bad value or an unknown field with a 400
    naming it (not ninja with a 422); PATCH takes any of these, the others stay."""

    name: str
    kind: str = "allow"  # or "deny"
    cron: str  # when it opens, five fields: "0 2 * * *"
    duration_minutes: int  # how long it stays open, 1-10080
    timezone: str = "UTC"  # IANA name the cron is read in: "Europe/Paris"
    tier: str = ""  # only agents of this tier
    agent: str = ""  # only this agent (its slug)
    enabled: bool = True
    reason: str = ""


WINDOW_BODY = {
    "requestBody": {
        "content": {"application/json": {"schema": WindowIn.json_schema()}},
        "required": True,
    }
}


class WindowOut(Schema):
    id: int
    name: str
    kind: str
    cron: str
    duration_minutes: int
    timezone: str
    scope: str  # "fleet", "tier" or "agent"
    tier: str
    agent: str | None
    enabled: bool
    reason: str
    created_by: str
    created_at: datetime


class Windows(Schema):
    windows: list[WindowOut]


class OpeningOut(Schema):
    agent: str
    at: datetime  # the moment asked about (UTC)
    open: bool  # upgrades may run at ``at``
    starts_at: datetime | None  # when closed: the next opening (null: none within 35 days)
    window: WindowOut | None  # the window that decides (null: no window applies)
    explanation: str
    windows: list[WindowOut]  # the enabled windows that apply: the fleet's, its tier's, its own


def window_out(window: MaintenanceWindow) -> WindowOut:
    scope = "agent" if window.agent_id is not None else "tier" if window.tier else "fleet"
    return WindowOut(
        id=window.pk, name=window.name, kind=window.kind, cron=window.cron,
        duration_minutes=window.duration_minutes, timezone=window.timezone, scope=scope,
        tier=window.tier, agent=window.agent.slug if window.agent is not None else None,
        enabled=window.enabled, reason=window.reason, created_by=window.created_by,
        created_at=window.created_at,
    )  # fmt: skip


def windows_out(found: list[MaintenanceWindow]) -> Windows:
    return Windows(windows=[window_out(window) for window in found])


def opening_out(
    agent_slug: str,
    at: datetime,
    opening: windows.Opening,
    applying: list[MaintenanceWindow] | None = None,
) -> OpeningOut:
    return OpeningOut(
        agent=agent_slug, at=at, open=opening.open, starts_at=opening.starts_at,
        window=window_out(opening.window) if opening.window is not None else None,
        explanation=opening.explanation,
        windows=[window_out(window) for window in applying or []],
    )  # fmt: skip


def agent_named(slug: object, parameter: str = "agent"):
    """The agent a query parameter or field names; naming none is bad input (400), not a
    missing page."""
    try:
        return services.get_agent(slug)
    except ServicingRefused as unknown:
        raise ServicingRefused(f"{parameter}: {unknown.message}", "invalid") from None


def _fields(payload: Body[dict[str, Any]]) -> dict[str, Any]:
    """The body's fields, refused (400) when one is no window field: passed on as keyword
    arguments, a stray key would otherwise reach the service as another argument."""
    unknown = sorted(set(payload) - set(windows.FIELDS))
    if unknown:
        raise ServicingRefused(
            f"{unknown[0][:40]}: is not a window field; fields: {', '.join(windows.FIELDS)}.",
            "invalid",
        )
    return payload


# --- routes -----------------------------------------------------------------------------------


@router.get(
    ROOT,
    response={200: Windows, **READ},
    summary="Maintenance windows (?agent=slug: those that apply to it; ?tier=: fleet and tier)",
)
def list_windows(request: HttpRequest, agent: str | None = None, tier: str | None = None):
    actor = Actor.from_request(request)
    actor.require(roles.VIEW, "see maintenance windows")  # before saying which agents exist
    chosen = None if agent is None else agent_named(agent)
    return windows_out(windows.list_windows(actor, chosen, tier))


@router.get(
    f"{ROOT}/next",
    response={200: OpeningOut, **READ},
    summary="Whether an agent may be upgraded now (or ?at=), else when its next window opens",
)
def next_opening(request: HttpRequest, agent: str | None = None, at: str | None = None):
    Actor.from_request(request).require(roles.VIEW, "see maintenance windows")
    if agent is None:
        raise ServicingRefused("agent: is required (?agent=<slug>).", "invalid")
    chosen = agent_named(agent)
    moment = windows.parse_moment(at) if at is not None else timezone.now()
    opening = windows.next_opening(chosen, moment)
    return opening_out(chosen.slug, moment, opening, windows.windows_for(chosen))


@router.post(
    ROOT,
    response={201: WindowOut, **READ},
    summary="Create a window (Admin)",
    openapi_extra=WINDOW_BODY,
)
def create_window(request: HttpRequest, payload: Body[dict[str, Any]]):
    window = windows.create_window(Actor.from_request(request), **_fields(payload))
    return Status(201, window_out(window))


@router.get(f"{ROOT}/{{window_id}}", response={200: WindowOut, **READ}, summary="One window")
def get_window(request: HttpRequest, window_id: str):
    Actor.from_request(request).require(roles.VIEW, "see maintenance windows")
    return window_out(windows.get_window(window_id))


@router.patch(
    f"{ROOT}/{{window_id}}",
    response={200: WindowOut, **READ},
    summary="Change a window's fields (Admin); those left out stay",
    openapi_extra=WINDOW_BODY,
)
def update_window(request: HttpRequest, window_id: str, payload: Body[dict[str, Any]]):
    actor = Actor.from_request(request)
    actor.require(roles.MANAGE, "change maintenance windows")  # before saying which exist
    window = windows.get_window(window_id)
    return window_out(windows.update_window(actor, window, **_fields(payload)))


@router.delete(
    f"{ROOT}/{{window_id}}",
    response={204: None, **READ},
    summary="Delete a window (Admin; ?reason= is kept in the audit trail)",
)
def delete_window(request: HttpRequest, window_id: str, reason: str = ""):
    actor = Actor.from_request(request)
    actor.require(roles.MANAGE, "change maintenance windows")
    windows.delete_window(actor, windows.get_window(window_id), reason)
    return Status(204, None)
