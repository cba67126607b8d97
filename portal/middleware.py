"""Request logging and API-token authentication."""

from __future__ import annotations

import logging
import re
import time
import uuid

from django.conf import settings
from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from social_core.exceptions import AuthCanceled, AuthPolicyError, AuthResponseError
from social_django.middleware import SocialAuthExceptionMiddleware

from portal import inputs, prometheus, roles, services
from portal.logging import request_id_var, request_user_var
from portal.profile import sessions

access_log = logging.getLogger("portal.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestLogMiddleware:
    """Gives each request an id (``X-Request-ID`` kept when sane) and logs one line per response."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        request.live_since = time.time()  # before the view reads anything (see realtime.resync)
        id_token = request_id_var.set(request_id)
        user_token = request_user_var.set(None)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(id_token)
        seconds = time.perf_counter() - started
        duration_ms = round(seconds * 1000, 1)
        prometheus.observe_request(request, response.status_code, seconds)
        user = getattr(request, "user", None)
        username = user.get_username() if user is not None and user.is_authenticated else None
        response["X-Request-ID"] = request_id
        access_log.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "request_id": request_id,
                "user": username,
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": duration_ms,
                "remote_addr": request.META.get("REMOTE_ADDR"),
            },
        )
        request_user_var.reset(user_token)
        return response


class ApiTokenMiddleware:
    """Authenticates ``Authorization: Bearer <token>`` requests as the token's user, and notes
    when a browser session was last seen for the requests without one (``portal.profile``).

    A bearer request carries no cookies of ours, so CSRF does not apply to it. A wrong,
    revoked or expired token is answered 401 at once, with what to do.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        header = request.headers.get("Authorization", "")
        if not header:
            # A browser session, then: note when it was last seen (at most once a minute).
            sessions.note_session_seen(request)
            return self.get_response(request)
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return _unauthorized("The Authorization header must be 'Bearer <token>'.")
        try:
            token = services.authenticate_token(credential.strip())
        except services.TokenError as exc:
            return _unauthorized(str(exc))
        request.user = token.user
        request.api_token = token
        request._dont_enforce_csrf_checks = True
        request_user_var.set(token.user.get_username())
        return self.get_response(request)


def _unauthorized(message: str) -> JsonResponse:
    response = JsonResponse({"detail": message}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="waooaw-portal"'
    return response


class PortalLoginRequiredMiddleware(LoginRequiredMiddleware):
    """Every page needs sign-in, except views marked ``login_not_required``.

    The JSON API answers 401 itself rather than redirecting, and an htmx request whose session
    ran out is sent to the login page as a whole page, not swapped into a fragment.
    """

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.path_info.startswith("/api/platform/"):
            return None
        response = super().process_view(request, view_func, view_args, view_kwargs)
        if (
            response is None
            and getattr(view_func, "login_required", True)
            and request.user.is_authenticated
            and roles.role_of(request.user) is None
            and not request.path_info.startswith("/admin/")
        ):
            # Signed in, but nobody has given this account a role yet.
            raise PermissionDenied(
                "Your account has no role yet, so there is nothing you can see. "
                "Ask an Admin to give you the Viewer, Operator or Admin role."
            )
        if response is not None and getattr(request, "htmx", False):
            htmx_response = HttpResponse(status=204)
            htmx_response["HX-Redirect"] = response["Location"]
            return htmx_response
        return response


class BadInputMiddleware:
    """A NUL character anywhere in a request is answered 400 with the field that carries it.

    PostgreSQL text cannot hold NUL, so such a value would otherwise fail in the database as a
    500, at whichever of the many places it is first used; checking once here covers them all.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        field = inputs.find_nul(request)
        if field is None:
            return self.get_response(request)
        problem = inputs.BadInput(field, inputs.NUL_REASON)
        if request.path_info.startswith("/api/"):
            return JsonResponse({"detail": str(problem), "field": field}, status=400)
        return HttpResponse(f"{problem}\n", status=400, content_type="text/plain; charset=utf-8")


class GoogleSignInErrorMiddleware(SocialAuthExceptionMiddleware):
    """Turns a refused Google sign-in into a sentence that says why and what to do."""

    def get_message(self, request, exception) -> str:
        if isinstance(exception, AuthPolicyError):
            domains = ", ".join(settings.GOOGLE_ALLOWED_DOMAINS) or "no domain"
            return (
                f"This Google account is not allowed to sign in: only accounts from {domains} can. "
                "Sign in with your work account."
            )
        if isinstance(exception, AuthResponseError) and "verified" in str(exception):
            return (
                "Google has not verified this account's email address, so it cannot sign in. "
                "Verify the address with Google first, or use another account."
            )
        if isinstance(exception, AuthCanceled):
            return "Sign-in was cancelled at Google. Try again when you are ready."
        return f"Google sign-in failed: {exception}. Try again; if it keeps failing, tell an Admin."
