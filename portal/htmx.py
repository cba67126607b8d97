"""The web kit every app's views share: fragments for htmx, refusals as toasts, a safe ``next``."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme

from portal.refusals import Refused

TOAST_TEMPLATE = "portal/toast.html"


def htmx_partial(request: HttpRequest) -> bool:
    """Whether to answer with a fragment (an htmx swap) rather than a whole page."""
    htmx = getattr(request, "htmx", None)
    return htmx is not None and bool(htmx) and not htmx.boosted


def safe_next(request: HttpRequest, default: str = "") -> str:
    """The ``next`` the form or link carries when it stays on this site, else ``default``."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    allowed = url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    # Only a path on this site: a same-host absolute URL is allowed by Django but never needed.
    return candidate if allowed and candidate.startswith("/") else default


def toast(request: HttpRequest, message: str, level: str = "success", *, status: int = 200):
    """A response carrying only a toast (out of band): htmx swaps nothing else."""
    response = render(
        request, TOAST_TEMPLATE, {"toast": message, "toast_level": level}, status=status
    )
    response["HX-Reswap"] = "none"
    return response


def refusal(request: HttpRequest, message: str, *, status: int = 409, fallback: str = "/"):
    """A refused request: a toast for htmx (nothing swapped), else a message and a redirect
    to the safe ``next`` (or ``fallback``)."""
    if htmx_partial(request):
        return toast(request, message, "error", status=status)
    messages.error(request, message)
    return redirect(safe_next(request, fallback))


def answers_refusals(fallback: Callable[..., str] | str = "/"):
    """A view decorator: a ``Refused`` or ``PermissionDenied`` raised by the service layer
    becomes the answer that says why. For htmx, a toast with the refusal's status (403 for a
    role); otherwise a refusal for the role stays a 403 page, and any other refusal is a message
    and a redirect to the safe ``next`` or ``fallback`` (a path, or a callable given the view's
    arguments)."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            try:
                return view(request, *args, **kwargs)
            except PermissionDenied as denied:
                if not htmx_partial(request):
                    raise
                return toast(request, str(denied), "error", status=403)
            except Refused as refused:
                back = fallback(*args, **kwargs) if callable(fallback) else fallback
                return refusal(request, refused.message, status=refused.status, fallback=back)

        return wrapper

    return decorate
