"""The JSON API under /api/platform/ (django-ninja); OpenAPI documentation at /api/docs.

Authentication: the browser session (with CSRF on unsafe methods) or ``Authorization: Bearer
<token>`` (validated by ``ApiTokenMiddleware`` before the request gets here). Other apps add
their routers to ``api``; ``/me`` and your own tokens and sessions are ``portal.profile.api``.
"""

from __future__ import annotations

import functools

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse
from ninja import NinjaAPI
from ninja.security import SessionAuth

from portal import roles
from portal.refusals import Refused


class PortalAuth(SessionAuth):
    """Accepts the session user or the API-token user set by ``ApiTokenMiddleware``."""

    def authenticate(self, request: HttpRequest, key):
        user = request.user
        if user.is_authenticated and roles.role_of(user) is not None:
            return user
        return None

    def __call__(self, request: HttpRequest):
        if getattr(request, "api_token", None) is not None:
            # A bearer request carries no session cookie, so there is nothing for CSRF to protect.
            return self.authenticate(request, None)
        return super().__call__(request)


def _require_sign_in(view):
    """The OpenAPI document is for signed-in users with a role (or an API token), like the API."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        user = request.user
        if not user.is_authenticated:
            return JsonResponse(
                {"detail": "Sign in or send 'Authorization: Bearer <token>'."}, status=401
            )
        if roles.role_of(user) is None:
            return JsonResponse({"detail": "Your account has no role yet."}, status=403)
        return view(request, *args, **kwargs)

    return wrapper


api = NinjaAPI(
    title="WAOOAW Platform Portal API",
    version="1",
    description="Operate the WAOOAW agent fleet. Authenticate with `Authorization: Bearer <token>`.",
    auth=PortalAuth(),
    urls_namespace="api",
    docs_url=None,
    docs_decorator=_require_sign_in,
)


@api.exception_handler(Refused)
def _refused(request: HttpRequest, refused: Refused):
    """Every service refusal, at every endpoint: its status, ``{"detail", "code"}`` and the
    refusal's details (a bulk refusal's conflicts, say)."""
    body = {"detail": refused.message, "code": refused.code, **refused.details}
    return api.create_response(request, body, status=refused.status)


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, denied: PermissionDenied):
    return api.create_response(request, {"detail": str(denied), "code": "forbidden"}, status=403)


def add_router(router, *, first: bool = False) -> None:
    """Mount an app's router at the API root; each app calls this from its ``AppConfig.ready``.

    ``first``: its paths are tried before those of the routers mounted so far. Django takes the
    first URL pattern that matches, so a route under another app's path with a parameter in the
    same place (servicing's ``GET /agents/{slug}/versions`` beside the agents app's ``POST
    /agents/{slug}/{action}``) must come first to be reached; django-ninja has no public way to
    order routers, so its list of registrations is reordered here, before the URLs are built.
    """
    if router not in _ROUTERS:
        _ROUTERS.append(router)
        api.add_router("", router)
        if first:
            registrations = api._router_registrations
            registrations.insert(0, registrations.pop())


_ROUTERS: list = []
