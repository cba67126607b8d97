"""The profile page and its forms: create and revoke your tokens, sign out your sessions.

Each form answers htmx with its panel (``profile.html#tokens`` or ``#sessions``) and a plain
post with the whole page. A new token's text is in that one answer only, never stored or put
in a message, and the answer is not cached.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince
from django.views.decorators.http import require_GET, require_POST

from portal.actors import Actor
from portal.htmx import answers_refusals, htmx_partial
from portal.profile import services

PAGE = "portal/profile.html"
EXPIRY_CHOICES = [7, 30, 90, 365]
DEFAULT_EXPIRY = 30


def _page_url(*args: Any, **kwargs: Any) -> str:
    return reverse("profile:index")


def _session_key(request: HttpRequest) -> str | None:
    return None if getattr(request, "api_token", None) is not None else request.session.session_key


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return ""
    if timezone.now() - moment < timedelta(minutes=1):
        return "just now"
    return f"{timesince(moment)} ago"


def _tokens_context(actor: Actor, **more: Any) -> dict[str, Any]:
    tokens = services.own_tokens(actor)
    form = more.pop("form", None) or {"name": "", "expires_in_days": str(DEFAULT_EXPIRY)}
    return {
        "tokens": [
            (token, services.token_status(token), _ago(token.last_used_at)) for token in tokens
        ],
        "active_tokens": sum(1 for token in tokens if services.token_status(token) == "active"),
        "max_tokens": services.MAX_ACTIVE_TOKENS,
        "max_days": services.MAX_EXPIRY_DAYS,
        "expiry_choices": EXPIRY_CHOICES,
        "form": form,
        **more,
    }


def _sessions_context(request: HttpRequest, actor: Actor, **more: Any) -> dict[str, Any]:
    shown = [
        {**vars(session), "last_seen_ago": _ago(session.last_seen_at)}
        for session in services.own_sessions(actor, _session_key(request))
    ]
    return {"sessions": shown, "other_sessions": sum(not s["current"] for s in shown), **more}


def _page(request: HttpRequest, actor: Actor, *, status: int = 200, **more: Any) -> HttpResponse:
    context = {
        "me": services.profile_of(actor),
        **_tokens_context(actor, **more),
        **_sessions_context(request, actor),
    }
    return render(request, PAGE, context, status=status)


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


@require_GET
def profile(request: HttpRequest) -> HttpResponse:
    """Who you are, your role and where it comes from, your sessions and your tokens."""
    return _page(request, Actor.from_request(request))


@require_POST
@answers_refusals(_page_url)
def create_token(request: HttpRequest) -> HttpResponse:
    """Create a token for yourself; its text is shown in this answer only. A name or expiry
    the portal cannot use is answered 400 with the form as typed, naming the field."""
    actor = Actor.from_request(request)
    form = {
        "name": request.POST.get("name", ""),
        "expires_in_days": request.POST.get("expires_in_days", "").strip(),
    }
    partial = htmx_partial(request)
    try:
        token, text = services.create_own_token(
            actor, name=form["name"], expires_in_days=form["expires_in_days"]
        )
    except services.BadTokenInput as bad:
        more = {"form": form, "problem": bad.message, "bad_field": bad.field, "open": True}
        if partial:
            return render(request, f"{PAGE}#tokens", _tokens_context(actor, **more), status=400)
        return _page(request, actor, status=400, **more)
    if partial:
        context = _tokens_context(actor, new_token=token, new_text=text)
        return _no_store(render(request, f"{PAGE}#tokens", context))
    return _no_store(_page(request, actor, new_token=token, new_text=text))


@require_POST
@answers_refusals(_page_url)
def revoke_token(request: HttpRequest, prefix: str) -> HttpResponse:
    actor = Actor.from_request(request)
    token, revoked = services.revoke_own_token(actor, prefix)
    said = (
        f"Token {token.prefix} ({token.name or 'unnamed'}) is revoked; anything using it is "
        "refused from now on."
        if revoked
        else f"Token {token.prefix} was already revoked; nothing changed."
    )
    if htmx_partial(request):
        return render(request, f"{PAGE}#tokens", _tokens_context(actor, notice=said))
    messages.success(request, said)
    return redirect("profile:index")


@require_POST
@answers_refusals(_page_url)
def sign_out_others(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    ended = services.sign_out_other_sessions(actor, _session_key(request))
    said = (
        f"Signed out {ended} other session{'s' if ended != 1 else ''}."
        if ended
        else "There were no other sessions to sign out."
    )
    if htmx_partial(request):
        return render(request, f"{PAGE}#sessions", _sessions_context(request, actor, notice=said))
    messages.success(request, said)
    return redirect("profile:index")


@require_POST
@answers_refusals(_page_url)
def sign_out_session(request: HttpRequest, session_id: str) -> HttpResponse:
    actor = Actor.from_request(request)
    ended = services.sign_out_session(actor, session_id, _session_key(request))
    said = f"Signed out the session of {ended.browser} from {ended.ip or 'an unknown address'}."
    if htmx_partial(request):
        return render(request, f"{PAGE}#sessions", _sessions_context(request, actor, notice=said))
    messages.success(request, said)
    return redirect("profile:index")
