from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from portal import roles
from portal.navigation import SECTIONS


def _active_section(request: HttpRequest) -> str | None:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return None
    if match.url_name == "section":
        return match.kwargs.get("slug")
    if match.url_name == "dashboard":
        return "dashboard"
    if match.namespace == "agents" and match.url_name in ("errors", "error"):
        return "errors"
    return match.namespace or None


def portal(request: HttpRequest) -> dict:
    """What the base layout needs on every page: navigation and the user's role."""
    role = roles.role_of(getattr(request, "user", None))
    active = _active_section(request)
    nav = [
        {
            "section": section,
            "href": section.href,
            "active": section.slug == active,
        }
        for section in SECTIONS
    ]
    return {
        "nav": nav,
        "user_role": role,
        "can_operate": roles.role_allows(role, roles.OPERATE),
        "can_manage": roles.role_allows(role, roles.MANAGE),
        "google_login_enabled": settings.GOOGLE_LOGIN_ENABLED,
        "live_heartbeat_seconds": settings.LIVE_HEARTBEAT_SECONDS,
        # When the request began: the page's first live subscription asks for what changed
        # since (portal.realtime.resync).
        "live_since": f"{getattr(request, 'live_since', 0):.3f}",
    }
