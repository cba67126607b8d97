"""The rows that follow each signed-in browser session (``UserSession``).

Django's database sessions hold the user inside an encoded blob, so "this user's sessions" cannot
be found without decoding every one. A row is written at sign-in (``user_logged_in``), removed at
sign-out (``user_logged_out``), and moved on by ``note_session_seen`` from the request
middleware, at most once a minute per session and process: one UPDATE a minute, no query on the
requests between.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.contrib.auth import BACKEND_SESSION_KEY
from django.contrib.sessions.models import Session
from django.db import IntegrityError
from django.db.models import Exists, OuterRef
from django.utils import timezone

from portal.models import UserSession

if TYPE_CHECKING:
    from django.http import HttpRequest

SEEN_RESOLUTION = timedelta(seconds=60)
_RECENT_LIMIT = 10_000  # sessions remembered per process before the memory starts over

# session key -> when this process last wrote its row; a cache, so losing it costs one UPDATE.
_recent: dict[str, datetime] = {}
_recent_lock = threading.Lock()


def _remember(key: str, now: datetime) -> None:
    with _recent_lock:
        if len(_recent) >= _RECENT_LIMIT:
            _recent.clear()
        _recent[key] = now


def forget_recent() -> None:
    """Forget which sessions were written lately (the next request of each writes again)."""
    with _recent_lock:
        _recent.clear()


def _where(request: HttpRequest) -> dict[str, str]:
    return {
        "ip": (request.META.get("REMOTE_ADDR") or "")[:64],
        "user_agent": (request.META.get("HTTP_USER_AGENT") or "")[:300],
    }


def on_user_logged_in(sender, request: HttpRequest | None, user, **kwargs) -> None:
    """``user_logged_in``: a row for the new session, and the user's rows whose sessions are
    gone (expired or cleared without a sign-out) removed."""
    session = getattr(request, "session", None)
    if request is None or session is None:
        return
    if not session.session_key:
        # login() flushed a session of another user: give this one its key now.
        session.save()
    key = session.session_key
    now = timezone.now()
    UserSession.objects.update_or_create(
        session_key=key,
        defaults={
            "user": user,
            "created_at": now,
            "last_seen_at": now,
            "signed_in_with": (session.get(BACKEND_SESSION_KEY) or "")[:100],
            **_where(request),
        },
    )
    live = Session.objects.filter(session_key=OuterRef("session_key"), expire_date__gt=now)
    UserSession.objects.filter(~Exists(live), user=user).delete()
    _remember(key, now)


def on_user_logged_out(sender, request: HttpRequest | None, user, **kwargs) -> None:
    """``user_logged_out``: the session's row goes with it."""
    session = getattr(request, "session", None)
    if session is not None and session.session_key:
        UserSession.objects.filter(session_key=session.session_key).delete()


def note_session_seen(request: HttpRequest, now: datetime | None = None) -> None:
    """Move the signed-in session's ``last_seen_at`` (and address) on, at most once a minute.

    A session without a row (signed in before rows were kept, or given a new key by a password
    change) gets one here."""
    session = getattr(request, "session", None)
    key = session.session_key if session is not None else None
    if session is None or not key:
        return
    now = now or timezone.now()
    last = _recent.get(key)
    if last is not None and now - last < SEEN_RESOLUTION:
        return
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or getattr(request, "api_token", None):
        return
    where = _where(request)
    updated = UserSession.objects.filter(session_key=key, user=user).update(
        last_seen_at=now, **where
    )
    if not updated:
        try:
            UserSession.objects.update_or_create(
                session_key=key,
                defaults={
                    "user": user,
                    "last_seen_at": now,
                    "signed_in_with": (session.get(BACKEND_SESSION_KEY) or "")[:100],
                    **where,
                },
                create_defaults={
                    "user": user,
                    "created_at": now,
                    "last_seen_at": now,
                    "signed_in_with": (session.get(BACKEND_SESSION_KEY) or "")[:100],
                    **where,
                },
            )
        except IntegrityError:
            return  # another request of this session wrote it first
    _remember(key, now)


# --- how a session is described ---------------------------------------------------------------

_BROWSERS = [
    ("Edge", re.compile(r"Edg(?:e|A|iOS)?/(\d+)")),
    ("Opera", re.compile(r"OPR/(\d+)")),
    ("Firefox", re.compile(r"(?:Firefox|FxiOS)/(\d+)")),
    ("Chrome (headless)", re.compile(r"HeadlessChrome/(\d+)")),
    ("Chrome", re.compile(r"(?:Chrome|CriOS)/(\d+)")),
    ("Safari", re.compile(r"Version/(\d+)[.\d]* (?:Mobile/\S+ )?Safari/")),
    ("curl", re.compile(r"^curl/(\d+)")),
    ("Python requests", re.compile(r"python-requests/(\d+)")),
]
_SYSTEMS = [
    ("Android", re.compile(r"Android")),
    ("iOS", re.compile(r"iPhone|iPad|iPod")),
    ("Windows", re.compile(r"Windows")),
    ("macOS", re.compile(r"Mac OS X|Macintosh")),
    ("ChromeOS", re.compile(r"CrOS")),
    ("Linux", re.compile(r"Linux|X11")),
]


def describe_browser(user_agent: str) -> str:
    """``Chrome 131 on Linux`` from a User-Agent header; ``Unknown browser`` when it says
    nothing we know (the whole header is shown beside it)."""
    if not user_agent:
        return "Unknown browser"
    browser = next(
        (
            f"{name} {found[1]}"
            for name, pattern in _BROWSERS
            if (found := pattern.search(user_agent))
        ),
        "",
    )
    system = next((name for name, pattern in _SYSTEMS if pattern.search(user_agent)), "")
    if browser and system:
        return f"{browser} on {system}"
    return browser or (f"A browser on {system}" if system else "Unknown browser")


def describe_backend(backend: str) -> str:
    """How a session signed in, from its authentication backend's dotted path."""
    if "google" in backend.lower():
        return "Google"
    if backend.endswith(("RoleBackend", "ModelBackend")):
        return "Password"
    return backend.rpartition(".")[2] or "Unknown"
